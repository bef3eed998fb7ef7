//! The parts of a model example's run that do not depend on the model: the command line
//! (flags shared by both examples, `--help`, exit codes), the prompt and generation
//! settings, the timed prefill and generation, and the closing report.

use super::args::{Args, Flag, UsageError, usage};
use super::check::{self, Measured};
use super::files::{self, AnyError};
use super::lm::{LanguageModel, last_logits};
use super::progress::Progress;
use super::report::{Phase, print_table};
use super::sample::Sampler;
use super::setup::{announce, choose_device};
use flashscan::tokenizer::Tokenizer;
use flashscan::{Device, Element};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// The prompt of runs with real weights and no `--prompt`.
pub const DEFAULT_PROMPT: &str = "Once upon a time,";

/// The flags of every model example, after its own.
pub const RUN_FLAGS: &[Flag] = &[
    Flag {
        name: "tokenizer",
        value: Some("PATH"),
        default: "found next to the checkpoint",
        help: "tokenizer.json, vocab.json (+ merges.txt beside it), or their folder",
    },
    Flag {
        name: "prompt",
        value: Some("TEXT"),
        default: "\"Once upon a time,\" with a checkpoint, else random tokens",
        help: "the prompt (the same for every sequence)",
    },
    Flag { name: "batch", value: Some("N"), default: "8 on a GPU, 4 on the CPU", help: "sequences" },
    Flag {
        name: "prompt-len",
        value: Some("N"),
        default: "512 on a GPU, 128 on the CPU",
        help: "prompt tokens when no --prompt is given",
    },
    Flag {
        name: "generate",
        value: Some("N"),
        default: "128 on a GPU, 32 on the CPU",
        help: "tokens to generate per sequence",
    },
    Flag {
        name: "temperature",
        value: Some("T"),
        default: "0 (greedy)",
        help: "sample from softmax(logits / T), seeded",
    },
    Flag { name: "device", value: Some("DEV"), default: "auto", help: "auto, cpu, cuda or cuda:N" },
    Flag { name: "seed", value: Some("N"), default: "0", help: "random weights, prompt tokens and sampling" },
    Flag { name: "no-check", value: None, default: "", help: "skip the self-check on a small model" },
    Flag { name: "check-only", value: None, default: "", help: "run the self-check and stop" },
];

