//! Shared by the attention suites (`cpu_attention.rs`, `gpu_attention.rs`,
//! `cpu_attention_bwd.rs`): attention test cases (shapes, options, seeded random inputs),
//! the proptest strategy that draws them, and the comparisons of
//! `flashscan::attention::forward` and `backward` with the f64 references.

#![allow(dead_code)]

use flashscan::attention::{AttentionOptions, BackwardOptions, backward, forward};
use flashscan::reference::attention::{
    AttentionRef, attention, attention_backward, attention_backward_given_o, to_f64, visible,
};
use flashscan::reference::rel_error;
use flashscan::{Device, Element, Tensor, bf16, f16};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

/// One attention problem with its inputs' seed.
#[derive(Clone, Debug)]
pub struct Case {
    pub batch: usize,
    pub seqlen_q: usize,
    pub seqlen_k: usize,
    pub heads_kv: usize,
    /// heads_q = heads_kv * group
    pub group: usize,
    pub head_dim: usize,
    pub opts: AttentionOptions,
    /// Standard deviation of q and k (v is always standard normal): larger makes the
    /// softmax peakier.
    pub magnitude: f32,
    pub seed: u64,
}

impl Case {
    pub fn new(
        batch: usize,
        seqlen_q: usize,
        seqlen_k: usize,
        heads_q: usize,
        heads_kv: usize,
        head_dim: usize,
    ) -> Case {
        Case {
            batch,
            seqlen_q,
            seqlen_k,
            heads_kv,
            group: heads_q / heads_kv,
            head_dim,
            opts: AttentionOptions::default(),
            magnitude: 1.0,
            seed: 1,
        }
    }

    pub fn with(mut self, opts: AttentionOptions) -> Case {
        self.opts = opts;
        self
    }

    pub fn heads_q(&self) -> usize {
        self.heads_kv * self.group
    }

    /// b * h * n_q * n_k * d: proportional to the work of one forward.
    pub fn work(&self) -> usize {
        self.batch * self.heads_q() * self.seqlen_q * self.seqlen_k * self.head_dim
    }

    /// Drops heads, then batch entries, until `work() <= budget` (or nothing is left to drop).
    pub fn fit(mut self, budget: usize) -> Case {
        while self.work() > budget {
            if self.group > 1 {
                self.group -= 1;
            } else if self.heads_kv > 1 {
                self.heads_kv -= 1;
            } else if self.batch > 1 {
                self.batch -= 1;
            } else {
                break;
            }
        }
        self
    }

    pub fn reference_params(&self) -> AttentionRef {
        AttentionRef {
            causal: self.opts.causal,
            window_left: self.opts.window_left,
            window_right: self.opts.window_right,
            softcap: self.opts.softcap.map(f64::from),
            scale: self.opts.softmax_scale.map(f64::from),
        }
    }

    /// q, k, v with seeded normal entries, rounded to T.
    pub fn inputs<T: Element>(&self) -> (ArrayD<T>, ArrayD<T>, ArrayD<T>) {
        let mut rng = Rng::new(self.seed);
        let d = self.head_dim;
        let q = rng.normal::<T>(&[self.batch, self.seqlen_q, self.heads_q(), d], self.magnitude);
        let k = rng.normal::<T>(&[self.batch, self.seqlen_k, self.heads_kv, d], self.magnitude);
        let v = rng.normal::<T>(&[self.batch, self.seqlen_k, self.heads_kv, d], 1.0);
        (q, k, v)
    }

    /// The backward's dout (q's shape), standard normal, seeded independently of q, k, v.
    pub fn dout<T: Element>(&self) -> ArrayD<T> {
        let mut rng = Rng::new(self.seed ^ 0x5EED_D0D0_0000_0001);
        rng.normal::<T>(&[self.batch, self.seqlen_q, self.heads_q(), self.head_dim], 1.0)
    }

    /// Whether query `i` sees any key (the same for every head).
    pub fn row_sees_a_key(&self, i: usize) -> bool {
        let p = self.reference_params();
        (0..self.seqlen_k).any(|j| visible(i, j, self.seqlen_q, self.seqlen_k, &p))
    }

