//! Operators of the example blocks (GPT, Mamba), on the GPU or the CPU:
//! - elementwise (`kernels-gpu/src/elementwise`; `cpu.rs`): activations (SiLU, GELU in
//!   tanh form, softplus) with an optional fused bias add, the residual add, the Mamba
//!   gate x * silu(z), and the rotary position embedding (GPT-NeoX and interleaved);
//! - the projections: [`matmul`] and [`linear`] (cuBLAS on the GPU, `matmul/`);
//! - [`narrow`]: a range of one axis, copied (`narrow.rs`).
//!
//! Fusion saves HBM passes: `activation(x, Some(bias), GeluTanh)` is the MLP's bias +
//! GELU in one read of x and one write (a GEMM without an epilogue leaves the bias to
//! it); `mul_silu` is the gate in one pass over x and z. Every op reads each input once
//! and writes one new tensor; math is f32, results are rounded to T.
//!
//! Rotary: cos and sin come from tables (`rotary_tables`, computed once in f64 and
//! rounded to f32, as a GPT block keeps its cos/sin cache), not computed in the kernel:
//! a table row per position makes the GPU and CPU results bitwise equal and keeps the
//! angle exact at large positions (an f32 `position x inv_freq` loses ~position x 2^-24
//! radians).

pub(crate) mod cpu;
mod gpu;
mod matmul;
mod narrow;

pub use matmul::{MatmulOptions, WeightLayout, linear, matmul};
pub use narrow::narrow;

use crate::tensor::check;
use crate::{Device, Element, Error, Result, Tensor};
pub use flashscan_kernels::elementwise::EwOp;

/// The activation of [`activation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// No activation: `activation(x, Some(bias), Identity)` is a bias add.
    Identity,
    /// x sigmoid(x)
    Silu,
    /// 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
    GeluTanh,
    /// ln(1 + e^x), x itself above 20 (PyTorch's threshold)
    Softplus,
}

impl Activation {
    fn op(self) -> EwOp {
        match self {
            Activation::Identity => EwOp::Identity,
            Activation::Silu => EwOp::Silu,
            Activation::GeluTanh => EwOp::GeluTanh,
            Activation::Softplus => EwOp::Softplus,
        }
    }
}

/// How [`rotary`] pairs the features of a head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotaryStyle {
    /// GPT-NeoX / Llama: feature i with i + rot_dim / 2 ("rotate half").
    NeoX,
    /// GPT-J: feature 2i with 2i + 1.
    Interleaved,
}

/// cos and sin of the rotary angles, f32 `[max_positions, rot_dim / 2]`: row p, column i
/// is the angle `p * base^(-2i / rot_dim)`.
pub struct RotaryTables {
    pub cos: Tensor<f32>,
    pub sin: Tensor<f32>,
}

/// An elementwise operation's resolved arguments.
pub(crate) struct Ew<'a, T: Element> {
    pub x: &'a Tensor<T>,
    pub z: Option<&'a Tensor<T>>,
    pub bias: Option<&'a Tensor<T>>,
    pub op: EwOp,
}

fn run<T: Element>(e: Ew<'_, T>) -> Result<Tensor<T>> {
    let shape = e.x.shape();
    check::nonempty("x", shape, 1)?;
    let device = e.x.device();
    if let Some(z) = e.z {
        let name = if e.op == EwOp::Add { "residual" } else { "z" };
        check::shape(name, z.shape(), shape)?;
        check::same_device(name, z.device(), device)?;
    }
    if let Some(b) = e.bias {
        let cols = shape[shape.len() - 1];
        check::shape("bias", b.shape(), &[cols])?;
        check::same_device("bias", b.device(), device)?;
    }
    match device {
        Device::Cpu => cpu::elementwise(&e),
        Device::Cuda(_) => gpu::elementwise(&e),
    }
}

/// `act(x + bias)`, the bias `[cols]` broadcast along x's last axis (of size cols).
///
/// Errors: [`Error::Shape`] naming `x` (an empty dimension) or `bias`;
/// [`Error::DeviceMismatch`] naming `bias`.
pub fn activation<T: Element>(x: &Tensor<T>, bias: Option<&Tensor<T>>, act: Activation) -> Result<Tensor<T>> {
    run(Ew { x, z: None, bias, op: act.op() })
}

/// SiLU: x sigmoid(x).
pub fn silu<T: Element>(x: &Tensor<T>) -> Result<Tensor<T>> {
    activation(x, None, Activation::Silu)
}

/// GELU, tanh form.
pub fn gelu_tanh<T: Element>(x: &Tensor<T>) -> Result<Tensor<T>> {
    activation(x, None, Activation::GeluTanh)
}

/// softplus: ln(1 + e^x) (x above 20).
pub fn softplus<T: Element>(x: &Tensor<T>) -> Result<Tensor<T>> {
    activation(x, None, Activation::Softplus)
}

/// The residual add x + residual (same shapes).
pub fn add<T: Element>(x: &Tensor<T>, residual: &Tensor<T>) -> Result<Tensor<T>> {
    run(Ew { x, z: Some(residual), bias: None, op: EwOp::Add })
}

