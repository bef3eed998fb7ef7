//! CPU path of the attention backward: the tiled FlashAttention-2 backward that the GPU
//! kernel (`kernels-gpu/src/attention/bwd.rs`) runs, written with plain loops so that it reads next to the kernel.
//!
//! The backward never stores the `seqlen_q x seqlen_k` probabilities: it recomputes them
//! from q, k and the forward's log-sum-exp. Two passes:
//!
//! 1. Preprocess (one small kernel on the GPU): `D_i = rowsum(dO_i * O_i)` in f32 for
//!    every query row, the softmax backward's row term (`D_i = sum_j P_ij dP_ij`).
//! 2. The main pass, one thread block per (key block, kv head, batch). A block keeps its
//!    `BLOCK_N x head_dim` tiles of K and V on chip with f32 accumulators for dK and dV,
//!    and streams the query blocks that see any of its keys (for each query head that
//!    reads its kv head, GQA), `BLOCK_M` rows at a time: Q, dO, lse and D. Per query
//!    block it computes
//!
//!    - `S = Q K^T` (soft-capped and masked as in the forward),
//!    - `P = exp(S - lse)` from the saved lse (a row that saw no key has lse = +inf, so
//!      its P is exactly 0 and it contributes nothing),
//!    - `dV += P^T dO`,
//!    - `dP = dO V^T`, `dS = P * (dP - D)`, times `1 - tanh^2` with a soft cap,
//!    - `dK += dS^T Q`,
//!    - `dQ += dS K`, into an f32 dQ accumulator in HBM: the thread blocks of different
//!      key blocks add to the same dQ rows (with f32 atomics, or into per-split partials
//!      summed in a fixed order in the deterministic mode; see `BackwardOptions`).
//!
//!    At the end of its query blocks the block scales dK by the softmax scale, rounds dK
//!    and dV to the element type and writes them; a last small pass scales and rounds dQ.
//!
//! Precisions as on the GPU: the inputs are bf16 / f16, every product and sum is f32,
//! and the tensor-core operands P (for dV) and dS (for dK and dQ) are rounded to the
//! element type first, as the forward rounds P before P V. The CPU runs one work item per
//! (batch, kv head): the key blocks of that head one after the other, so dQ needs no
//! atomics and every sum runs in an order fixed by the problem (deterministic, whatever
//! the thread count). Items run on as many CPU threads as are available.

use super::cpu::{dot, visible_keys};
use super::{AttentionGrads, Problem};
use crate::parallel::run_parallel;
use crate::{Element, Error, Result, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::f32::consts::LOG2_E;
use std::ops::Range;

/// Query rows per inner step: a key block streams Q, dO, lse and D through shared memory
/// `BLOCK_M` rows at a time, so the score tiles S, P, dP and dS are `BLOCK_M x BLOCK_N`.
pub(super) const BLOCK_M: usize = 64;
/// Keys per thread block: its K, V tiles and dK, dV accumulators are `BLOCK_N x head_dim`.
pub(super) const BLOCK_N: usize = 128;

/// Runs the backward on host arrays that validation has checked against `p`: q, o and
/// dout `[batch, seqlen_q, heads_q, head_dim]`, k and v `[batch, seqlen_k, heads_kv,
/// head_dim]`, lse `[batch, heads_q, seqlen_q]`.
pub(super) fn backward<T: Element>(
    q: &ArrayD<T>,
    k: &ArrayD<T>,
    v: &ArrayD<T>,
    o: &ArrayD<T>,
    lse: &ArrayD<f32>,
    dout: &ArrayD<T>,
    p: &Problem,
) -> Result<AttentionGrads<T>> {
    // The inputs in f32, row-major (`iter` walks any layout in logical order).
    let dout = to_f32(dout);
    let delta = preprocess(&to_f32(o), &dout, p);
    let x = Inputs { q: to_f32(q), k: to_f32(k), v: to_f32(v), dout, lse: lse.iter().copied().collect(), delta };

    let per_item = run_parallel(
        "attn-bwd",
        p.batch * p.heads_kv,
        || Tiles::new(p.head_dim),
        |t, item| kv_head::<T>(&x, p, item / p.heads_kv, item % p.heads_kv, t),
    );

    // Scatter each item's rows into q's layout (dq) and k's layout (dk, dv).
    let (sq, sk, d, hq, hkv) = (p.seqlen_q, p.seqlen_k, p.head_dim, p.heads_q, p.heads_kv);
    let group = hq / hkv;
    let zero = T::from_f32(0.0);
    let mut dq = vec![zero; p.batch * sq * hq * d];
    let mut dk = vec![zero; p.batch * sk * hkv * d];
    let mut dv = vec![zero; p.batch * sk * hkv * d];
    for (item, g) in per_item.into_iter().enumerate() {
        let (b, kvh) = (item / hkv, item % hkv);
        for r in 0..group {
            let h = kvh * group + r;
            for i in 0..sq {
                let (dst, src) = (((b * sq + i) * hq + h) * d, (r * sq + i) * d);
                dq[dst..dst + d].copy_from_slice(&g.dq[src..src + d]);
            }
        }
        for j in 0..sk {
            let dst = ((b * sk + j) * hkv + kvh) * d;
            dk[dst..dst + d].copy_from_slice(&g.dk[j * d..(j + 1) * d]);
            dv[dst..dst + d].copy_from_slice(&g.dv[j * d..(j + 1) * d]);
        }
    }
    Ok(AttentionGrads {
        dq: tensor("dq", &[p.batch, sq, hq, d], dq)?,
        dk: tensor("dk", &[p.batch, sk, hkv, d], dk)?,
        dv: tensor("dv", &[p.batch, sk, hkv, d], dv)?,
    })
}

/// The backward's inputs as row-major f32, plus the preprocessed D.
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
    /// `[batch, heads_q, seqlen_q]`, natural log, +inf for rows that saw no key.
    lse: Vec<f32>,
    /// `[batch, heads_q, seqlen_q]`: rowsum(dO * O).
    delta: Vec<f32>,
}

