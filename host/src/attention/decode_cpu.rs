//! CPU path of Flash-Decoding: the split-KV kernels' algorithm with plain loops.
//!
//! For each (sequence, kv head, block of 16 query rows) the visible key blocks (64 keys)
//! are shared among the splits as the kernel shares them; each split runs the online
//! softmax (base 2, P rounded to the element type before P V, as the tensor cores take
//! it) and yields a partial o and lse; the partials merge by their lse. The row order of
//! a block is the kernel's: row r is token r / group of query head kv_head x group +
//! r % group.

use super::AttentionOutput;
use super::cpu::dot;
use super::decode::DecodeProblem;
use super::kv_cache::{KvCache, Rotary};
use crate::kernels::attention::decode::{SPLIT_BLOCK_N, SPLIT_ROWS};
use crate::ops::RotaryStyle;
use crate::ops::cpu::rotate;
use crate::{Element, Error, Result, Tensor};
use ndarray::{ArrayD, IxDyn};
use std::f32::consts::LOG2_E;

const BN: usize = SPLIT_BLOCK_N as usize;
const ROWS: usize = SPLIT_ROWS as usize;

/// Writes the new tokens into the cache's host arrays (k rotated when asked). The
/// cache's lengths are the caller's to advance.
pub(super) fn append<T: Element>(
    cache: &mut KvCache<T>,
    k_new: &Tensor<T>,
    v_new: &Tensor<T>,
    rotary: Option<Rotary<'_>>,
) -> Result<()> {
    let (kn, vn) = (flat(k_new.cpu_data("k_new")?), flat(v_new.cpu_data("v_new")?));
    let new = k_new.shape()[1];
    let (hkv, hd) = (cache.heads_kv, cache.head_dim);
    let tables = rotary.map(tables_of).transpose()?;
    let rows: Vec<(usize, usize)> = (0..cache.batch).flat_map(|b| (0..new).map(move |t| (b, t))).collect();
    let offsets: Vec<usize> = rows.iter().map(|&(b, t)| cache_row(cache, b, cache.seqlens[b] + t)).collect();
    let seqlens = cache.seqlens.clone();
    let k = standard(cache.k.cpu_data_mut("cache.k")?);
    for (i, &(b, t)) in rows.iter().enumerate() {
        for h in 0..hkv {
            let src = &kn[((b * new + t) * hkv + h) * hd..][..hd];
            let row = match &tables {
                Some(r) => rotate_row(src, seqlens[b] + t, r),
                None => src.to_vec(),
            };
            for (j, x) in row.into_iter().enumerate() {
                k[offsets[i] + h * hd + j] = T::from_f32(x);
            }
        }
    }
    let v = standard(cache.v.cpu_data_mut("cache.v")?);
    for (i, &(b, t)) in rows.iter().enumerate() {
        for e in 0..hkv * hd {
            v[offsets[i] + e] = T::from_f32(vn[(b * new + t) * hkv * hd + e]);
        }
    }
    Ok(())
}

/// Appends (when new_kv is given), rotates q (when rotary is), and attends.
pub(super) fn decode<T: Element>(
    q: &Tensor<T>,
    cache: &mut KvCache<T>,
    new_kv: Option<(&Tensor<T>, &Tensor<T>)>,
    rotary: Option<Rotary<'_>>,
    p: &DecodeProblem,
) -> Result<AttentionOutput<T>> {
    if let Some((k, v)) = new_kv {
        append(cache, k, v, rotary)?;
    }
    let (sq, hq, hd, group) = (p.seqlen_q, p.heads_q, p.head_dim, p.heads_q / p.heads_kv);
    let mut qv = flat(q.cpu_data("q")?);
    let lens: Vec<usize> = cache.seqlens.iter().map(|&n| n + p.seqlen_new).collect();
    if let Some(r) = rotary {
        let r = tables_of(r)?;
        for b in 0..p.batch {
            for t in 0..sq {
                for h in 0..hq {
                    let at = ((b * sq + t) * hq + h) * hd;
                    let row = rotate_row(&qv[at..at + hd], lens[b] - sq + t, &r);
                    // Rounded to T as the GPU's rotated copy of q is.
                    for (j, x) in row.into_iter().enumerate() {
                        qv[at + j] = T::from_f32(x).to_f32();
                    }
                }
            }
        }
    }
    let kc = flat(cache.k.cpu_data("cache.k")?);
    let vc = flat(cache.v.cpu_data("cache.v")?);
    let splits = p.num_splits.unwrap_or(1);
    let scores = Scores::new(p.scale, p.softcap);
    let (mut o, mut lse) = (vec![T::default(); p.batch * sq * hq * hd], vec![0f32; p.batch * hq * sq]);
    let rows = group * sq;
    for b in 0..p.batch {
        let mask = Mask::new(lens[b], sq, p.window_left, p.window_right);
        for kv_h in 0..p.heads_kv {
            for r0 in (0..rows).step_by(ROWS) {
                let r_end = (r0 + ROWS).min(rows);
                let (t_lo, t_hi) = (r0 / group, (r_end - 1) / group);
                let (n_lo, n_hi) = mask.key_range(t_lo, t_hi);
                let (nb_first, nb_end) = (n_lo / BN, if n_hi > n_lo { n_hi.div_ceil(BN) } else { n_lo / BN });
                let per = (nb_end - nb_first).div_ceil(splits);
                for r in r0..r_end {
                    let (t, h) = (r / group, kv_h * group + r % group);
                    let q_row = &qv[((b * sq + t) * hq + h) * hd..][..hd];
                    // One partial per split: (lse_s, o_s).
                    let parts: Vec<(f32, Vec<f32>)> = (0..splits)
                        .map(|s| {
                            let lo = (nb_first + s * per).min(nb_end);
                            let hi = (lo + per).min(nb_end);
                            let keys = (lo * BN..hi * BN).filter(|&j| mask.visible(t, j));
                            let key_row = |j: usize| cache_row(cache, b, j) + kv_h * hd;
                            split_partial::<T>(q_row, keys, BN, &kc, &vc, key_row, &scores)
                        })
                        .collect();
                    let (row_o, row_lse) = merge(&parts, hd);
                    let at = ((b * sq + t) * hq + h) * hd;
                    for j in 0..hd {
                        o[at + j] = T::from_f32(row_o[j]);
                    }
                    lse[(b * hq + h) * sq + t] = row_lse;
                }
            }
        }
    }
    let o = ArrayD::from_shape_vec(IxDyn(&[p.batch, sq, hq, hd]), o).map_err(shape_err)?;
    let lse = ArrayD::from_shape_vec(IxDyn(&[p.batch, hq, sq]), lse).map_err(shape_err)?;
    Ok(AttentionOutput { o: Tensor::Cpu(o), lse: Tensor::Cpu(lse) })
}

