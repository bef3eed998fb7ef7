//! Causal depthwise conv1d (the short convolution in front of Mamba's scan), forward and
//! backward, on the CPU.
//!
//! Layouts: x `[batch, dim, seqlen]`, weight `[dim, width]` with width in 1..=8, bias
//! `[dim]`, initial and final state `[batch, dim, width - 1]` (the width - 1 inputs before
//! the first step, oldest first), all of the element type T (f32, bf16 or f16).
//!
//! With `xpad = concat(initial_state, x)` along time (zeros in place of the state when
//! it is absent), per (batch b, channel c, step t):
//!
//! ```text
//! pre[b,c,t] = bias[c] + sum_{k=0..width-1} weight[c,k] xpad[b,c,t+k]
//! y[b,c,t]   = silu(pre) if opts.silu else pre
//! ```
//!
//! so `weight[c, width-1]` multiplies `x[t]` itself. The sum is f32, in the order bias,
//! k = 0, 1, ..., width - 1 (the decode step [`super::conv1d_update`] uses the same
//! function, so one step of it gives bitwise the prefill's output), then rounded to T. The
//! final state is the last width - 1 entries of xpad.
//!
//! On `Device::Cuda` both run the kernels of `kernels-gpu/src/conv` (`conv_gpu.rs`): the
//! same sum in the same order with FMAs and the GPU's SiLU (ex2, rcp), so GPU and CPU
//! agree to f32 rounding (not bitwise); the GPU backward sums dweight and dbias in a fixed
//! order too (per-warp partials, then one warp per channel), so it is deterministic.

use super::cpu::{sigmoid, silu, tensor};
use super::{arg, rank};
use crate::tensor::check;
use crate::{Device, Element, Error, Result, Tensor};

/// The largest conv width supported.
pub const CONV_MAX_WIDTH: usize = 8;

/// Options of [`causal_conv1d`] and [`super::conv1d_update`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Conv1dOptions {
    /// Apply SiLU to the output (Mamba's `activation="silu"`).
    pub silu: bool,
}

/// What [`causal_conv1d`] returns.
pub struct Conv1dOutput<T: Element> {
    /// `[batch, dim, seqlen]`
    pub y: Tensor<T>,
    /// `[batch, dim, width - 1]`: the last width - 1 inputs (initial state included when
    /// seqlen < width - 1), the `initial_state` of a run that continues this one.
    pub final_state: Tensor<T>,
}

/// Gradients of [`causal_conv1d_backward`], each shaped like its input.
pub struct Conv1dGrads<T: Element> {
    pub dx: Tensor<T>,
    /// Summed over batch and time in f32, then rounded to T.
    pub dweight: Tensor<T>,
    /// `Some` exactly when bias was given; summed like `dweight`.
    pub dbias: Option<Tensor<T>>,
    /// `Some` exactly when initial_state was given.
    pub dinitial_state: Option<Tensor<T>>,
}

/// The validated shape of a conv call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape {
    pub batch: usize,
    pub dim: usize,
    pub width: usize,
}

/// Checks weight `[dim, width]` (width in 1..=8) and bias `[dim]` against `dim` and
/// `device`; returns the width.
pub(crate) fn validate_weights<T: Element>(
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    dim: usize,
    device: Device,
) -> Result<usize> {
    let ws = weight.shape();
    if ws.len() != 2 || ws[0] != dim {
        return Err(Error::Shape { arg: "weight", got: ws.to_vec(), expected: format!("[{dim}, width] (x's dim)") });
    }
    let width = ws[1];
    if !(1..=CONV_MAX_WIDTH).contains(&width) {
        return Err(Error::Value {
            arg: "weight",
            got: format!("of width {width} (its last dimension)"),
            expected: format!("a width in 1..={CONV_MAX_WIDTH}"),
        });
    }
    check::same_device("weight", weight.device(), device)?;
    if let Some(bias) = bias {
        arg("bias", bias.shape(), bias.device(), &[dim], device)?;
    }
    Ok(width)
}

fn validate<T: Element>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    initial_state: Option<&Tensor<T>>,
) -> Result<(ConvShape, usize)> {
    let xs = x.shape();
    rank("x", xs, 3, "[batch, dim, seqlen]")?;
    let (batch, dim, seqlen) = (xs[0], xs[1], xs[2]);
    let device = x.device();
    let width = validate_weights(weight, bias, dim, device)?;
    if let Some(h0) = initial_state {
        arg("initial_state", h0.shape(), h0.device(), &[batch, dim, width - 1], device)?;
    }
    Ok((ConvShape { batch, dim, width }, seqlen))
}

