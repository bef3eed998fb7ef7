//! The CPU attention forward (the kernel's tiled algorithm) against the f64 reference:
//! property tests over shapes, masks, soft caps, scales and GQA, plus fixed masking corners.

mod attention_common;

use attention_common::{Case, check, check_large_logits, check_nan_row, tol};
use flashscan::attention::{AttentionOptions, forward};
use flashscan::{Device, Element, Tensor, bf16, f16};
use ndarray::{ArrayD, Axis, IxDyn};
use proptest::prelude::*;

const HEAD_DIMS: &[usize] = &[8, 32, 40, 64, 96, 128, 192, 256];
/// b * h * n_q * n_k * d per case: keeps one case well under a second.
const BUDGET: usize = 30_000_000;
const CPU: Device = Device::Cpu;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn cpu_matches_reference_bf16(case in attention_common::cases(300, HEAD_DIMS, BUDGET)) {
        check::<bf16>(&case, CPU, tol::<bf16>()).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn cpu_matches_reference_f16(case in attention_common::cases(300, HEAD_DIMS, BUDGET)) {
        check::<f16>(&case, CPU, tol::<f16>()).map_err(TestCaseError::fail)?;
    }
}

fn run<T: Element>(q: &ArrayD<T>, k: &ArrayD<T>, v: &ArrayD<T>, opts: &AttentionOptions) -> (ArrayD<T>, ArrayD<f32>) {
    let t = |a: &ArrayD<T>| Tensor::Cpu(a.clone());
    let out = forward(&t(q), &t(k), &t(v), opts).expect("valid arguments");
    (out.o.to_array().expect("cpu"), out.lse.to_array().expect("cpu"))
}

/// scale * q[b, i, h] · k[b, j, kv_head]
fn score<T: Element>(
    q: &ArrayD<T>,
    k: &ArrayD<T>,
    (b, i, h): (usize, usize, usize),
    (j, kvh): (usize, usize),
    scale: f32,
) -> f32 {
    let d = q.shape()[3];
    (0..d).map(|x| q[[b, i, h, x]].to_f32() * k[[b, j, kvh, x]].to_f32()).sum::<f32>() * scale
}

#[test]
fn causal_with_more_queries_than_keys_leaves_the_top_rows_empty() {
    // seqlen_q = 70, seqlen_k = 5, causal, bottom-right aligned: query i sees keys
    // j <= i - 65, so rows 0..=64 see nothing (the whole first 64-row block is skipped) and
    // row 65 sees only key 0.
    let case = Case::new(1, 70, 5, 2, 2, 64).with(AttentionOptions { causal: true, ..Default::default() });
    let (q, k, v) = case.inputs::<bf16>();
    let (o, lse) = run(&q, &k, &v, &case.opts);
    for h in 0..2 {
        for i in 0..=64 {
            assert!((0..64).all(|x| o[[0, i, h, x]].to_f32() == 0.0), "row {i} head {h} is not 0");
            assert_eq!(lse[[0, h, i]], f32::INFINITY, "row {i} head {h}");
        }
        // One visible key: p = 1 exactly, so o is that key's v row exactly.
        for x in 0..64 {
            assert_eq!(o[[0, 65, h, x]], v[[0, 0, h, x]]);
        }
        let expect = score(&q, &k, (0, 65, h), (0, h), 1.0 / 8.0);
        assert!((lse[[0, h, 65]] - expect).abs() <= 1e-4 * expect.abs().max(1.0));
    }
    check::<bf16>(&case, CPU, tol::<bf16>()).unwrap();
    check::<f16>(&case, CPU, tol::<f16>()).unwrap();
}