    /// Whether any query sees key `j`.
    pub fn key_is_seen(&self, j: usize) -> bool {
        let p = self.reference_params();
        (0..self.seqlen_q).any(|i| visible(i, j, self.seqlen_q, self.seqlen_k, &p))
    }
}

/// The seeded generator shared with the norm tests (the inputs of a failing case are
/// reproducible from its seed), plus the Gaussian draws attention needs.
#[path = "../common/mod.rs"]
mod common;
pub use common::Rng;

impl Rng {
    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f64 {
        let (u1, u2) = (self.unit(), self.unit());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn normal<T: Element>(&mut self, shape: &[usize], std: f32) -> ArrayD<T> {
        let n = shape.iter().product();
        let data = (0..n).map(|_| T::from_f32(self.gaussian() as f32 * std)).collect();
        ArrayD::from_shape_vec(IxDyn(shape), data).expect("n elements")
    }
}

/// Tolerances: ||o - ref|| / ||ref|| over the rows that see a key, and
/// |lse - ref| <= lse_abs + lse_rel * |ref| for every finite reference lse.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub o_rel: f64,
    pub lse_abs: f64,
    pub lse_rel: f64,
}

/// The tolerances of the property tests for T (bf16: 1e-2, f16: 2e-3 on o; 1e-3 on lse).
pub fn tol<T: Element>() -> Tol {
    let o_rel = if T::DTYPE == bf16::DTYPE { 1e-2 } else { 2e-3 };
    Tol { o_rel, lse_abs: 1e-3, lse_rel: 0.0 }
}

/// Runs `forward` on `device` and compares with the f64 reference (see [`compare`]).
pub fn check<T: Element>(case: &Case, device: Device, tol: Tol) -> Result<(), String> {
    let (q, k, v) = case.inputs::<T>();
    check_inputs(case, &q, &k, &v, device, tol, &[])
}

/// Like [`check`] on given inputs; `nan_rows` lists (batch, head, query) rows whose o must
/// be all NaN (their lse is not checked). Every other row must be finite and match.
pub fn check_inputs<T: Element>(
    case: &Case,
    q: &ArrayD<T>,
    k: &ArrayD<T>,
    v: &ArrayD<T>,
    device: Device,
    tol: Tol,
    nan_rows: &[(usize, usize, usize)],
) -> Result<(), String> {
    let put = |a: &ArrayD<T>| Tensor::from_array(a.clone(), device).map_err(|e| e.to_string());
    let out = forward(&put(q)?, &put(k)?, &put(v)?, &case.opts).map_err(|e| format!("forward failed: {e}"))?;
    let o = out.o.to_array().map_err(|e| e.to_string())?;
    let lse = out.lse.to_array().map_err(|e| e.to_string())?;
    let (o_ref, lse_ref) = attention(&to_f64(q), &to_f64(k), &to_f64(v), &case.reference_params());
    compare(case, &o, &lse, &o_ref, &lse_ref, tol, nan_rows).map_err(|e| format!("{e}\n  in {case:?} ({})", T::DTYPE))
}

