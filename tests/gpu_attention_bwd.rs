//! The GPU attention backward (`kernels-gpu/src/attention/bwd.rs`) against the f64
//! reference gradients, with the bounds and conventions of the CPU suite
//! (`cpu_attention_bwd.rs`, `attention_common::bwd_tol`): random shapes and options,
//! every head dim, lengths off the tiles, length 1, long sequences, rows without keys,
//! keys without queries, and the deterministic mode's bit-for-bit reproducibility.

mod attention_common;

use attention_common::{Case, Saved, bwd_tol, check_backward, check_backward_inputs, run_backward};
use flashscan::attention::{AttentionOptions, BackwardOptions};
use flashscan::{Device, bf16, f16};
use ndarray::Axis;
use proptest::prelude::*;

const GPU: Device = Device::Cuda(0);
const CPU: Device = Device::Cpu;
const FAST: BackwardOptions = BackwardOptions { deterministic: false };
const DET: BackwardOptions = BackwardOptions { deterministic: true };
const HEAD_DIMS: &[usize] = &[8, 16, 32, 40, 64, 72, 96, 104, 128, 136, 192, 200, 256];
/// b * h * n_q * n_k * d per random case (the f64 reference backward on the CPU is the
/// slow part).
const BUDGET: usize = 12_000_000;

fn causal() -> AttentionOptions {
    AttentionOptions { causal: true, ..Default::default() }
}

