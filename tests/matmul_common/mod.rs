//! Shared by the matmul / linear / narrow tests (CPU and GPU): run the op on a device on
//! random inputs rounded to T, compare with the f64 reference of the same rounded inputs.

#![allow(dead_code)]

use crate::common::{Rng, to_f64};
use flashscan::ops::{self, MatmulOptions, WeightLayout};
use flashscan::reference::matmul::matmul as ref_matmul;
use flashscan::{DType, Device, Element, Tensor};
use ndarray::{Array2, ArrayD, Ix2, IxDyn, s};

/// The bound of one element of a product of T inputs accumulated in f32 and rounded to T:
/// `|got - want| <= r_T |want| + s_T + k 2^-23 sum_p |a_ip b_pj|`, with s_T the subnormal
/// spacing ([`subnormal_tol`]), r_T the rounding of
/// the result to T (2^-24 for f32, 2^-8 for bf16, 2^-11 for f16: twice the half ulp,
/// for the rounding of the accumulation error as well) and the second term the f32
/// summation over k terms in any order (blocked, split, tensor-core), twice the
/// worst-case gamma_k bound.
pub fn round_tol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => 2f64.powi(-24),
        DType::BF16 => 2f64.powi(-8),
        DType::F16 => 2f64.powi(-11),
    }
}

/// The spacing of T's subnormals: in that range rounding to T errs by up to half of it,
/// whatever the value's magnitude (f16's subnormals start below 6.1e-5), so the bound
/// adds the whole spacing (twice the half, as `round_tol`).
pub fn subnormal_tol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => 2f64.powi(-149),
        DType::BF16 => 2f64.powi(-133),
        DType::F16 => 2f64.powi(-24),
    }
}

fn sum_tol(k: usize) -> f64 {
    k as f64 * 2f64.powi(-23)
}

/// One random matmul problem: `batch_a` / `batch_b` = Some(batch) for a batched
/// operand, None for a shared matrix.
#[derive(Clone, Copy, Debug)]
pub struct Problem {
    pub batch_a: Option<usize>,
    pub batch_b: Option<usize>,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub transpose_a: bool,
    pub transpose_b: bool,
}

fn stored(batch: Option<usize>, rows: usize, cols: usize) -> Vec<usize> {
    match batch {
        Some(b) => vec![b, rows, cols],
        None => vec![rows, cols],
    }
}

/// Matrix i of a stored operand (rank 2: the matrix itself), as op(matrix) in f64.
fn op_matrix(x: &ArrayD<f64>, i: usize, transpose: bool) -> Array2<f64> {
    let m = if x.ndim() == 3 {
        x.slice(s![i, .., ..]).to_owned()
    } else {
        x.clone().into_dimensionality::<Ix2>().expect("rank 2")
    };
    if transpose { m.reversed_axes() } else { m }
}

/// Compares `got` with `want` element by element under the bound of [`round_tol`];
/// `scale` is sum_p |a_ip b_pj| per element, `extra` an additional absolute allowance
/// per element (a bias added after a rounding).
fn compare<T: Element>(
    what: &str,
    got: &ArrayD<f64>,
    want: &ArrayD<f64>,
    scale: &ArrayD<f64>,
    extra: &ArrayD<f64>,
    k: usize,
) -> Result<(), String> {
    if got.shape() != want.shape() {
        return Err(format!("{what}: shape {:?}, expected {:?}", got.shape(), want.shape()));
    }
    for (i, (((g, w), sc), ex)) in got.iter().zip(want).zip(scale).zip(extra).enumerate() {
        let bound = round_tol::<T>() * w.abs() + subnormal_tol::<T>() + sum_tol(k) * sc + ex;
        // Written so that a NaN fails.
        let within = (g - w).abs() <= bound;
        if !within {
            return Err(format!("{what}: element {i} is {g}, expected {w} (bound {bound:e})"));
        }
    }
    Ok(())
}

