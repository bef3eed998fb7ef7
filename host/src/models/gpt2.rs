//! GPT-2 weights (124M and its larger siblings) in the OpenAI / HuggingFace checkpoint
//! layout: `wte.weight [vocab, d]`, `wpe.weight [n_ctx, d]`, per layer `h.{i}.ln_1`,
//! `h.{i}.attn.c_attn` / `c_proj`, `h.{i}.ln_2`, `h.{i}.mlp.c_fc` / `c_proj`, then
//! `ln_f`, all optionally under `transformer.`; `lm_head.weight` is optional (GPT-2 ties
//! it to `wte`). Other tensors (the `attn.bias` mask buffers of old exports) are ignored.
//!
//! GPT-2's linear layers are `Conv1D`s: weights stored `[in, out]`, so `y = x W + b`.
//! They are kept as stored.

use super::check;
use super::loader::Loader;
use super::rng::Rng;
use crate::checkpoint::{Checkpoint, CheckpointWriter};
use crate::{DType, Error, Result};
use ndarray::{Array1, Array2, ArrayViewD};
use std::path::Path;

/// GPT-2's head dimension in every published size (768/12, 1024/16, 1280/20, 1600/25):
/// the head count, which a checkpoint does not record, defaults to `d_model / 64`.
const DEFAULT_HEAD_DIM: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Config {
    pub vocab_size: usize,
    /// Positions in `wpe`: the longest context.
    pub n_ctx: usize,
    pub d_model: usize,
    pub n_layer: usize,
    pub n_head: usize,
    /// Not stored in checkpoints; GPT-2 uses 1e-5.
    pub layer_norm_eps: f32,
}

impl Gpt2Config {
    /// GPT-2 small, the 124M-parameter model.
    pub const fn gpt2_124m() -> Self {
        Gpt2Config { vocab_size: 50257, n_ctx: 1024, d_model: 768, n_layer: 12, n_head: 12, layer_norm_eps: 1e-5 }
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_head.max(1)
    }

    /// The MLP's hidden width: 4 * d_model in GPT-2.
    pub fn d_mlp(&self) -> usize {
        4 * self.d_model
    }

    /// Every size is at least 1, `n_head` divides `d_model`, and the weights fit in memory.
    pub fn validate(&self) -> Result<()> {
        check::positive("vocab_size", self.vocab_size)?;
        check::positive("n_ctx", self.n_ctx)?;
        check::positive("d_model", self.d_model)?;
        check::positive("n_layer", self.n_layer)?;
        check::positive("n_head", self.n_head)?;
        if !self.d_model.is_multiple_of(self.n_head) {
            return Err(Error::Value {
                arg: "n_head",
                got: self.n_head.to_string(),
                expected: format!("a divisor of d_model {}", self.d_model),
            });
        }
        let d = self.d_model;
        check::total_size(&[&[4, d]])?; // so 3d and 4d below do not overflow
        let per_layer = check::total_size(&[
            &[4, d],
            &[d, 3 * d],
            &[3 * d],
            &[d, d],
            &[d],
            &[d, 4 * d],
            &[4 * d],
            &[4 * d, d],
            &[d],
        ])?;
        check::total_size(&[&[self.vocab_size, d], &[self.n_ctx, d], &[self.n_layer, per_layer], &[2, d]])?;
        Ok(())
    }
}

/// LayerNorm's scale and shift, `[d_model]` each.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormParams {
    pub weight: Array1<f32>,
    pub bias: Array1<f32>,
}

/// A GPT-2 linear layer: `weight [in, out]` (as stored), `bias [out]`; `y = x W + b`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Linear {
    pub weight: Array2<f32>,
    pub bias: Array1<f32>,
}

/// One transformer block: `x += attn(ln_1(x)); x += mlp(ln_2(x))`.
#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Block {
    pub ln_1: LayerNormParams,
    /// `[d, 3d]`: q, k, v side by side along the output.
    pub attn_c_attn: Gpt2Linear,
    /// `[d, d]`.
    pub attn_c_proj: Gpt2Linear,
    pub ln_2: LayerNormParams,
    /// `[d, 4d]`, followed by GELU (tanh approximation).
    pub mlp_c_fc: Gpt2Linear,
    /// `[4d, d]`.
    pub mlp_c_proj: Gpt2Linear,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Gpt2Weights {
    pub config: Gpt2Config,
    /// Token embedding `[vocab, d]`.
    pub wte: Array2<f32>,
    /// Position embedding `[n_ctx, d]`.
    pub wpe: Array2<f32>,
    pub blocks: Vec<Gpt2Block>,
    pub ln_f: LayerNormParams,
    /// `[vocab, d]` when the checkpoint has its own; `None`: tied to `wte`.
    pub lm_head: Option<Array2<f32>>,
}

