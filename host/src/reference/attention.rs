//! Attention reference in f64: materialises the full masked score matrix of each head,
//! takes a row-wise softmax and multiplies by V. The oracle of the attention tests,
//! written for clarity and independently of the tiled CPU path.

use crate::Element;
use ndarray::{Array2, ArrayD, ArrayView2, Axis, Ix4, IxDyn, s};

/// The options of [`attention`], in f64 (mirrors `attention::AttentionOptions`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionRef {
    /// Keys after the query's (bottom-right aligned) diagonal are masked.
    pub causal: bool,
    /// Keys more than `window_left` before / `window_right` after the diagonal are masked.
    pub window_left: Option<usize>,
    pub window_right: Option<usize>,
    /// Scores become softcap * tanh(score / softcap) (after the scale).
    pub softcap: Option<f64>,
    /// Softmax scale; `None` = 1/sqrt(head_dim).
    pub scale: Option<f64>,
}

/// Whether query `i` sees key `j`: `i + shift - left <= j <= i + shift + right` with
/// `shift = seqlen_k - seqlen_q` (bottom-right alignment), `right = 0` when causal.
pub fn visible(i: usize, j: usize, seqlen_q: usize, seqlen_k: usize, p: &AttentionRef) -> bool {
    // i + shift - j = (i + seqlen_k) - (j + seqlen_q): how far key j is before the diagonal.
    let before = (i + seqlen_k) as i128 - (j + seqlen_q) as i128;
    let right = if p.causal { Some(0) } else { p.window_right };
    let left_ok = p.window_left.is_none_or(|l| before <= l as i128);
    let right_ok = right.is_none_or(|r| -before <= r as i128);
    j < seqlen_k && left_ok && right_ok
}

/// Attention forward. q `[batch, seqlen_q, heads_q, head_dim]`, k and v
/// `[batch, seqlen_k, heads_kv, head_dim]`; query head h uses kv head
/// `h / (heads_q / heads_kv)`. Returns o (q's shape) and lse `[batch, heads_q, seqlen_q]`
/// (natural log). A query that sees no key gets o = 0 and lse = +inf.
///
/// # Panics
/// If the shapes are not as above (this is a test oracle; the library's
/// `attention::forward` validates and returns errors instead).
pub fn attention(q: &ArrayD<f64>, k: &ArrayD<f64>, v: &ArrayD<f64>, p: &AttentionRef) -> (ArrayD<f64>, ArrayD<f64>) {
    let q = q.view().into_dimensionality::<Ix4>().expect("q has 4 dimensions");
    let k = k.view().into_dimensionality::<Ix4>().expect("k has 4 dimensions");
    let v = v.view().into_dimensionality::<Ix4>().expect("v has 4 dimensions");
    let (batch, seqlen_q, heads_q, head_dim) = q.dim();
    let heads_kv = k.dim().2;
    assert_eq!(k.dim(), v.dim(), "k and v have one shape");
    assert!(k.dim().0 == batch && k.dim().3 == head_dim, "k matches q's batch and head_dim");
    assert!(heads_kv > 0 && heads_q % heads_kv == 0, "heads_kv divides heads_q");
    let scale = p.scale.unwrap_or(1.0 / (head_dim as f64).sqrt());

    let mut o = ArrayD::<f64>::zeros(IxDyn(&[batch, seqlen_q, heads_q, head_dim]));
    let mut lse = ArrayD::<f64>::zeros(IxDyn(&[batch, heads_q, seqlen_q]));
    for b in 0..batch {
        for h in 0..heads_q {
            let kvh = h / (heads_q / heads_kv);
            let (q_h, k_h, v_h) = (q.slice(s![b, .., h, ..]), k.slice(s![b, .., kvh, ..]), v.slice(s![b, .., kvh, ..]));
            let (o_h, lse_h) = head(q_h, k_h, v_h, scale, p);
            o.slice_mut(s![b, .., h, ..]).assign(&o_h);
            lse.slice_mut(s![b, h, ..]).assign(&ndarray::Array1::from(lse_h));
        }
    }
    (o, lse)
}

/// One head: q `[seqlen_q, d]`, k and v `[seqlen_k, d]`.
fn head(
    q: ArrayView2<f64>,
    k: ArrayView2<f64>,
    v: ArrayView2<f64>,
    scale: f64,
    p: &AttentionRef,
) -> (Array2<f64>, Vec<f64>) {
    let (seqlen_q, seqlen_k) = (q.nrows(), k.nrows());
    // The full score matrix, scaled, soft-capped and masked.
    let mut scores: Array2<f64> = q.dot(&k.t()) * scale;
    if let Some(cap) = p.softcap {
        scores.mapv_inplace(|s| cap * (s / cap).tanh());
    }
    let mut lse = vec![0.0; seqlen_q];
    for (i, mut row) in scores.axis_iter_mut(Axis(0)).enumerate() {
        let mut any = false;
        for (j, s) in row.iter_mut().enumerate() {
            if visible(i, j, seqlen_q, seqlen_k, p) {
                any = true;
            } else {
                *s = f64::NEG_INFINITY;
            }
        }
        if !any {
            // No visible key: probabilities 0 (so o = 0), lse = +inf.
            row.fill(0.0);
            lse[i] = f64::INFINITY;
            continue;
        }
        // Softmax, shifted by the row max of the visible scores (ignoring NaN; a NaN score
        // makes the row NaN through exp).
        let max = row.iter().fold(f64::NEG_INFINITY, |a, &s| a.max(s));
        let max = if max.is_finite() { max } else { 0.0 };
        row.mapv_inplace(|s| (s - max).exp());
        let sum = row.sum();
        row /= sum;
        lse[i] = max + sum.ln();
    }
    (scores.dot(&v), lse)
}

/// An array of bf16 / f16 / f32 values as f64 (exactly).
pub fn to_f64<T: Element>(a: &ArrayD<T>) -> ArrayD<f64> {
    a.mapv(|x| x.to_f64())
}
