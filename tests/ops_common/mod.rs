//! Shared by the elementwise-ops tests (CPU and GPU): run an op on a device, compare with
//! the f64 reference (`flashscan::reference::ops`) element by element.

#![allow(dead_code)]

use crate::common::Rng;
use flashscan::ops::{self, Activation, EwOp, RotaryStyle};
use flashscan::reference::ops as rf;
use flashscan::{DType, Device, Element, Tensor};
use ndarray::ArrayD;

/// Per-element bound |got - want| <= rtol |want| + atol scale, scale = the sum of the
/// magnitudes of the op's inputs (|x| + |bias| + |z|: the f32 rounding of x + bias, and of
/// a rotary's two products, is relative to that, not to a result near 0).
/// - f32: rtol 4e-6 (libm exp on the CPU; ex2.approx 2^-22 and rcp.approx on the GPU:
///   a few units of 2^-24 after the activation's own operations), atol 1e-6.
/// - bf16 / f16: the rounding of the result to T, 2^-8 / 2^-11 relative, plus the f32
///   error; atol 1e-6 (f16 subnormals round to 2^-25 absolute).
pub fn tols<T: Element>() -> (f64, f64) {
    match T::DTYPE {
        DType::F32 => (4e-6, 1e-6),
        DType::BF16 => (4e-3, 1e-6),
        DType::F16 => (6e-4, 1e-6),
    }
}

fn f64s<E: Element>(a: &ArrayD<E>) -> ArrayD<f64> {
    a.mapv(|v| v.to_f64())
}

fn compare(
    what: &str,
    got: &ArrayD<f64>,
    want: &ArrayD<f64>,
    scale: &[f64],
    (rtol, atol): (f64, f64),
) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("{what}: shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        if !((g - w).abs() <= rtol * w.abs() + atol * s.max(1.0)) {
            return Err(format!("{what}: element {i} is {g}, expected {w}"));
        }
    }
    Ok(())
}

/// `op` over a random `shape` (values in [-range, range]) on `device`, with a bias along
/// the last axis when asked (activations) or a second input (Add, MulSilu).
pub fn check_ew<T: Element>(
    device: Device,
    op: EwOp,
    shape: &[usize],
    with_bias: bool,
    range: f32,
    seed: u64,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let cols = shape[shape.len() - 1];
    let x: ArrayD<T> = rng.array(shape, -range, range);
    let z: ArrayD<T> = rng.array(shape, -range, range);
    let bias: ArrayD<T> = rng.array(&[cols], -1.0, 1.0);
    let put = |a: &ArrayD<T>| Tensor::from_array(a.clone(), device).map_err(|e| e.to_string());
    let (xt, zt, bt) = (put(&x)?, put(&z)?, put(&bias)?);
    let bias_t = (with_bias && !op.binary()).then_some(&bt);
    let r = match op {
        EwOp::Add => ops::add(&xt, &zt),
        EwOp::MulSilu => ops::mul_silu(&xt, &zt),
        EwOp::Identity => ops::activation(&xt, bias_t, Activation::Identity),
        EwOp::Silu => ops::activation(&xt, bias_t, Activation::Silu),
        EwOp::GeluTanh => ops::activation(&xt, bias_t, Activation::GeluTanh),
        EwOp::Softplus => ops::activation(&xt, bias_t, Activation::Softplus),
    }
    .map_err(|e| e.to_string())?;
    let got = f64s(&r.to_array().map_err(|e| e.to_string())?);
    let (xf, zf, bf) = (f64s(&x), f64s(&z), f64s(&bias));
    let bvec: Vec<f64> = bf.iter().copied().collect();
    let want = rf::elementwise(op, &xf, op.binary().then_some(&zf), bias_t.map(|_| &bvec[..]));
    let scale: Vec<f64> = xf
        .iter()
        .zip(&zf)
        .enumerate()
        .map(|(i, (a, b))| {
            a.abs()
                + if op.binary() { b.abs() } else { 0.0 }
                + if bias_t.is_some() { bvec[i % cols].abs() } else { 0.0 }
        })
        .collect();
    let what = format!("{op:?} {shape:?} bias={} ({}) on {device}", bias_t.is_some(), T::DTYPE);
    compare(&what, &got, &want, &scale, tols::<T>())
}

/// The rotary embedding of a random x `[batch, seqlen, heads, head_dim]` on `device`
/// against the f64 angles; returns the result for cross-device comparisons.
#[allow(clippy::too_many_arguments)]
pub fn check_rotary<T: Element>(
    device: Device,
    shape: [usize; 4],
    rot_dim: usize,
    offset: usize,
    style: RotaryStyle,
    seed: u64,
) -> Result<ArrayD<T>, String> {
    let mut rng = Rng::new(seed);
    let x: ArrayD<T> = rng.array(&shape, -2.0, 2.0);
    let base = 10000.0;
    let tables = ops::rotary_tables(offset + shape[1], rot_dim, base, device).map_err(|e| e.to_string())?;
    let xt = Tensor::from_array(x.clone(), device).map_err(|e| e.to_string())?;
    let y =
        ops::rotary(&xt, &tables, offset, style).map_err(|e| e.to_string())?.to_array().map_err(|e| e.to_string())?;
    let xf = f64s(&x);
    let want = rf::rotary(&xf, rot_dim, base, offset, style);
    // Each output is x_a cos +- x_b sin: the scale of its error is |x_a| + |x_b| <= 2 max.
    let scale: Vec<f64> = xf.iter().map(|_| 4.0).collect();
    let what = format!("rotary {style:?} {shape:?} rot_dim={rot_dim} offset={offset} ({}) on {device}", T::DTYPE);
    let (rtol, atol) = tols::<T>();
    // The tables round cos and sin to f32: 2^-24 each.
    compare(&what, &f64s(&y), &want, &scale, (rtol, atol.max(2e-7)))?;
    Ok(y)
}
