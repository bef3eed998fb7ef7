//! Mamba-1 weights (mamba-130m and its siblings) in the state-spaces checkpoint layout:
//! `backbone.embedding.weight [vocab, d]` (HuggingFace's `MambaForCausalLM` exports call
//! it `backbone.embeddings.weight`: both are accepted), per layer
//! `backbone.layers.{i}.mixer.*` and `backbone.layers.{i}.norm.weight`, then
//! `backbone.norm_f.weight`; `lm_head.weight` is optional (tied to the embedding).
//!
//! The mixer's linear layers are `torch.nn.Linear`s: weights stored `[out, in]`, so
//! `y = x Wᵀ`. Everything is kept as stored (conv1d `[d_inner, 1, d_conv]`, `A_log`).

use super::check;
use super::loader::Loader;
use super::rng::Rng;
use crate::checkpoint::{Checkpoint, CheckpointWriter};
use crate::{DType, Error, Result};
use ndarray::{Array1, Array2, Array3, ArrayViewD};
use std::path::Path;

const PREFIX: &str = "backbone.";
/// The embedding's name in state-spaces checkpoints, then in HuggingFace's.
const EMBEDDING_NAMES: [&str; 2] = ["embedding.weight", "embeddings.weight"];

#[derive(Clone, Debug, PartialEq)]
pub struct MambaConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layer: usize,
    /// The mixer's inner width (2 * d_model in the published models).
    pub d_inner: usize,
    pub d_state: usize,
    pub d_conv: usize,
    /// The rank of the Δ projection (ceil(d_model / 16) in the published models).
    pub dt_rank: usize,
    /// Not stored in checkpoints; Mamba's RMSNorm uses 1e-5.
    pub norm_eps: f32,
}

impl MambaConfig {
    /// state-spaces/mamba-130m (its vocabulary padded from 50277 to a multiple of 8).
    pub const fn mamba_130m() -> Self {
        MambaConfig {
            vocab_size: 50280,
            d_model: 768,
            n_layer: 24,
            d_inner: 1536,
            d_state: 16,
            d_conv: 4,
            dt_rank: 48,
            norm_eps: 1e-5,
        }
    }

    /// Every size is at least 1 and the weights fit in memory.
    pub fn validate(&self) -> Result<()> {
        for (arg, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("n_layer", self.n_layer),
            ("d_inner", self.d_inner),
            ("d_state", self.d_state),
            ("d_conv", self.d_conv),
            ("dt_rank", self.dt_rank),
        ] {
            check::positive(arg, v)?;
        }
        let (d, di) = (self.d_model, self.d_inner);
        // So that 2 * d_inner and dt_rank + 2 * d_state below do not overflow.
        check::total_size(&[&[2, di], &[2, self.d_state], &[self.dt_rank]])?;
        let per_layer = check::total_size(&[
            &[2 * di, d],
            &[di, self.d_conv],
            &[self.dt_rank + 2 * self.d_state, di],
            &[di, self.dt_rank],
            &[di, self.d_state],
            &[3, di],
            &[d, di],
            &[2, d],
        ])?;
        check::total_size(&[&[self.vocab_size, d], &[self.n_layer, per_layer], &[d]])?;
        Ok(())
    }
}

/// The mixer of one layer (`backbone.layers.{i}.mixer.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct MambaMixer {
    /// `[2 * d_inner, d_model]`: x and the gate z, stacked along the output.
    pub in_proj_weight: Array2<f32>,
    /// `[2 * d_inner]`, in checkpoints trained with `bias=True` only.
    pub in_proj_bias: Option<Array1<f32>>,
    /// `[d_inner, 1, d_conv]` (depthwise); `[.., 0, ..]` is flashscan's conv weight layout.
    pub conv1d_weight: Array3<f32>,
    /// `[d_inner]`.
    pub conv1d_bias: Array1<f32>,
    /// `[dt_rank + 2 * d_state, d_inner]`: Δ (low rank), B, C.
    pub x_proj_weight: Array2<f32>,
    /// `[d_inner, dt_rank]`.
    pub dt_proj_weight: Array2<f32>,
    /// `[d_inner]`: the scan's `delta_bias` (softplus applied after it).
    pub dt_proj_bias: Array1<f32>,
    /// `[d_inner, d_state]`: `A = -exp(A_log)`.
    pub a_log: Array2<f32>,
    /// `[d_inner]`: the skip connection.
    pub d: Array1<f32>,
    /// `[d_model, d_inner]`.
    pub out_proj_weight: Array2<f32>,
    /// `[d_model]`, in checkpoints trained with `bias=True` only.
    pub out_proj_bias: Option<Array1<f32>>,
}

