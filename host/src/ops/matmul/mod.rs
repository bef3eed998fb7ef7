//! Matrix products for the example blocks' projections: [`matmul`] (batched; either
//! operand may be stored transposed; one operand may be a single matrix shared by the
//! whole batch, as a weight is) and [`linear`] (a layer over the last axis of x).
//!
//! Both read T (f32, bf16 or f16), multiply and accumulate in f32 and round each result
//! to T once. On the GPU that is one `cublasGemmStridedBatchedEx` call with f32 compute
//! on the device's stream (`gpu.rs`; libcublas is loaded at run time); on the CPU,
//! ndarray's f32 GEMM (the matrixmultiply crate) over column blocks spread on the CPU's
//! threads (`cpu.rs`). The two agree to f32 summation order before the rounding to T.

mod cpu;
mod gpu;

use super::Activation;
use crate::tensor::check;
use crate::{Device, Element, Error, Result, Tensor};

/// Options of [`matmul`]: which operands are stored transposed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MatmulOptions {
    /// a is stored `[.., k, m]`; the product uses its transpose.
    pub transpose_a: bool,
    /// b is stored `[.., n, k]`; the product uses its transpose.
    pub transpose_b: bool,
}

/// How the weight of [`linear`] is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[out, in]`, y = x Wᵀ: `torch.nn.Linear` (Mamba's projections, LM heads).
    OutIn,
    /// `[in, out]`, y = x W: GPT-2's `Conv1D` layers, as its checkpoints store them.
    InOut,
}

/// The validated product both backends receive: `batch` products of `[m, k] x [k, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gemm {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub transpose_a: bool,
    pub transpose_b: bool,
    /// a (b) holds one matrix per batch item; else one matrix that every item uses.
    pub a_batched: bool,
    pub b_batched: bool,
}

impl Gemm {
    /// a's stored matrix: `[m, k]`, or `[k, m]` when transposed.
    pub fn a_dims(&self) -> (usize, usize) {
        if self.transpose_a { (self.k, self.m) } else { (self.m, self.k) }
    }

    /// b's stored matrix: `[k, n]`, or `[n, k]` when transposed.
    pub fn b_dims(&self) -> (usize, usize) {
        if self.transpose_b { (self.n, self.k) } else { (self.k, self.n) }
    }
}

/// The product `c[i] = op(a[i]) op(b[i])`, op the transpose where `opts` says so.
///
/// a is `[m, k]` or a batch `[batch, m, k]` (`[.., k, m]` with `transpose_a`); b is
/// `[k, n]` or `[batch, k, n]` (`[.., n, k]` with `transpose_b`). A rank-2 operand is
/// shared by every item of the other's batch. c is `[batch, m, n]` when either operand
/// has a batch, else `[m, n]`; of T, on a's device. Accumulation is f32.
///
/// Errors: [`Error::Shape`] naming `a` (not rank 2 or 3, an empty dimension) or `b`
/// (likewise, or k or the batch unlike a's); [`Error::DeviceMismatch`] naming `b`; on
/// the GPU, [`Error::Shape`] for dimensions of 2^31 or more and [`Error::Cublas`] when
/// libcublas is missing or the call fails.
pub fn matmul<T: Element>(a: &Tensor<T>, b: &Tensor<T>, opts: &MatmulOptions) -> Result<Tensor<T>> {
    let (sa, sb) = (a.shape(), b.shape());
    rank_2_or_3("a", sa)?;
    rank_2_or_3("b", sb)?;
    let (a_batched, b_batched) = (sa.len() == 3, sb.len() == 3);
    let last2 = |s: &[usize]| (s[s.len() - 2], s[s.len() - 1]);
    let (m, k) = if opts.transpose_a { (last2(sa).1, last2(sa).0) } else { last2(sa) };
    let (kb, n) = if opts.transpose_b { (last2(sb).1, last2(sb).0) } else { last2(sb) };
    let batch = if a_batched {
        sa[0]
    } else if b_batched {
        sb[0]
    } else {
        1
    };
    if kb != k {
        let matrix = if opts.transpose_b { format!("[n, {k}]") } else { format!("[{k}, n]") };
        return Err(Error::Shape {
            arg: "b",
            got: sb.to_vec(),
            expected: format!("matrices {matrix} (a's k = {k}; transpose_b = {})", opts.transpose_b),
        });
    }
    if a_batched && b_batched && sb[0] != batch {
        return Err(Error::Shape { arg: "b", got: sb.to_vec(), expected: format!("[{batch}, ..] (a's batch)") });
    }
    check::same_device("b", b.device(), a.device())?;
    let g = Gemm { batch, m, n, k, transpose_a: opts.transpose_a, transpose_b: opts.transpose_b, a_batched, b_batched };
    let out_shape = if a_batched || b_batched { vec![batch, m, n] } else { vec![m, n] };
    run(a, b, &g, &out_shape)
}

