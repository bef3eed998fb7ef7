//! GPT-2's weights placed on a device in the run's element type: the projections as
//! GPT-2 stores them (`[in, out]`, `WeightLayout::InOut`), the fused q/k/v projection
//! split into three (so that each output is already `[batch, seqlen, heads, head_dim]`
//! without a copy), the tied LM head `[vocab, d]` (`OutIn`). The token and position
//! embeddings stay on the host in f32: a step looks up a few rows and uploads them.

use flashscan::models::{Gpt2Config, Gpt2Linear, Gpt2Weights, LayerNormParams};
use flashscan::ops::{RotaryTables, rotary_tables};
use flashscan::{Device, Element, Result, Tensor};
use ndarray::{Array2, ArrayView, Dimension, s};

/// How token positions enter the model.
pub enum Positions {
    /// GPT-2's learned embedding `wpe`, added to the token embedding (host, f32).
    Learned(Array2<f32>),
    /// Rotary embedding of q and k (GPT-NeoX style, the whole head), tables on the device.
    Rotary(RotaryTables),
}

/// A linear layer on the device: weight `[in, out]`, bias `[out]`.
pub struct Proj<T: Element> {
    pub w: Tensor<T>,
    pub b: Tensor<T>,
}

/// LayerNorm's scale and shift on the device.
pub struct Norm<T: Element> {
    pub w: Tensor<T>,
    pub b: Tensor<T>,
}

pub struct Layer<T: Element> {
    pub ln_1: Norm<T>,
    pub q: Proj<T>,
    pub k: Proj<T>,
    pub v: Proj<T>,
    pub out: Proj<T>,
    pub ln_2: Norm<T>,
    pub fc_1: Proj<T>,
    pub fc_2: Proj<T>,
}

pub struct GptModel<T: Element> {
    pub config: Gpt2Config,
    pub device: Device,
    /// `[vocab, d]` f32 on the host: the embedding lookup.
    pub wte_host: Array2<f32>,
    pub positions: Positions,
    /// Positions the model can take: `n_ctx` with learned positions, the rotary tables'
    /// length otherwise.
    pub max_positions: usize,
    pub layers: Vec<Layer<T>>,
    pub ln_f: Norm<T>,
    /// `[vocab, d]` on the device (`lm_head`, or `wte` when tied).
    pub lm_head: Tensor<T>,
}

/// `a` rounded to T and placed on `device`.
pub fn upload<T: Element, D: Dimension>(a: ArrayView<'_, f32, D>, device: Device) -> Result<Tensor<T>> {
    Tensor::from_array(a.mapv(T::from_f32).into_dyn(), device)
}

fn norm<T: Element>(p: &LayerNormParams, device: Device) -> Result<Norm<T>> {
    Ok(Norm { w: upload(p.weight.view(), device)?, b: upload(p.bias.view(), device)? })
}

/// Columns `cols` of a GPT-2 linear layer (all of them for `..`).
fn proj<T: Element>(p: &Gpt2Linear, cols: std::ops::Range<usize>, device: Device) -> Result<Proj<T>> {
    Ok(Proj { w: upload(p.weight.slice(s![.., cols.clone()]), device)?, b: upload(p.bias.slice(s![cols]), device)? })
}

impl<T: Element> GptModel<T> {
    /// The model of `w` on `device`. `rotary_positions`: `Some(n)` replaces the learned
    /// positions by rotary embedding over n positions (random weights: GPT-2 was trained
    /// with learned ones); `None` keeps `wpe` (n_ctx positions).
    pub fn new(w: &Gpt2Weights, rotary_positions: Option<usize>, device: Device) -> Result<Self> {
        let c = &w.config;
        let d = c.d_model;
        let layers = w
            .blocks
            .iter()
            .map(|b| {
                Ok(Layer {
                    ln_1: norm(&b.ln_1, device)?,
                    q: proj(&b.attn_c_attn, 0..d, device)?,
                    k: proj(&b.attn_c_attn, d..2 * d, device)?,
                    v: proj(&b.attn_c_attn, 2 * d..3 * d, device)?,
                    out: proj(&b.attn_c_proj, 0..d, device)?,
                    ln_2: norm(&b.ln_2, device)?,
                    fc_1: proj(&b.mlp_c_fc, 0..c.d_mlp(), device)?,
                    fc_2: proj(&b.mlp_c_proj, 0..d, device)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let (positions, max_positions) = match rotary_positions {
            Some(n) => (Positions::Rotary(rotary_tables(n, c.head_dim(), 10000.0, device)?), n),
            None => (Positions::Learned(w.wpe.clone()), c.n_ctx),
        };
        Ok(GptModel {
            config: c.clone(),
            device,
            wte_host: w.wte.clone(),
            positions,
            max_positions,
            layers,
            ln_f: norm(&w.ln_f, device)?,
            lm_head: upload(w.lm_head().view(), device)?,
        })
    }
}