/// One residual layer: `x += mixer(rms_norm(x) * norm_weight)`.
#[derive(Clone, Debug, PartialEq)]
pub struct MambaBlock {
    /// `[d_model]`: the RMSNorm scale.
    pub norm_weight: Array1<f32>,
    pub mixer: MambaMixer,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MambaWeights {
    pub config: MambaConfig,
    /// `[vocab, d_model]`.
    pub embedding: Array2<f32>,
    pub blocks: Vec<MambaBlock>,
    /// `[d_model]`: the final RMSNorm scale.
    pub norm_f_weight: Array1<f32>,
    /// `[vocab, d_model]` when the checkpoint has its own; `None`: tied to `embedding`.
    pub lm_head: Option<Array2<f32>>,
}

impl MambaWeights {
    /// Loads a safetensors file; see [`from_checkpoint`](Self::from_checkpoint).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_checkpoint(&Checkpoint::open(path)?)
    }

    /// The weights of `ckpt`, with the configuration inferred from its shapes: vocab and
    /// d_model from the embedding, n_layer from the highest `layers.{i}` index (every
    /// layer below it must be complete), d_inner from `in_proj`, d_conv from `conv1d`,
    /// d_state from `A_log`, dt_rank from `dt_proj` (all of layer 0; every layer is then
    /// checked against them). Errors name the tensor.
    pub fn from_checkpoint(ckpt: &Checkpoint) -> Result<Self> {
        let l = Loader { ckpt, prefix: PREFIX };
        let embedding_name = EMBEDDING_NAMES.into_iter().find(|n| l.contains(n)).unwrap_or(EMBEDDING_NAMES[0]);
        let [vocab_size, d] = l.dims(embedding_name, "[vocab_size, d_model]")?;
        let n_layer = l.layer_count("layers.");
        let first = |s: &str| format!("layers.0.mixer.{s}");
        if n_layer == 0 {
            return Err(Error::Checkpoint {
                path: ckpt.path().to_string(),
                tensor: Some(l.name(&first("in_proj.weight"))),
                what: "is not in the file: it has no layers `backbone.layers.{i}.*`".into(),
            });
        }
        let [two_di, _] = l.dims::<2>(&first("in_proj.weight"), "[2 * d_inner, d_model]")?;
        if !two_di.is_multiple_of(2) {
            return Err(Error::TensorShape {
                path: ckpt.path().to_string(),
                tensor: l.name(&first("in_proj.weight")),
                got: vec![two_di, d],
                expected: format!("[2 * d_inner, {d}] (an even number of rows: x and z)"),
            });
        }
        let [_, _, d_conv] = l.dims::<3>(&first("conv1d.weight"), "[d_inner, 1, d_conv]")?;
        let [_, d_state] = l.dims::<2>(&first("A_log"), "[d_inner, d_state]")?;
        let [_, dt_rank] = l.dims::<2>(&first("dt_proj.weight"), "[d_inner, dt_rank]")?;
        let config = MambaConfig {
            vocab_size,
            d_model: d,
            n_layer,
            d_inner: two_di / 2,
            d_state,
            d_conv,
            dt_rank,
            norm_eps: 1e-5,
        };
        config.validate()?;

        let blocks = (0..n_layer).map(|i| load_block(&l, i, &config)).collect::<Result<Vec<_>>>()?;
        let top = Loader { ckpt, prefix: "" };
        Ok(MambaWeights {
            embedding: l.array(embedding_name, &[vocab_size, d])?,
            blocks,
            norm_f_weight: l.array("norm_f.weight", &[d])?,
            lm_head: top.optional("lm_head.weight", &[vocab_size, d])?,
            config,
        })
    }

