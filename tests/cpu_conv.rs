//! The CPU causal depthwise conv1d, forward and backward, against the f64 reference
//! (`flashscan::reference::conv`): property tests over shapes, widths, options and
//! dtypes; the reference's gradients against finite differences; state passing (two
//! halves equal one run, bitwise).

mod scan_common;

use flashscan::mamba::{Conv1dOptions, causal_conv1d, causal_conv1d_backward};
use flashscan::reference::conv as rc;
use flashscan::{DType, Element, Tensor, bf16, f16};
use ndarray::{ArrayD, Axis, Slice};
use proptest::prelude::*;
use scan_common::{Rng, f64s, scaled_error};

/// One conv problem.
#[derive(Clone, Debug)]
struct ConvCase {
    batch: usize,
    dim: usize,
    seqlen: usize,
    width: usize,
    bias: bool,
    init: bool,
    silu: bool,
    dfinal: bool,
    seed: u64,
}

/// Its seeded inputs (all N(0, 1), rounded to T).
struct ConvInputs<T: Element> {
    x: ArrayD<T>,
    w: ArrayD<T>,
    bias: Option<ArrayD<T>>,
    init: Option<ArrayD<T>>,
    dy: ArrayD<T>,
    dfinal: Option<ArrayD<T>>,
}

impl ConvCase {
    fn inputs<T: Element>(&self) -> ConvInputs<T> {
        let mut rng = Rng::new(self.seed);
        let (b, d, l, w) = (self.batch, self.dim, self.seqlen, self.width);
        let x = rng.normal(&[b, d, l]);
        let wt = rng.normal(&[d, w]);
        let bias = rng.normal(&[d]);
        let init = rng.normal(&[b, d, w - 1]);
        let dy = rng.normal(&[b, d, l]);
        let dfinal = rng.normal(&[b, d, w - 1]);
        ConvInputs {
            x,
            w: wt,
            bias: self.bias.then_some(bias),
            init: self.init.then_some(init),
            dy,
            dfinal: self.dfinal.then_some(dfinal),
        }
    }

    fn opts(&self) -> Conv1dOptions {
        Conv1dOptions { silu: self.silu }
    }
}

fn cpu<E: Element>(a: &ArrayD<E>) -> Tensor<E> {
    Tensor::Cpu(a.clone())
}

fn host<E: Element>(t: &Tensor<E>) -> ArrayD<E> {
    t.to_array().expect("a CPU tensor")
}

/// Tolerances on ||got - ref|| / ||magnitudes|| (the reference on absolute values: the
/// sum of |terms| of each result, which bounds its rounding error; see scan_common).
///
/// - f32: 2e-6, ~30 units of f32 rounding (2^-24): each output is a sum of at most 9
///   terms (bias + 8 taps), each weight gradient a sum of batch * seqlen <= 900 products
///   whose sequential f32 sum errs by a few units relative to the magnitude (measured:
///   below 3e-7 over the property cases). A wrong tap or index errs by O(1).
/// - bf16 / f16: the result is rounded to T, relative error <= 2^-8 = 3.9e-3 (bf16) or
///   2^-11 = 4.9e-4 (f16) of each element, plus the f32 error: 4e-3 and 6e-4.
fn tol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => 2e-6,
        DType::BF16 => 4e-3,
        DType::F16 => 6e-4,
    }
}

fn flat(a: &ArrayD<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

fn check<T: Element>(case: &ConvCase) -> Result<(), String> {
    let x = case.inputs::<T>();
    let opts = case.opts();
    let (xt, wt) = (cpu(&x.x), cpu(&x.w));
    let bias = x.bias.as_ref().map(cpu);
    let init = x.init.as_ref().map(cpu);
    let (dy, dfinal) = (cpu(&x.dy), x.dfinal.as_ref().map(cpu));
    let fwd = causal_conv1d(&xt, &wt, bias.as_ref(), init.as_ref(), &opts).map_err(|e| e.to_string())?;
    let grads = causal_conv1d_backward(&xt, &wt, bias.as_ref(), init.as_ref(), &dy, dfinal.as_ref(), &opts)
        .map_err(|e| e.to_string())?;

    let (rx, rw) = (f64s(&x.x), f64s(&x.w));
    let (rb, ri) = (x.bias.as_ref().map(f64s), x.init.as_ref().map(f64s));
    let (rdy, rdf) = (f64s(&x.dy), x.dfinal.as_ref().map(f64s));
    let want = rc::causal_conv1d(&rx, &rw, rb.as_ref(), ri.as_ref(), case.silu);
    let mag = rc::causal_conv1d_magnitudes(&rx, &rw, rb.as_ref(), ri.as_ref());
    let gw = rc::causal_conv1d_backward(&rx, &rw, rb.as_ref(), ri.as_ref(), &rdy, rdf.as_ref(), case.silu);
    let gm = rc::causal_conv1d_backward_magnitudes(&rx, &rw, rb.as_ref(), ri.as_ref(), &rdy, rdf.as_ref(), case.silu);

    let limit = tol::<T>();
    let cmp = |name: &str, got: &Tensor<T>, want: &ArrayD<f64>, mag: &ArrayD<f64>| -> Result<(), String> {
        let got = f64s(&host(got));
        if got.shape() != want.shape() {
            return Err(format!("{name}: shape {:?}, expected {:?} in {case:?}", got.shape(), want.shape()));
        }
        let err = scaled_error(&flat(&got), &flat(want), &flat(mag));
        if err.is_nan() || err > limit {
            return Err(format!("{name}: error {err:.3e} > {limit:.1e} in {case:?} ({})", T::DTYPE));
        }
        Ok(())
    };
    cmp("y", &fwd.y, &want.y, &mag.y)?;
    // The final state is a copy of inputs: exact.
    if f64s(&host(&fwd.final_state)) != want.final_state {
        return Err(format!("final_state differs from the reference in {case:?} ({})", T::DTYPE));
    }
    cmp("dx", &grads.dx, &gw.dx, &gm.dx)?;
    cmp("dweight", &grads.dweight, &gw.dweight, &gm.dweight)?;
    match (&grads.dbias, &gw.dbias, &gm.dbias) {
        (Some(g), Some(w), Some(m)) => cmp("dbias", g, w, m)?,
        (None, None, _) => {}
        _ => return Err(format!("dbias returned iff bias given: broken in {case:?}")),
    }
    match (&grads.dinitial_state, &gw.dinitial_state, &gm.dinitial_state) {
        (Some(g), Some(w), Some(m)) => cmp("dinitial_state", g, w, m)?,
        (None, None, _) => {}
        _ => return Err(format!("dinitial_state returned iff initial_state given: broken in {case:?}")),
    }
    Ok(())
}

fn cases() -> impl Strategy<Value = ConvCase> {
    (1..=3usize, 1..=8usize, prop_oneof![1 => Just(1usize), 2 => 2..10usize, 4 => 10..=300usize], 1..=8usize)
        .prop_flat_map(|(batch, dim, seqlen, width)| {
            (prop::array::uniform4(any::<bool>()), any::<u64>()).prop_map(move |(o, seed)| ConvCase {
                batch,
                dim,
                seqlen,
                width,
                bias: o[0],
                init: o[1],
                silu: o[2],
                dfinal: o[3],
                seed,
            })
        })
}

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