/// One split's online softmax over `keys` (ascending, visible ones only), block by
/// block of `bn` keys: returns (lse_s, o_s = acc / l); lse_s = -inf when it saw no key.
fn split_partial<T: Element>(
    q: &[f32],
    keys: impl Iterator<Item = usize>,
    bn: usize,
    k: &[f32],
    v: &[f32],
    key_row: impl Fn(usize) -> usize,
    sc: &Scores,
) -> (f32, Vec<f32>) {
    let hd = q.len();
    let (mut m, mut l, mut acc) = (f32::NEG_INFINITY, 0f32, vec![0f32; hd]);
    let keys: Vec<usize> = keys.collect();
    for block in keys.chunk_by(|a, b| a / bn == b / bn) {
        let s: Vec<f32> = block.iter().map(|&j| sc.score(q, &k[key_row(j)..][..hd])).collect();
        let (m_new, alpha) = sc.rescale(m, &s);
        m = m_new;
        l *= alpha;
        acc.iter_mut().for_each(|a| *a *= alpha);
        for (&j, &sj) in block.iter().zip(&s) {
            let pj = sc.prob(sj, m);
            l += pj;
            let pr = T::from_f32(pj).to_f32();
            let vr = &v[key_row(j)..][..hd];
            for d in 0..hd {
                acc[d] += pr * vr[d];
            }
        }
    }
    if l == 0.0 {
        return (f32::NEG_INFINITY, vec![0.0; hd]);
    }
    let inv = 1.0 / l;
    (sc.lse(m, l), acc.into_iter().map(|a| a * inv).collect())
}

/// Merges split partials: lse = log sum exp(lse_s), o = sum exp(lse_s - lse) o_s. No
/// mass anywhere: o = 0 and lse = +inf.
fn merge(parts: &[(f32, Vec<f32>)], hd: usize) -> (Vec<f32>, f32) {
    if parts.len() == 1 {
        let (lse, o) = &parts[0];
        return (o.clone(), if *lse == f32::NEG_INFINITY { f32::INFINITY } else { *lse });
    }
    let m = parts.iter().map(|p| p.0).fold(f32::NEG_INFINITY, f32::max);
    let m_use = if m == f32::NEG_INFINITY { 0.0 } else { m };
    let sum: f32 = parts.iter().map(|p| (p.0 - m_use).exp()).sum();
    if sum == 0.0 {
        return (vec![0.0; hd], f32::INFINITY);
    }
    let lse = m_use + sum.ln();
    let mut o = vec![0f32; hd];
    for (ls, os) in parts {
        let w = (ls - lse).exp();
        for d in 0..hd {
            o[d] += w * os[d];
        }
    }
    (o, lse)
}

/// Element offset of sequence b's position `pos` (kv head 0) in the cache's storage
/// (validation keeps every position the kernels touch within the capacity).
fn cache_row<T: Element>(c: &KvCache<T>, b: usize, pos: usize) -> usize {
    let (unit, row) = c.locate(b, pos).unwrap_or((0, 0));
    (unit * c.rows_per_unit + row) * c.heads_kv * c.head_dim
}