    /// Seeded random weights of `config`, so examples run without files. As Mamba's
    /// init: linear weights U(±1/sqrt(fan_in)) (out_proj also / sqrt(n_layer)), Δ's bias
    /// the inverse softplus of Δ log-uniform in [0.001, 0.1], `A_log = ln(1..=d_state)`,
    /// D = 1. The norm scales are not ones but 1 + N(0, 0.02²), so that a forward pass
    /// that drops one is visibly wrong.
    pub fn random(config: MambaConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let c = &config;
        let (d, di) = (c.d_model, c.d_inner);
        let fan = |n: usize| 1.0 / (n as f64).sqrt();
        let embedding = rng.normal_array((c.vocab_size, d), 0.02);
        let blocks = (0..c.n_layer)
            .map(|_| {
                let dt_bias = Array1::from_shape_simple_fn(di, || {
                    let dt = rng.uniform(0.001f64.ln(), 0.1f64.ln()).exp().max(1e-4);
                    (dt + (-(-dt).exp_m1()).ln()) as f32
                });
                let a_log = Array2::from_shape_fn((di, c.d_state), |(_, n)| ((n + 1) as f32).ln());
                MambaBlock {
                    norm_weight: rng.normal_array(d, 0.02).mapv(|x| 1.0 + x),
                    mixer: MambaMixer {
                        in_proj_weight: rng.uniform_array((2 * di, d), fan(d)),
                        in_proj_bias: None,
                        conv1d_weight: rng.uniform_array((di, 1, c.d_conv), fan(c.d_conv)),
                        conv1d_bias: rng.uniform_array(di, fan(c.d_conv)),
                        x_proj_weight: rng.uniform_array((c.dt_rank + 2 * c.d_state, di), fan(di)),
                        dt_proj_weight: rng.uniform_array((di, c.dt_rank), fan(c.dt_rank)),
                        dt_proj_bias: dt_bias,
                        a_log,
                        d: Array1::ones(di),
                        out_proj_weight: rng.uniform_array((d, di), fan(di) / (c.n_layer as f64).sqrt()),
                        out_proj_bias: None,
                    },
                }
            })
            .collect();
        let norm_f_weight = rng.normal_array(d, 0.02).mapv(|x| 1.0 + x);
        Ok(MambaWeights { config, embedding, blocks, norm_f_weight, lm_head: None })
    }

    /// The output projection `[vocab, d_model]`: `lm_head`, or the embedding when tied.
    pub fn lm_head(&self) -> &Array2<f32> {
        self.lm_head.as_ref().unwrap_or(&self.embedding)
    }

    /// Every tensor under its state-spaces checkpoint name, in file order.
    pub fn named_tensors(&self) -> Vec<(String, ArrayViewD<'_, f32>)> {
        let mut out = vec![(format!("{PREFIX}{}", EMBEDDING_NAMES[0]), self.embedding.view().into_dyn())];
        for (i, b) in self.blocks.iter().enumerate() {
            let m = &b.mixer;
            let name = |s: &str| format!("{PREFIX}layers.{i}.mixer.{s}");
            out.push((name("in_proj.weight"), m.in_proj_weight.view().into_dyn()));
            if let Some(bias) = &m.in_proj_bias {
                out.push((name("in_proj.bias"), bias.view().into_dyn()));
            }
            out.push((name("conv1d.weight"), m.conv1d_weight.view().into_dyn()));
            out.push((name("conv1d.bias"), m.conv1d_bias.view().into_dyn()));
            out.push((name("x_proj.weight"), m.x_proj_weight.view().into_dyn()));
            out.push((name("dt_proj.weight"), m.dt_proj_weight.view().into_dyn()));
            out.push((name("dt_proj.bias"), m.dt_proj_bias.view().into_dyn()));
            out.push((name("A_log"), m.a_log.view().into_dyn()));
            out.push((name("D"), m.d.view().into_dyn()));
            out.push((name("out_proj.weight"), m.out_proj_weight.view().into_dyn()));
            if let Some(bias) = &m.out_proj_bias {
                out.push((name("out_proj.bias"), bias.view().into_dyn()));
            }
            out.push((format!("{PREFIX}layers.{i}.norm.weight"), b.norm_weight.view().into_dyn()));
        }
        out.push((format!("{PREFIX}norm_f.weight"), self.norm_f_weight.view().into_dyn()));
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

fn load_block(l: &Loader, i: usize, c: &MambaConfig) -> Result<MambaBlock> {
    let (d, di) = (c.d_model, c.d_inner);
    let name = |s: &str| format!("layers.{i}.mixer.{s}");
    Ok(MambaBlock {
        norm_weight: l.array(&format!("layers.{i}.norm.weight"), &[d])?,
        mixer: MambaMixer {
            in_proj_weight: l.array(&name("in_proj.weight"), &[2 * di, d])?,
            in_proj_bias: l.optional(&name("in_proj.bias"), &[2 * di])?,
            conv1d_weight: l.array(&name("conv1d.weight"), &[di, 1, c.d_conv])?,
            conv1d_bias: l.array(&name("conv1d.bias"), &[di])?,
            x_proj_weight: l.array(&name("x_proj.weight"), &[c.dt_rank + 2 * c.d_state, di])?,
            dt_proj_weight: l.array(&name("dt_proj.weight"), &[di, c.dt_rank])?,
            dt_proj_bias: l.array(&name("dt_proj.bias"), &[di])?,
            a_log: l.array(&name("A_log"), &[di, c.d_state])?,
            d: l.array(&name("D"), &[di])?,
            out_proj_weight: l.array(&name("out_proj.weight"), &[d, di])?,
            out_proj_bias: l.optional(&name("out_proj.bias"), &[d])?,
        },
    })
}