/// The whole `main` of an example: parses the flags (`--help` prints the usage), picks
/// and announces the device, runs `body`, and turns its outcome into the exit status
/// (2 for a usage error, 1 for any other).
pub fn main(
    example: &str,
    about: &str,
    flags: &[Flag],
    body: impl FnOnce(&Args, Device) -> Result<(), AnyError>,
) -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1), flags) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{}", usage(example, about, flags));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result =
        choose_device(args.text("device").unwrap_or("auto")).map_err(AnyError::from).and_then(|(device, why_cpu)| {
            announce(device, &why_cpu);
            body(&args, device)
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            if e.is::<UsageError>() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

/// Runs the self-check unless `--no-check`; an error when a measurement is over its
/// bound. `Ok(false)`: `--check-only`, stop here.
pub fn self_check(
    args: &Args,
    title: &str,
    measure: impl FnOnce() -> flashscan::Result<Vec<Measured>>,
) -> Result<bool, AnyError> {
    if !args.switch("no-check") {
        check::report(title, &measure()?)?;
    }
    Ok(!args.switch("check-only"))
}

/// The weights of a run and its tokenizer.
pub struct Setup<W> {
    pub weights: W,
    /// Whether the weights came from `--checkpoint` (else seeded random).
    pub from_checkpoint: bool,
    pub tokenizer: Tokenizer,
    pub tokenizer_name: String,
    started: Instant,
}

impl<W> Setup<W> {
    /// The weights of `--checkpoint` (a file, or the folder's safetensors file) through
    /// `load`, else `random()`; the tokenizer of `--tokenizer` or the checkpoint's folder.
    pub fn from_args(
        args: &Args,
        load: impl FnOnce(&Path) -> flashscan::Result<W>,
        random: impl FnOnce() -> Result<W, AnyError>,
    ) -> Result<Setup<W>, AnyError> {
        let started = Instant::now();
        let checkpoint = args.text("checkpoint").map(Path::new);
        let weights = match checkpoint {
            Some(path) => {
                let file = files::checkpoint_file(path)?;
                println!("loading {}", file.display());
                load(&file)?
            }
            None => random()?,
        };
        let (tokenizer, tokenizer_name) = files::tokenizer(args.text("tokenizer"), checkpoint)?;
        Ok(Setup { weights, from_checkpoint: checkpoint.is_some(), tokenizer, tokenizer_name, started })
    }

    /// The run's plan (real weights prompt with [`DEFAULT_PROMPT`] when no `--prompt`).
    pub fn plan(&self, args: &Args, vocab: usize, device: Device) -> Result<Plan, AnyError> {
        let default_text = self.from_checkpoint.then_some(DEFAULT_PROMPT);
        Plan::from_args(args, &self.tokenizer, default_text, vocab, device)
    }

    /// Prints the model (`model`: its shapes), where the weights came from, the time to
    /// set up, the tokenizer and the plan.
    pub fn announce(&self, model: &str, plan: &Plan) {
        let source = if self.from_checkpoint { "checkpoint" } else { "seeded random" };
        println!("model: {model}; {source} weights ({:.1} s to set up)", self.started.elapsed().as_secs_f64());
        println!("tokenizer: {}", self.tokenizer_name);
        println!("{}", plan.describe());
    }
}

/// What a run generates: prompts, lengths, how tokens are chosen.
pub struct Plan {
    pub batch: usize,
    pub prompt: Vec<u32>,
    /// Whether the prompt is text (so the output is worth printing as text).
    pub prompt_is_text: bool,
    pub generate: usize,
    pub sampler: Sampler,
}

impl Plan {
    /// The plan of the flags: `--prompt` (else `default_text`, given for real weights)
    /// through `tokenizer`, else `--prompt-len` seeded random ids below `vocab`; defaults
    /// sized for the device.
    pub fn from_args(
        args: &Args,
        tokenizer: &Tokenizer,
        default_text: Option<&str>,
        vocab: usize,
        device: Device,
    ) -> Result<Plan, AnyError> {
        let on_gpu = device != Device::Cpu;
        let seed: u64 = args.get_or("seed", 0)?;
        let batch: usize = args.get_or("batch", if on_gpu { 8 } else { 4 })?;
        let generate: usize = args.get_or("generate", if on_gpu { 128 } else { 32 })?;
        let (prompt, prompt_is_text) = match args.text("prompt").or(default_text) {
            Some(text) => (tokenizer.encode(text), true),
            None => {
                let len = args.get_or("prompt-len", if on_gpu { 512 } else { 128 })?;
                (check::tokens(1, len, vocab, seed).remove(0), false)
            }
        };
        if batch == 0 || prompt.is_empty() || generate == 0 {
            return Err(UsageError("--batch, the prompt's tokens and --generate must each be at least 1".into()).into());
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(format!("the prompt has token id {bad}, outside the model's vocabulary of {vocab}").into());
        }
        let sampler = Sampler::new(args.get_or("temperature", 0.0)?, seed);
        Ok(Plan { batch, prompt, prompt_is_text, generate, sampler })
    }

    /// Tokens per sequence the model's state must hold.
    pub fn capacity(&self) -> usize {
        self.prompt.len() + self.generate
    }

    pub fn describe(&self) -> String {
        format!(
            "batch {}, prompt {} tokens, generating {} tokens per sequence ({})",
            self.batch,
            self.prompt.len(),
            self.generate,
            self.sampler.describe()
        )
    }
}

/// The timed run, after an untimed warm-up: a prefill of the prompt (the last position's
/// logits on the host), then `generate` steps of one token per sequence; prints the generated text (or ids) and the
/// table (`title` heads it). Returns the generated tokens of each sequence.
pub fn generate<T: Element, M: LanguageModel<T>>(
    model: &M,
    plan: &mut Plan,
    tokenizer: &Tokenizer,
    device: Device,
    title: &str,
    dtype: &str,
) -> Result<Vec<Vec<u32>>, AnyError> {
    // Warm-up, untimed: the first calls load the kernels and create cuBLAS's handle.
    let first = &plan.prompt[..1];
    let (_, mut warm) = model.prefill(&[first.to_vec()], 2)?;
    last_logits(&model.step(first, &mut warm)?, model.lm_head())?;
    drop(warm);

    let tokens = vec![plan.prompt.clone(); plan.batch];
    let start = Instant::now();
    let (hidden, mut state) = model.prefill(&tokens, plan.capacity())?;
    let mut logits = last_logits(&hidden, model.lm_head())?;
    drop(hidden);
    let prefill = Phase::measured("prefill", plan.batch * plan.prompt.len(), start.elapsed().as_secs_f64(), device);

    let mut generated: Vec<Vec<u32>> = vec![Vec::with_capacity(plan.generate); plan.batch];
    let mut bar = Progress::new("generate", plan.generate);
    let start = Instant::now();
    for i in 0..plan.generate {
        let next: Vec<u32> = logits.rows().into_iter().map(|row| plan.sampler.next(&row.to_vec())).collect();
        for (g, &t) in generated.iter_mut().zip(&next) {
            g.push(t);
        }
        logits = last_logits(&model.step(&next, &mut state)?, model.lm_head())?;
        bar.set(i + 1);
    }
    bar.finish();
    let decode = Phase::measured("generation", plan.batch * plan.generate, start.elapsed().as_secs_f64(), device);

    if plan.prompt_is_text {
        println!("\n--- sequence 0 ---\n{}{}\n---", tokenizer.decode(&plan.prompt), tokenizer.decode(&generated[0]));
    } else {
        let first: Vec<String> = generated[0].iter().take(12).map(u32::to_string).collect();
        println!("\nsequence 0 goes on with token ids {} ... (no --prompt: ids, not text)", first.join(" "));
    }
    print_table(title, &[prefill, decode], device, dtype);
    if device == Device::Cpu {
        println!("ran on the CPU (no GPU used); on a machine with an NVIDIA GPU it runs there");
    }
    Ok(generated)
}
