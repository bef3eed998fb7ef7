//! Attention reference in f64: materialises the full masked score matrix of each head,
//! takes a row-wise softmax and multiplies by V; the backward materialises the
//! probabilities and the gradients of the scores the same way. The oracle of the
//! attention tests, written for clarity and independently of the tiled CPU path.

use crate::Element;
use ndarray::{Array1, Array2, ArrayD, ArrayView2, Axis, Ix4, IxDyn, s};

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
    let (probs, lse) = probabilities(q, k, scale, p);
    (probs.dot(&v), lse)
}

/// The softmax probabilities P `[seqlen_q, seqlen_k]` of one head (0 for masked keys, a
/// row of zeros for a query that sees no key) and the row log-sum-exp (+inf for such a
/// query).
fn probabilities(q: ArrayView2<f64>, k: ArrayView2<f64>, scale: f64, p: &AttentionRef) -> (Array2<f64>, Vec<f64>) {
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
    (scores, lse)
}

/// Attention backward: the gradients of a loss with respect to q, k and v, given its
/// gradient `dout` with respect to o (q's shape). Same layouts, options and GQA mapping
/// as [`attention`]. Returns (dq, dk, dv), shaped like q, k and v.
///
/// Per head, with P the softmax probabilities of [`attention`] (masked entries 0) and
/// O = P V:
///
/// ```text
/// dV = P^T dO
/// dP = dO V^T
/// dS = P * (dP - D)              D_i = sum_j P_ij dP_ij  (= dO_i · O_i)
/// dS_pre = dS * (1 - tanh^2(s / softcap))   with a soft cap (s = scale * q·k), else dS
/// dQ = scale * dS_pre K
/// dK = scale * dS_pre^T Q
/// ```
///
/// A query that sees no key has P = 0 in its row, so it contributes nothing to dK and dV
/// and its dQ row is 0, whatever its dout. With GQA, dk and dv of a kv head are the sums
/// over the query heads that read it.
///
/// # Panics
/// If the shapes are not as for [`attention`] or dout's shape is not q's.
pub fn attention_backward(
    q: &ArrayD<f64>,
    k: &ArrayD<f64>,
    v: &ArrayD<f64>,
    dout: &ArrayD<f64>,
    p: &AttentionRef,
) -> (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>) {
    backward(q, k, v, None, dout, p)
}

/// [`attention_backward`] with the softmax's row term taken from a given o (q's shape):
/// `D_i = dO_i · o_i` instead of the exact `dO_i · (P V)_i`. A FlashAttention backward
/// reads D from the forward's saved o, rounded to the element type; this is the exact
/// gradient formula evaluated on that o, the oracle for such a backward. It equals
/// [`attention_backward`] when o is the exact output.
///
/// The two differ by `-scale * (D_given - D) P K` in dq (and the matching term in dk),
/// which can be large relative to dq: where a row's softmax is nearly one-hot, dS is
/// tiny, while an o accurate to the element type (relative error u) moves D by about
/// `u |dO| |o|`. No backward that reads a rounded o can undo that; comparing it with
/// this function measures only what it adds itself.
///
/// # Panics
/// As [`attention_backward`], and if o's shape is not q's.
pub fn attention_backward_given_o(
    q: &ArrayD<f64>,
    k: &ArrayD<f64>,
    v: &ArrayD<f64>,
    o: &ArrayD<f64>,
    dout: &ArrayD<f64>,
    p: &AttentionRef,
) -> (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>) {
    backward(q, k, v, Some(o), dout, p)
}

