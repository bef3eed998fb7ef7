//! CPU path of the attention forward: the GPU kernel's tiled algorithm (FlashAttention-2),
//! written with plain loops so that it reads next to the kernel.
//!
//! The kernel launches one thread block per (query block, head, batch). A block keeps its
//! `BLOCK_M x head_dim` tile of Q on chip, streams K and V through shared memory
//! `BLOCK_N` keys at a time, and never writes the `seqlen_q x seqlen_k` score matrix to
//! HBM. Per key block it computes
//!
//! 1. `S = Q K^T` (a `BLOCK_M x BLOCK_N` f32 tile; tensor cores on the GPU),
//! 2. the soft cap, if any, and the mask (-inf for keys the query may not see),
//! 3. the online softmax in base 2: the running row max `m` grows, the accumulator and the
//!    running sum `l` are rescaled by `exp2(m_old - m_new)`, and `P = exp2(S - m)`,
//! 4. `O += P V` with P rounded to the input element type (the tensor-core operand type).
//!
//! At the end `o = O / l` and `lse = m + log(l)` (natural log). The CPU does the same
//! arithmetic in the same precisions, so its results track the GPU's closely; only the
//! order of the f32 sums differs. Each (batch, head) pair is independent, like the
//! kernel's blocks: this path runs them on as many CPU threads as are available.

use super::Problem;
use crate::Element;
use crate::parallel::run_parallel;
use ndarray::{ArrayD, IxDyn};
use std::f32::consts::LOG2_E;
use std::ops::Range;

/// Query rows per tile: one thread block of the kernel owns `BLOCK_M` rows of one
/// (batch, head); its Q tile and O accumulator are `BLOCK_M x head_dim`.
pub(super) const BLOCK_M: usize = 64;
/// Keys per tile: K and V pass through shared memory as `BLOCK_N x head_dim` tiles, so a
/// score tile is `BLOCK_M x BLOCK_N`.
pub(super) const BLOCK_N: usize = 64;

/// Runs the forward on host arrays that validation has checked against `p`.
/// Returns o (`[batch, seqlen_q, heads_q, head_dim]`, T) and lse (`[batch, heads_q, seqlen_q]`).
pub(super) fn forward<T: Element>(
    q: &ArrayD<T>,
    k: &ArrayD<T>,
    v: &ArrayD<T>,
    p: &Problem,
) -> (ArrayD<T>, ArrayD<f32>) {
    // The inputs in f32, row-major (`iter` walks any layout in logical order). The kernel
    // converts on the fly as tiles are used; converting once here keeps the loops simple.
    let inputs = Inputs { q: to_f32(q), k: to_f32(k), v: to_f32(v) };

    // Work items: (batch, head) pairs, each thread with one set of tiles.
    let heads = run_parallel(
        "attn",
        p.batch * p.heads_q,
        || Tiles::new(p.head_dim),
        |tiles, item| head::<T>(&inputs, p, item / p.heads_q, item % p.heads_q, tiles),
    );

    // Scatter each head's rows into o (q's layout) and lse ([batch, heads_q, seqlen_q]).
    let (sq, d, hq) = (p.seqlen_q, p.head_dim, p.heads_q);
    let mut o = vec![T::from_f32(0.0); p.batch * sq * hq * d];
    let mut lse = vec![0f32; p.batch * hq * sq];
    for (item, head) in heads.into_iter().enumerate() {
        let (b, h) = (item / hq, item % hq);
        for i in 0..sq {
            let dst = ((b * sq + i) * hq + h) * d;
            o[dst..dst + d].copy_from_slice(&head.o[i * d..(i + 1) * d]);
        }
        lse[item * sq..(item + 1) * sq].copy_from_slice(&head.lse);
    }
    (
        ArrayD::from_shape_vec(IxDyn(&[p.batch, sq, hq, d]), o)
            .expect("o has batch * seqlen_q * heads_q * head_dim elements"),
        ArrayD::from_shape_vec(IxDyn(&[p.batch, hq, sq]), lse).expect("lse has batch * heads_q * seqlen_q elements"),
    )
}

/// q, k, v as row-major f32.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

/// One (batch, head)'s output: o `[seqlen_q, head_dim]` and lse `[seqlen_q]`.
struct HeadOutput<T> {
    o: Vec<T>,
    lse: Vec<f32>,
}

fn to_f32<T: Element>(a: &ArrayD<T>) -> Vec<f32> {
    a.iter().map(|x| x.to_f32()).collect()
}

