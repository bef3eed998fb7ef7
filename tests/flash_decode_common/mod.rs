//! Shared by `cpu_flash_decode.rs` and `gpu_flash_decode.rs`: decoding cases (a cache
//! of per-sequence lengths, contiguous or paged with shuffled pages, new tokens, rotary,
//! splits), and the check of `flashscan::attention::decode` against the f64 reference
//! run on each sequence's keys gathered in order.

#![allow(dead_code)]

use crate::attention_common::{Case, Rng, Tol, compare, options, tol};
use flashscan::attention::{AttentionOptions, DecodeOptions, KvCache, PAGE_SIZE_MULTIPLE, Rotary, decode};
use flashscan::ops::{RotaryStyle, rotary_tables};
use flashscan::reference::attention::{attention, to_f64};
use flashscan::reference::ops::rotary;
use flashscan::{Device, Element, Tensor};
use ndarray::{ArrayD, Axis, IxDyn, s};
use proptest::prelude::*;

pub const ROTARY_BASE: f64 = 10000.0;

#[derive(Clone, Debug)]
pub struct DecodeCase {
    pub heads_kv: usize,
    pub group: usize,
    pub head_dim: usize,
    pub seqlen_q: usize,
    /// Tokens already in the cache, per sequence (the batch is its length).
    pub cached: Vec<usize>,
    /// New tokens appended by the call (0: none).
    pub new: usize,
    /// Spare positions per sequence beyond cached + new.
    pub spare: usize,
    /// Some(page size): a paged cache with its pages in shuffled order.
    pub page_size: Option<usize>,
    /// Some((style, rot_dim)): rotary on q and the new keys.
    pub rotary: Option<(RotaryStyle, usize)>,
    pub opts: AttentionOptions,
    pub num_splits: Option<usize>,
    pub seed: u64,
}

impl DecodeCase {
    pub fn new(batch: usize, cached: usize, seqlen_q: usize, heads_q: usize, heads_kv: usize, head_dim: usize) -> Self {
        DecodeCase {
            heads_kv,
            group: heads_q / heads_kv,
            head_dim,
            seqlen_q,
            cached: vec![cached; batch],
            new: 0,
            spare: 3,
            page_size: None,
            rotary: None,
            opts: AttentionOptions::default(),
            num_splits: None,
            seed: 7,
        }
    }
    pub fn batch(&self) -> usize {
        self.cached.len()
    }
    pub fn heads_q(&self) -> usize {
        self.heads_kv * self.group
    }
    /// Keys sequence b attends: its cached tokens and the new ones.
    pub fn len(&self, b: usize) -> usize {
        self.cached[b] + self.new
    }
    fn capacity(&self) -> usize {
        let c = self.cached.iter().max().copied().unwrap_or(0) + self.new + self.spare;
        match self.page_size {
            Some(ps) => c.div_ceil(ps) * ps,
            None => c,
        }
    }
}

/// Every input of a case, rounded to T: q, and each sequence's keys and values
/// `[len_b, heads_kv, head_dim]` (the cached ones first, then the new ones).
pub struct Inputs<T: Element> {
    pub q: ArrayD<T>,
    pub k: Vec<ArrayD<T>>,
    pub v: Vec<ArrayD<T>>,
}

pub fn inputs<T: Element>(c: &DecodeCase) -> Inputs<T> {
    let mut rng = Rng::new(c.seed);
    let (hkv, hd) = (c.heads_kv, c.head_dim);
    let q = rng.normal::<T>(&[c.batch(), c.seqlen_q, c.heads_q(), hd], 1.0);
    let k = (0..c.batch()).map(|b| rng.normal::<T>(&[c.len(b), hkv, hd], 1.0)).collect();
    let v = (0..c.batch()).map(|b| rng.normal::<T>(&[c.len(b), hkv, hd], 1.0)).collect();
    Inputs { q, k, v }
}

