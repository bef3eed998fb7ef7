//! The projections' products (`flashscan::ops::{matmul, linear}`, cuBLAS) and `narrow` on
//! `Device::Cuda(0)` against the f64 reference, outputs poisoned with NaN before each
//! call: random shapes, both transposes, batched and shared operands, every dtype; the
//! GPT-2 / Mamba projection shapes; narrow along every axis. Run with
//! `cargo test --release --test gpu_matmul -- --ignored`.

mod common;
mod matmul_common;

use common::poisoned_gpu as gpu;
use flashscan::ops::WeightLayout;
use flashscan::{bf16, f16};
use matmul_common::{Problem, check_linear, check_matmul, check_narrow};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_matmul_matches_reference(
        batching in 0u8..4, batch in 1usize..5, m in 1usize..150, n in 1usize..150, k in 1usize..200,
        transpose_a: bool, transpose_b: bool, dtype in 0u8..3, seed: u64,
    ) {
        let p = Problem {
            batch_a: (batching & 1 != 0).then_some(batch),
            batch_b: (batching & 2 != 0).then_some(batch),
            m, n, k, transpose_a, transpose_b,
        };
        let d = gpu();
        let r = match dtype {
            0 => check_matmul::<f32>(d, p, seed),
            1 => check_matmul::<bf16>(d, p, seed),
            _ => check_matmul::<f16>(d, p, seed),
        };
        r.map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_linear_matches_reference(
        lead in prop::collection::vec(1usize..9, 0..3), k in 1usize..300, n in 1usize..300,
        out_in: bool, bias: bool, dtype in 0u8..3, seed: u64,
    ) {
        let layout = if out_in { WeightLayout::OutIn } else { WeightLayout::InOut };
        let d = gpu();
        let r = match dtype {
            0 => check_linear::<f32>(d, &lead, k, n, layout, bias, seed),
            1 => check_linear::<bf16>(d, &lead, k, n, layout, bias, seed),
            _ => check_linear::<f16>(d, &lead, k, n, layout, bias, seed),
        };
        r.map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_narrow_matches_slice(shape in prop::collection::vec(1usize..9, 1..5), pick in any::<[usize; 3]>(), seed: u64) {
        let axis = pick[0] % shape.len();
        let start = pick[1] % shape[axis];
        let len = 1 + pick[2] % (shape[axis] - start);
        check_narrow::<f16>(gpu(), &shape, axis, start, len, seed).map_err(TestCaseError::fail)?;
        check_narrow::<f32>(gpu(), &shape, axis, start, len, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_linear_small_k_bf16_regression() {
    // Found by gpu_linear_matches_reference on an H200 (2026-11-22) before cuBLAS's
    // reduced-precision reductions were turned off: one element 1.5 bf16 ulp off.
    check_linear::<bf16>(gpu(), &[3, 2], 9, 138, WeightLayout::OutIn, false, 0).unwrap();
    for seed in 1..40 {
        check_linear::<bf16>(gpu(), &[3, 2], 9, 138, WeightLayout::OutIn, seed % 2 == 0, seed).unwrap();
        check_linear::<f16>(gpu(), &[5], 17, 70, WeightLayout::InOut, seed % 2 == 1, seed).unwrap();
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_model_projection_shapes() {
    let d = gpu();
    // GPT-2 124M: qkv, fc and the tied LM head over a prefill and a decode step.
    for rows in [1, 8, 512] {
        check_linear::<bf16>(d, &[rows], 768, 768, WeightLayout::InOut, true, 1).unwrap();
        check_linear::<bf16>(d, &[rows], 768, 3072, WeightLayout::InOut, false, 2).unwrap();
        check_linear::<f16>(d, &[rows], 3072, 768, WeightLayout::InOut, true, 3).unwrap();
    }
    check_linear::<bf16>(d, &[4], 768, 50257, WeightLayout::OutIn, false, 4).unwrap();
    // mamba-130m's channel-major prefill: in_proj from token-major x, x_proj, out_proj back.
    let p = Problem { batch_a: None, batch_b: Some(2), m: 1536, n: 300, k: 768, transpose_a: false, transpose_b: true };
    check_matmul::<bf16>(d, p, 5).unwrap();
    let p = Problem { batch_a: None, batch_b: Some(2), m: 80, n: 300, k: 1536, transpose_a: false, transpose_b: false };
    check_matmul::<f32>(d, p, 6).unwrap();
    let p = Problem { batch_a: Some(2), batch_b: None, m: 300, n: 768, k: 1536, transpose_a: true, transpose_b: true };
    check_matmul::<f16>(d, p, 7).unwrap();
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_matmul_rejects_mixed_devices() {
    let d = gpu();
    let a = flashscan::Tensor::<bf16>::from_array(ndarray::ArrayD::zeros(ndarray::IxDyn(&[2, 4])), d).unwrap();
    let b = common::zeros::<bf16>(&[4, 3]);
    match flashscan::ops::matmul(&a, &b, &Default::default()) {
        Err(flashscan::Error::DeviceMismatch { arg: "b", .. }) => {}
        Err(e) => panic!("expected a device mismatch naming `b`, got {e:?}"),
        Ok(_) => panic!("mixed devices were accepted"),
    }
    match flashscan::ops::linear(&a, &b, None, WeightLayout::InOut) {
        Err(flashscan::Error::DeviceMismatch { arg: "weight", .. }) => {}
        Err(e) => panic!("expected a device mismatch naming `weight`, got {e:?}"),
        Ok(_) => panic!("mixed devices were accepted"),
    }
}
