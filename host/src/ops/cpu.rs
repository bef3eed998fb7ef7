//! CPU path of the elementwise operators: the kernels' math per element in f32 (with
//! libm's exp, ln_1p and tanh where the kernels use ex2 and rcp), and the rotary
//! embedding with exactly the kernel's operations (bitwise equal results).

use super::{Ew, EwOp, RotaryShape, RotaryStyle, RotaryTables};
use crate::{Element, Error, Result, Tensor};
use ndarray::{ArrayD, IxDyn};

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The op of one element, x already biased.
pub(crate) fn apply(op: EwOp, x: f32, z: f32) -> f32 {
    match op {
        EwOp::Identity => x,
        EwOp::Silu => x * sigmoid(x),
        EwOp::GeluTanh => 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh()),
        EwOp::Softplus => {
            if x > 20.0 {
                x
            } else {
                x.exp().ln_1p()
            }
        }
        EwOp::Add => x + z,
        EwOp::MulSilu => x * (z * sigmoid(z)),
    }
}

fn values<T: Element>(t: &Tensor<T>, arg: &'static str) -> Result<Vec<f32>> {
    Ok(t.cpu_data(arg)?.iter().map(|v| v.to_f32()).collect())
}

fn tensor<T: Element>(shape: &[usize], v: Vec<T>) -> Result<Tensor<T>> {
    let len = v.len();
    ArrayD::from_shape_vec(IxDyn(shape), v).map(Tensor::Cpu).map_err(|_| Error::Shape {
        arg: "y",
        got: vec![len],
        expected: format!("{shape:?} (internal error: wrong element count)"),
    })
}

pub(super) fn elementwise<T: Element>(e: &Ew<'_, T>) -> Result<Tensor<T>> {
    let x = values(e.x, "x")?;
    let z = e.z.map(|z| values(z, "z")).transpose()?;
    let bias = e.bias.map(|b| values(b, "bias")).transpose()?;
    let shape = e.x.shape();
    let cols = shape[shape.len() - 1];
    let y = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let xv = bias.as_ref().map_or(v, |b| v + b[i % cols]);
            let zv = z.as_ref().map_or(0.0, |z| z[i]);
            T::from_f32(apply(e.op, xv, zv))
        })
        .collect();
    tensor(shape, y)
}

/// One rotated feature: `x_j c + sign x_partner s`, as the kernel computes it.
pub(crate) fn rotate(xj: f32, xp: f32, sign: f32, c: f32, s: f32) -> f32 {
    (sign * xp).mul_add(s, xj * c)
}

pub(super) fn rotary<T: Element>(x: &Tensor<T>, tables: &RotaryTables, s: &RotaryShape) -> Result<Tensor<T>> {
    let xv = values(x, "x")?;
    let cos = tables.cos.cpu_data("tables.cos")?;
    let sin = tables.sin.cpu_data("tables.sin")?;
    let (cos, sin) = (cos.as_slice_memory_order(), sin.as_slice_memory_order());
    let (Some(cos), Some(sin)) = (cos, sin) else {
        return Err(Error::Shape {
            arg: "tables.cos",
            got: tables.cos.shape().to_vec(),
            expected: "contiguous".into(),
        });
    };
    let (hd, half) = (s.head_dim, s.rot_dim / 2);
    let mut y = Vec::with_capacity(xv.len());
    for (i, &xj) in xv.iter().enumerate() {
        let (row, j) = (i / hd, i % hd);
        let out = if j < s.rot_dim {
            let (pair, partner, sign) = match s.style {
                RotaryStyle::Interleaved if j % 2 == 0 => (j / 2, i + 1, -1.0),
                RotaryStyle::Interleaved => (j / 2, i - 1, 1.0),
                RotaryStyle::NeoX if j < half => (j, i + half, -1.0),
                RotaryStyle::NeoX => (j - half, i - half, 1.0),
            };
            let t = (row / s.heads) % s.seqlen;
            let at = (s.position_offset + t) * half + pair;
            rotate(xj, xv[partner], sign, cos[at], sin[at])
        } else {
            xj
        };
        y.push(T::from_f32(out));
    }
    tensor(&[s.batch, s.seqlen, s.heads, s.head_dim], y)
}