#[test]
fn seqlen_one() {
    for causal in [false, true] {
        let case = Case::new(2, 1, 1, 4, 1, 32).with(AttentionOptions { causal, ..Default::default() });
        let (q, k, v) = case.inputs::<f16>();
        let (o, lse) = run(&q, &k, &v, &case.opts);
        for b in 0..2 {
            for h in 0..4 {
                // One key: o = v exactly, lse = the one score.
                for x in 0..32 {
                    assert_eq!(o[[b, 0, h, x]], v[[b, 0, 0, x]]);
                }
                let s = score(&q, &k, (b, 0, h), (0, 0), 1.0 / 32f32.sqrt());
                assert!((lse[[b, h, 0]] - s).abs() <= 1e-5 * s.abs().max(1.0), "{} vs {s}", lse[[b, h, 0]]);
            }
        }
    }
    // A single query against many keys, and many queries against a single key.
    for (sq, sk) in [(1, 200), (200, 1)] {
        for causal in [false, true] {
            let case = Case::new(1, sq, sk, 2, 1, 64).with(AttentionOptions { causal, ..Default::default() });
            check::<bf16>(&case, CPU, tol::<bf16>()).unwrap();
        }
    }
}

#[test]
fn a_single_query_sees_every_key_under_causal() {
    // Bottom-right alignment: the last query sits on the last key's diagonal.
    let case = Case::new(1, 1, 200, 2, 2, 64);
    let (q, k, v) = case.inputs::<bf16>();
    let (o, lse) = run(&q, &k, &v, &AttentionOptions::default());
    let (oc, lsec) = run(&q, &k, &v, &AttentionOptions { causal: true, ..Default::default() });
    assert_eq!(o, oc);
    assert_eq!(lse, lsec);
}

#[test]
fn diagonal_window_copies_v() {
    // window (0, 0): each query sees exactly the key on its diagonal.
    for (sq, sk) in [(130, 130), (70, 200)] {
        let opts = AttentionOptions { window_left: Some(0), window_right: Some(0), ..Default::default() };
        let case = Case::new(1, sq, sk, 2, 1, 40).with(opts);
        let (q, k, v) = case.inputs::<bf16>();
        let (o, _) = run(&q, &k, &v, &opts);
        for i in 0..sq {
            let j = i + sk - sq;
            for h in 0..2 {
                for x in 0..40 {
                    assert_eq!(o[[0, i, h, x]], v[[0, j, 0, x]], "query {i}");
                }
            }
        }
        check::<bf16>(&case, CPU, tol::<bf16>()).unwrap();
    }
}

#[test]
fn sliding_windows_skip_blocks_on_both_sides() {
    // Windows narrower than a tile, so query blocks skip key blocks on the left and right.
    for (left, right) in [(Some(20), Some(0)), (Some(5), Some(70)), (None, Some(3)), (Some(100), None)] {
        let opts = AttentionOptions { window_left: left, window_right: right, ..Default::default() };
        for (sq, sk) in [(300, 300), (257, 130), (100, 290)] {
            let case = Case::new(1, sq, sk, 2, 1, 32).with(opts);
            check::<f16>(&case, CPU, tol::<f16>()).unwrap();
        }
    }
    // Causal plus a left window.
    let opts = AttentionOptions { causal: true, window_left: Some(10), window_right: Some(50), ..Default::default() };
    check::<bf16>(&Case::new(2, 200, 200, 1, 1, 64).with(opts), CPU, tol::<bf16>()).unwrap();
}

#[test]
fn rows_outside_every_window_are_empty() {
    // seqlen_q = 10, seqlen_k = 3 with window (0, 0): shift = -7, query i sees key i - 7,
    // so rows 0..7 see nothing and rows 7..10 see one key each.
    let opts = AttentionOptions { window_left: Some(0), window_right: Some(0), ..Default::default() };
    let case = Case::new(1, 10, 3, 1, 1, 8).with(opts);
    let (q, k, v) = case.inputs::<f16>();
    let (o, lse) = run(&q, &k, &v, &opts);
    for i in 0..7 {
        assert_eq!(lse[[0, 0, i]], f32::INFINITY);
        assert!((0..8).all(|x| o[[0, i, 0, x]].to_f32() == 0.0));
    }
    for i in 7..10 {
        assert!(lse[[0, 0, i]].is_finite());
    }
    check::<f16>(&case, CPU, tol::<f16>()).unwrap();
}