/// The Mamba gate x * silu(z) (same shapes), one pass.
pub fn mul_silu<T: Element>(x: &Tensor<T>, z: &Tensor<T>) -> Result<Tensor<T>> {
    run(Ew { x, z: Some(z), bias: None, op: EwOp::MulSilu })
}

/// The tables of [`rotary`] for positions `0..max_positions` and the first `rot_dim`
/// features of a head (even), with frequency base `base` (10000 in GPT-NeoX, Llama 2),
/// computed in f64 and rounded to f32, placed on `device`.
///
/// Errors: [`Error::Value`] naming `rot_dim` (odd or 0), `max_positions` (0) or `base`
/// (not finite and > 1).
pub fn rotary_tables(max_positions: usize, rot_dim: usize, base: f64, device: Device) -> Result<RotaryTables> {
    if rot_dim == 0 || rot_dim % 2 != 0 {
        return Err(Error::Value { arg: "rot_dim", got: rot_dim.to_string(), expected: "an even number >= 2".into() });
    }
    if max_positions == 0 {
        return Err(Error::Value { arg: "max_positions", got: "0".into(), expected: "at least 1".into() });
    }
    if !(base.is_finite() && base > 1.0) {
        return Err(Error::Value { arg: "base", got: base.to_string(), expected: "a finite value > 1".into() });
    }
    let angles = crate::reference::ops::rotary_angles(max_positions, rot_dim, base);
    let f = |v: Vec<f64>| {
        let v: Vec<f32> = v.into_iter().map(|a| a as f32).collect();
        ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[max_positions, rot_dim / 2]), v).map_err(|e| Error::Shape {
            arg: "rotary_tables",
            got: vec![max_positions, rot_dim / 2],
            expected: format!("a valid table ({e})"),
        })
    };
    Ok(RotaryTables {
        cos: Tensor::from_array(f(angles.iter().map(|a| a.cos()).collect())?, device)?,
        sin: Tensor::from_array(f(angles.iter().map(|a| a.sin()).collect())?, device)?,
    })
}

/// The validated shape of a rotary call.
pub(crate) struct RotaryShape {
    pub batch: usize,
    pub seqlen: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub rot_dim: usize,
    pub position_offset: usize,
    pub style: RotaryStyle,
}

/// The rotary position embedding of x `[batch, seqlen, heads, head_dim]` (the attention
/// layout): token t is at position `position_offset + t` (the number of tokens already
/// in the cache when decoding). The first rot_dim = 2 x tables' columns features of each
/// head turn pairwise (`style`), pair i by angle_i(position):
/// `out_a = x_a cos - x_b sin, out_b = x_b cos + x_a sin` (f32: `x_a cos` rounded, then
/// one FMA); the other features are copied.
///
/// Errors: [`Error::Shape`] naming `x` (rank, empty, head_dim < rot_dim) or `tables.sin`
/// (unlike `tables.cos`); [`Error::Value`] naming `position_offset` when the tables hold
/// fewer than position_offset + seqlen positions; [`Error::DeviceMismatch`].
pub fn rotary<T: Element>(
    x: &Tensor<T>,
    tables: &RotaryTables,
    position_offset: usize,
    style: RotaryStyle,
) -> Result<Tensor<T>> {
    let xs = x.shape();
    if xs.len() != 4 || xs.contains(&0) {
        return Err(Error::Shape {
            arg: "x",
            got: xs.to_vec(),
            expected: "4 dimensions [batch, seqlen, heads, head_dim], each >= 1".into(),
        });
    }
    let device = x.device();
    let cs = tables.cos.shape();
    if cs.len() != 2 || cs.contains(&0) {
        return Err(Error::Shape {
            arg: "tables.cos",
            got: cs.to_vec(),
            expected: "[max_positions, rot_dim / 2], each >= 1".into(),
        });
    }
    check::same_device("tables.cos", tables.cos.device(), device)?;
    check::shape("tables.sin", tables.sin.shape(), cs)?;
    check::same_device("tables.sin", tables.sin.device(), device)?;
    let rot_dim = 2 * cs[1];
    if rot_dim > xs[3] {
        return Err(Error::Shape {
            arg: "x",
            got: xs.to_vec(),
            expected: format!("head_dim >= rot_dim = {rot_dim} (twice the tables' columns)"),
        });
    }
    if position_offset.checked_add(xs[1]).is_none_or(|end| end > cs[0]) {
        return Err(Error::Value {
            arg: "position_offset",
            got: position_offset.to_string(),
            expected: format!("position_offset + seqlen ({}) <= the tables' {} positions", xs[1], cs[0]),
        });
    }
    let s = RotaryShape { batch: xs[0], seqlen: xs[1], heads: xs[2], head_dim: xs[3], rot_dim, position_offset, style };
    match device {
        Device::Cpu => cpu::rotary(x, tables, &s),
        Device::Cuda(_) => gpu::rotary(x, tables, &s),
    }
}