/// Runs `matmul` of problem `p` with random T inputs in [-1, 1) on `device` and checks it
/// against the f64 reference.
pub fn check_matmul<T: Element>(device: Device, p: Problem, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let (ar, ac) = if p.transpose_a { (p.k, p.m) } else { (p.m, p.k) };
    let (br, bc) = if p.transpose_b { (p.n, p.k) } else { (p.k, p.n) };
    let a: ArrayD<T> = rng.array(&stored(p.batch_a, ar, ac), -1.0, 1.0);
    let b: ArrayD<T> = rng.array(&stored(p.batch_b, br, bc), -1.0, 1.0);
    let put = |x: &ArrayD<T>| Tensor::from_array(x.clone(), device).map_err(|e| e.to_string());
    let opts = MatmulOptions { transpose_a: p.transpose_a, transpose_b: p.transpose_b };
    let c = ops::matmul(&put(&a)?, &put(&b)?, &opts).map_err(|e| e.to_string())?;
    let got = to_f64(&c.to_array().map_err(|e| e.to_string())?);

    let batch = p.batch_a.or(p.batch_b);
    let (af, bf) = (to_f64(&a), to_f64(&b));
    let mut want = Vec::new();
    let mut scale = Vec::new();
    for i in 0..batch.unwrap_or(1) {
        let (am, bm) = (op_matrix(&af, i, p.transpose_a), op_matrix(&bf, i, p.transpose_b));
        want.extend(ref_matmul(am.view(), bm.view()));
        scale.extend(ref_matmul(am.mapv(f64::abs).view(), bm.mapv(f64::abs).view()));
    }
    let shape = match batch {
        Some(b) => vec![b, p.m, p.n],
        None => vec![p.m, p.n],
    };
    let arr = |v: Vec<f64>| ArrayD::from_shape_vec(IxDyn(&shape), v).expect("reference shape");
    let what = format!("matmul {:?} {p:?} seed {seed}", T::DTYPE);
    compare::<T>(&what, &got, &arr(want), &arr(scale), &ArrayD::zeros(IxDyn(&shape)), p.k)
}

/// Runs `linear` of x `[lead.., k]` with a weight of `layout` making n outputs (and a bias
/// when asked) on `device`, against the f64 reference.
pub fn check_linear<T: Element>(
    device: Device,
    lead: &[usize],
    k: usize,
    n: usize,
    layout: WeightLayout,
    with_bias: bool,
    seed: u64,
) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let mut xs = lead.to_vec();
    xs.push(k);
    let x: ArrayD<T> = rng.array(&xs, -1.0, 1.0);
    let w_shape = match layout {
        WeightLayout::OutIn => [n, k],
        WeightLayout::InOut => [k, n],
    };
    let w: ArrayD<T> = rng.array(&w_shape, -1.0, 1.0);
    let bias: ArrayD<T> = rng.array(&[n], -1.0, 1.0);
    let put = |a: &ArrayD<T>| Tensor::from_array(a.clone(), device).map_err(|e| e.to_string());
    let bt = put(&bias)?;
    let y = ops::linear(&put(&x)?, &put(&w)?, with_bias.then_some(&bt), layout).map_err(|e| e.to_string())?;
    let got = to_f64(&y.to_array().map_err(|e| e.to_string())?);

    let rows: usize = lead.iter().product();
    let xm = to_f64(&x).into_shape_with_order((rows, k)).expect("x rows");
    let wm = to_f64(&w).into_dimensionality::<Ix2>().expect("rank 2");
    let wm = if layout == WeightLayout::OutIn { wm.reversed_axes() } else { wm };
    let mut want = ref_matmul(xm.view(), wm.view());
    let scale = ref_matmul(xm.mapv(f64::abs).view(), wm.mapv(f64::abs).view());
    // With a bias the product is rounded to T before the bias is added (and rounded
    // again): allow one more rounding of the sum's magnitude.
    let mut extra = Array2::zeros((rows, n));
    if with_bias {
        let bf = to_f64(&bias);
        for ((mut row, mut ex), sc) in want.rows_mut().into_iter().zip(extra.rows_mut()).zip(scale.rows()) {
            for j in 0..n {
                ex[j] = round_tol::<T>() * (row[j].abs() + bf[j].abs() + sum_tol(k) * sc[j]);
                row[j] += bf[j];
            }
        }
    }
    let mut ys = lead.to_vec();
    ys.push(n);
    let shaped = |a: Array2<f64>| a.into_shape_with_order(IxDyn(&ys)).expect("y shape");
    let what = format!("linear {:?} lead {lead:?} k {k} n {n} {layout:?} bias {with_bias} seed {seed}", T::DTYPE);
    compare::<T>(&what, &got, &shaped(want), &shaped(scale), &shaped(extra), k)
}

/// `narrow` of a random tensor on `device` equals ndarray's slice of it, bitwise.
pub fn check_narrow<T: Element>(
    device: Device,
    shape: &[usize],
    axis: usize,
    start: usize,
    len: usize,
    seed: u64,
) -> Result<(), String> {
    let x: ArrayD<T> = Rng::new(seed).array(shape, -4.0, 4.0);
    let xt = Tensor::from_array(x.clone(), device).map_err(|e| e.to_string())?;
    let got = ops::narrow(&xt, axis, start, len).and_then(|y| y.to_array()).map_err(|e| e.to_string())?;
    let want = x.slice_axis(ndarray::Axis(axis), ndarray::Slice::from(start..start + len)).to_owned();
    if got != want {
        return Err(format!("narrow {shape:?} axis {axis} {start}..{} differs from the slice", start + len));
    }
    Ok(())
}