impl Gpt2Weights {
    /// Loads a safetensors file; see [`from_checkpoint`](Self::from_checkpoint).
    pub fn load(path: impl AsRef<Path>, n_head: Option<usize>) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::open(path)?, n_head)
    }

    /// The weights of `ckpt`, with the configuration inferred from its shapes: vocab and
    /// d_model from `wte`, n_ctx from `wpe`, n_layer from the highest `h.{i}` index (every
    /// layer below it must be complete). The head count is not in the file: `n_head`, or
    /// `d_model / 64` when `None` (12 for the 768-wide 124M model). Every tensor's shape
    /// is checked; errors name the tensor.
    pub fn from_checkpoint(ckpt: &Checkpoint, n_head: Option<usize>) -> Result<Self> {
        let prefix = if ckpt.contains("transformer.wte.weight") { "transformer." } else { "" };
        let l = Loader { ckpt, prefix };
        let [vocab_size, d] = l.dims("wte.weight", "[vocab_size, d_model]")?;
        let [n_ctx, _] = l.dims::<2>("wpe.weight", "[n_ctx, d_model]")?;
        let n_layer = l.layer_count("h.");
        if n_layer == 0 {
            return Err(Error::Checkpoint {
                path: ckpt.path().to_string(),
                tensor: Some(l.name("h.0.ln_1.weight")),
                what: "is not in the file: it has no layers `h.{i}.*`".into(),
            });
        }
        let n_head = match n_head {
            Some(h) => h,
            None if d.is_multiple_of(DEFAULT_HEAD_DIM) => d / DEFAULT_HEAD_DIM,
            None => {
                return Err(Error::Value {
                    arg: "n_head",
                    got: "None".into(),
                    expected: format!("a head count: d_model {d} is not a multiple of 64, so it cannot be inferred"),
                });
            }
        };
        let config = Gpt2Config { vocab_size, n_ctx, d_model: d, n_layer, n_head, layer_norm_eps: 1e-5 };
        config.validate()?;

        let blocks = (0..n_layer).map(|i| load_block(&l, i, d)).collect::<Result<Vec<_>>>()?;
        let top = Loader { ckpt, prefix: "" };
        Ok(Gpt2Weights {
            wte: l.array("wte.weight", &[vocab_size, d])?,
            wpe: l.array("wpe.weight", &[n_ctx, d])?,
            blocks,
            ln_f: load_layer_norm(&l, "ln_f", d)?,
            lm_head: top.optional("lm_head.weight", &[vocab_size, d])?,
            config,
        })
    }

    /// Seeded random weights of `config`, so examples run without files. Matrices follow
    /// GPT-2's init (N(0, 0.02²), residual projections scaled by 1/sqrt(2 n_layer)); the
    /// biases and LayerNorm parameters are not zeros and ones as at init but get small
    /// random offsets too, so that a forward pass that drops one is visibly wrong.
    pub fn random(config: Gpt2Config, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let d = config.d_model;
        let proj_std = 0.02 / (2.0 * config.n_layer as f64).sqrt();
        let linear = |rng: &mut Rng, n_in: usize, n_out: usize, std: f64| Gpt2Linear {
            weight: rng.normal_array((n_in, n_out), std),
            bias: rng.normal_array(n_out, 0.02),
        };
        let wte = rng.normal_array((config.vocab_size, d), 0.02);
        let wpe = rng.normal_array((config.n_ctx, d), 0.01);
        let blocks = (0..config.n_layer)
            .map(|_| Gpt2Block {
                ln_1: random_layer_norm(&mut rng, d),
                attn_c_attn: linear(&mut rng, d, 3 * d, 0.02),
                attn_c_proj: linear(&mut rng, d, d, proj_std),
                ln_2: random_layer_norm(&mut rng, d),
                mlp_c_fc: linear(&mut rng, d, 4 * d, 0.02),
                mlp_c_proj: linear(&mut rng, 4 * d, d, proj_std),
            })
            .collect();
        let ln_f = random_layer_norm(&mut rng, d);
        Ok(Gpt2Weights { config, wte, wpe, blocks, ln_f, lm_head: None })
    }

    /// The output projection `[vocab, d]`: `lm_head`, or `wte` when tied.
    pub fn lm_head(&self) -> &Array2<f32> {
        self.lm_head.as_ref().unwrap_or(&self.wte)
    }

    /// Every tensor under its checkpoint name (no `transformer.` prefix), in file order.
    pub fn named_tensors(&self) -> Vec<(String, ArrayViewD<'_, f32>)> {
        let mut out = vec![("wte.weight".to_string(), self.wte.view().into_dyn())];
        out.push(("wpe.weight".into(), self.wpe.view().into_dyn()));
        for (i, b) in self.blocks.iter().enumerate() {
            push_layer_norm(&mut out, &format!("h.{i}.ln_1"), &b.ln_1);
            push_linear(&mut out, &format!("h.{i}.attn.c_attn"), &b.attn_c_attn);
            push_linear(&mut out, &format!("h.{i}.attn.c_proj"), &b.attn_c_proj);
            push_layer_norm(&mut out, &format!("h.{i}.ln_2"), &b.ln_2);
            push_linear(&mut out, &format!("h.{i}.mlp.c_fc"), &b.mlp_c_fc);
            push_linear(&mut out, &format!("h.{i}.mlp.c_proj"), &b.mlp_c_proj);
        }
        push_layer_norm(&mut out, "ln_f", &self.ln_f);
        if let Some(w) = &self.lm_head {
            out.push(("lm_head.weight".into(), w.view().into_dyn()));
        }
        out
    }

    /// Writes the weights as a safetensors file, rounded to `dtype`.
    pub fn save(&self, path: impl AsRef<Path>, dtype: DType) -> Result<()> {
        let mut w = CheckpointWriter::new();
        for (name, a) in self.named_tensors() {
            w.add(&name, &a, dtype)?;
        }
        w.write(path)
    }
}