/// Checks o and lse against the reference row by row:
/// - a row that sees no key (reference lse = +inf) must be exactly 0 with lse = +inf;
/// - a row in `nan_rows` must be all NaN;
/// - every other row must be finite, with the lse within tolerance;
/// - and the relative error of o over those rows within `tol.o_rel`.
pub fn compare<T: Element>(
    case: &Case,
    o: &ArrayD<T>,
    lse: &ArrayD<f32>,
    o_ref: &ArrayD<f64>,
    lse_ref: &ArrayD<f64>,
    tol: Tol,
    nan_rows: &[(usize, usize, usize)],
) -> Result<(), String> {
    let (b_n, sq, hq, d) = (case.batch, case.seqlen_q, case.heads_q(), case.head_dim);
    let want_shape = [b_n, sq, hq, d];
    if o.shape() != want_shape || lse.shape() != [b_n, hq, sq] {
        return Err(format!(
            "shapes: o {:?} lse {:?}, expected {want_shape:?} and {:?}",
            o.shape(),
            lse.shape(),
            [b_n, hq, sq]
        ));
    }
    let (mut got, mut want) = (Vec::new(), Vec::new());
    let mut empty_rows = 0;
    for b in 0..b_n {
        for h in 0..hq {
            for i in 0..sq {
                let row: Vec<f64> = (0..d).map(|x| o[[b, i, h, x]].to_f64()).collect();
                let (l, l_ref) = (lse[[b, h, i]], lse_ref[[b, h, i]]);
                let at = format!("row (batch {b}, head {h}, query {i})");
                if nan_rows.contains(&(b, h, i)) {
                    if !row.iter().all(|x| x.is_nan()) {
                        return Err(format!("{at}: expected all NaN (NaN in q), got {row:?}"));
                    }
                    continue;
                }
                if l_ref == f64::INFINITY {
                    empty_rows += 1;
                    if row.iter().any(|&x| x != 0.0) || l != f32::INFINITY {
                        return Err(format!("{at} sees no key: expected o = 0 and lse = +inf, got lse {l}, o {row:?}"));
                    }
                    continue;
                }
                if let Some(x) = row.iter().find(|x| !x.is_finite()) {
                    return Err(format!("{at}: non-finite output {x}"));
                }
                let err = (l as f64 - l_ref).abs();
                // (a NaN error fails too)
                if err.is_nan() || err > tol.lse_abs + tol.lse_rel * l_ref.abs() {
                    return Err(format!("{at}: lse {l}, reference {l_ref} (error {err:.3e})"));
                }
                got.extend_from_slice(&row);
                want.extend((0..d).map(|x| o_ref[[b, i, h, x]]));
            }
        }
    }
    let rel = rel_error(&got, &want);
    if rel.is_nan() || rel > tol.o_rel {
        return Err(format!(
            "o: relative error {rel:.3e} > {:.1e} over {} rows ({empty_rows} rows without keys)",
            tol.o_rel,
            got.len() / d
        ));
    }
    Ok(())
}

/// Sequence lengths for the property tests: 1, anything up to `max`, and sizes around the
/// 64-row tiles.
pub fn seqlen(max: usize) -> impl Strategy<Value = usize> {
    prop_oneof![
        1 => Just(1usize),
        4 => 1..max,
        1 => 60..70usize,
        1 => 126..131usize,
    ]
}

/// No window, a zero window, or a random one.
pub fn window(max: usize) -> impl Strategy<Value = Option<usize>> {
    prop_oneof![3 => Just(None), 1 => Just(Some(0usize)), 2 => (0..max).prop_map(Some)]
}

pub fn options(max_seqlen: usize) -> impl Strategy<Value = AttentionOptions> {
    (
        any::<bool>(),
        window(max_seqlen),
        window(max_seqlen),
        prop::option::weighted(0.3, 1.0f32..50.0),
        prop::option::weighted(0.5, 0.02f32..0.5),
    )
        .prop_map(|(causal, window_left, window_right, softcap, softmax_scale)| AttentionOptions {
            causal,
            window_left,
            window_right,
            softcap,
            softmax_scale,
        })
}

/// Random cases: batch 1..=3, seqlens from [`seqlen`], heads_kv 1..=3, group 1..=4,
/// `head_dims`, random options and input magnitude; then cut to `budget` work.
pub fn cases(max_seqlen: usize, head_dims: &'static [usize], budget: usize) -> impl Strategy<Value = Case> {
    (
        (1..=3usize, seqlen(max_seqlen), seqlen(max_seqlen), 1..=3usize, 1..=4usize),
        prop::sample::select(head_dims),
        options(max_seqlen),
        prop_oneof![Just(1.0f32), Just(3.0f32)],
        any::<u64>(),
    )
        .prop_map(move |((batch, seqlen_q, seqlen_k, heads_kv, group), head_dim, opts, magnitude, seed)| {
            Case { batch, seqlen_q, seqlen_k, heads_kv, group, head_dim, opts, magnitude, seed }.fit(budget)
        })
}