/// A linear layer over the last axis of x: `y = x Wᵀ + bias` (weight `[out, in]`,
/// [`WeightLayout::OutIn`]) or `y = x W + bias` (weight `[in, out]`,
/// [`WeightLayout::InOut`]). x is `[.., in]` (any leading dimensions, flattened into the
/// GEMM's rows), bias `[out]`; y is `[.., out]` of T on x's device.
///
/// The product is rounded to T, then the bias is added by the elementwise kernel
/// (`activation(y, Some(bias), Identity)`: f32 sum, rounded again). To fuse the bias
/// with an activation instead, pass `None` here and the bias to [`super::activation`].
///
/// Errors: [`Error::Shape`] naming `x` (an empty dimension), `weight` (not rank 2, or an
/// `in` unlike x's last dimension) or `bias` (not `[out]`); [`Error::DeviceMismatch`]
/// naming `weight` or `bias`; those of [`matmul`] on the GPU.
pub fn linear<T: Element>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    layout: WeightLayout,
) -> Result<Tensor<T>> {
    let xs = x.shape();
    check::nonempty("x", xs, 1)?;
    let k = xs[xs.len() - 1];
    let ws = weight.shape();
    let (n, w_in) = match (ws, layout) {
        (&[out, inp], WeightLayout::OutIn) | (&[inp, out], WeightLayout::InOut) => (out, inp),
        _ => (0, 0),
    };
    if n == 0 || w_in != k {
        let expected = match layout {
            WeightLayout::OutIn => format!("[out, {k}] (x's last dimension is `in`; layout OutIn)"),
            WeightLayout::InOut => format!("[{k}, out] (x's last dimension is `in`; layout InOut)"),
        };
        return Err(Error::Shape { arg: "weight", got: ws.to_vec(), expected });
    }
    check::same_device("weight", weight.device(), x.device())?;
    if let Some(b) = bias {
        check::shape("bias", b.shape(), &[n])?;
        check::same_device("bias", b.device(), x.device())?;
    }
    let g = Gemm {
        batch: 1,
        m: xs[..xs.len() - 1].iter().product(),
        n,
        k,
        transpose_a: false,
        transpose_b: layout == WeightLayout::OutIn,
        a_batched: false,
        b_batched: false,
    };
    let mut out_shape = xs[..xs.len() - 1].to_vec();
    out_shape.push(n);
    let y = run(x, weight, &g, &out_shape)?;
    match bias {
        None => Ok(y),
        Some(b) => super::activation(&y, Some(b), Activation::Identity),
    }
}

fn run<T: Element>(a: &Tensor<T>, b: &Tensor<T>, g: &Gemm, out_shape: &[usize]) -> Result<Tensor<T>> {
    match a.device() {
        Device::Cpu => cpu::matmul(a.cpu_data("a")?, b.cpu_data("b")?, g, out_shape),
        Device::Cuda(_) => gpu::matmul(a.gpu_data("a")?, b.gpu_data("b")?, g, out_shape),
    }
}

fn rank_2_or_3(arg: &'static str, shape: &[usize]) -> Result<()> {
    if !matches!(shape.len(), 2 | 3) || shape.contains(&0) {
        return Err(Error::Shape {
            arg,
            got: shape.to_vec(),
            expected: "a matrix [rows, cols] or a batch [batch, rows, cols], each dimension >= 1".into(),
        });
    }
    Ok(())
}
