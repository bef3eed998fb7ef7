//! Shared by the conv1d tests (CPU and GPU): a case (shape, options, seed), its seeded
//! inputs, the proptest strategy, and the comparison of the library's forward and
//! backward on a device with the f64 reference (`flashscan::reference::conv`).

#![allow(dead_code)]

use crate::scan_common::{Rng, f64s, scaled_error};
use flashscan::mamba::{Conv1dOptions, causal_conv1d, causal_conv1d_backward};
use flashscan::reference::conv as rc;
use flashscan::{DType, Device, Element, Tensor};
use ndarray::ArrayD;
use proptest::prelude::*;

#[derive(Clone, Debug)]
pub struct ConvCase {
    pub batch: usize,
    pub dim: usize,
    pub seqlen: usize,
    pub width: usize,
    pub bias: bool,
    pub init: bool,
    pub silu: bool,
    pub dfinal: bool,
    pub seed: u64,
}

/// Its seeded inputs (all N(0, 1), rounded to T).
pub struct ConvInputs<T: Element> {
    pub x: ArrayD<T>,
    pub w: ArrayD<T>,
    pub bias: Option<ArrayD<T>>,
    pub init: Option<ArrayD<T>>,
    pub dy: ArrayD<T>,
    pub dfinal: Option<ArrayD<T>>,
}

impl ConvCase {
    pub fn inputs<T: Element>(&self) -> ConvInputs<T> {
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

    pub fn opts(&self) -> Conv1dOptions {
        Conv1dOptions { silu: self.silu }
    }
}

pub fn cpu<E: Element>(a: &ArrayD<E>) -> Tensor<E> {
    Tensor::Cpu(a.clone())
}

pub fn host<E: Element>(t: &Tensor<E>) -> ArrayD<E> {
    t.to_array().expect("download")
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
pub fn tol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => 2e-6,
        DType::BF16 => 4e-3,
        DType::F16 => 6e-4,
    }
}

fn flat(a: &ArrayD<f64>) -> Vec<f64> {
    a.iter().copied().collect()
}

/// Forward and backward on `device` against the reference, with `limit` on the scaled
/// error of every result (`tol::<T>()` on the CPU).
pub fn check_on<T: Element>(case: &ConvCase, device: Device, limit: f64) -> Result<(), String> {
    let x = case.inputs::<T>();
    let opts = case.opts();
    let put = |a: &ArrayD<T>| Tensor::from_array(a.clone(), device).map_err(|e| e.to_string());
    let (xt, wt) = (put(&x.x)?, put(&x.w)?);
    let bias = x.bias.as_ref().map(put).transpose()?;
    let init = x.init.as_ref().map(put).transpose()?;
    let (dy, dfinal) = (put(&x.dy)?, x.dfinal.as_ref().map(put).transpose()?);
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

pub fn cases() -> impl Strategy<Value = ConvCase> {
    cases_with(1..=3, 1..=8, 300)
}

/// Cases with batch and dim in the given ranges and seqlen up to `max_seqlen` (1, short
/// ones below 10, and longer ones equally likely to be anywhere up to the maximum).
pub fn cases_with(
    batch: std::ops::RangeInclusive<usize>,
    dim: std::ops::RangeInclusive<usize>,
    max_seqlen: usize,
) -> impl Strategy<Value = ConvCase> {
    (batch, dim, prop_oneof![1 => Just(1usize), 2 => 2..10usize, 4 => 10..=max_seqlen.max(10)], 1..=8usize)
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

/// [`check_on`] on the CPU with the CPU tolerance.
pub fn check<T: Element>(case: &ConvCase) -> Result<(), String> {
    check_on::<T>(case, Device::Cpu, tol::<T>())
}