/// The on-chip state of one thread block: what the kernel keeps in shared memory (Q, K, V
/// tiles) and registers (scores, accumulator, row statistics). Allocated once per thread.
struct Tiles {
    /// `BLOCK_M x head_dim`
    q: Vec<f32>,
    /// `BLOCK_N x head_dim` each
    k: Vec<f32>,
    v: Vec<f32>,
    /// `BLOCK_M x BLOCK_N`: the scores S, then the probabilities P in place.
    s: Vec<f32>,
    /// `BLOCK_M x head_dim`: the unnormalised output accumulator O.
    acc: Vec<f32>,
    /// `BLOCK_M`: running row max (in score units, before the scale) and running row sum.
    m: Vec<f32>,
    l: Vec<f32>,
}

impl Tiles {
    fn new(d: usize) -> Self {
        Tiles {
            q: vec![0.0; BLOCK_M * d],
            k: vec![0.0; BLOCK_N * d],
            v: vec![0.0; BLOCK_N * d],
            s: vec![0.0; BLOCK_M * BLOCK_N],
            acc: vec![0.0; BLOCK_M * d],
            m: vec![0.0; BLOCK_M],
            l: vec![0.0; BLOCK_M],
        }
    }
}

/// The keys query `i` may see, as an inclusive range of signed key indices
/// `[i + shift - left, i + shift + right]`, shift = seqlen_k - seqlen_q (bottom-right
/// alignment). Unbounded sides saturate; the caller also bounds j by [0, seqlen_k).
pub(super) fn visible_keys(p: &Problem, i: usize) -> (i64, i64) {
    let diag = i as i64 + p.seqlen_k as i64 - p.seqlen_q as i64;
    let lo = p.window_left.map_or(i64::MIN, |w| diag.saturating_sub(i64::try_from(w).unwrap_or(i64::MAX)));
    let hi = p.window_right.map_or(i64::MAX, |w| diag.saturating_add(i64::try_from(w).unwrap_or(i64::MAX)));
    (lo, hi)
}

/// The key blocks that hold a key visible to at least one of the query rows `rows`.
/// Blocks outside this range are entirely masked for the whole query block, and the kernel
/// does not load them (this is what makes causal attention about twice as fast).
fn key_blocks(p: &Problem, rows: Range<usize>) -> Range<usize> {
    // The window of the first row starts earliest; the window of the last row ends latest.
    let lo = visible_keys(p, rows.start).0.max(0);
    let hi = visible_keys(p, rows.end - 1).1.min(p.seqlen_k as i64 - 1);
    if hi < lo {
        return 0..0;
    }
    (lo as usize / BLOCK_N)..(hi as usize / BLOCK_N + 1)
}