/// `bias + sum_k weight[k] window[k]` in f32, in that order: the one place the conv's sum
/// is computed, shared by [`causal_conv1d`] and [`super::conv1d_update`].
#[inline]
pub(crate) fn conv_point(bias: f32, weight: &[f32], window: &[f32]) -> f32 {
    let mut acc = bias;
    for (&w, &v) in weight.iter().zip(window) {
        acc += w * v;
    }
    acc
}

/// The activation of the conv's output.
#[inline]
pub(crate) fn activate(pre: f32, opts: &Conv1dOptions) -> f32 {
    if opts.silu { silu(pre) } else { pre }
}

/// Row-major f32 copies of the inputs (T converts exactly to f32).
struct Rows {
    x: Vec<f32>,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    init: Option<Vec<f32>>,
}

impl Rows {
    fn new<T: Element>(
        x: &Tensor<T>,
        weight: &Tensor<T>,
        bias: Option<&Tensor<T>>,
        init: Option<&Tensor<T>>,
    ) -> Result<Rows> {
        let f = |t: &Tensor<T>, arg| t.cpu_data(arg).map(|a| a.iter().map(|v| v.to_f32()).collect::<Vec<f32>>());
        Ok(Rows {
            x: f(x, "x")?,
            weight: f(weight, "weight")?,
            bias: bias.map(|b| f(b, "bias")).transpose()?,
            init: init.map(|h| f(h, "initial_state")).transpose()?,
        })
    }

    /// xpad of (batch b, channel c): the width - 1 state entries, then x's row.
    fn xpad(&self, s: &ConvShape, seqlen: usize, b: usize, c: usize, out: &mut Vec<f32>) {
        let (row, w1) = (b * s.dim + c, s.width - 1);
        out.clear();
        match &self.init {
            Some(h) => out.extend_from_slice(&h[row * w1..(row + 1) * w1]),
            None => out.resize(w1, 0.0),
        }
        out.extend_from_slice(&self.x[row * seqlen..(row + 1) * seqlen]);
    }
}

/// Causal depthwise conv1d forward (see the module documentation for the math and the
/// layouts): y and the final state, on the CPU.
///
/// Errors: [`Error::Shape`] naming `x`, `weight`, `bias` or `initial_state`;
/// [`Error::Value`] on `weight` when its width is not in 1..=8;
/// [`Error::DeviceMismatch`] when an input is not on x's device; on the GPU, [`Error::Shape`]
/// on `x` past the kernels' index limits (seqlen over 2^31 - 1) and the runtime's errors.
pub fn causal_conv1d<T: Element>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    initial_state: Option<&Tensor<T>>,
    opts: &Conv1dOptions,
) -> Result<Conv1dOutput<T>> {
    let (s, l) = validate(x, weight, bias, initial_state)?;
    if let Device::Cuda(_) = x.device() {
        return super::conv_gpu::forward(x, weight, bias, initial_state, opts, &s, l);
    }
    let r = Rows::new(x, weight, bias, initial_state)?;
    let w1 = s.width - 1;
    let mut y = Vec::with_capacity(s.batch * s.dim * l);
    let mut fin = Vec::with_capacity(s.batch * s.dim * w1);
    let mut xpad = Vec::with_capacity(w1 + l);
    for b in 0..s.batch {
        for c in 0..s.dim {
            r.xpad(&s, l, b, c, &mut xpad);
            let wr = &r.weight[c * s.width..(c + 1) * s.width];
            let bias = r.bias.as_ref().map_or(0.0, |v| v[c]);
            for t in 0..l {
                y.push(T::from_f32(activate(conv_point(bias, wr, &xpad[t..t + s.width]), opts)));
            }
            fin.extend(xpad[l..].iter().map(|&v| T::from_f32(v)));
        }
    }
    Ok(Conv1dOutput {
        y: tensor("y", &[s.batch, s.dim, l], y)?,
        final_state: tensor("final_state", &[s.batch, s.dim, w1], fin)?,
    })
}