/// Large logits: q and k with standard deviation 100, so scores are ~1e4 with the default
/// scale. Checks that o is finite and matches; the lse is checked relatively (f32 has
/// ~1e-3 absolute resolution at 1e4).
pub fn check_large_logits<T: Element>(case: &Case, device: Device) -> Result<(), String> {
    let mut case = case.clone();
    case.magnitude = 100.0;
    check::<T>(&case, device, Tol { lse_abs: 1e-3, lse_rel: 1e-5, ..tol::<T>() })
}

/// A NaN in one element of q row (batch 0, `row`, head `head`): that row's o is all NaN,
/// every other row finite and matching.
pub fn check_nan_row<T: Element>(case: &Case, row: usize, head: usize, device: Device) -> Result<(), String> {
    let (mut q, k, v) = case.inputs::<T>();
    q[[0, row, head, case.head_dim / 2]] = T::from_f32(f32::NAN);
    check_inputs(case, &q, &k, &v, device, tol::<T>(), &[(0, head, row)])
}

/// The tile-edge suite of the d=64 and d=128 forward kernels on GPU `device` (whichever
/// the `FLASHSCAN_WGMMA_FWD` switch picks on a Hopper: `gpu_attention_wgmma.rs` runs it
/// on the `wgmma` kernels, `gpu_attention_mma.rs` on the `mma.sync` ones).
///
/// Tile edges (the Hopper kernels: 128 query rows in two 64-row warpgroups, 128-key
/// blocks; `mma.sync`: 128 x 64 at d=128, 64 x 64 at d=64): lengths around the block
/// edges, bottom-right causal with seqlen_q != seqlen_k (a warpgroup may see fewer key
/// blocks than its CTA, or none), windows ending inside a block, at head dims 64, 128
/// and the padded 48, 112 (the copy engine zero-fills the columns past the head dim);
/// soft-capping, scales and one-sided windows; GQA / MQA; large logits, a NaN row; long
/// sequences, a long sliding window, more queries than keys (rows seeing nothing);
/// length 1 on either side; three batches (the tensor maps' outer dimension).
pub fn check_forward_tile_edges(d: Device) {
    let causal = AttentionOptions { causal: true, ..Default::default() };
    let window = AttentionOptions { window_left: Some(70), window_right: Some(3), ..Default::default() };

    for &hd in &[64, 128, 48, 112] {
        for opts in [AttentionOptions::default(), causal, window] {
            for (sq, sk) in [
                (1, 1),
                (1, 129),
                (130, 1),
                (64, 64),
                (65, 200),
                (128, 128),
                (129, 127),
                (255, 257),
                (300, 64),
                (40, 520),
            ] {
                let case = Case::new(if sq == 65 { 3 } else { 1 }, sq, sk, 4, 2, hd).with(opts);
                check::<bf16>(&case, d, tol::<bf16>()).unwrap();
                check::<f16>(&case, d, tol::<f16>()).unwrap();
            }
        }
    }
    // Soft-capping, scales and one-sided windows; GQA / MQA.
    let options = [
        AttentionOptions { window_left: Some(0), window_right: Some(0), ..Default::default() },
        AttentionOptions { window_right: Some(5), ..Default::default() },
        AttentionOptions { softcap: Some(30.0), ..Default::default() },
        AttentionOptions { softcap: Some(2.0), softmax_scale: Some(0.7), causal: true, ..Default::default() },
        AttentionOptions { softmax_scale: Some(0.02), ..Default::default() },
    ];
    for &hd in &[64, 128] {
        for opts in options {
            let mut case = Case::new(1, 700, 300, 4, 2, hd).with(opts);
            case.magnitude = 3.0;
            check::<bf16>(&case, d, tol::<bf16>()).unwrap();
        }
        for heads_kv in [1, 8] {
            check::<f16>(&Case::new(2, 300, 517, 8, heads_kv, hd).with(causal), d, tol::<f16>()).unwrap();
        }
        check_large_logits::<bf16>(&Case::new(1, 517, 700, 4, 2, hd).with(causal), d).unwrap();
        check_nan_row::<bf16>(&Case::new(1, 300, 200, 4, 2, hd), 37, 1, d).unwrap();
    }
    // Long sequences, a long sliding window, more queries than keys (rows seeing nothing).
    check::<bf16>(&Case::new(1, 4096, 4096, 2, 1, 128), d, tol::<bf16>()).unwrap();
    check::<f16>(&Case::new(1, 4096, 4096, 2, 2, 64).with(causal), d, tol::<f16>()).unwrap();
    let long_window = AttentionOptions { window_left: Some(256), window_right: Some(0), ..Default::default() };
    check::<bf16>(&Case::new(1, 3001, 4096, 2, 1, 128).with(long_window), d, tol::<bf16>()).unwrap();
    check::<f16>(&Case::new(1, 4096, 1000, 2, 1, 64).with(causal), d, tol::<f16>()).unwrap();
}

