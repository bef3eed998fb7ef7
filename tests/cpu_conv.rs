//! The CPU causal depthwise conv1d, forward and backward, against the f64 reference
//! (`flashscan::reference::conv`): property tests over shapes, widths, options and
//! dtypes; the reference's gradients against finite differences; state passing (two
//! halves equal one run, bitwise).

mod conv_common;
mod scan_common;

use conv_common::{ConvCase, cases, check, cpu, host};
use flashscan::mamba::{Conv1dOptions, causal_conv1d};
use flashscan::reference::conv as rc;
use flashscan::{Element, Tensor, bf16, f16};
use ndarray::{ArrayD, Axis, Slice};
use proptest::prelude::*;
use scan_common::f64s;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn conv_matches_reference_f32(case in cases()) {
        check::<f32>(&case).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv_matches_reference_bf16(case in cases()) {
        check::<bf16>(&case).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn conv_matches_reference_f16(case in cases()) {
        check::<f16>(&case).map_err(TestCaseError::fail)?;
    }

    /// Running x[.., .., ..s] and then x[.., .., s..] from the first part's final state
    /// gives one run's y and final state bitwise: every output reads the same f32 values
    /// through the same sum.
    #[test]
    fn two_halves_equal_one_run(case in cases(), cut in 0.0..1.0f64) {
        two_halves::<f32>(&case, cut).map_err(TestCaseError::fail)?;
        two_halves::<bf16>(&case, cut).map_err(TestCaseError::fail)?;
    }
}

fn two_halves<T: Element>(case: &ConvCase, cut: f64) -> Result<(), String> {
    if case.seqlen < 2 {
        return Ok(());
    }
    let s = 1 + ((case.seqlen - 1) as f64 * cut) as usize; // 1..seqlen
    let x = case.inputs::<T>();
    let opts = case.opts();
    let (bias, init) = (x.bias.as_ref().map(cpu), x.init.as_ref().map(cpu));
    let run = |xs: ArrayD<T>, init: Option<&Tensor<T>>| {
        causal_conv1d(&Tensor::Cpu(xs), &cpu(&x.w), bias.as_ref(), init, &opts).map_err(|e| e.to_string())
    };
    let whole = run(x.x.clone(), init.as_ref())?;
    let first = run(x.x.slice_axis(Axis(2), Slice::from(..s)).to_owned(), init.as_ref())?;
    let second = run(x.x.slice_axis(Axis(2), Slice::from(s..)).to_owned(), Some(&first.final_state))?;
    let y =
        ndarray::concatenate(Axis(2), &[host(&first.y).view(), host(&second.y).view()]).map_err(|e| e.to_string())?;
    if y != host(&whole.y) {
        return Err(format!("y of two halves (cut {s}) differs from one run in {case:?} ({})", T::DTYPE));
    }
    if host(&second.final_state) != host(&whole.final_state) {
        return Err(format!("final_state of two halves (cut {s}) differs in {case:?} ({})", T::DTYPE));
    }
    Ok(())
}

/// L = sum(dy * y) + sum(dfinal * final_state) by the reference forward.
fn loss(x: &[ArrayD<f64>; 4], dy: &ArrayD<f64>, dfinal: &ArrayD<f64>, silu: bool) -> f64 {
    let r = rc::causal_conv1d(&x[0], &x[1], Some(&x[2]), Some(&x[3]), silu);
    (&r.y * dy).sum() + (&r.final_state * dfinal).sum()
}

#[test]
fn reference_gradients_match_finite_differences() {
    // Central differences at h = 1e-6: truncation ~h^2 (the loss is bilinear in weight
    // and x without SiLU; smooth with it), cancellation ~1e-16 |L| / h: both far below
    // 1e-6. A wrong gradient errs by O(0.1) or more.
    let mut checked = 0;
    for (i, &(width, silu)) in [(1, false), (3, true), (3, false), (4, true)].iter().enumerate() {
        let case = ConvCase {
            batch: 2,
            dim: 2,
            seqlen: 5,
            width,
            bias: true,
            init: true,
            silu,
            dfinal: true,
            seed: 40 + i as u64,
        };
        let x = case.inputs::<f32>();
        let mut args =
            [f64s(&x.x), f64s(&x.w), f64s(x.bias.as_ref().expect("bias")), f64s(x.init.as_ref().expect("init"))];
        let (dy, df) = (f64s(&x.dy), f64s(x.dfinal.as_ref().expect("dfinal")));
        let g = rc::causal_conv1d_backward(&args[0], &args[1], Some(&args[2]), Some(&args[3]), &dy, Some(&df), silu);
        let grads = [g.dx, g.dweight, g.dbias.expect("dbias"), g.dinitial_state.expect("dinit")];
        let h = 1e-6;
        for (j, analytic) in grads.iter().enumerate() {
            assert_eq!(analytic.shape(), args[j].shape());
            for k in 0..analytic.len() {
                let orig = args[j].as_slice().expect("standard layout")[k];
                let mut at = |v: f64| {
                    args[j].as_slice_mut().expect("standard layout")[k] = v;
                    loss(&args, &dy, &df, silu)
                };
                let fd = (at(orig + h) - at(orig - h)) / (2.0 * h);
                at(orig);
                let an = analytic.as_slice().expect("standard layout")[k];
                assert!((fd - an).abs() <= 1e-6 * (1.0 + an.abs()), "arg {j}[{k}]: fd {fd}, reference {an} ({case:?})");
                checked += 1;
            }
        }
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn width_one_is_a_pointwise_scale() {
    // width 1: y = bias + w x, an empty state, and dinitial_state of shape [b, d, 0].
    let case =
        ConvCase { batch: 2, dim: 3, seqlen: 7, width: 1, bias: true, init: true, silu: false, dfinal: true, seed: 9 };
    check::<f32>(&case).expect("width 1");
    let x = case.inputs::<f32>();
    let out = causal_conv1d(&cpu(&x.x), &cpu(&x.w), None, None, &Conv1dOptions::default()).expect("conv");
    assert_eq!(out.final_state.shape(), &[2, 3, 0]);
    let y = host(&out.y);
    for ((b, c, t), &v) in y.indexed_iter().map(|(i, v)| ((i[0], i[1], i[2]), v)) {
        assert_eq!(v, x.w[[c, 0]] * x.x[[b, c, t]]);
    }
}
