//! One-token decode steps, on the CPU: [`conv1d_update`] (one step of
//! [`super::causal_conv1d`] from a rolling state) and [`selective_state_update`] (one step
//! of [`super::selective_scan`]'s recurrence). Both update their state in place and use
//! the same f32 functions in the same order as the prefill paths, so running a sequence
//! token by token gives bitwise the prefill's outputs and final states.
//!
//! On `Device::Cuda` both run one kernel each (`kernels-gpu/src/decode`, `decode_gpu.rs`),
//! updating the state in place in HBM. The GPU conv step uses the GPU prefill conv's sum
//! (bitwise its output at that step); the GPU state step uses the GPU scan's f32 math
//! (exp2 of delta' A log2 e, FMAs), with its own summation order over the states, so it
//! agrees with the GPU scan to f32 rounding.

use super::conv::{Conv1dOptions, activate, conv_point, validate_weights};
use super::cpu::{delta_eff, dot, silu, step, tensor};
use super::decode_gpu::{self, SsmDims};
use super::{SCAN_MAX_STATE, arg, rank};
use crate::tensor::check;
use crate::{Device, Element, Error, Result, Tensor};

fn to_f32<E: Element>(t: &Tensor<E>, arg: &'static str) -> Result<Vec<f32>> {
    t.cpu_data(arg).map(|a| a.iter().map(|v| v.to_f32()).collect())
}

/// One step of the causal conv1d: x `[batch, dim]` is the new input, `conv_state`
/// `[batch, dim, width - 1]` the previous width - 1 inputs (oldest first), weight
/// `[dim, width]` (width in 1..=8), bias `[dim]`. Returns y `[batch, dim]`, exactly what
/// [`super::causal_conv1d`] gives at that step with `conv_state` as its initial state, and
/// shifts `conv_state` left by one with x appended (it becomes that call's final state).
///
/// Errors: [`Error::Shape`] naming `x`, `conv_state`, `weight` or `bias`; [`Error::Value`]
/// on `weight` when its width is not in 1..=8; [`Error::DeviceMismatch`] when an input is
/// not on x's device; on the GPU, the runtime's errors.
pub fn conv1d_update<T: Element>(
    x: &Tensor<T>,
    conv_state: &mut Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    opts: &Conv1dOptions,
) -> Result<Tensor<T>> {
    let xs = x.shape();
    rank("x", xs, 2, "[batch, dim]")?;
    let (batch, dim) = (xs[0], xs[1]);
    let device = x.device();
    let width = validate_weights(weight, bias, dim, device)?;
    let w1 = width - 1;
    arg("conv_state", conv_state.shape(), conv_state.device(), &[batch, dim, w1], device)?;
    if let Device::Cuda(_) = device {
        return decode_gpu::conv1d_update(x, conv_state, weight, bias, opts.silu, (batch, dim, width));
    }
    let xv = to_f32(x, "x")?;
    let wv = to_f32(weight, "weight")?;
    let bv = bias.map(|b| to_f32(b, "bias")).transpose()?;
    let state = conv_state.cpu_data_mut("conv_state")?;
    let mut sv: Vec<f32> = state.iter().map(|v| v.to_f32()).collect();
    let mut y = Vec::with_capacity(batch * dim);
    let mut window = vec![0f32; width];
    for row in 0..batch * dim {
        let c = row % dim;
        let st = &mut sv[row * w1..(row + 1) * w1];
        window[..w1].copy_from_slice(st);
        window[w1] = xv[row];
        let b = bv.as_ref().map_or(0.0, |v| v[c]);
        y.push(T::from_f32(activate(conv_point(b, &wv[c * width..(c + 1) * width], &window), opts)));
        st.copy_from_slice(&window[1..]);
    }
    for (dst, &v) in state.iter_mut().zip(&sv) {
        *dst = T::from_f32(v);
    }
    tensor("y", &[batch, dim], y)
}