/// Rotary tables on the host: rot_dim / 2 = `half` columns per position.
struct HostRotary {
    style: RotaryStyle,
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

fn tables_of(r: Rotary<'_>) -> Result<HostRotary> {
    let half = r.tables.cos.shape()[1];
    let cos = r.tables.cos.to_array()?.iter().copied().collect();
    let sin = r.tables.sin.to_array()?.iter().copied().collect();
    Ok(HostRotary { style: r.style, half, cos, sin })
}

/// A row `x` (one head) rotated to position `pos`: the rotary kernel's arithmetic.
fn rotate_row(x: &[f32], pos: usize, r: &HostRotary) -> Vec<f32> {
    let half = r.half;
    (0..x.len())
        .map(|j| {
            if j >= 2 * half {
                return x[j];
            }
            let (pair, partner, sign) = match r.style {
                RotaryStyle::Interleaved if j % 2 == 0 => (j / 2, j + 1, -1.0),
                RotaryStyle::Interleaved => (j / 2, j - 1, 1.0),
                RotaryStyle::NeoX if j < half => (j, j + half, -1.0),
                RotaryStyle::NeoX => (j - half, j - half, 1.0),
            };
            let at = pos * half + pair;
            rotate(x[j], x[partner], sign, r.cos[at], r.sin[at])
        })
        .collect()
}

/// Which keys query t of a sequence with `len` keys and `sq` queries sees (the kernel's
/// `Mask`): `t + shift - left <= j <= t + shift + right`, shift = len - sq, j < len.
struct Mask {
    len: i64,
    shift: i64,
    left: Option<i64>,
    right: Option<i64>,
}

impl Mask {
    fn new(len: usize, sq: usize, left: Option<usize>, right: Option<usize>) -> Mask {
        let w = |x: Option<usize>| x.map(|x| x.min(i32::MAX as usize) as i64);
        Mask { len: len as i64, shift: len as i64 - sq as i64, left: w(left), right: w(right) }
    }

    fn visible(&self, t: usize, j: usize) -> bool {
        let (t, j) = (t as i64, j as i64);
        j < self.len
            && self.right.is_none_or(|r| j <= t + self.shift + r)
            && self.left.is_none_or(|l| j >= t + self.shift - l)
    }

    /// Keys [lo, hi) any of the queries t_lo..=t_hi sees.
    fn key_range(&self, t_lo: usize, t_hi: usize) -> (usize, usize) {
        let lo = self.left.map_or(0, |l| (t_lo as i64 + self.shift - l).max(0));
        let hi = self.right.map_or(self.len, |r| (t_hi as i64 + 1 + self.shift + r).min(self.len));
        (lo as usize, hi.max(lo) as usize)
    }
}

/// Scores as the kernel forms them: x = q·k (f32), or tanh(q·k scale / softcap) with a
/// softcap; the softmax works in base 2 on x · score_log2.
struct Scores {
    pre: f32,
    softcap: bool,
    score_log2: f32,
    /// Natural-log units per x unit (the scale, or the softcap).
    score_scale: f32,
}

impl Scores {
    fn new(scale: f32, softcap: f32) -> Scores {
        let cap = softcap > 0.0;
        let score_scale = if cap { softcap } else { scale };
        Scores {
            pre: if cap { scale / softcap } else { 0.0 },
            softcap: cap,
            score_log2: score_scale * LOG2_E,
            score_scale,
        }
    }

    fn score(&self, q: &[f32], k: &[f32]) -> f32 {
        let x = dot(q, k);
        if self.softcap { (x * self.pre).tanh() } else { x }
    }

    /// The new running max over `s` and the factor that rescales the old sum and O.
    fn rescale(&self, m: f32, s: &[f32]) -> (f32, f32) {
        let m_new = s.iter().fold(m, |a, &x| a.max(x));
        let m_sub = if m_new == f32::NEG_INFINITY { 0.0 } else { m_new };
        (m_new, ((m - m_sub) * self.score_log2).exp2())
    }

    fn prob(&self, s: f32, m: f32) -> f32 {
        let m_sub = if m == f32::NEG_INFINITY { 0.0 } else { m };
        s.mul_add(self.score_log2, -m_sub * self.score_log2).exp2()
    }

    fn lse(&self, m: f32, l: f32) -> f32 {
        m * self.score_scale + l.ln()
    }
}

fn flat<T: Element>(a: &ArrayD<T>) -> Vec<f32> {
    a.iter().map(|x| x.to_f32()).collect()
}

/// The array's storage as a row-major slice (re-laid out first if it is not).
fn standard<T: Element>(a: &mut ArrayD<T>) -> &mut [T] {
    if a.as_slice().is_none() {
        *a = a.as_standard_layout().to_owned();
    }
    a.as_slice_mut().unwrap_or(&mut [])
}

fn shape_err(e: ndarray::ShapeError) -> Error {
    Error::Value { arg: "output", got: e.to_string(), expected: "a consistent shape".into() }
}