// ---------------------------------------------------------------------------------------
// The backward.

/// Relative-error bound of dq, dk and dv (each ||got - ref|| / ||ref|| over the whole
/// tensor) against `attention_backward_given_o`, the f64 gradients of the same rounded
/// q, k, v, dout with D = rowsum(dO * o) from the o that the backward was given: bf16
/// 1e-2, f16 2e-3, the forward's bounds.
///
/// What the backward adds to that oracle: the tensor-core operands P and dS rounded to T
/// (relative error at most u each, the unit roundoff: 2^-8 for bf16, 2^-11 for f16),
/// the gradients rounded to T at the end (at most u), and f32 arithmetic (~1e-6). Three
/// independent roundings of RMS u / sqrt(3) give ~u in RMS: 3.9e-3 for bf16, 4.9e-4 for
/// f16. The bounds leave 2.5x (bf16) and 4x (f16) over that for sums that partly cancel
/// (a row of dS sums to ~0, so a gradient can be smaller than its terms). Measured over
/// 800 random cases: at most 3.4e-3 (bf16) and 4.4e-4 (f16).
///
/// Why not against the exact gradients (`attention_backward`): the backward reads o
/// rounded to T, and where a softmax row is nearly one-hot its dS is far smaller than
/// the change of D that o's rounding causes; no backward that reads o can undo that.
/// Against the exact gradients dq and dk then miss by up to 0.74 (bf16; one query, 63
/// keys, magnitude-3 inputs) and 2.5e-3 (f16), measured over the same cases: an error of
/// the input o, not of the backward. [`BwdErrors::exact`] reports it.
pub fn bwd_tol<T: Element>() -> f64 {
    if T::DTYPE == bf16::DTYPE { 1e-2 } else { 2e-3 }
}

/// Where the backward's o and lse come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Saved {
    /// Our own forward on the same device: what a caller passes, and the pair the
    /// backward's contract is about (its P = exp(S - lse) is normalised by this lse, its
    /// D is computed from this o).
    Forward,
    /// The f64 reference's o rounded to T and lse rounded to f32: the backward then does
    /// not depend on our forward at all.
    Reference,
}

/// The measured relative errors of dq, dk, dv.
#[derive(Clone, Copy, Debug)]
pub struct GradErrors {
    pub dq: f64,
    pub dk: f64,
    pub dv: f64,
}

/// The errors of one backward: against the oracle of the check (D from the given o,
/// bounded by [`bwd_tol`]) and against the exact gradients (reported, not bounded).
#[derive(Clone, Copy, Debug)]
pub struct BwdErrors {
    pub given_o: GradErrors,
    pub exact: GradErrors,
}

