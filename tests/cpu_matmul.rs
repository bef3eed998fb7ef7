//! The projections' products (`flashscan::ops::{matmul, linear}`) and `narrow` on the CPU
//! against the f64 reference: random shapes including 1-row and 1-column products, both
//! transposes, batched and shared operands, every dtype; a product large enough to be
//! split over threads; argument validation.

mod common;
mod matmul_common;

use common::{assert_shape_error, error_of, zeros};
use flashscan::ops::{self, MatmulOptions, WeightLayout};
use flashscan::{Device, Error, Tensor, bf16, f16};
use matmul_common::{Problem, check_linear, check_matmul, check_narrow};
use proptest::prelude::*;

fn problem() -> impl Strategy<Value = Problem> {
    (0u8..4, 1usize..5, 1usize..70, 1usize..70, 1usize..90, any::<bool>(), any::<bool>()).prop_map(
        |(batching, batch, m, n, k, transpose_a, transpose_b)| Problem {
            batch_a: (batching & 1 != 0).then_some(batch),
            batch_b: (batching & 2 != 0).then_some(batch),
            m,
            n,
            k,
            transpose_a,
            transpose_b,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matmul_matches_reference(p in problem(), dtype in 0u8..3, seed: u64) {
        let r = match dtype {
            0 => check_matmul::<f32>(Device::Cpu, p, seed),
            1 => check_matmul::<bf16>(Device::Cpu, p, seed),
            _ => check_matmul::<f16>(Device::Cpu, p, seed),
        };
        r.map_err(TestCaseError::fail)?;
    }

    #[test]
    fn linear_matches_reference(
        lead in prop::collection::vec(1usize..6, 0..3), k in 1usize..80, n in 1usize..80,
        out_in: bool, bias: bool, dtype in 0u8..3, seed: u64,
    ) {
        let layout = if out_in { WeightLayout::OutIn } else { WeightLayout::InOut };
        let r = match dtype {
            0 => check_linear::<f32>(Device::Cpu, &lead, k, n, layout, bias, seed),
            1 => check_linear::<bf16>(Device::Cpu, &lead, k, n, layout, bias, seed),
            _ => check_linear::<f16>(Device::Cpu, &lead, k, n, layout, bias, seed),
        };
        r.map_err(TestCaseError::fail)?;
    }

    #[test]
    fn narrow_matches_slice(shape in prop::collection::vec(1usize..9, 1..5), pick in any::<[usize; 3]>(), seed: u64) {
        let axis = pick[0] % shape.len();
        let start = pick[1] % shape[axis];
        let len = 1 + pick[2] % (shape[axis] - start);
        check_narrow::<bf16>(Device::Cpu, &shape, axis, start, len, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn products_split_over_threads() {
    // Over a million multiply-adds: the CPU path splits the columns into blocks (with a
    // last, shorter block) and runs them on its threads; one row is a decode step.
    for (m, n, k) in [(1, 2304, 768), (3, 700, 600), (37, 301, 129)] {
        let p = Problem { batch_a: None, batch_b: None, m, n, k, transpose_a: false, transpose_b: true };
        check_matmul::<bf16>(Device::Cpu, p, 7).unwrap();
        check_matmul::<f32>(Device::Cpu, Problem { transpose_b: false, ..p }, 8).unwrap();
    }
    let p = Problem { batch_a: Some(3), batch_b: None, m: 96, n: 200, k: 128, transpose_a: true, transpose_b: false };
    check_matmul::<f16>(Device::Cpu, p, 9).unwrap();
    check_linear::<bf16>(Device::Cpu, &[2, 33], 768, 1000, WeightLayout::InOut, true, 10).unwrap();
}

#[test]
fn matmul_validates_arguments() {
    let t = |o: MatmulOptions| o;
    let none = t(MatmulOptions::default());
    let a = zeros::<bf16>(&[4, 8]);
    assert_shape_error(error_of(ops::matmul(&zeros::<bf16>(&[8]), &a, &none)), "a", "[rows, cols]");
    assert_shape_error(error_of(ops::matmul(&zeros::<bf16>(&[1, 2, 3, 4]), &a, &none)), "a", "[batch, rows, cols]");
    assert_shape_error(error_of(ops::matmul(&zeros::<bf16>(&[0, 8]), &a, &none)), "a", ">= 1");
    // k = 8 from a; b [4, 8] has k = 4 unless transposed.
    assert_shape_error(error_of(ops::matmul(&a, &zeros::<bf16>(&[4, 8]), &none)), "b", "[8, n]");
    let tb = MatmulOptions { transpose_b: true, ..none };
    assert_shape_error(error_of(ops::matmul(&a, &zeros::<bf16>(&[8, 4]), &tb)), "b", "[n, 8]");
    let ta = MatmulOptions { transpose_a: true, ..none };
    assert_shape_error(error_of(ops::matmul(&a, &zeros::<bf16>(&[8, 3]), &ta)), "b", "[4, n]");
    assert_shape_error(
        error_of(ops::matmul(&zeros::<bf16>(&[2, 4, 8]), &zeros::<bf16>(&[3, 8, 5]), &none)),
        "b",
        "[2, ..]",
    );
    // A shared operand on either side is fine, and the batch comes from the batched one.
    let c = ops::matmul(&zeros::<f32>(&[4, 8]), &zeros::<f32>(&[3, 8, 5]), &none).unwrap();
    assert_eq!(c.shape(), &[3, 4, 5]);
}

#[test]
fn linear_validates_arguments() {
    let x = zeros::<f16>(&[2, 3, 8]);
    let layout = WeightLayout::OutIn;
    assert_shape_error(error_of(ops::linear(&zeros::<f16>(&[2, 0, 8]), &zeros(&[4, 8]), None, layout)), "x", ">= 1");
    assert_shape_error(error_of(ops::linear(&x, &zeros(&[8, 4]), None, layout)), "weight", "[out, 8]");
    assert_shape_error(error_of(ops::linear(&x, &zeros(&[4, 8]), None, WeightLayout::InOut)), "weight", "[8, out]");
    assert_shape_error(error_of(ops::linear(&x, &zeros(&[4, 8, 1]), None, layout)), "weight", "[out, 8]");
    assert_shape_error(error_of(ops::linear(&x, &zeros(&[4, 8]), Some(&zeros(&[8])), layout)), "bias", "[4]");
    let y = ops::linear(&x, &zeros(&[4, 8]), Some(&zeros(&[4])), layout).unwrap();
    assert_eq!(y.shape(), &[2, 3, 4]);
    // A rank-1 x is one row.
    assert_eq!(ops::linear(&zeros::<f16>(&[8]), &zeros(&[8, 5]), None, WeightLayout::InOut).unwrap().shape(), &[5]);
}

#[test]
fn narrow_and_reshape_validate_arguments() {
    let x = zeros::<bf16>(&[2, 5, 3]);
    match error_of(ops::narrow(&x, 3, 0, 1)) {
        Error::Value { arg: "axis", .. } => {}
        e => panic!("expected an error naming `axis`, got {e:?}"),
    }
    for (start, len) in [(0, 0), (4, 2), (usize::MAX, 2)] {
        match error_of(ops::narrow(&x, 1, start, len)) {
            Error::Value { arg: "len", expected, .. } => assert!(expected.contains("<= 5"), "{expected}"),
            e => panic!("expected an error naming `len`, got {e:?}"),
        }
    }
    assert_eq!(ops::narrow(&x, 1, 4, 1).unwrap().shape(), &[2, 1, 3]);
    assert_shape_error(error_of(zeros::<bf16>(&[2, 5, 3]).reshape(&[31])), "shape", "[2, 5, 3]");
    // A transposed (non-standard layout) CPU array reshapes in its logical order.
    let a = ndarray::ArrayD::from_shape_fn(ndarray::IxDyn(&[2, 3]), |i| (i[0] * 3 + i[1]) as f32);
    let t = Tensor::Cpu(a.t().to_owned().into_dyn()).reshape(&[6]).unwrap().to_array().unwrap();
    assert_eq!(t.as_slice().unwrap(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    let t = Tensor::Cpu(a.clone().reversed_axes()).reshape(&[3, 2]).unwrap().to_array().unwrap();
    assert_eq!(t.iter().copied().collect::<Vec<_>>(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
}

#[test]
fn f16_results_in_the_subnormal_range() {
    // Found by the property test: an f16 product of about -1.26e-5 (below f16's smallest
    // normal, 6.1e-5) rounds with f16's fixed subnormal spacing 2^-24, more than 2^-11
    // relative. The bound must allow for it; the result itself is correctly rounded.
    let p = Problem { batch_a: Some(3), batch_b: None, m: 30, n: 53, k: 1, transpose_a: false, transpose_b: false };
    check_matmul::<f16>(Device::Cpu, p, 6208802295556844579).unwrap();
}