/// Builds the cache holding each sequence's cached tokens on `device`; returns it and the
/// new tokens (k_new, v_new) `[batch, new, heads_kv, head_dim]` when the case has any.
pub fn build<T: Element>(
    c: &DecodeCase,
    x: &Inputs<T>,
    device: Device,
) -> Result<(KvCache<T>, Option<(Tensor<T>, Tensor<T>)>), String> {
    let (batch, hkv, hd, cap) = (c.batch(), c.heads_kv, c.head_dim, c.capacity());
    let e = |e: flashscan::Error| e.to_string();
    // Paged: each sequence's pages, handed out in a seeded shuffled order (two stay unused).
    let table: Option<Vec<Vec<usize>>> = c.page_size.map(|ps| {
        let per_seq = cap / ps;
        let mut order: Vec<usize> = (0..batch * per_seq + 2).collect();
        let mut rng = Rng::new(c.seed ^ 0x9e37);
        for i in (1..order.len()).rev() {
            order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        (0..batch).map(|b| order[b * per_seq..(b + 1) * per_seq].to_vec()).collect()
    });
    // Storage (unit, row) of position p of sequence b in a [units, rows, hkv, hd] pool.
    let (units, rows) = match c.page_size {
        None => (batch, cap),
        Some(ps) => (batch * (cap / ps) + 2, ps),
    };
    let place = |b: usize, p: usize| match (&table, c.page_size) {
        (Some(t), Some(ps)) => (t[b][p / ps], p % ps),
        _ => (b, p),
    };
    let mut k = ArrayD::<T>::from_elem(IxDyn(&[units, rows, hkv, hd]), T::from_f32(0.0));
    let mut v = k.clone();
    for b in 0..batch {
        for p in 0..c.cached[b] {
            let (u, r) = place(b, p);
            k.slice_mut(s![u, r, .., ..]).assign(&x.k[b].slice(s![p, .., ..]));
            v.slice_mut(s![u, r, .., ..]).assign(&x.v[b].slice(s![p, .., ..]));
        }
    }
    let (k, v) = (Tensor::from_array(k, device).map_err(e)?, Tensor::from_array(v, device).map_err(e)?);
    let cache = match &table {
        None => KvCache::from_contiguous(k, v, &c.cached).map_err(e)?,
        Some(t) => KvCache::from_pages(k, v, t, &c.cached).map_err(e)?,
    };
    let new = if c.new > 0 {
        let mut kn = ArrayD::<T>::from_elem(IxDyn(&[batch, c.new, hkv, hd]), T::from_f32(0.0));
        let mut vn = kn.clone();
        for b in 0..batch {
            kn.slice_mut(s![b, .., .., ..]).assign(&x.k[b].slice(s![c.cached[b].., .., ..]));
            vn.slice_mut(s![b, .., .., ..]).assign(&x.v[b].slice(s![c.cached[b].., .., ..]));
        }
        Some((Tensor::from_array(kn, device).map_err(e)?, Tensor::from_array(vn, device).map_err(e)?))
    } else {
        None
    };
    Ok((cache, new))
}

/// Rotates x `[1, n, heads, hd]` (f64) to positions offset.. and rounds to T, as the
/// kernels store rotated values.
fn rotated<T: Element>(x: &ArrayD<f64>, rot: Option<(RotaryStyle, usize)>, offset: usize) -> ArrayD<f64> {
    rotated_with_slack::<T>(x, rot, offset).0
}

/// `rotated`, and per element how far the library's rotation may round from it: the
/// library rotates in f32 (f32 tables, products and sums: error below 2^-21 x the
/// vector's largest element), so where the f64 value lies that close to a rounding
/// boundary of T, either neighbour is a correct result. Slack 0 elsewhere (nearly every
/// element), else the distance between the two candidates.
fn rotated_with_slack<T: Element>(
    x: &ArrayD<f64>,
    rot: Option<(RotaryStyle, usize)>,
    offset: usize,
) -> (ArrayD<f64>, ArrayD<f64>) {
    let Some((style, rot_dim)) = rot else {
        return (x.clone(), ArrayD::zeros(x.raw_dim()));
    };
    let exact = rotary(x, rot_dim, ROTARY_BASE, offset, style);
    let round = |a: f64| T::from_f32(a as f32).to_f64();
    let mut slack = ArrayD::zeros(x.raw_dim());
    let hd = x.shape()[3];
    for (row, mut srow) in exact.lanes(Axis(3)).into_iter().zip(slack.lanes_mut(Axis(3))) {
        let delta = row.iter().fold(0.0f64, |m, a| m.max(a.abs())) * 2f64.powi(-21);
        for i in 0..hd.min(rot_dim) {
            let (lo, hi) = (round(row[i] - delta), round(row[i] + delta));
            srow[i] = hi - lo;
        }
    }
    (exact.mapv(round), slack)
}

/// The lse tolerance of sequence b's check: `tol`'s, plus the most that the rotated
/// queries' rounding slack can move a score (scale x sum_i slack_i |k_i|, the largest
/// over the rows and the kv head's keys; 0 when no query element is ambiguous). A
/// softcap only shrinks score changes.
fn with_query_slack(tol: Tol, q_slack: &ArrayD<f64>, k: &ArrayD<f64>, scale: f64) -> Tol {
    if q_slack.iter().all(|&a| a == 0.0) {
        return tol;
    }
    let (sq, hq, hd) = (q_slack.shape()[1], q_slack.shape()[2], q_slack.shape()[3]);
    let (l, hkv) = (k.shape()[1], k.shape()[2]);
    let mut worst = 0.0f64;
    for t in 0..sq {
        for h in 0..hq {
            let kh = h / (hq / hkv);
            for j in 0..l {
                let d: f64 = (0..hd).map(|i| q_slack[[0, t, h, i]] * k[[0, j, kh, i]].abs()).sum();
                worst = worst.max(d);
            }
        }
    }
    Tol { lse_abs: tol.lse_abs + scale * worst, ..tol }
}

/// The keys the call stored for sequence b's `n` new tokens from position `first`,
/// `[1, n, heads_kv, hd]`, from `k`, the host copy of the cache's keys.
fn stored_new_keys<T: Element>(
    cache: &KvCache<T>,
    k: &ArrayD<T>,
    b: usize,
    first: usize,
    n: usize,
) -> Result<ArrayD<f64>, String> {
    let (hkv, hd) = (k.shape()[2], k.shape()[3]);
    let mut out = ArrayD::zeros(IxDyn(&[1, n, hkv, hd]));
    for i in 0..n {
        let (u, r) = cache
            .locate(b, first + i)
            .ok_or_else(|| format!("sequence {b} position {}: not in the cache", first + i))?;
        for h in 0..hkv {
            for j in 0..hd {
                out[[0, i, h, j]] = k[[u, r, h, j]].to_f64();
            }
        }
    }
    Ok(out)
}

/// Whether a stored rotated key `got` is the f64 rotation `want` rounded to T, up to the
/// one unit in the last place by which the kernel's f32 rotation and the reference's f64
/// one may round apart when they straddle a rounding boundary (subnormals have a fixed
/// unit: 2^-24 in f16, 2^-133 in bf16).
fn within_one_unit<T: Element>(got: f64, want: f64) -> bool {
    let ulp = if T::DTYPE == flashscan::DType::BF16 {
        (want.abs() * 2f64.powi(-7)).max(2f64.powi(-133))
    } else {
        (want.abs() * 2f64.powi(-10)).max(2f64.powi(-24))
    };
    (got - want).abs() <= ulp
}

/// Runs `decode` on `device` and checks every sequence against the f64 reference on its
/// gathered keys; also checks that the call advanced the lengths and that the cache
/// holds the (rotated) new keys and values afterwards.
pub fn check<T: Element>(c: &DecodeCase, device: Device, tol: Tol) -> Result<(), String> {
    let x = inputs::<T>(c);
    let out = run(c, &x, device)?;
    let (o, lse, cache) = (&out.0, &out.1, &out.2);
    let (hq, hd) = (c.heads_q(), c.head_dim);
    let (k_host, v_host) =
        (cache.k().to_array().map_err(|e| e.to_string())?, cache.v().to_array().map_err(|e| e.to_string())?);
    for b in 0..c.batch() {
        let len = c.len(b);
        if cache.seqlens()[b] != len {
            return Err(format!("sequence {b}: cache length {} after the call, expected {len}", cache.seqlens()[b]));
        }
        // Keys in order: cached as stored, new ones rotated to their positions; those
        // must be in the cache within a unit of T of the f64 rotation, and the reference
        // attends to the cache's own (so rounding ties cannot differ).
        let kb = to_f64(&x.k[b]).insert_axis(Axis(0));
        let vb = to_f64(&x.v[b]).insert_axis(Axis(0));
        let k_new = rotated::<T>(&kb.slice(s![.., c.cached[b].., .., ..]).to_owned().into_dyn(), c.rotary, c.cached[b]);
        check_cache_rows(c, cache, (&k_host, &v_host), b, &k_new, &x)?;
        let mut k_ref = kb.clone().into_dyn();
        if c.new > 0 {
            let stored = stored_new_keys(cache, &k_host, b, c.cached[b], c.new)?;
            k_ref.slice_mut(s![.., c.cached[b].., .., ..]).assign(&stored);
        }
        let q_b = to_f64(&x.q.slice(s![b..b + 1, .., .., ..]).to_owned().into_dyn());
        let (q_ref, q_slack) = rotated_with_slack::<T>(&q_b, c.rotary, len - c.seqlen_q.min(len));
        let case = Case::new(1, c.seqlen_q, len, hq, c.heads_kv, hd).with(c.opts);
        let scale = c.opts.softmax_scale.map_or(1.0 / (hd as f64).sqrt(), f64::from);
        let tol_b = with_query_slack(tol, &q_slack, &k_ref, scale);
        let (o_ref, lse_ref) = attention(&q_ref, &k_ref, &vb.into_dyn(), &case.reference_params());
        let o_b = o.slice(s![b..b + 1, .., .., ..]).to_owned().into_dyn();
        let lse_b = lse.slice(s![b..b + 1, .., ..]).to_owned().into_dyn();
        compare(&case, &o_b, &lse_b, &o_ref, &lse_ref, tol_b, &[])
            .map_err(|e| format!("sequence {b} ({len} keys): {e}\n  in {c:?} ({})", T::DTYPE))?;
    }
    Ok(())
}

/// The cache's rows for sequence b's new tokens hold k_new (rotated) and v exactly.
fn check_cache_rows<T: Element>(
    c: &DecodeCase,
    cache: &KvCache<T>,
    (k, v): (&ArrayD<T>, &ArrayD<T>),
    b: usize,
    k_new: &ArrayD<f64>,
    x: &Inputs<T>,
) -> Result<(), String> {
    if c.new == 0 {
        return Ok(());
    }
    for i in 0..c.new {
        let pos = c.cached[b] + i;
        let Some((u, r)) = cache.locate(b, pos) else {
            return Err(format!("sequence {b} position {pos}: not in the cache"));
        };
        for h in 0..c.heads_kv {
            for j in 0..c.head_dim {
                let (gk, wk) = (k[[u, r, h, j]].to_f64(), k_new[[0, i, h, j]]);
                let (gv, wv) = (v[[u, r, h, j]].to_f64(), x.v[b][[pos, h, j]].to_f64());
                if !within_one_unit::<T>(gk, wk) || gv != wv {
                    return Err(format!(
                        "sequence {b} position {pos} head {h} feature {j}: cache holds k {gk} v {gv}, expected k {wk} v {wv}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Builds the cache, runs decode; returns o, lse (host arrays) and the cache.
pub fn run<T: Element>(
    c: &DecodeCase,
    x: &Inputs<T>,
    device: Device,
) -> Result<(ArrayD<T>, ArrayD<f32>, KvCache<T>), String> {
    let (mut cache, new) = build(c, x, device)?;
    let tables = match c.rotary {
        Some((_, rot_dim)) => {
            Some(rotary_tables(c.capacity() + 1, rot_dim, ROTARY_BASE, device).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let rot = match (&tables, c.rotary) {
        (Some(t), Some((style, _))) => Some(Rotary { tables: t, style }),
        _ => None,
    };
    let q = Tensor::from_array(x.q.clone(), device).map_err(|e| e.to_string())?;
    let opts = DecodeOptions { attention: c.opts, num_splits: c.num_splits };
    let out = decode(&q, &mut cache, new.as_ref().map(|(k, v)| (k, v)), rot, &opts)
        .map_err(|e| format!("decode failed: {e}"))?;
    Ok((out.o.to_array().map_err(|e| e.to_string())?, out.lse.to_array().map_err(|e| e.to_string())?, cache))
}

/// Random decoding cases: batch 1..=3 with lengths 0..max_len each (0: an empty
/// sequence), 0..=3 new tokens, 1..=16 queries (at most the shortest sequence when
/// rotary is on), heads_kv 1..=2, group 1, 2, 4 or 8, `head_dims`, paged (page size
/// 64 or 128) or not, rotary (either style) or not, random masks, splits 1..=9 or the
/// heuristic.
pub fn cases(max_len: usize, head_dims: &'static [usize]) -> impl Strategy<Value = DecodeCase> {
    (
        (
            prop::collection::vec(0..max_len, 1..=3),
            0..=3usize,
            1..=16usize,
            1..=2usize,
            prop::sample::select(&[1usize, 2, 4, 8][..]),
        ),
        prop::sample::select(head_dims),
        prop_oneof![2 => Just(None), 1 => Just(Some(PAGE_SIZE_MULTIPLE)), 1 => Just(Some(2 * PAGE_SIZE_MULTIPLE))],
        prop_oneof![2 => Just(None), 1 => Just(Some(RotaryStyle::NeoX)), 1 => Just(Some(RotaryStyle::Interleaved))],
        options(max_len),
        prop_oneof![1 => Just(None), 2 => (1..=9usize).prop_map(Some)],
        any::<u64>(),
    )
        .prop_map(|((cached, new, sq, heads_kv, group), head_dim, page_size, style, opts, num_splits, seed)| {
            let shortest = cached.iter().min().copied().unwrap_or(0) + new;
            // Rotary needs every query at a position: at most the shortest length.
            let (rotary, seqlen_q) = match style {
                Some(st) if shortest >= 1 => (Some((st, head_dim.min(64) / 2 * 2)), sq.min(shortest)),
                _ => (None, sq),
            };
            DecodeCase {
                heads_kv,
                group,
                head_dim,
                seqlen_q,
                cached,
                new,
                spare: 5,
                page_size,
                rotary,
                opts,
                num_splits,
                seed,
            }
        })
}

/// A generation loop on one cache: `steps` calls of `decode` each appending one token per
/// sequence (rotary NeoX on half the head when `rotary`), checked every step against the
/// reference over all keys appended so far (rotated and rounded as the kernels store
/// them). Sequences start at different lengths so the per-sequence lengths differ.
pub fn check_generation<T: Element>(
    device: Device,
    steps: usize,
    page_size: Option<usize>,
    rotary_on: bool,
    num_splits: Option<usize>,
) -> Result<(), String> {
    let (batch, hkv, group, hd) = (2usize, 2usize, 4usize, 64usize);
    let hq = hkv * group;
    let e = |e: flashscan::Error| e.to_string();
    let mut c = DecodeCase::new(batch, 0, 1, hq, hkv, hd);
    c.cached = vec![3, 40];
    c.new = 1;
    c.spare = steps + 1;
    c.page_size = page_size;
    c.rotary = rotary_on.then_some((RotaryStyle::NeoX, hd / 2));
    let x = inputs::<T>(&c);
    let (mut cache, _) = build(&c, &x, device)?;
    let tables = rotary_tables(c.cached[1] + steps + 8, hd / 2, ROTARY_BASE, device).map_err(e)?;
    let rot = rotary_on.then_some(Rotary { tables: &tables, style: RotaryStyle::NeoX });
    // The reference's keys and values per sequence, f64, in cache order.
    let mut keys: Vec<Vec<ArrayD<f64>>> = (0..batch)
        .map(|b| (0..c.cached[b]).map(|p| to_f64(&x.k[b].slice(s![p..p + 1, .., ..]).to_owned().into_dyn())).collect())
        .collect();
    let mut vals: Vec<Vec<ArrayD<f64>>> = (0..batch)
        .map(|b| (0..c.cached[b]).map(|p| to_f64(&x.v[b].slice(s![p..p + 1, .., ..]).to_owned().into_dyn())).collect())
        .collect();
    let mut rng = Rng::new(99);
    let opts = DecodeOptions { attention: AttentionOptions::default(), num_splits };
    for step in 0..steps {
        let q = rng.normal::<T>(&[batch, 1, hq, hd], 1.0);
        let kn = rng.normal::<T>(&[batch, 1, hkv, hd], 1.0);
        let vn = rng.normal::<T>(&[batch, 1, hkv, hd], 1.0);
        let put = |a: &ArrayD<T>| Tensor::from_array(a.clone(), device).map_err(e);
        let (qt, kt, vt) = (put(&q)?, put(&kn)?, put(&vn)?);
        let before: Vec<usize> = cache.seqlens().to_vec();
        let out = decode(&qt, &mut cache, Some((&kt, &vt)), rot, &opts).map_err(|e| format!("step {step}: {e}"))?;
        let (o, lse) = (out.o.to_array().map_err(e)?, out.lse.to_array().map_err(e)?);
        let k_host = cache.k().to_array().map_err(e)?;
        for b in 0..batch {
            // The key as the call stored it (within a unit of T of the f64 rotation).
            let kb = to_f64(&kn.slice(s![b..b + 1, .., .., ..]).to_owned().into_dyn());
            let stored = stored_new_keys(&cache, &k_host, b, before[b], 1)?;
            let want = rotated::<T>(&kb, c.rotary, before[b]);
            if stored.iter().zip(want.iter()).any(|(&g, &w)| !within_one_unit::<T>(g, w)) {
                return Err(format!("step {step}, sequence {b}: the stored key is not the rotated one"));
            }
            keys[b].push(stored.index_axis(Axis(0), 0).to_owned().into_dyn());
            vals[b].push(to_f64(&vn.slice(s![b, .., .., ..]).to_owned().into_dyn()));
            let len = keys[b].len();
            let stack = |v: &Vec<ArrayD<f64>>| {
                let views: Vec<_> = v.iter().map(|a| a.view()).collect();
                ndarray::concatenate(Axis(0), &views).map(|a| a.insert_axis(Axis(0)))
            };
            let (k_ref, v_ref) =
                (stack(&keys[b]).map_err(|e| e.to_string())?, stack(&vals[b]).map_err(|e| e.to_string())?);
            let (q_ref, q_slack) = rotated_with_slack::<T>(
                &to_f64(&q.slice(s![b..b + 1, .., .., ..]).to_owned().into_dyn()),
                c.rotary,
                len - 1,
            );
            let case = Case::new(1, 1, len, hq, hkv, hd);
            let tol_b = with_query_slack(tol::<T>(), &q_slack, &k_ref, 1.0 / (hd as f64).sqrt());
            let (o_ref, lse_ref) = attention(&q_ref, &k_ref, &v_ref, &case.reference_params());
            let o_b = o.slice(s![b..b + 1, .., .., ..]).to_owned().into_dyn();
            let lse_b = lse.slice(s![b..b + 1, .., ..]).to_owned().into_dyn();
            compare(&case, &o_b, &lse_b, &o_ref, &lse_ref, tol_b, &[])
                .map_err(|e| format!("step {step}, sequence {b} ({len} keys): {e}"))?;
        }
    }
    Ok(())
}