fn mode() -> impl Strategy<Value = BackwardOptions> {
    any::<bool>().prop_map(|deterministic| BackwardOptions { deterministic })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_backward_matches_reference_bf16(case in attention_common::cases(400, HEAD_DIMS, BUDGET), bwd in mode()) {
        check_backward::<bf16>(&case, GPU, Saved::Forward, &bwd).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_backward_matches_reference_f16(case in attention_common::cases(400, HEAD_DIMS, BUDGET), bwd in mode()) {
        check_backward::<f16>(&case, GPU, Saved::Forward, &bwd).map_err(TestCaseError::fail)?;
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_backward_every_head_dim() {
    let window =
        AttentionOptions { window_left: Some(70), window_right: Some(9), softcap: Some(4.0), ..Default::default() };
    for (n, &d) in HEAD_DIMS.iter().chain(&[24, 48, 56, 80, 88, 112, 120, 160, 248]).enumerate() {
        for opts in [AttentionOptions::default(), causal(), window] {
            let mut case = Case::new(2, 77, 150, 4, 2, d).with(opts);
            case.seed = n as u64;
            for bwd in [FAST, DET] {
                let e = check_backward::<bf16>(&case, GPU, Saved::Forward, &bwd).unwrap();
                eprintln!("d {d} {opts:?} det {}: {:?}", bwd.deterministic, e.given_o);
            }
            check_backward::<f16>(&case, GPU, Saved::Reference, &FAST).unwrap();
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_backward_odd_shapes() {
    // Length 1 on either side, lengths just off the 32 / 64-query and 64 / 128-key tiles,
    // more queries than keys and the other way round, each with and without causal.
    let shapes = [(1, 1), (1, 999), (999, 1), (2, 3), (31, 33), (63, 65), (65, 129), (127, 257), (129, 63), (300, 17)];
    for (n, (sq, sk)) in shapes.into_iter().enumerate() {
        for opts in [AttentionOptions::default(), causal()] {
            for d in [64, 128] {
                let mut case = Case::new(1, sq, sk, 3, 1, d).with(opts);
                case.seed = 40 + n as u64;
                check_backward::<bf16>(&case, GPU, Saved::Forward, &FAST).unwrap();
                check_backward::<f16>(&case, GPU, Saved::Forward, &DET).unwrap();
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_exchange_tile_small_and_ragged() {
    // The exchange tiles (P^T and dS^T through SRAM; d=128: one dO stage, two on sm_90a,
    // d=64: two and no query split) on lengths off their 128-key x 64-query blocks, with
    // GQA, a window with softcap and head dims 104, 128, 48 and 64, both modes and dtypes:
    // small enough for compute-sanitizer. The non-causal cases have unmasked blocks (the
    // kernels' copy without mask tests) next to ragged ones.
    let window =
        AttentionOptions { window_left: Some(40), window_right: Some(3), softcap: Some(15.0), ..Default::default() };
    for case in [
        Case::new(1, 65, 129, 2, 1, 128).with(causal()),
        Case::new(2, 130, 70, 4, 2, 104).with(window),
        Case::new(1, 65, 129, 2, 1, 64).with(causal()),
        Case::new(2, 130, 70, 4, 2, 48).with(window),
        Case::new(1, 130, 200, 2, 1, 128),
        Case::new(1, 130, 200, 2, 1, 64),
    ] {
        for bwd in [FAST, DET] {
            check_backward::<bf16>(&case, GPU, Saved::Forward, &bwd).unwrap();
            check_backward::<f16>(&case, GPU, Saved::Forward, &bwd).unwrap();
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_backward_long_sequences() {
    // Many key blocks per CTA in the deterministic mode, many query blocks per key block,
    // and dQ sums over many key blocks.
    for (sq, sk, d, opts) in [
        (2048, 2048, 64, causal()),
        (2048, 2048, 128, AttentionOptions::default()),
        (1, 8192, 128, AttentionOptions::default()),
        (3000, 40, 64, causal()),
        (1500, 4000, 256, AttentionOptions { window_left: Some(300), window_right: Some(0), ..Default::default() }),
    ] {
        let case = Case::new(1, sq, sk, 2, 1, d).with(opts);
        for bwd in [FAST, DET] {
            let e = check_backward::<bf16>(&case, GPU, Saved::Forward, &bwd).unwrap();
            eprintln!("long {sq} x {sk} d {d} det {}: {:?}", bwd.deterministic, e.given_o);
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_deterministic_mode_is_bitwise_reproducible() {
    for (case, opts) in [
        (Case::new(2, 700, 900, 4, 2, 64), causal()),
        (Case::new(1, 1000, 1000, 3, 1, 128), AttentionOptions::default()),
        (Case::new(1, 513, 2000, 2, 2, 256), AttentionOptions { softcap: Some(10.0), ..Default::default() }),
    ] {
        let case = case.with(opts);
        let (q, k, v) = case.inputs::<bf16>();
        let dout = case.dout::<bf16>();
        let first = run_backward(&case, &q, &k, &v, &dout, GPU, Saved::Forward, &DET).unwrap();
        for _ in 0..3 {
            let again = run_backward(&case, &q, &k, &v, &dout, GPU, Saved::Forward, &DET).unwrap();
            assert!(first == again, "deterministic results differ between runs: {case:?}");
        }
        // And it is the same gradient as the fast mode's, within the bounds.
        check_backward_inputs(&case, &q, &k, &v, &dout, GPU, Saved::Forward, &DET).unwrap();
        check_backward_inputs(&case, &q, &k, &v, &dout, GPU, Saved::Forward, &FAST).unwrap();
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_rows_and_keys_without_partners() {
    // Causal with more queries than keys (rows 0..130 see no key), a diagonal window
    // (each query sees one key: dS = 0 exactly, so dq = dk = 0 and dv = dout), and a
    // narrow window that leaves the first 285 keys unseen. compare_grads checks that
    // those rows are exactly 0.
    let diagonal = AttentionOptions { window_left: Some(0), window_right: Some(0), ..Default::default() };
    let narrow = AttentionOptions { window_left: Some(5), window_right: Some(0), ..Default::default() };
    for case in [
        Case::new(2, 150, 20, 4, 2, 32).with(causal()),
        Case::new(2, 150, 20, 4, 2, 32).with(diagonal),
        Case::new(1, 130, 130, 2, 2, 40).with(diagonal),
        Case::new(1, 10, 300, 2, 1, 64).with(narrow),
    ] {
        for bwd in [FAST, DET] {
            check_backward::<bf16>(&case, GPU, Saved::Forward, &bwd).unwrap();
            check_backward::<f16>(&case, GPU, Saved::Reference, &bwd).unwrap();
        }
    }
    // The diagonal's gradients exactly.
    let case = Case::new(1, 130, 130, 2, 2, 40).with(diagonal);
    let (q, k, v) = case.inputs::<f16>();
    let dout = case.dout::<f16>();
    let (dq, dk, dv) = run_backward(&case, &q, &k, &v, &dout, GPU, Saved::Forward, &FAST).unwrap();
    assert!(dq.iter().chain(&dk).all(|x| x.to_f32() == 0.0));
    assert_eq!(dv, dout);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_huge_windows_equal_no_window() {
    // Windows far wider than the sequences (up to usize::MAX) hide nothing: the forward
    // and the backward give exactly what they give without a window.
    let case = Case::new(1, 200, 333, 2, 1, 64);
    let (q, k, v) = case.inputs::<bf16>();
    let dout = case.dout::<bf16>();
    let plain = run_backward(&case, &q, &k, &v, &dout, GPU, Saved::Forward, &FAST).unwrap();
    for (left, right) in [(Some(usize::MAX), Some(usize::MAX)), (Some(1 << 40), None), (Some(333), Some(200))] {
        let wide = case.clone().with(AttentionOptions { window_left: left, window_right: right, ..Default::default() });
        let got = run_backward(&wide, &q, &k, &v, &dout, GPU, Saved::Forward, &DET).unwrap();
        let fast = run_backward(&wide, &q, &k, &v, &dout, GPU, Saved::Forward, &FAST).unwrap();
        // dk and dv do not depend on the dQ mode; dq within the bounds.
        assert!(got.1 == plain.1 && got.2 == plain.2, "window ({left:?}, {right:?})");
        assert!(fast.1 == plain.1 && fast.2 == plain.2, "window ({left:?}, {right:?})");
        check_backward::<bf16>(&wide, GPU, Saved::Forward, &DET).unwrap();
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_gqa_and_the_cpu_path_agree() {
    // The GPU and the CPU paths compute the same tiled algorithm with the same roundings
    // of P and dS: their gradients differ only by the order of f32 sums.
    let case = Case::new(2, 177, 301, 8, 2, 128).with(AttentionOptions {
        window_left: Some(120),
        softcap: Some(20.0),
        ..Default::default()
    });
    let (q, k, v) = case.inputs::<bf16>();
    let dout = case.dout::<bf16>();
    let gpu = run_backward(&case, &q, &k, &v, &dout, GPU, Saved::Reference, &FAST).unwrap();
    let cpu = run_backward(&case, &q, &k, &v, &dout, CPU, Saved::Reference, &FAST).unwrap();
    for (name, g, c) in [("dq", &gpu.0, &cpu.0), ("dk", &gpu.1, &cpu.1), ("dv", &gpu.2, &cpu.2)] {
        let (g, c): (Vec<f64>, Vec<f64>) = g.iter().zip(c).map(|(a, b)| (a.to_f64(), b.to_f64())).unzip();
        let err = flashscan::reference::rel_error(&g, &c);
        eprintln!("GPU against CPU {name}: {err:.2e}");
        // Both round the same P and dS (up to f32 sum order) and the outputs once each.
        assert!(err <= bwd_tol::<bf16>(), "{name}: {err:e}");
    }
    // Each kv head's dk is the sum over its 4 query heads: scaling dout of head 0 only
    // changes kv head 0.
    let mut dout2 = dout.clone();
    dout2.index_axis_mut(Axis(2), 0).mapv_inplace(|x| bf16::from_f32(x.to_f32() * 2.0));
    let gpu2 = run_backward(&case, &q, &k, &v, &dout2, GPU, Saved::Reference, &FAST).unwrap();
    assert!(gpu2.1.index_axis(Axis(2), 1) == gpu.1.index_axis(Axis(2), 1));
    assert!(gpu2.1.index_axis(Axis(2), 0) != gpu.1.index_axis(Axis(2), 0));
}