/// o and lse for the backward, from `saved`, on `device`.
pub fn saved_outputs<T: Element>(
    case: &Case,
    q: &ArrayD<T>,
    k: &ArrayD<T>,
    v: &ArrayD<T>,
    device: Device,
    saved: Saved,
) -> Result<(Tensor<T>, Tensor<f32>), String> {
    let put = |a: &ArrayD<T>| Tensor::from_array(a.clone(), device).map_err(|e| e.to_string());
    match saved {
        Saved::Forward => {
            let out = forward(&put(q)?, &put(k)?, &put(v)?, &case.opts).map_err(|e| format!("forward failed: {e}"))?;
            Ok((out.o, out.lse))
        }
        Saved::Reference => {
            let (o, lse) = attention(&to_f64(q), &to_f64(k), &to_f64(v), &case.reference_params());
            let o = o.mapv(|x| T::from_f32(x as f32));
            let lse = Tensor::from_array(lse.mapv(|x| x as f32), device).map_err(|e| e.to_string())?;
            Ok((put(&o)?, lse))
        }
    }
}

/// dq, dk, dv.
pub type Grads<T> = (ArrayD<T>, ArrayD<T>, ArrayD<T>);

/// Runs `backward` on `device` with the given o and lse.
#[allow(clippy::too_many_arguments)]
pub fn backward_with<T: Element>(
    case: &Case,
    q: &ArrayD<T>,
    k: &ArrayD<T>,
    v: &ArrayD<T>,
    o: &Tensor<T>,
    lse: &Tensor<f32>,
    dout: &ArrayD<T>,
    device: Device,
    bwd: &BackwardOptions,
) -> Result<Grads<T>, String> {
    let put = |a: &ArrayD<T>| Tensor::from_array(a.clone(), device).map_err(|e| e.to_string());
    let g = backward(&put(q)?, &put(k)?, &put(v)?, o, lse, &put(dout)?, &case.opts, bwd)
        .map_err(|e| format!("backward failed: {e}"))?;
    let get = |t: &Tensor<T>| t.to_array().map_err(|e| e.to_string());
    Ok((get(&g.dq)?, get(&g.dk)?, get(&g.dv)?))
}

/// Runs `backward` on `device` with o and lse from `saved`.
#[allow(clippy::too_many_arguments)]
pub fn run_backward<T: Element>(
    case: &Case,
    q: &ArrayD<T>,
    k: &ArrayD<T>,
    v: &ArrayD<T>,
    dout: &ArrayD<T>,
    device: Device,
    saved: Saved,
    bwd: &BackwardOptions,
) -> Result<Grads<T>, String> {
    let (o, lse) = saved_outputs(case, q, k, v, device, saved)?;
    backward_with(case, q, k, v, &o, &lse, dout, device, bwd)
}

/// Runs the backward on the case's seeded inputs and compares with the f64 reference
/// gradients (see [`check_backward_inputs`]).
pub fn check_backward<T: Element>(
    case: &Case,
    device: Device,
    saved: Saved,
    bwd: &BackwardOptions,
) -> Result<BwdErrors, String> {
    let (q, k, v) = case.inputs::<T>();
    let dout = case.dout::<T>();
    check_backward_inputs(case, &q, &k, &v, &dout, device, saved, bwd)
}

/// Runs the backward with o and lse from `saved` and compares its gradients (see
/// [`compare_grads`]) with `attention_backward_given_o` of the same rounded inputs and
/// that o, within [`bwd_tol`]. Also measures the errors against the exact gradients.
/// Prints both to stderr (seen with `--nocapture`).
#[allow(clippy::too_many_arguments)]
pub fn check_backward_inputs<T: Element>(
    case: &Case,
    q: &ArrayD<T>,
    k: &ArrayD<T>,
    v: &ArrayD<T>,
    dout: &ArrayD<T>,
    device: Device,
    saved: Saved,
    bwd: &BackwardOptions,
) -> Result<BwdErrors, String> {
    let (o, lse) = saved_outputs(case, q, k, v, device, saved)?;
    let got = backward_with(case, q, k, v, &o, &lse, dout, device, bwd)?;
    let o = o.to_array().map_err(|e| e.to_string())?;
    let (q, k, v, o, dout) = (to_f64(q), to_f64(k), to_f64(v), to_f64(&o), to_f64(dout));
    let p = case.reference_params();
    let given_o = attention_backward_given_o(&q, &k, &v, &o, &dout, &p);
    let exact = attention_backward(&q, &k, &v, &dout, &p);
    let at = |e: String| format!("{e}\n  in {case:?} ({}, o and lse from {saved:?})", T::DTYPE);
    let given_o = compare_grads(case, &got, &given_o, bwd_tol::<T>()).map_err(at)?;
    let exact = grad_errors(&got, &exact);
    eprintln!(
        "{} b={} sq={} sk={} hq={} hkv={} d={} m={} {:?} {saved:?}: dq {:.2e} dk {:.2e} dv {:.2e} (exact: {:.2e} {:.2e} {:.2e})",
        T::DTYPE,
        case.batch,
        case.seqlen_q,
        case.seqlen_k,
        case.heads_q(),
        case.heads_kv,
        case.head_dim,
        case.magnitude,
        case.opts,
        given_o.dq,
        given_o.dk,
        given_o.dv,
        exact.dq,
        exact.dk,
        exact.dv,
    );
    Ok(BwdErrors { given_o, exact })
}

