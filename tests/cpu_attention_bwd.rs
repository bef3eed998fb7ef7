//! The CPU attention backward (the future kernel's tiled algorithm) against f64
//! reference gradients, and the reference gradients themselves against central finite
//! differences of the f64 reference forward.
//!
//! Where the backward's o and lse come from: the property tests take them from our own
//! CPU forward (`Saved::Forward`). That is what a caller passes, and the backward is only
//! defined for a consistent pair: it recomputes P = exp(S - lse), so the lse must be the
//! one the forward normalised with, and it takes D = rowsum(dO * O) from o. Feeding it the
//! forward's outputs also checks that the two agree on every convention (natural-log lse,
//! +inf for rows without keys, the scale and the soft cap). The reference's o and lse
//! (rounded to T and f32, `Saved::Reference`) take our forward out of the loop; some fixed
//! tests run both.
//!
//! The oracle is `attention_backward_given_o`: the exact gradient formula on the same
//! rounded q, k, v, dout, with D from the o the backward was given (see `bwd_tol` for
//! why, and for the bounds). The errors against the exact gradients
//! (`attention_backward`) are measured too; in well-conditioned cases they are bounded
//! by the same tolerances (`either_saved_source_matches_the_exact_gradients_when_well_conditioned`).

mod attention_common;

use attention_common::{Case, Rng, Saved, bwd_tol, check_backward, check_backward_inputs, run_backward};
use flashscan::attention::{AttentionOptions, BackwardOptions};
use flashscan::reference::attention::{
    AttentionRef, attention, attention_backward, attention_backward_given_o, to_f64,
};
use flashscan::reference::rel_error;
use flashscan::{Device, Element, bf16, f16};
use ndarray::{ArrayD, Axis, IxDyn};
use proptest::prelude::*;

const HEAD_DIMS: &[usize] = &[8, 32, 40, 64, 96, 128, 192, 256];
/// b * h * n_q * n_k * d per random case. The backward does ~2.5x the forward's work, and
/// each case also runs the forward and the f64 reference backward.
const BUDGET: usize = 8_000_000;
const CPU: Device = Device::Cpu;
const FAST: BackwardOptions = BackwardOptions { deterministic: false };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn cpu_backward_matches_reference_bf16(case in attention_common::cases(300, HEAD_DIMS, BUDGET)) {
        check_backward::<bf16>(&case, CPU, Saved::Forward, &FAST).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn cpu_backward_matches_reference_f16(case in attention_common::cases(300, HEAD_DIMS, BUDGET)) {
        check_backward::<f16>(&case, CPU, Saved::Forward, &FAST).map_err(TestCaseError::fail)?;
    }
}

fn causal() -> AttentionOptions {
    AttentionOptions { causal: true, ..Default::default() }
}

