//! GPT-2's forward in f64, straight from its definition (one sequence, every position,
//! the attention as a materialised causal softmax): the oracle of the example's tests.
//! Weights are read through `round` so that the test can give them T's rounding.

use flashscan::models::{Gpt2Linear, Gpt2Weights, LayerNormParams};
use ndarray::{Array2, s};

fn layer_norm(x: &Array2<f64>, p: &LayerNormParams, eps: f64, round: &dyn Fn(f32) -> f64) -> Array2<f64> {
    let mut y = x.clone();
    for mut row in y.rows_mut() {
        let n = row.len() as f64;
        let mean = row.sum() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * rstd * round(p.weight[i]) + round(p.bias[i]);
        }
    }
    y
}

/// x W + b with W `[in, out]` as GPT-2 stores it.
fn linear(x: &Array2<f64>, p: &Gpt2Linear, round: &dyn Fn(f32) -> f64) -> Array2<f64> {
    x.dot(&p.weight.mapv(round)) + &p.bias.mapv(round)
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
}

/// Causal multi-head attention of `qkv` `[n, 3d]` (q, k, v side by side).
fn attention(qkv: &Array2<f64>, heads: usize) -> Array2<f64> {
    let (n, d) = (qkv.nrows(), qkv.ncols() / 3);
    let hd = d / heads;
    let mut o = Array2::zeros((n, d));
    for h in 0..heads {
        let q = qkv.slice(s![.., h * hd..(h + 1) * hd]);
        let k = qkv.slice(s![.., d + h * hd..d + (h + 1) * hd]);
        let v = qkv.slice(s![.., 2 * d + h * hd..2 * d + (h + 1) * hd]);
        for i in 0..n {
            let scores: Vec<f64> = (0..=i).map(|j| q.row(i).dot(&k.row(j)) / (hd as f64).sqrt()).collect();
            let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let p: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
            let sum: f64 = p.iter().sum();
            for (j, pj) in p.iter().enumerate() {
                let mut out = o.slice_mut(s![i, h * hd..(h + 1) * hd]);
                out.scaled_add(pj / sum, &v.row(j));
            }
        }
    }
    o
}

/// The logits `[n, vocab]` of every position of `tokens` (learned positions).
pub fn logits(w: &Gpt2Weights, tokens: &[u32], round: &dyn Fn(f32) -> f64) -> Array2<f64> {
    let c = &w.config;
    let eps = c.layer_norm_eps as f64;
    let wte = w.wte.mapv(round);
    let mut x =
        Array2::from_shape_fn((tokens.len(), c.d_model), |(t, i)| wte[[tokens[t] as usize, i]] + round(w.wpe[[t, i]]));
    for b in &w.blocks {
        let h = layer_norm(&x, &b.ln_1, eps, round);
        let o = attention(&linear(&h, &b.attn_c_attn, round), c.n_head);
        x = x + linear(&o, &b.attn_c_proj, round);
        let h = layer_norm(&x, &b.ln_2, eps, round);
        x = &x + &linear(&linear(&h, &b.mlp_c_fc, round).mapv(gelu_tanh), &b.mlp_c_proj, round);
    }
    let h = layer_norm(&x, &w.ln_f, eps, round);
    h.dot(&wte.t())
}

/// ||a - b|| / ||b||.
pub fn rel(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
    let num: f64 = (a - b).iter().map(|v| v * v).sum();
    let den: f64 = b.iter().map(|v| v * v).sum();
    (num / den).sqrt()
}