/// One (batch, kv head)'s gradients, rounded to T: dq of its query heads
/// `[group, seqlen_q, head_dim]`, dk and dv `[seqlen_k, head_dim]`.
struct KvHeadGrads<T> {
    dq: Vec<T>,
    dk: Vec<T>,
    dv: Vec<T>,
}

fn to_f32<T: Element>(a: &ArrayD<T>) -> Vec<f32> {
    a.iter().map(|x| x.to_f32()).collect()
}

/// A CPU tensor of `shape` from row-major `data`. The lengths match by construction; a
/// mismatch is reported as an error on the output `arg` rather than a panic.
fn tensor<E: Element>(arg: &'static str, shape: &[usize], data: Vec<E>) -> Result<Tensor<E>> {
    let len = data.len();
    ArrayD::from_shape_vec(IxDyn(shape), data).map(Tensor::Cpu).map_err(|_| Error::Shape {
        arg,
        got: vec![len],
        expected: format!(
            "{shape:?} (internal error: the CPU attention backward produced the wrong number of elements)"
        ),
    })
}

/// The preprocess pass: `D[b, h, i] = dO[b, i, h] · O[b, i, h]` in f32, `[batch, heads_q,
/// seqlen_q]` (the layout of lse). o and dout are row-major in q's layout.
fn preprocess(o: &[f32], dout: &[f32], p: &Problem) -> Vec<f32> {
    let (sq, hq, d) = (p.seqlen_q, p.heads_q, p.head_dim);
    let mut delta = vec![0f32; p.batch * hq * sq];
    for b in 0..p.batch {
        for i in 0..sq {
            for h in 0..hq {
                let row = ((b * sq + i) * hq + h) * d;
                // The same `dot` as dP = dO V^T below: in a row that sees a single key,
                // O = V of that key exactly, so dP - D is exactly 0 there.
                delta[(b * hq + h) * sq + i] = dot(&dout[row..row + d], &o[row..row + d]);
            }
        }
    }
    delta
}

/// The query blocks that hold a query that sees at least one of the keys `keys`. Query i
/// sees key j when `i + shift - left <= j <= i + shift + right` (shift = seqlen_k -
/// seqlen_q), i.e. when `j - shift - right <= i <= j - shift + left`: the first key's
/// lowest query and the last key's highest bound the range. The kernel does not load the
/// blocks outside it (they are entirely masked for this key block).
fn query_blocks(p: &Problem, keys: Range<usize>) -> Range<usize> {
    let shift = p.seqlen_k as i64 - p.seqlen_q as i64;
    let side = |w: usize| i64::try_from(w).unwrap_or(i64::MAX);
    let lo = p.window_right.map_or(i64::MIN, |r| (keys.start as i64 - shift).saturating_sub(side(r))).max(0);
    let hi = p
        .window_left
        .map_or(i64::MAX, |l| (keys.end as i64 - 1 - shift).saturating_add(side(l)))
        .min(p.seqlen_q as i64 - 1);
    if hi < lo {
        return 0..0;
    }
    (lo as usize / BLOCK_M)..(hi as usize / BLOCK_M + 1)
}

