//! Shared by `cpu_attention.rs` and `gpu_attention.rs`: attention test cases (shapes,
//! options, seeded random inputs), the proptest strategy that draws them, and the
//! comparison of `flashscan::attention::forward` with the f64 reference.

#![allow(dead_code)]

use flashscan::attention::{AttentionOptions, forward};
use flashscan::reference::attention::{AttentionRef, attention, to_f64};
use flashscan::reference::rel_error;
use flashscan::{Device, Element, Tensor, bf16};
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