/// The relative errors of each gradient over the whole tensor.
pub fn grad_errors<T: Element>(got: &Grads<T>, want: &(ArrayD<f64>, ArrayD<f64>, ArrayD<f64>)) -> GradErrors {
    let rel = |got: &ArrayD<T>, want: &ArrayD<f64>| {
        let got: Vec<f64> = got.iter().map(|x| x.to_f64()).collect();
        let want: Vec<f64> = want.iter().copied().collect();
        rel_error(&got, &want)
    };
    GradErrors { dq: rel(&got.0, &want.0), dk: rel(&got.1, &want.1), dv: rel(&got.2, &want.2) }
}

/// Checks the gradients against the reference:
/// - shapes, and every element finite;
/// - the dq row of a query that sees no key, and the dk and dv rows of a key that no query
///   sees, exactly 0 (their reference is exactly 0: nothing reaches them);
/// - the relative error of each of dq, dk, dv over the whole tensor within `tol` (a
///   reference that is exactly 0 everywhere, as when every query sees a single key, asks
///   for exactly 0).
pub fn compare_grads<T: Element>(
    case: &Case,
    got: &Grads<T>,
    want: &(ArrayD<f64>, ArrayD<f64>, ArrayD<f64>),
    tol: f64,
) -> Result<GradErrors, String> {
    let (dq, dk, dv) = got;
    let (b_n, sq, sk, hq, hkv, d) =
        (case.batch, case.seqlen_q, case.seqlen_k, case.heads_q(), case.heads_kv, case.head_dim);
    for (name, got, want) in
        [("dq", dq, [b_n, sq, hq, d]), ("dk", dk, [b_n, sk, hkv, d]), ("dv", dv, [b_n, sk, hkv, d])]
    {
        if got.shape() != want {
            return Err(format!("{name} has shape {:?}, expected {want:?}", got.shape()));
        }
        if let Some(x) = got.iter().find(|x| !x.to_f32().is_finite()) {
            return Err(format!("{name}: non-finite element {x:?}"));
        }
    }
    for i in (0..sq).filter(|&i| !case.row_sees_a_key(i)) {
        for b in 0..b_n {
            for h in 0..hq {
                if (0..d).any(|x| dq[[b, i, h, x]].to_f32() != 0.0) {
                    return Err(format!("dq row (batch {b}, query {i}, head {h}) sees no key but is not 0"));
                }
            }
        }
    }
    for j in (0..sk).filter(|&j| !case.key_is_seen(j)) {
        for b in 0..b_n {
            for h in 0..hkv {
                for (name, g) in [("dk", dk), ("dv", dv)] {
                    if (0..d).any(|x| g[[b, j, h, x]].to_f32() != 0.0) {
                        return Err(format!(
                            "{name} row (batch {b}, key {j}, kv head {h}) is seen by no query but is not 0"
                        ));
                    }
                }
            }
        }
    }
    let errs = grad_errors(got, want);
    for (name, err) in [("dq", errs.dq), ("dk", errs.dk), ("dv", errs.dv)] {
        if err.is_nan() || err > tol {
            return Err(format!("{name}: relative error {err:.3e} > {tol:.1e}"));
        }
    }
    Ok(errs)
}