/// Causal depthwise conv1d backward: the gradients of a loss with respect to x, weight,
/// bias and initial_state, given `dy` (`[batch, dim, seqlen]`) and optionally
/// `dfinal_state` (`[batch, dim, width - 1]`, the gradient flowing into the final state).
/// The inputs and options are those of the forward. dweight and dbias are summed over
/// batch and time in f32 (in a fixed order), then rounded to T.
///
/// Errors: those of [`causal_conv1d`], plus [`Error::Shape`] / [`Error::DeviceMismatch`] naming
/// `dy` or `dfinal_state`.
pub fn causal_conv1d_backward<T: Element>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    initial_state: Option<&Tensor<T>>,
    dy: &Tensor<T>,
    dfinal_state: Option<&Tensor<T>>,
    opts: &Conv1dOptions,
) -> Result<Conv1dGrads<T>> {
    let (s, l) = validate(x, weight, bias, initial_state)?;
    let device = x.device();
    arg("dy", dy.shape(), dy.device(), &[s.batch, s.dim, l], device)?;
    let w1 = s.width - 1;
    if let Some(df) = dfinal_state {
        arg("dfinal_state", df.shape(), df.device(), &[s.batch, s.dim, w1], device)?;
    }
    if let Device::Cuda(_) = device {
        return super::conv_gpu::backward(x, weight, bias, initial_state, dy, dfinal_state, opts, &s, l);
    }
    let r = Rows::new(x, weight, bias, initial_state)?;
    let to_f32 = |t: &Tensor<T>, arg| t.cpu_data(arg).map(|a| a.iter().map(|v| v.to_f32()).collect::<Vec<f32>>());
    let dyv = to_f32(dy, "dy")?;
    let dfin = dfinal_state.map(|t| to_f32(t, "dfinal_state")).transpose()?;

    let mut dx = Vec::with_capacity(s.batch * s.dim * l);
    let mut dinit = Vec::with_capacity(if initial_state.is_some() { s.batch * s.dim * w1 } else { 0 });
    let mut dweight = vec![0f32; s.dim * s.width];
    let mut dbias = vec![0f32; s.dim];
    let (mut xpad, mut dxpad, mut dpre) = (Vec::new(), Vec::new(), vec![0f32; l]);
    for b in 0..s.batch {
        for c in 0..s.dim {
            let row = b * s.dim + c;
            r.xpad(&s, l, b, c, &mut xpad);
            let wr = &r.weight[c * s.width..(c + 1) * s.width];
            let bias = r.bias.as_ref().map_or(0.0, |v| v[c]);
            // Through the activation: silu'(p) = s (1 + p (1 - s)), s = sigmoid(p).
            for t in 0..l {
                let g = dyv[row * l + t];
                dpre[t] = if opts.silu {
                    let p = conv_point(bias, wr, &xpad[t..t + s.width]);
                    let sg = sigmoid(p);
                    g * (sg * (1.0 + p * (1.0 - sg)))
                } else {
                    g
                };
            }
            // The final state is xpad's last width - 1 entries.
            dxpad.clear();
            dxpad.resize(w1 + l, 0f32);
            if let Some(df) = &dfin {
                for (d, &g) in dxpad[l..].iter_mut().zip(&df[row * w1..(row + 1) * w1]) {
                    *d += g;
                }
            }
            let dw = &mut dweight[c * s.width..(c + 1) * s.width];
            for (t, &g) in dpre.iter().enumerate() {
                for k in 0..s.width {
                    dxpad[t + k] += wr[k] * g;
                    dw[k] += g * xpad[t + k];
                }
                dbias[c] += g;
            }
            dx.extend(dxpad[w1..].iter().map(|&v| T::from_f32(v)));
            if initial_state.is_some() {
                dinit.extend(dxpad[..w1].iter().map(|&v| T::from_f32(v)));
            }
        }
    }
    let round = |v: Vec<f32>| v.into_iter().map(T::from_f32).collect::<Vec<T>>();
    Ok(Conv1dGrads {
        dx: tensor("dx", &[s.batch, s.dim, l], dx)?,
        dweight: tensor("dweight", &[s.dim, s.width], round(dweight))?,
        dbias: if bias.is_some() { Some(tensor("dbias", &[s.dim], round(dbias))?) } else { None },
        dinitial_state: if initial_state.is_some() {
            Some(tensor("dinitial_state", &[s.batch, s.dim, w1], dinit)?)
        } else {
            None
        },
    })
}