#[test]
fn gqa_equals_repeated_kv_heads() {
    // heads_q = 6 over heads_kv = 2 gives exactly what 6 kv heads, each kv head repeated
    // for its group of 3 query heads, give.
    let case = Case::new(2, 77, 93, 6, 2, 64).with(AttentionOptions { causal: true, ..Default::default() });
    let (q, k, v) = case.inputs::<bf16>();
    let repeat = |a: &ArrayD<bf16>| {
        let views: Vec<_> = (0..6).map(|h| a.index_axis(Axis(2), h / 3).insert_axis(Axis(2))).collect();
        ndarray::concatenate(Axis(2), &views).unwrap()
    };
    let (o, lse) = run(&q, &k, &v, &case.opts);
    let (o2, lse2) = run(&q, &repeat(&k), &repeat(&v), &case.opts);
    assert_eq!(o, o2);
    assert_eq!(lse, lse2);
}

#[test]
fn non_contiguous_inputs() {
    // The same q, k, v stored head-major and viewed in the [b, s, h, d] layout.
    let case = Case::new(1, 65, 66, 2, 2, 32);
    let (q, k, v) = case.inputs::<bf16>();
    let permuted = |a: &ArrayD<bf16>| {
        let head_major = a.view().permuted_axes(IxDyn(&[0, 2, 1, 3])).as_standard_layout().into_owned();
        head_major.permuted_axes(IxDyn(&[0, 2, 1, 3]))
    };
    let (qp, kp, vp) = (permuted(&q), permuted(&k), permuted(&v));
    assert!(!qp.is_standard_layout());
    assert_eq!(run(&q, &k, &v, &case.opts), run(&qp, &kp, &vp, &case.opts));
}

#[test]
fn large_logits_stay_finite() {
    // Scores ~ 1e4: the online softmax must subtract the running max before exp2.
    for causal in [false, true] {
        let case = Case::new(1, 150, 190, 4, 2, 64).with(AttentionOptions { causal, ..Default::default() });
        check_large_logits::<bf16>(&case, CPU).unwrap();
        check_large_logits::<f16>(&case, CPU).unwrap();
    }
}

#[test]
fn nan_in_one_query_row_stays_in_that_row() {
    let case = Case::new(1, 100, 80, 4, 2, 64);
    check_nan_row::<bf16>(&case, 37, 1, CPU).unwrap();
    check_nan_row::<f16>(&case, 99, 3, CPU).unwrap();
    let causal = case.with(AttentionOptions { causal: true, window_left: Some(30), ..Default::default() });
    check_nan_row::<bf16>(&causal, 64, 0, CPU).unwrap();
}

#[test]
fn softcap_and_scale() {
    let opts = AttentionOptions { softcap: Some(2.0), softmax_scale: Some(0.7), ..Default::default() };
    let mut case = Case::new(2, 129, 64, 3, 1, 96).with(opts);
    case.magnitude = 3.0;
    check::<bf16>(&case, CPU, tol::<bf16>()).unwrap();
    check::<f16>(&case, CPU, tol::<f16>()).unwrap();
    // A soft cap bounds the scores, so even 1e4-sized raw scores give a smooth softmax.
    check_large_logits::<f16>(&case.with(AttentionOptions { softcap: Some(30.0), ..Default::default() }), CPU).unwrap();
}

#[test]
fn long_sequence() {
    // One head at 2048 x 2048, causal.
    let case = Case::new(1, 2048, 2048, 1, 1, 128).with(AttentionOptions { causal: true, ..Default::default() });
    let t = std::time::Instant::now();
    check::<bf16>(&case, CPU, tol::<bf16>()).unwrap();
    eprintln!("2048x2048 d=128 causal, forward + f64 reference: {:?}", t.elapsed());
}