/// Both backwards: D from `o` when given, else the exact D.
fn backward(
    q: &ArrayD<f64>,
    k: &ArrayD<f64>,
    v: &ArrayD<f64>,
    o: Option<&ArrayD<f64>>,
    dout: &ArrayD<f64>,
    p: &AttentionRef,
) -> (ArrayD<f64>, ArrayD<f64>, ArrayD<f64>) {
    let q = q.view().into_dimensionality::<Ix4>().expect("q has 4 dimensions");
    let k = k.view().into_dimensionality::<Ix4>().expect("k has 4 dimensions");
    let v = v.view().into_dimensionality::<Ix4>().expect("v has 4 dimensions");
    let dout = dout.view().into_dimensionality::<Ix4>().expect("dout has 4 dimensions");
    let o = o.map(|o| o.view().into_dimensionality::<Ix4>().expect("o has 4 dimensions"));
    let (batch, seqlen_q, heads_q, head_dim) = q.dim();
    let (seqlen_k, heads_kv) = (k.dim().1, k.dim().2);
    assert_eq!(dout.dim(), q.dim(), "dout has q's shape");
    assert!(o.is_none_or(|o| o.dim() == q.dim()), "o has q's shape");
    assert_eq!(k.dim(), v.dim(), "k and v have one shape");
    assert!(k.dim().0 == batch && k.dim().3 == head_dim, "k matches q's batch and head_dim");
    assert!(heads_kv > 0 && heads_q % heads_kv == 0, "heads_kv divides heads_q");
    let scale = p.scale.unwrap_or(1.0 / (head_dim as f64).sqrt());

    let mut dq = ArrayD::<f64>::zeros(IxDyn(&[batch, seqlen_q, heads_q, head_dim]));
    let mut dk = ArrayD::<f64>::zeros(IxDyn(&[batch, seqlen_k, heads_kv, head_dim]));
    let mut dv = ArrayD::<f64>::zeros(IxDyn(&[batch, seqlen_k, heads_kv, head_dim]));
    for b in 0..batch {
        for h in 0..heads_q {
            let kvh = h / (heads_q / heads_kv);
            let (q_h, k_h, v_h) = (q.slice(s![b, .., h, ..]), k.slice(s![b, .., kvh, ..]), v.slice(s![b, .., kvh, ..]));
            let o_h = o.as_ref().map(|o| o.slice(s![b, .., h, ..]));
            let (dq_h, dk_h, dv_h) = head_backward(q_h, k_h, v_h, o_h, dout.slice(s![b, .., h, ..]), scale, p);
            dq.slice_mut(s![b, .., h, ..]).assign(&dq_h);
            // GQA: every query head of the group adds its share.
            let mut dk_slot = dk.slice_mut(s![b, .., kvh, ..]);
            dk_slot += &dk_h;
            let mut dv_slot = dv.slice_mut(s![b, .., kvh, ..]);
            dv_slot += &dv_h;
        }
    }
    (dq, dk, dv)
}

/// The backward of one head: q, dout and o `[seqlen_q, d]`, k and v `[seqlen_k, d]`.
fn head_backward(
    q: ArrayView2<f64>,
    k: ArrayView2<f64>,
    v: ArrayView2<f64>,
    o: Option<ArrayView2<f64>>,
    dout: ArrayView2<f64>,
    scale: f64,
    p: &AttentionRef,
) -> (Array2<f64>, Array2<f64>, Array2<f64>) {
    let (probs, _) = probabilities(q, k, scale, p);
    let dv = probs.t().dot(&dout);
    // dP = dO V^T, one dot product per entry: the same dot as D from a given o below, so
    // that dP_ij - D_i is exactly 0 where o_i = v_j.
    let dp = Array2::from_shape_fn((q.nrows(), k.nrows()), |(i, j)| dout.row(i).dot(&v.row(j)));
    // The softmax backward's row term. Exactly, D_i = sum_j P_ij dP_ij (= dO_i · O_i, as
    // O = P V); computed that way, dS is exactly 0 in a row that sees a single key (P = 1
    // there).
    let d_rows = match o {
        None => (&probs * &dp).sum_axis(Axis(1)),
        Some(o) => Array1::from_shape_fn(q.nrows(), |i| dout.row(i).dot(&o.row(i))),
    };
    let mut ds = &probs * &(&dp - &d_rows.insert_axis(Axis(1)));
    if let Some(cap) = p.softcap {
        // The soft cap's chain rule: d(cap * tanh(s / cap)) / ds = 1 - tanh^2(s / cap), on
        // the scaled scores s before the cap (masked entries have dS = 0 already).
        let pre_cap: Array2<f64> = q.dot(&k.t()) * scale;
        ds.zip_mut_with(&pre_cap, |g, &s| *g *= 1.0 - (s / cap).tanh().powi(2));
    }
    // s = scale * q·k: the scale enters both dQ and dK once.
    let dq = ds.dot(&k) * scale;
    let dk = ds.t().dot(&q) * scale;
    (dq, dk, dv)
}

/// An array of bf16 / f16 / f32 values as f64 (exactly).
pub fn to_f64<T: Element>(a: &ArrayD<T>) -> ArrayD<f64> {
    a.mapv(|x| x.to_f64())
}
