//! The elementwise ops (`flashscan::ops`) on the CPU against the f64 reference: every op
//! and dtype over random shapes, with and without the fused bias; rotary embedding in
//! both styles, partial rotary dims and position offsets; argument validation.

mod common;
mod ops_common;

use common::{assert_shape_error, error_of, ones, zeros};
use flashscan::ops::{self, EwOp, RotaryStyle};
use flashscan::{Device, Error, bf16, f16};
use ops_common::{check_ew, check_rotary};
use proptest::prelude::*;

const OPS: [EwOp; 6] = [EwOp::Identity, EwOp::Silu, EwOp::GeluTanh, EwOp::Softplus, EwOp::Add, EwOp::MulSilu];

fn shapes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..40, 1..=3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ops_match_reference(shape in shapes(), op in 0usize..6, bias: bool, dtype in 0u8..3, seed: u64) {
        let op = OPS[op];
        let r = match dtype {
            0 => check_ew::<f32>(Device::Cpu, op, &shape, bias, 6.0, seed),
            1 => check_ew::<bf16>(Device::Cpu, op, &shape, bias, 6.0, seed),
            _ => check_ew::<f16>(Device::Cpu, op, &shape, bias, 6.0, seed),
        };
        r.map_err(TestCaseError::fail)?;
    }

    #[test]
    fn rotary_matches_reference(
        b in 1usize..3, l in 1usize..20, h in 1usize..4, half in 1usize..20, extra in 0usize..6,
        offset in 0usize..3000, interleaved: bool, seed: u64,
    ) {
        let style = if interleaved { RotaryStyle::Interleaved } else { RotaryStyle::NeoX };
        check_rotary::<f32>(Device::Cpu, [b, l, h, 2 * half + extra], 2 * half, offset, style, seed).map_err(TestCaseError::fail)?;
        check_rotary::<bf16>(Device::Cpu, [b, l, h, 2 * half + extra], 2 * half, offset, style, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn activations_far_out() {
    // Large |x|: sigmoid saturates, softplus takes its x > 20 branch, GELU's cube is large.
    for op in [EwOp::Silu, EwOp::GeluTanh, EwOp::Softplus, EwOp::MulSilu] {
        check_ew::<f32>(Device::Cpu, op, &[7, 33], false, 60.0, 3).unwrap();
        check_ew::<bf16>(Device::Cpu, op, &[7, 33], true, 60.0, 4).unwrap();
    }
}

#[test]
fn ops_validate_arguments() {
    let x = zeros::<f32>(&[2, 8]);
    assert_shape_error(error_of(ops::add(&x, &zeros(&[2, 7]))), "residual", "[2, 8]");
    assert_shape_error(error_of(ops::mul_silu(&x, &zeros(&[8]))), "z", "[2, 8]");
    assert_shape_error(error_of(ops::activation(&x, Some(&ones(&[2])), ops::Activation::Silu)), "bias", "[8]");
    assert_shape_error(error_of(ops::silu(&zeros::<f32>(&[2, 0]))), "x", ">= 1");

    let t = ops::rotary_tables(16, 8, 10000.0, Device::Cpu).unwrap();
    assert_eq!(t.cos.shape(), &[16, 4]);
    assert_shape_error(
        error_of(ops::rotary(&zeros::<bf16>(&[2, 4, 8]), &t, 0, RotaryStyle::NeoX)),
        "x",
        "4 dimensions",
    );
    assert_shape_error(
        error_of(ops::rotary(&zeros::<bf16>(&[1, 4, 2, 6]), &t, 0, RotaryStyle::NeoX)),
        "x",
        "rot_dim = 8",
    );
    match error_of(ops::rotary(&zeros::<bf16>(&[1, 4, 2, 8]), &t, 13, RotaryStyle::NeoX)) {
        Error::Value { arg: "position_offset", .. } => {}
        e => panic!("wrong error {e:?}"),
    }
    for (pos, rot, base, arg) in [(16, 7, 1e4, "rot_dim"), (0, 8, 1e4, "max_positions"), (16, 8, f64::NAN, "base")] {
        match error_of(ops::rotary_tables(pos, rot, base, Device::Cpu)) {
            Error::Value { arg: a, .. } if a == arg => {}
            e => panic!("wrong error {e:?}"),
        }
    }
}
