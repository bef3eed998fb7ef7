//! The elementwise ops (`flashscan::ops`) on `Device::Cuda(0)` against the f64 reference
//! (outputs poisoned with NaN before each launch): every op and dtype over random shapes,
//! lengths that are and are not whole 16-byte vectors, bias rows that are and are not;
//! rotary bitwise equal to the CPU (the same f32
//! operations). Run with `cargo test --release --test gpu_ops -- --ignored`.

mod common;
mod ops_common;

use flashscan::ops::{EwOp, RotaryStyle};
use flashscan::{Device, bf16, f16, runtime::Gpu};
use ops_common::{check_ew, check_rotary};
use proptest::prelude::*;

const OPS: [EwOp; 6] = [EwOp::Identity, EwOp::Silu, EwOp::GeluTanh, EwOp::Softplus, EwOp::Add, EwOp::MulSilu];

fn gpu() -> Device {
    let g = Gpu::get(0).expect("these tests need a CUDA GPU");
    g.set_poison_outputs(true);
    Device::Cuda(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_ops_match_reference(shape in prop::collection::vec(1usize..300, 1..=3), op in 0usize..6, bias: bool, dtype in 0u8..3, seed: u64) {
        let (d, op) = (gpu(), OPS[op]);
        let r = match dtype {
            0 => check_ew::<f32>(d, op, &shape, bias, 6.0, seed),
            1 => check_ew::<bf16>(d, op, &shape, bias, 6.0, seed),
            _ => check_ew::<f16>(d, op, &shape, bias, 6.0, seed),
        };
        r.map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_rotary_equals_cpu(
        b in 1usize..3, l in 1usize..40, h in 1usize..5, half in 1usize..70, extra in 0usize..9,
        offset in 0usize..5000, interleaved: bool, seed: u64,
    ) {
        let style = if interleaved { RotaryStyle::Interleaved } else { RotaryStyle::NeoX };
        let shape = [b, l, h, 2 * half + extra];
        let g = check_rotary::<bf16>(gpu(), shape, 2 * half, offset, style, seed).map_err(TestCaseError::fail)?;
        let c = check_rotary::<bf16>(Device::Cpu, shape, 2 * half, offset, style, seed).map_err(TestCaseError::fail)?;
        prop_assert_eq!(g, c);
        let g = check_rotary::<f32>(gpu(), shape, 2 * half, offset, style, seed).map_err(TestCaseError::fail)?;
        let c = check_rotary::<f32>(Device::Cpu, shape, 2 * half, offset, style, seed).map_err(TestCaseError::fail)?;
        prop_assert_eq!(g, c);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_ops_edge_shapes() {
    let d = gpu();
    // Around the vector width (4 floats, 8 halves), bias rows not a whole vector.
    for &cols in &[1, 3, 4, 7, 8, 9, 16, 100, 4096] {
        for op in [EwOp::Identity, EwOp::GeluTanh, EwOp::MulSilu] {
            check_ew::<f32>(d, op, &[3, cols], true, 6.0, cols as u64).unwrap();
            check_ew::<bf16>(d, op, &[5, cols], true, 6.0, cols as u64).unwrap();
            check_ew::<f16>(d, op, &[1, cols], false, 6.0, cols as u64).unwrap();
        }
    }
    for op in [EwOp::Silu, EwOp::GeluTanh, EwOp::Softplus, EwOp::MulSilu] {
        check_ew::<f32>(d, op, &[7, 33], false, 60.0, 3).unwrap();
    }
}