/// Attention for one (batch b, query head h): the work of the kernel's thread blocks
/// (one per query block) for that head, one after the other.
fn head<T: Element>(x: &Inputs, p: &Problem, b: usize, h: usize, t: &mut Tiles) -> HeadOutput<T> {
    let (sq, sk, d) = (p.seqlen_q, p.seqlen_k, p.head_dim);
    // GQA / MQA: consecutive query heads share one kv head.
    let kvh = h / (p.heads_q / p.heads_kv);
    // Element offsets of row i of this head in q, and of key j of its kv head in k and v.
    let q_row = |i: usize| ((b * sq + i) * p.heads_q + h) * d;
    let kv_row = |j: usize| ((b * sk + j) * p.heads_kv + kvh) * d;

    // Scores enter the softmax as `score_scale * x`: without a soft cap x = q·k and the
    // scale is the softmax scale; with one, x = tanh(q·k * scale / softcap) and the scale
    // is softcap (so that score_scale * x = softcap * tanh(scale * q·k / softcap)).
    // The kernel works in base 2 (ex2 is one instruction): exp(score_scale * x) =
    // exp2(x * score_scale * log2(e)), with the scale folded into one multiply-add.
    let (score_scale, pre_tanh) = if p.softcap > 0.0 { (p.softcap, p.scale / p.softcap) } else { (p.scale, 0.0) };
    let scale_log2 = score_scale * LOG2_E;

    let mut out = HeadOutput { o: vec![T::from_f32(0.0); sq * d], lse: vec![f32::INFINITY; sq] };

    for m0 in (0..sq).step_by(BLOCK_M) {
        let rows = BLOCK_M.min(sq - m0);
        let blocks = key_blocks(p, m0..m0 + rows);
        if blocks.is_empty() {
            // No query of this block sees any key: o = 0 and lse = +inf, as initialised.
            continue;
        }

        // Load the Q tile; reset the accumulator and the row statistics.
        for i in 0..rows {
            t.q[i * d..(i + 1) * d].copy_from_slice(&x.q[q_row(m0 + i)..q_row(m0 + i) + d]);
        }
        t.acc.fill(0.0);
        t.m.fill(f32::NEG_INFINITY);
        t.l.fill(0.0);

        for n_block in blocks {
            let n0 = n_block * BLOCK_N;
            let cols = BLOCK_N.min(sk - n0);

            // Load the K and V tiles (cp.async into shared memory on the GPU).
            for c in 0..cols {
                let src = kv_row(n0 + c);
                t.k[c * d..(c + 1) * d].copy_from_slice(&x.k[src..src + d]);
                t.v[c * d..(c + 1) * d].copy_from_slice(&x.v[src..src + d]);
            }

            for i in 0..rows {
                let q_i = &t.q[i * d..(i + 1) * d];
                let s_i = &mut t.s[i * BLOCK_N..i * BLOCK_N + cols];

                // 1. S = Q K^T for this row, f32 accumulation.
                for (c, s) in s_i.iter_mut().enumerate() {
                    *s = dot(q_i, &t.k[c * d..(c + 1) * d]);
                }
                // 2a. Soft cap.
                if p.softcap > 0.0 {
                    for s in s_i.iter_mut() {
                        *s = (*s * pre_tanh).tanh();
                    }
                }
                // 2b. Mask: keys outside [lo, hi] get -inf (so exp2 gives exactly 0).
                let (lo, hi) = visible_keys(p, m0 + i);
                for (c, s) in s_i.iter_mut().enumerate() {
                    let j = (n0 + c) as i64;
                    if j < lo || j > hi {
                        *s = f32::NEG_INFINITY;
                    }
                }

                // 3. Online softmax. The max ignores NaN (like the GPU's max instruction);
                // a NaN score still reaches P, O and l through exp2.
                let m_old = t.m[i];
                let m_new = s_i.iter().fold(m_old, |a, &s| a.max(s));
                // A row that has seen only masked keys keeps max -inf; subtracting 0 instead
                // keeps its P at exactly 0 and avoids -inf - -inf = NaN.
                let m_sub = if m_new == f32::NEG_INFINITY { 0.0 } else { m_new };
                // Rescale what was accumulated under the old max (0 when m_old = -inf: the
                // accumulator is still 0 then).
                let rescale = ((m_old - m_sub) * scale_log2).exp2();
                t.l[i] *= rescale;
                for a in &mut t.acc[i * d..(i + 1) * d] {
                    *a *= rescale;
                }
                t.m[i] = m_new;

                let m_scaled = m_sub * scale_log2;
                let mut row_sum = 0.0f32;
                for s in s_i.iter_mut() {
                    let prob = s.mul_add(scale_log2, -m_scaled).exp2();
                    // l sums the f32 probabilities; the P·V product takes P rounded to the
                    // element type, as the tensor cores do.
                    row_sum += prob;
                    *s = T::from_f32(prob).to_f32();
                }
                t.l[i] += row_sum;

                // 4. O += P V.
                let acc_i = &mut t.acc[i * d..(i + 1) * d];
                for (c, &prob) in s_i.iter().enumerate() {
                    for (a, &vv) in acc_i.iter_mut().zip(&t.v[c * d..(c + 1) * d]) {
                        *a += prob * vv;
                    }
                }
            }
        }

        // Epilogue: normalise, round to the element type, write o and lse.
        for i in 0..rows {
            let l = t.l[i];
            let o_i = &mut out.o[(m0 + i) * d..(m0 + i + 1) * d];
            if l == 0.0 {
                // No visible key: o = 0, lse = +inf (already there).
                continue;
            }
            let inv_l = 1.0 / l;
            for (o, &a) in o_i.iter_mut().zip(&t.acc[i * d..(i + 1) * d]) {
                *o = T::from_f32(a * inv_l);
            }
            // l = sum exp(score_scale * (x - m)), so log(sum exp(score_scale * x)) =
            // score_scale * m + ln(l). NaN rows stay NaN.
            out.lse[m0 + i] = t.m[i] * score_scale + l.ln();
        }
    }
    out
}

/// `a · b` in f32 with eight independent partial sums (the compiler vectorises them; the
/// head dimension is a multiple of 8). Plain multiply and add: `mul_add` is a library
/// call on CPUs built without FMA.
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut part = [0.0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            part[l] += x[l] * y[l];
        }
    }
    part.iter().sum::<f32>() + tail
}