/// The on-chip state of one thread block: the K, V tiles and the dK, dV accumulators of
/// its key block (shared memory and registers), the Q and dO tiles of the current query
/// block with their lse and D, and the score tiles. Allocated once per CPU thread.
struct Tiles {
    /// `BLOCK_N x head_dim` each
    k: Vec<f32>,
    v: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
    /// `BLOCK_M x head_dim` each
    q: Vec<f32>,
    dout: Vec<f32>,
    /// `BLOCK_M x BLOCK_N`: P and dS, each rounded to the element type (the tensor-core
    /// operands of dV += P^T dO and of dK += dS^T Q, dQ += dS K).
    p: Vec<f32>,
    ds: Vec<f32>,
}

impl Tiles {
    fn new(d: usize) -> Self {
        Tiles {
            k: vec![0.0; BLOCK_N * d],
            v: vec![0.0; BLOCK_N * d],
            dk: vec![0.0; BLOCK_N * d],
            dv: vec![0.0; BLOCK_N * d],
            q: vec![0.0; BLOCK_M * d],
            dout: vec![0.0; BLOCK_M * d],
            p: vec![0.0; BLOCK_M * BLOCK_N],
            ds: vec![0.0; BLOCK_M * BLOCK_N],
        }
    }
}

/// The backward for one (batch b, kv head): the work of the kernel's thread blocks (one
/// per key block) for that kv head, one after the other, and the dQ of its query heads.
fn kv_head<T: Element>(x: &Inputs, p: &Problem, b: usize, kvh: usize, t: &mut Tiles) -> KvHeadGrads<T> {
    let (sq, sk, d) = (p.seqlen_q, p.seqlen_k, p.head_dim);
    // GQA / MQA: the consecutive query heads `kvh * group ..` read this kv head.
    let group = p.heads_q / p.heads_kv;
    // Element offsets of query row i of head h in q / dout, of key j of this kv head in k
    // and v, and of row i of head h in lse / D.
    let q_row = |h: usize, i: usize| ((b * sq + i) * p.heads_q + h) * d;
    let kv_row = |j: usize| ((b * sk + j) * p.heads_kv + kvh) * d;
    let stat = |h: usize, i: usize| (b * p.heads_q + h) * sq + i;

    // As in the forward: scores enter the softmax as `score_scale * x` with x = q·k, or
    // x = tanh(q·k * scale / softcap) and score_scale = softcap with a soft cap; in base 2,
    // P = exp2(x * score_scale * log2(e) - lse * log2(e)).
    let (score_scale, pre_tanh) = if p.softcap > 0.0 { (p.softcap, p.scale / p.softcap) } else { (p.scale, 0.0) };
    let scale_log2 = score_scale * LOG2_E;

    let zero = T::from_f32(0.0);
    // dQ of the group's query heads, f32 (the kernel's f32 dQ accumulator in HBM).
    let mut dq_acc = vec![0f32; group * sq * d];
    // Keys that no query sees keep dk = dv = 0.
    let mut out = KvHeadGrads { dq: Vec::new(), dk: vec![zero; sk * d], dv: vec![zero; sk * d] };

    for n0 in (0..sk).step_by(BLOCK_N) {
        let cols = BLOCK_N.min(sk - n0);
        let blocks = query_blocks(p, n0..n0 + cols);
        if blocks.is_empty() {
            // No query sees a key of this block: dk = dv = 0, as initialised.
            continue;
        }

        // Load the K and V tiles; reset the dK and dV accumulators.
        for c in 0..cols {
            let src = kv_row(n0 + c);
            t.k[c * d..(c + 1) * d].copy_from_slice(&x.k[src..src + d]);
            t.v[c * d..(c + 1) * d].copy_from_slice(&x.v[src..src + d]);
        }
        t.dk.fill(0.0);
        t.dv.fill(0.0);

        for r in 0..group {
            let h = kvh * group + r;
            for m_block in blocks.clone() {
                let m0 = m_block * BLOCK_M;
                let rows = BLOCK_M.min(sq - m0);

                // Load the Q and dO tiles.
                for i in 0..rows {
                    let src = q_row(h, m0 + i);
                    t.q[i * d..(i + 1) * d].copy_from_slice(&x.q[src..src + d]);
                    t.dout[i * d..(i + 1) * d].copy_from_slice(&x.dout[src..src + d]);
                }

                for i in 0..rows {
                    let (q_i, do_i) = (&t.q[i * d..(i + 1) * d], &t.dout[i * d..(i + 1) * d]);
                    // lse in base 2 (+inf for a row that saw no key) and D of this row.
                    let lse_log2 = x.lse[stat(h, m0 + i)] * LOG2_E;
                    let delta = x.delta[stat(h, m0 + i)];
                    let (lo, hi) = visible_keys(p, m0 + i);
                    for c in 0..cols {
                        // S = Q K^T, the soft cap (keeping its derivative), the mask.
                        let mut s = dot(q_i, &t.k[c * d..(c + 1) * d]);
                        let mut dcap = 1.0;
                        if p.softcap > 0.0 {
                            s = (s * pre_tanh).tanh();
                            dcap = 1.0 - s * s;
                        }
                        let j = (n0 + c) as i64;
                        if j < lo || j > hi {
                            s = f32::NEG_INFINITY;
                        }
                        // P = exp(S - lse): exactly 0 for masked keys (S = -inf) and for
                        // rows without keys (lse = +inf).
                        let prob = s.mul_add(scale_log2, -lse_log2).exp2();
                        // dP = dO V^T, and the softmax (and soft cap) backward.
                        let dp = dot(do_i, &t.v[c * d..(c + 1) * d]);
                        let ds = prob * (dp - delta) * dcap;
                        t.p[i * BLOCK_N + c] = T::from_f32(prob).to_f32();
                        t.ds[i * BLOCK_N + c] = T::from_f32(ds).to_f32();
                    }

                    // dV += P^T dO and dK += dS^T Q (this row's share), dQ += dS K.
                    let dq_i = &mut dq_acc[(r * sq + m0 + i) * d..(r * sq + m0 + i + 1) * d];
                    for c in 0..cols {
                        let (prob, ds) = (t.p[i * BLOCK_N + c], t.ds[i * BLOCK_N + c]);
                        axpy(&mut t.dv[c * d..(c + 1) * d], prob, do_i);
                        axpy(&mut t.dk[c * d..(c + 1) * d], ds, q_i);
                        axpy(dq_i, ds, &t.k[c * d..(c + 1) * d]);
                    }
                }
            }
        }

        // Epilogue of the key block: dK takes the softmax scale (S = scale * Q K^T, or the
        // same inside the soft cap's tanh); round and write dK and dV.
        for c in 0..cols {
            let (dst, acc) = ((n0 + c) * d, c * d);
            for e in 0..d {
                out.dk[dst + e] = T::from_f32(t.dk[acc + e] * p.scale);
                out.dv[dst + e] = T::from_f32(t.dv[acc + e]);
            }
        }
    }

    // The dQ postprocess: scale and round.
    out.dq = dq_acc.iter().map(|&a| T::from_f32(a * p.scale)).collect();
    out
}

