//! The GPU attention forward against the f64 reference: the property checks of
//! `cpu_attention.rs` on `Device::Cuda(0)`, plus long sequences, every head dimension
//! (padded ones included), and outputs poisoned with NaN before each launch so that an
//! unwritten element fails. Run with `cargo test --release --test gpu_attention -- --ignored`
//! on a machine with an NVIDIA GPU.

mod attention_common;

use attention_common::{Case, check, check_large_logits, check_nan_row, tol};
use flashscan::attention::{AttentionOptions, forward};
use flashscan::{Device, Error, Tensor, bf16, f16, runtime::Gpu};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

/// Every head dimension the kernels take: the tile sizes and the padded ones in between.
const HEAD_DIMS: &[usize] = &[8, 32, 40, 64, 80, 96, 128, 136, 192, 256];
/// b * h * n_q * n_k * d per random case (the f64 reference is the slow part).
const BUDGET: usize = 200_000_000;

fn gpu() -> Device {
    let g = Gpu::get(0).expect("these tests need a CUDA GPU");
    g.set_poison_outputs(true);
    Device::Cuda(0)
}

fn causal() -> AttentionOptions {
    AttentionOptions { causal: true, ..Default::default() }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_matches_reference_bf16(case in attention_common::cases(1100, HEAD_DIMS, BUDGET)) {
        check::<bf16>(&case, gpu(), tol::<bf16>()).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_matches_reference_f16(case in attention_common::cases(1100, HEAD_DIMS, BUDGET)) {
        check::<f16>(&case, gpu(), tol::<f16>()).map_err(TestCaseError::fail)?;
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_every_head_dim() {
    let d = gpu();
    for &hd in HEAD_DIMS {
        for opts in [AttentionOptions::default(), causal()] {
            for (sq, sk) in [(333, 333), (129, 70), (64, 64)] {
                let case = Case::new(2, sq, sk, 4, 2, hd).with(opts);
                check::<bf16>(&case, d, tol::<bf16>()).unwrap();
                check::<f16>(&case, d, tol::<f16>()).unwrap();
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_long_sequences() {
    let d = gpu();
    // Full-size square problems.
    check::<bf16>(&Case::new(1, 4096, 4096, 2, 1, 128), d, tol::<bf16>()).unwrap();
    check::<f16>(&Case::new(1, 4096, 4096, 2, 2, 64).with(causal()), d, tol::<f16>()).unwrap();
    check::<bf16>(&Case::new(1, 4096, 4096, 1, 1, 256).with(causal()), d, tol::<bf16>()).unwrap();
    // Decoding-like: one query, a long cache; and the reverse.
    check::<bf16>(&Case::new(2, 1, 4096, 8, 2, 128).with(causal()), d, tol::<bf16>()).unwrap();
    check::<bf16>(&Case::new(1, 4000, 1, 2, 1, 64), d, tol::<bf16>()).unwrap();
    // More queries than keys, causal: the first 3096 rows see nothing.
    check::<f16>(&Case::new(1, 4096, 1000, 2, 1, 96).with(causal()), d, tol::<f16>()).unwrap();
    // A sliding window over a long sequence (most key blocks skipped).
    let window = AttentionOptions { window_left: Some(256), window_right: Some(0), ..Default::default() };
    check::<bf16>(&Case::new(1, 3001, 4096, 2, 1, 128).with(window), d, tol::<bf16>()).unwrap();
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_odd_shapes() {
    let d = gpu();
    let lens = [1, 7, 63, 65, 127, 129, 1000];
    for &sq in &lens {
        for &sk in &lens {
            for opts in [AttentionOptions::default(), causal()] {
                let case = Case::new(1, sq, sk, 3, 1, 40).with(opts);
                check::<bf16>(&case, d, tol::<bf16>()).unwrap();
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_gqa_mqa() {
    let d = gpu();
    for heads_kv in [1, 2, 4, 8] {
        let case = Case::new(2, 300, 517, 8, heads_kv, 128).with(causal());
        check::<bf16>(&case, d, tol::<bf16>()).unwrap();
        check::<f16>(&case, d, tol::<f16>()).unwrap();
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_windows_softcap_scale() {
    let d = gpu();
    let options = [
        AttentionOptions { window_left: Some(0), window_right: Some(0), ..Default::default() },
        AttentionOptions { window_left: Some(100), window_right: Some(30), ..Default::default() },
        AttentionOptions { causal: true, window_left: Some(64), ..Default::default() },
        AttentionOptions { window_right: Some(5), ..Default::default() },
        AttentionOptions { softcap: Some(30.0), ..Default::default() },
        AttentionOptions { softcap: Some(2.0), softmax_scale: Some(0.7), causal: true, ..Default::default() },
        AttentionOptions { softmax_scale: Some(0.02), ..Default::default() },
    ];
    for opts in options {
        for (sq, sk) in [(700, 700), (300, 900), (900, 300)] {
            let mut case = Case::new(1, sq, sk, 4, 2, 64).with(opts);
            case.magnitude = 3.0;
            check::<bf16>(&case, d, tol::<bf16>()).unwrap();
            check::<f16>(&case, d, tol::<f16>()).unwrap();
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_large_logits_stay_finite() {
    let d = gpu();
    for &hd in &[64, 128, 256] {
        for opts in [AttentionOptions::default(), causal()] {
            let case = Case::new(1, 517, 700, 4, 2, hd).with(opts);
            check_large_logits::<bf16>(&case, d).unwrap();
            check_large_logits::<f16>(&case, d).unwrap();
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_nan_in_one_query_row_stays_in_that_row() {
    let d = gpu();
    let case = Case::new(1, 300, 200, 4, 2, 128);
    check_nan_row::<bf16>(&case, 37, 1, d).unwrap();
    check_nan_row::<f16>(&case, 299, 3, d).unwrap();
    let causal = case.with(AttentionOptions { causal: true, window_left: Some(30), ..Default::default() });
    check_nan_row::<bf16>(&causal, 200, 0, d).unwrap();
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_rejects_mixed_devices() {
    let d = gpu();
    let zeros = |shape: &[usize], device| {
        Tensor::from_array(ArrayD::from_elem(IxDyn(shape), bf16::from_f32(0.0)), device).expect("placed")
    };
    let q = zeros(&[1, 8, 2, 64], d);
    let k = zeros(&[1, 8, 2, 64], d);
    let v_cpu = zeros(&[1, 8, 2, 64], Device::Cpu);
    match forward(&q, &k, &v_cpu, &AttentionOptions::default()) {
        Err(Error::DeviceMismatch { arg: "v", .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("mixed devices accepted"),
    }
    let k_cpu = zeros(&[1, 8, 2, 64], Device::Cpu);
    match forward(&q, &k_cpu, &k, &AttentionOptions::default()) {
        Err(Error::DeviceMismatch { arg: "k", .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("mixed devices accepted"),
    }
}