#[test]
fn either_saved_source_matches_the_exact_gradients_when_well_conditioned() {
    // Many visible keys per row and magnitude-1 inputs: no softmax row is nearly one-hot,
    // so here the gradients are also within the bounds of the exact gradients, whichever
    // o and lse they were computed from.
    let opts = [
        AttentionOptions::default(),
        causal(),
        AttentionOptions { window_left: Some(40), window_right: Some(3), softcap: Some(5.0), ..Default::default() },
    ];
    for opts in opts {
        for (sq, sk) in [(131, 200), (200, 65)] {
            let case = Case::new(2, sq, sk, 4, 2, 64).with(opts);
            for saved in [Saved::Forward, Saved::Reference] {
                let bf = check_backward::<bf16>(&case, CPU, saved, &FAST).unwrap().exact;
                let hf = check_backward::<f16>(&case, CPU, saved, &FAST).unwrap().exact;
                for (e, tol) in [(bf, bwd_tol::<bf16>()), (hf, bwd_tol::<f16>())] {
                    assert!(
                        e.dq <= tol && e.dk <= tol && e.dv <= tol,
                        "{e:?} against the exact gradients, {case:?} {saved:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn nearly_one_hot_rows() {
    // Two visible keys per query (window (1, 0)) and magnitude-3 inputs: score gaps of ~10,
    // so P is nearly (1, 0) and dS is tiny. o rounded to T moves D by more than dS: the
    // errors against the exact gradients are large, while against the gradients with D
    // from the given o they stay within the bounds.
    let opts = AttentionOptions { window_left: Some(1), window_right: Some(0), ..Default::default() };
    let mut worst_ratio = 0f64;
    for seed in 0..16 {
        let mut case = Case::new(1, 40, 41, 2, 1, 64).with(opts);
        (case.magnitude, case.seed) = (3.0, seed);
        for saved in [Saved::Forward, Saved::Reference] {
            for e in [check_backward::<bf16>(&case, CPU, saved, &FAST), check_backward::<f16>(&case, CPU, saved, &FAST)]
            {
                let e = e.unwrap();
                worst_ratio = worst_ratio.max(e.exact.dq / e.given_o.dq);
            }
        }
    }
    eprintln!(
        "nearly one-hot rows: dq error against the exact gradients up to {worst_ratio:.1}x that against D from o"
    );
    // The cases do reach the regime this test is about.
    assert!(worst_ratio > 2.0, "exact / given-o dq error ratio at most {worst_ratio}");
}

/// Central differences of the f64 reference forward's loss L = sum(dout * o) with respect
/// to every element of q, k and v, against `attention_backward`.
fn finite_difference_check(case: &Case) {
    let mut rng = Rng::new(case.seed);
    let (b, sq, sk, hq, hkv, d) =
        (case.batch, case.seqlen_q, case.seqlen_k, case.heads_q(), case.heads_kv, case.head_dim);
    let mut gaussian = |shape: &[usize], std: f64| {
        let n = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|_| rng.gaussian() * std).collect()).unwrap()
    };
    let m = case.magnitude as f64;
    let mut x = [gaussian(&[b, sq, hq, d], m), gaussian(&[b, sk, hkv, d], m), gaussian(&[b, sk, hkv, d], 1.0)];
    let dout = gaussian(&[b, sq, hq, d], 1.0);
    let p = case.reference_params();
    let loss = |x: &[ArrayD<f64>; 3]| (attention(&x[0], &x[1], &x[2], &p).0 * &dout).sum();

    let (dq, dk, dv) = attention_backward(&x[0], &x[1], &x[2], &dout, &p);
    // With the exact o, D from o is the exact D.
    let o = attention(&x[0], &x[1], &x[2], &p).0;
    let given = attention_backward_given_o(&x[0], &x[1], &x[2], &o, &dout, &p);
    for (a, b) in [(&dq, &given.0), (&dk, &given.1), (&dv, &given.2)] {
        assert!(a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-12 * (1.0 + a.abs())), "{case:?}");
    }
    let grads = [dq, dk, dv];
    // eps = 1e-5: the truncation error (eps^2 |L'''| / 6, L''' of order 1 to 100 here) and
    // the rounding error (1e-16 |L| / eps) are both below 1e-8.
    let eps = 1e-5;
    let mut largest = 0f64;
    for (which, name) in ["q", "k", "v"].iter().enumerate() {
        for idx in 0..x[which].len() {
            let at = |x: &mut [ArrayD<f64>; 3], delta: f64| {
                x[which].as_slice_mut().unwrap()[idx] += delta;
            };
            at(&mut x, eps);
            let plus = loss(&x);
            at(&mut x, -2.0 * eps);
            let minus = loss(&x);
            at(&mut x, eps);
            let fd = (plus - minus) / (2.0 * eps);
            let g = grads[which].as_slice().unwrap()[idx];
            largest = largest.max(g.abs());
            assert!(
                (fd - g).abs() <= 1e-6 * (1.0 + g.abs()),
                "d{name}[{idx}]: reference {g}, finite difference {fd} in {case:?}"
            );
        }
    }
    // The comparison means something only if the gradients are not all ~0.
    assert!(largest > 0.05, "largest gradient {largest} in {case:?}");
}

#[test]
fn reference_gradients_match_finite_differences() {
    let cases = [
        Case::new(1, 3, 4, 2, 1, 8),
        Case::new(2, 5, 5, 2, 2, 8).with(causal()),
        // More queries than keys, causal: queries 0..=2 see no key (their dq must be 0 and
        // the finite differences give 0 too).
        Case::new(1, 6, 3, 3, 1, 8).with(causal()),
        Case::new(1, 4, 7, 4, 2, 16).with(AttentionOptions {
            window_left: Some(2),
            window_right: Some(1),
            softmax_scale: Some(0.3),
            ..Default::default()
        }),
        // A soft cap in its non-linear range (scores of a few units against a cap of 1.5).
        Case::new(1, 5, 6, 2, 1, 8).with(AttentionOptions {
            softcap: Some(1.5),
            softmax_scale: Some(0.9),
            ..Default::default()
        }),
        Case::new(1, 4, 5, 2, 1, 8).with(AttentionOptions {
            causal: true,
            softcap: Some(3.0),
            window_left: Some(1),
            ..Default::default()
        }),
    ];
    for (n, mut case) in cases.into_iter().enumerate() {
        case.seed = 100 + n as u64;
        finite_difference_check(&case);
        case.magnitude = 2.0;
        finite_difference_check(&case);
    }
}

/// dout with `value` in every row that sees no key.
fn fill_empty_rows<T: Element>(case: &Case, dout: &ArrayD<T>, value: f32) -> ArrayD<T> {
    let mut dout = dout.clone();
    for i in (0..case.seqlen_q).filter(|&i| !case.row_sees_a_key(i)) {
        dout.index_axis_mut(Axis(1), i).fill(T::from_f32(value));
    }
    dout
}

#[test]
fn rows_without_keys_contribute_nothing() {
    // seqlen_q = 150 > seqlen_k = 20, causal: queries 0..130 see no key (two whole query
    // blocks and part of a third). Their dout, however large, must change nothing: their
    // dq is 0 and they add nothing to dk and dv. The same with a diagonal window, where
    // rows 0..130 see no key either and keys are each seen by one query.
    let diagonal = AttentionOptions { window_left: Some(0), window_right: Some(0), ..Default::default() };
    for opts in [causal(), diagonal] {
        let case = Case::new(2, 150, 20, 4, 2, 32).with(opts);
        assert!((0..130).all(|i| !case.row_sees_a_key(i)) && case.row_sees_a_key(130));
        let (q, k, v) = case.inputs::<bf16>();
        let dout = case.dout::<bf16>();
        let (zeroed, huge) = (fill_empty_rows(&case, &dout, 0.0), fill_empty_rows(&case, &dout, 3e4));
        for saved in [Saved::Forward, Saved::Reference] {
            let with_zeros = run_backward(&case, &q, &k, &v, &zeroed, CPU, saved, &FAST).unwrap();
            let with_huge = run_backward(&case, &q, &k, &v, &huge, CPU, saved, &FAST).unwrap();
            assert_eq!(with_zeros, with_huge, "{opts:?} {saved:?}");
            // (the comparison checks that those dq rows are exactly 0)
            check_backward_inputs(&case, &q, &k, &v, &huge, CPU, saved, &FAST).unwrap();
        }
        // The reference obeys the same rule.
        let p = case.reference_params();
        let (q, k, v) = (to_f64(&q), to_f64(&k), to_f64(&v));
        let a = attention_backward(&q, &k, &v, &to_f64(&zeroed), &p);
        let b = attention_backward(&q, &k, &v, &to_f64(&huge), &p);
        assert_eq!(a, b);
        assert!(a.0.index_axis(Axis(1), 0).iter().all(|&x| x == 0.0));
    }
}

#[test]
fn keys_outside_every_window_get_zero_gradients() {
    // Query i sees keys [i + 290 - 5, i + 290]: keys 0..285 (two whole key blocks and part
    // of a third) are seen by no query.
    let opts = AttentionOptions { window_left: Some(5), window_right: Some(0), ..Default::default() };
    let case = Case::new(1, 10, 300, 2, 1, 64).with(opts);
    assert!(!case.key_is_seen(284) && case.key_is_seen(285));
    // (compare_grads checks that those rows are exactly 0)
    check_backward::<bf16>(&case, CPU, Saved::Forward, &FAST).unwrap();
    check_backward::<f16>(&case, CPU, Saved::Forward, &FAST).unwrap();
}

#[test]
fn one_visible_key_per_query() {
    // With a single visible key a query's softmax is constant (P = 1), so dS = 0: dq and dk
    // are exactly 0, and dv of a key seen by one query is that query's dout exactly.
    let diagonal = AttentionOptions { window_left: Some(0), window_right: Some(0), ..Default::default() };
    for (case, seen_by_one) in [
        (Case::new(2, 1, 1, 3, 3, 32), true),
        (Case::new(2, 1, 1, 3, 3, 32).with(causal()), true),
        (Case::new(1, 200, 1, 2, 2, 64), false),
        (Case::new(1, 130, 130, 2, 2, 40).with(diagonal), true),
        (Case::new(1, 70, 200, 2, 1, 40).with(diagonal), false),
    ] {
        for saved in [Saved::Forward, Saved::Reference] {
            let (q, k, v) = case.inputs::<f16>();
            let dout = case.dout::<f16>();
            let (dq, dk, dv) = run_backward(&case, &q, &k, &v, &dout, CPU, saved, &FAST).unwrap();
            assert!(dq.iter().chain(&dk).all(|x| x.to_f32() == 0.0), "{case:?}");
            if seen_by_one {
                let shift = case.seqlen_k - case.seqlen_q;
                for ((b, i, h, x), &g) in dout.indexed_iter().map(|(i, g)| ((i[0], i[1], i[2], i[3]), g)) {
                    assert_eq!(dv[[b, i + shift, h, x]], g, "batch {b} query {i} head {h} {case:?}");
                }
            }
            check_backward::<f16>(&case, CPU, saved, &FAST).unwrap();
            check_backward::<bf16>(&case, CPU, saved, &FAST).unwrap();
        }
    }
}

#[test]
fn block_edges_and_windows() {
    // Lengths on and around the 64-query and 128-key blocks, and windows narrower than a
    // block (so key blocks skip query blocks on both sides).
    let windows = [(None, None), (Some(20), Some(0)), (Some(5), Some(70)), (None, Some(3)), (Some(100), None)];
    for (left, right) in windows {
        let opts = AttentionOptions { window_left: left, window_right: right, ..Default::default() };
        for (sq, sk) in [(64, 128), (65, 129), (127, 257), (300, 300), (257, 130), (100, 290)] {
            let case = Case::new(1, sq, sk, 2, 1, 32).with(opts);
            check_backward::<f16>(&case, CPU, Saved::Forward, &FAST).unwrap();
        }
    }
    let opts = AttentionOptions { causal: true, window_left: Some(10), window_right: Some(50), ..Default::default() };
    check_backward::<bf16>(&Case::new(2, 200, 200, 1, 1, 64).with(opts), CPU, Saved::Forward, &FAST).unwrap();
}

#[test]
fn softcap_and_scale() {
    let opts = AttentionOptions { softcap: Some(2.0), softmax_scale: Some(0.7), ..Default::default() };
    let mut case = Case::new(2, 129, 64, 3, 1, 96).with(opts);
    case.magnitude = 3.0;
    check_backward::<bf16>(&case, CPU, Saved::Forward, &FAST).unwrap();
    check_backward::<f16>(&case, CPU, Saved::Forward, &FAST).unwrap();
    let causal_cap = AttentionOptions { causal: true, softcap: Some(30.0), ..Default::default() };
    check_backward::<f16>(&case.with(causal_cap), CPU, Saved::Forward, &FAST).unwrap();
}

#[test]
fn gqa_equals_repeated_kv_heads() {
    // heads_q = 6 over heads_kv = 2 against 6 kv heads, each kv head repeated for its group
    // of 3: dq is the same bit for bit (the same sums in the same order), and dk, dv are
    // the sums over each group of the repeated heads' gradients.
    let case = Case::new(2, 77, 93, 6, 2, 64).with(causal());
    let (q, k, v) = case.inputs::<bf16>();
    let dout = case.dout::<bf16>();
    let repeat = |a: &ArrayD<bf16>| {
        let views: Vec<_> = (0..6).map(|h| a.index_axis(Axis(2), h / 3).insert_axis(Axis(2))).collect();
        ndarray::concatenate(Axis(2), &views).unwrap()
    };
    let mut rep = case.clone();
    (rep.heads_kv, rep.group) = (6, 1);
    let (dq, dk, dv) = run_backward(&case, &q, &k, &v, &dout, CPU, Saved::Forward, &FAST).unwrap();
    let (dq6, dk6, dv6) = run_backward(&rep, &q, &repeat(&k), &repeat(&v), &dout, CPU, Saved::Forward, &FAST).unwrap();
    assert_eq!(dq, dq6);
    for (g, g6) in [(&dk, &dk6), (&dv, &dv6)] {
        let (mut got, mut summed) = (Vec::new(), Vec::new());
        for ((b, j, kvh, x), value) in g.indexed_iter().map(|(i, v)| ((i[0], i[1], i[2], i[3]), v)) {
            got.push(value.to_f64());
            summed.push((0..3).map(|r| g6[[b, j, kvh * 3 + r, x]].to_f64()).sum::<f64>());
        }
        let err = rel_error(&got, &summed);
        eprintln!("GQA against the summed repeated heads: {err:.2e}");
        // Each side is rounded to bf16 once (the group sum in f32 first on one side): the
        // difference is two roundings.
        assert!(err <= bwd_tol::<bf16>(), "{err:e}");
    }
    check_backward::<bf16>(&case, CPU, Saved::Forward, &FAST).unwrap();
}

#[test]
fn deterministic_and_repeatable() {
    // The CPU is deterministic in both modes: the same bits every run and in either mode.
    let case = Case::new(2, 190, 170, 4, 2, 64).with(causal());
    let (q, k, v) = case.inputs::<bf16>();
    let dout = case.dout::<bf16>();
    let det = BackwardOptions { deterministic: true };
    let first = run_backward(&case, &q, &k, &v, &dout, CPU, Saved::Forward, &det).unwrap();
    for bwd in [det, FAST, det] {
        assert_eq!(run_backward(&case, &q, &k, &v, &dout, CPU, Saved::Forward, &bwd).unwrap(), first);
    }
}

#[test]
fn non_contiguous_inputs() {
    // The same tensors stored head-major and viewed in the [b, s, h, d] layout.
    let case = Case::new(1, 65, 130, 2, 2, 32);
    let (q, k, v) = case.inputs::<bf16>();
    let dout = case.dout::<bf16>();
    let permuted = |a: &ArrayD<bf16>| {
        let head_major = a.view().permuted_axes(IxDyn(&[0, 2, 1, 3])).as_standard_layout().into_owned();
        head_major.permuted_axes(IxDyn(&[0, 2, 1, 3]))
    };
    let (qp, kp, vp, dp) = (permuted(&q), permuted(&k), permuted(&v), permuted(&dout));
    assert!(!qp.is_standard_layout() && !dp.is_standard_layout());
    assert_eq!(
        run_backward(&case, &q, &k, &v, &dout, CPU, Saved::Forward, &FAST).unwrap(),
        run_backward(&case, &qp, &kp, &vp, &dp, CPU, Saved::Forward, &FAST).unwrap()
    );
}

#[test]
fn long_sequence() {
    // One head at 1024 x 1024, d = 128, causal.
    let case = Case::new(1, 1024, 1024, 1, 1, 128).with(causal());
    let t = std::time::Instant::now();
    check_backward::<bf16>(&case, CPU, Saved::Forward, &FAST).unwrap();
    eprintln!("1024x1024 d=128 causal, forward + backward + f64 reference backward: {:?}", t.elapsed());
}

#[test]
fn reference_backward_sums_gqa_groups() {
    // The reference's GQA: the gradients of k and v are those of the repeated kv heads
    // summed over each group (in f64, to rounding).
    let case = Case::new(1, 9, 11, 4, 2, 8).with(AttentionOptions { softcap: Some(2.0), ..causal() });
    let (q, k, v) = case.inputs::<f16>();
    let (q, k, v, dout) = (to_f64(&q), to_f64(&k), to_f64(&v), to_f64(&case.dout::<f16>()));
    let repeat = |a: &ArrayD<f64>| {
        let views: Vec<_> = (0..4).map(|h| a.index_axis(Axis(2), h / 2).insert_axis(Axis(2))).collect();
        ndarray::concatenate(Axis(2), &views).unwrap()
    };
    let p: AttentionRef = case.reference_params();
    let (dq, dk, dv) = attention_backward(&q, &k, &v, &dout, &p);
    let (dq4, dk4, dv4) = attention_backward(&q, &repeat(&k), &repeat(&v), &dout, &p);
    assert_eq!(dq, dq4);
    for (g, g4) in [(&dk, &dk4), (&dv, &dv4)] {
        for j in 0..11 {
            for kvh in 0..2 {
                for x in 0..8 {
                    let (want, sum) = (g[[0, j, kvh, x]], g4[[0, j, 2 * kvh, x]] + g4[[0, j, 2 * kvh + 1, x]]);
                    assert!((sum - want).abs() <= 1e-12 * (1.0 + want.abs()), "key {j} kv head {kvh}: {sum} vs {want}");
                }
            }
        }
    }
}