/// `y += a * x` in f32 (plain multiply and add, as `dot`).
fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(seqlen_q: usize, seqlen_k: usize, left: Option<usize>, right: Option<usize>) -> Problem {
        Problem {
            batch: 1,
            seqlen_q,
            seqlen_k,
            heads_q: 1,
            heads_kv: 1,
            head_dim: 8,
            scale: 1.0,
            softcap: 0.0,
            window_left: left,
            window_right: right,
        }
    }

    /// `query_blocks` against a brute-force scan of the visibility rule.
    #[test]
    fn query_blocks_cover_exactly_the_blocks_with_a_visible_pair() {
        let windows = [None, Some(0), Some(1), Some(63), Some(64), Some(130), Some(usize::MAX)];
        for (sq, sk) in [(1, 1), (1, 300), (300, 1), (200, 200), (129, 257), (257, 129), (64, 128)] {
            for left in windows {
                for right in windows {
                    let p = problem(sq, sk, left, right);
                    for n0 in (0..sk).step_by(BLOCK_N) {
                        let keys = n0..BLOCK_N.min(sk - n0) + n0;
                        let sees = |m: usize| {
                            (m * BLOCK_M..sq.min((m + 1) * BLOCK_M)).any(|i| {
                                let (lo, hi) = visible_keys(&p, i);
                                keys.clone().any(|j| lo <= j as i64 && j as i64 <= hi)
                            })
                        };
                        let want: Vec<usize> = (0..sq.div_ceil(BLOCK_M)).filter(|&m| sees(m)).collect();
                        let got: Vec<usize> = query_blocks(&p, keys.clone()).collect();
                        assert_eq!(got, want, "sq {sq} sk {sk} window ({left:?}, {right:?}) keys {keys:?}");
                    }
                }
            }
        }
    }
}
