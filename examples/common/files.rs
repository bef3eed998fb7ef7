//! Where a run's files are: the safetensors checkpoint (a file, or a folder holding one)
//! and the tokenizer (`tokenizer.json`, or GPT-2's `vocab.json` + `merges.txt`), given
//! by flag or found next to the checkpoint.

use flashscan::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

pub type AnyError = Box<dyn std::error::Error>;

/// The checkpoint file of `path`: the file itself, or in a folder `model.safetensors`, or
/// its only `*.safetensors` file.
pub fn checkpoint_file(path: &Path) -> Result<PathBuf, AnyError> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(format!("checkpoint {}: no such file or folder", path.display()).into());
        }
        return Ok(path.to_path_buf());
    }
    let main = path.join("model.safetensors");
    if main.is_file() {
        return Ok(main);
    }
    let found: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("checkpoint folder {}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!("checkpoint folder {}: no .safetensors file in it", path.display()).into()),
        _ => Err(format!(
            "checkpoint folder {}: {} .safetensors files (sharded checkpoints are not supported); name one",
            path.display(),
            found.len()
        )
        .into()),
    }
}

/// The tokenizer of a run and a line saying which it is: from `flag` (a `tokenizer.json`,
/// a `vocab.json` with `merges.txt` beside it, or a folder holding either), else from the
/// checkpoint's folder, else the byte tokenizer (ids 0..=255).
pub fn tokenizer(flag: Option<&str>, checkpoint: Option<&Path>) -> Result<(Tokenizer, String), AnyError> {
    if let Some(f) = flag {
        let p = Path::new(f);
        let found = if p.is_dir() { in_folder(p)? } else { Some(from_file(p)?) };
        return found
            .ok_or_else(|| format!("--tokenizer {f}: no tokenizer.json or vocab.json + merges.txt there").into());
    }
    let folder = checkpoint.and_then(|c| if c.is_dir() { Some(c) } else { c.parent() });
    if let Some(found) = folder.map(in_folder).transpose()?.flatten() {
        return Ok(found);
    }
    Ok((Tokenizer::bytes(), "bytes (one token per byte; no tokenizer file given or found)".into()))
}

fn from_file(p: &Path) -> Result<(Tokenizer, String), AnyError> {
    if p.file_name().is_some_and(|n| n == "vocab.json") {
        let merges = p.with_file_name("merges.txt");
        let t = Tokenizer::from_gpt2_files(p, &merges)?;
        return Ok((t, format!("{} + {}", p.display(), merges.display())));
    }
    Ok((Tokenizer::from_tokenizer_json(p)?, p.display().to_string()))
}

fn in_folder(dir: &Path) -> Result<Option<(Tokenizer, String)>, AnyError> {
    for name in ["tokenizer.json", "vocab.json"] {
        let p = dir.join(name);
        if p.is_file() {
            return from_file(&p).map(Some);
        }
    }
    Ok(None)
}
