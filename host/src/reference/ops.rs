//! The elementwise operators and the rotary embedding in f64, straight from their
//! definitions: the oracles of the ops tests.

use crate::ops::{EwOp, RotaryStyle};
use ndarray::ArrayD;

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The op of one element (x already biased), in f64. Softplus has no threshold here
/// (above 20, ln(1 + e^x) and x differ by < 3e-9).
pub fn apply(op: EwOp, x: f64, z: f64) -> f64 {
    match op {
        EwOp::Identity => x,
        EwOp::Silu => x * sigmoid(x),
        EwOp::GeluTanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
        EwOp::Softplus => {
            if x > 30.0 {
                x + (-x).exp()
            } else {
                x.exp().ln_1p()
            }
        }
        EwOp::Add => x + z,
        EwOp::MulSilu => x * z * sigmoid(z),
    }
}

/// `op(x + bias[col], z)` over x (any shape; bias along the last axis).
pub fn elementwise(op: EwOp, x: &ArrayD<f64>, z: Option<&ArrayD<f64>>, bias: Option<&[f64]>) -> ArrayD<f64> {
    let cols = x.shape().last().copied().unwrap_or(1).max(1);
    let zs: Vec<f64> = z.map_or_else(Vec::new, |z| z.iter().copied().collect());
    let mut out = x.clone();
    for (i, v) in out.iter_mut().enumerate() {
        let xv = *v + bias.map_or(0.0, |b| b[i % cols]);
        *v = apply(op, xv, zs.get(i).copied().unwrap_or(0.0));
    }
    out
}

/// The rotary angles `p * base^(-2i / rot_dim)`, row-major `[max_positions, rot_dim / 2]`.
pub fn rotary_angles(max_positions: usize, rot_dim: usize, base: f64) -> Vec<f64> {
    let half = rot_dim / 2;
    let mut v = Vec::with_capacity(max_positions * half);
    for p in 0..max_positions {
        for i in 0..half {
            v.push(p as f64 * base.powf(-2.0 * i as f64 / rot_dim as f64));
        }
    }
    v
}

/// The rotary embedding of x `[batch, seqlen, heads, head_dim]` (first rot_dim features
/// of each head), token t at position `position_offset + t`, angles in f64.
pub fn rotary(x: &ArrayD<f64>, rot_dim: usize, base: f64, position_offset: usize, style: RotaryStyle) -> ArrayD<f64> {
    let s = x.shape();
    let (seqlen, heads, hd) = (s[1], s[2], s[3]);
    let half = rot_dim / 2;
    let xs: Vec<f64> = x.iter().copied().collect();
    let mut out = x.clone();
    for (i, o) in out.iter_mut().enumerate() {
        let (row, j) = (i / hd, i % hd);
        if j >= rot_dim {
            continue;
        }
        let pos = position_offset + (row / heads) % seqlen;
        let (pair, a, b, first) = match style {
            RotaryStyle::NeoX if j < half => (j, i, i + half, true),
            RotaryStyle::NeoX => (j - half, i - half, i, false),
            RotaryStyle::Interleaved if j % 2 == 0 => (j / 2, i, i + 1, true),
            RotaryStyle::Interleaved => (j / 2, i - 1, i, false),
        };
        let angle = pos as f64 * base.powf(-2.0 * pair as f64 / rot_dim as f64);
        let (c, sn) = (angle.cos(), angle.sin());
        *o = if first { xs[a] * c - xs[b] * sn } else { xs[b] * c + xs[a] * sn };
    }
    out
}