fn load_block(l: &Loader, i: usize, d: usize) -> Result<Gpt2Block> {
    let name = |s: &str| format!("h.{i}.{s}");
    Ok(Gpt2Block {
        ln_1: load_layer_norm(l, &name("ln_1"), d)?,
        attn_c_attn: load_linear(l, &name("attn.c_attn"), d, 3 * d)?,
        attn_c_proj: load_linear(l, &name("attn.c_proj"), d, d)?,
        ln_2: load_layer_norm(l, &name("ln_2"), d)?,
        mlp_c_fc: load_linear(l, &name("mlp.c_fc"), d, 4 * d)?,
        mlp_c_proj: load_linear(l, &name("mlp.c_proj"), 4 * d, d)?,
    })
}

fn load_layer_norm(l: &Loader, name: &str, d: usize) -> Result<LayerNormParams> {
    Ok(LayerNormParams {
        weight: l.array(&format!("{name}.weight"), &[d])?,
        bias: l.array(&format!("{name}.bias"), &[d])?,
    })
}

fn load_linear(l: &Loader, name: &str, n_in: usize, n_out: usize) -> Result<Gpt2Linear> {
    Ok(Gpt2Linear {
        weight: l.array(&format!("{name}.weight"), &[n_in, n_out])?,
        bias: l.array(&format!("{name}.bias"), &[n_out])?,
    })
}

fn random_layer_norm(rng: &mut Rng, d: usize) -> LayerNormParams {
    LayerNormParams { weight: rng.normal_array(d, 0.02).mapv(|x| 1.0 + x), bias: rng.normal_array(d, 0.02) }
}

fn push_layer_norm<'a>(out: &mut Vec<(String, ArrayViewD<'a, f32>)>, name: &str, p: &'a LayerNormParams) {
    out.push((format!("{name}.weight"), p.weight.view().into_dyn()));
    out.push((format!("{name}.bias"), p.bias.view().into_dyn()));
}

fn push_linear<'a>(out: &mut Vec<(String, ArrayViewD<'a, f32>)>, name: &str, p: &'a Gpt2Linear) {
    out.push((format!("{name}.weight"), p.weight.view().into_dyn()));
    out.push((format!("{name}.bias"), p.bias.view().into_dyn()));
}