/// One step of the selective scan's recurrence (the module documentation of
/// [`super`]), updating `state` `[batch, dim, d_state]` (f32) in place and returning the
/// step's output `[batch, dim]`:
///
/// ```text
/// delta' = softplus(delta + delta_bias) if delta_softplus else delta + delta_bias
/// h      = exp(delta' A) h + delta' B x
/// out    = (sum_n h C + D x) silu(z)        (without D or z when absent)
/// ```
///
/// x, delta, z `[batch, dim]` (T); a `[dim, d_state]` f32 with d_state <= 256; b, c
/// `[batch, groups, d_state]` (T, groups dividing dim: channel c reads group
/// `c / (dim / groups)`); d, delta_bias `[dim]` f32. On the CPU the math is the CPU scan's step,
/// same functions and order, so a sequence of steps equals a scan over the sequence
/// bitwise.
///
/// Errors: [`Error::Shape`] naming the argument whose shape is wrong (d_state over 256 on
/// `a`, groups not dividing dim on `b`), [`Error::DeviceMismatch`] when an input is not
/// on state's device; on the GPU, the runtime's errors.
#[allow(clippy::too_many_arguments)]
pub fn selective_state_update<T: Element>(
    state: &mut Tensor<f32>,
    x: &Tensor<T>,
    delta: &Tensor<T>,
    a: &Tensor<f32>,
    b: &Tensor<T>,
    c: &Tensor<T>,
    d: Option<&Tensor<f32>>,
    z: Option<&Tensor<T>>,
    delta_bias: Option<&Tensor<f32>>,
    delta_softplus: bool,
) -> Result<Tensor<T>> {
    let ss = state.shape();
    rank("state", ss, 3, "[batch, dim, d_state]")?;
    let (batch, dim, n) = (ss[0], ss[1], ss[2]);
    if n > SCAN_MAX_STATE as usize {
        return Err(Error::Shape {
            arg: "state",
            got: ss.to_vec(),
            expected: format!("[batch, dim, d_state] with d_state at most {SCAN_MAX_STATE}"),
        });
    }
    let device = state.device();
    arg("x", x.shape(), x.device(), &[batch, dim], device)?;
    arg("delta", delta.shape(), delta.device(), &[batch, dim], device)?;
    arg("a", a.shape(), a.device(), &[dim, n], device)?;
    let bs = b.shape();
    if bs.len() != 3 || bs[0] != batch || bs[1] == 0 || bs[2] != n || dim % bs[1] != 0 {
        return Err(Error::Shape {
            arg: "b",
            got: bs.to_vec(),
            expected: format!("[{batch}, groups, {n}] (state's batch and d_state) with groups dividing dim = {dim}"),
        });
    }
    let groups = bs[1];
    check::same_device("b", b.device(), device)?;
    arg("c", c.shape(), c.device(), &[batch, groups, n], device)?;
    if let Some(d) = d {
        arg("d", d.shape(), d.device(), &[dim], device)?;
    }
    if let Some(z) = z {
        arg("z", z.shape(), z.device(), &[batch, dim], device)?;
    }
    if let Some(bias) = delta_bias {
        arg("delta_bias", bias.shape(), bias.device(), &[dim], device)?;
    }
    if let Device::Cuda(_) = device {
        let dims = SsmDims { batch, dim, d_state: n, groups };
        return decode_gpu::selective_state_update(state, x, delta, a, b, c, d, z, delta_bias, delta_softplus, &dims);
    }

    let (xv, dv, av) = (to_f32(x, "x")?, to_f32(delta, "delta")?, to_f32(a, "a")?);
    let (bv, cv) = (to_f32(b, "b")?, to_f32(c, "c")?);
    let dd = d.map(|t| to_f32(t, "d")).transpose()?;
    let zv = z.map(|t| to_f32(t, "z")).transpose()?;
    let biasv = delta_bias.map(|t| to_f32(t, "delta_bias")).transpose()?;
    let st = state.cpu_data_mut("state")?;
    let mut h: Vec<f32> = st.iter().copied().collect();
    let per_group = dim / groups;
    let mut out = Vec::with_capacity(batch * dim);
    for row in 0..batch * dim {
        let (bi, ch) = (row / dim, row % dim);
        let g = (bi * groups + ch / per_group) * n;
        let u = xv[row];
        // As the CPU scan's Segment::load and forward_channel.
        let xd = dv[row] + biasv.as_ref().map_or(0.0, |v| v[ch]);
        let dt = delta_eff(xd, delta_softplus);
        let hr = &mut h[row * n..(row + 1) * n];
        step(hr, &av[ch * n..(ch + 1) * n], &bv[g..g + n], dt, u);
        let mut y = dot(hr, &cv[g..g + n]);
        if let Some(dd) = &dd {
            y += dd[ch] * u;
        }
        if let Some(zv) = &zv {
            y *= silu(zv[row]);
        }
        out.push(T::from_f32(y));
    }
    for (dst, &v) in st.iter_mut().zip(&h) {
        *dst = v;
    }
    tensor("out", &[batch, dim], out)
}
