//! LayerNorm and RMSNorm forward over the last axis, on the GPU (`kernels-gpu/src/norm`)
//! or the CPU (`cpu.rs`, the same two-pass algorithm).

mod cpu;

use crate::runtime::{GpuTensor, LaunchGrid};
use crate::tensor::check;
use crate::{Device, Element, Error, Result, Tensor};
use flashscan_kernels::norm::{NORM_MAX_COLS, NORM_MAX_GRID, NormParams, norm_smem_bytes, norm_threads};

/// What a norm returns: y (the input's shape and type), and per row the mean (LayerNorm
/// only) and the reciprocal standard deviation, f32, shaped like x without its last axis.
pub struct NormOutput<T: Element> {
    pub y: Tensor<T>,
    pub mean: Option<Tensor<f32>>,
    pub rstd: Tensor<f32>,
}

/// LayerNorm over the last axis of `x` (`[..., cols]`, cols <= 16384):
/// y = (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance.
/// `weight` and `bias` are `[cols]` of x's element type.
pub fn layer_norm<T: Element, W: Element>(
    x: &Tensor<T>,
    weight: &Tensor<W>,
    bias: Option<&Tensor<W>>,
    eps: f32,
) -> Result<NormOutput<T>> {
    norm(x, weight, bias, eps, false)
}

/// RMSNorm over the last axis of `x`: y = x / sqrt(mean(x^2) + eps) * weight.
pub fn rms_norm<T: Element, W: Element>(x: &Tensor<T>, weight: &Tensor<W>, eps: f32) -> Result<NormOutput<T>> {
    norm(x, weight, None, eps, true)
}

struct Dims {
    rows: usize,
    cols: usize,
    stat_shape: Vec<usize>,
}

fn validate<T: Element, W: Element>(
    x: &Tensor<T>,
    weight: &Tensor<W>,
    bias: Option<&Tensor<W>>,
    eps: f32,
) -> Result<Dims> {
    check::nonempty("x", x.shape(), 1)?;
    let cols = *x.shape().last().expect("rank >= 1 checked");
    if cols > NORM_MAX_COLS as usize {
        return Err(Error::Shape {
            arg: "x",
            got: x.shape().to_vec(),
            expected: format!("a last dimension of at most {NORM_MAX_COLS}"),
        });
    }
    check::dtype::<W>("weight", T::DTYPE)?;
    check::same_device("weight", weight.device(), x.device())?;
    check::shape("weight", weight.shape(), &[cols])?;
    if let Some(b) = bias {
        check::same_device("bias", b.device(), x.device())?;
        check::shape("bias", b.shape(), &[cols])?;
    }
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(Error::Value { arg: "eps", got: eps.to_string(), expected: "a finite value >= 0".into() });
    }
    let stat_shape = x.shape()[..x.shape().len() - 1].to_vec();
    let rows: usize = stat_shape.iter().product();
    // The kernel indexes rows with 32 bits.
    if rows > u32::MAX as usize {
        return Err(Error::Shape { arg: "x", got: x.shape().to_vec(), expected: format!("at most {} rows", u32::MAX) });
    }
    Ok(Dims { rows, cols, stat_shape })
}

fn norm<T: Element, W: Element>(
    x: &Tensor<T>,
    weight: &Tensor<W>,
    bias: Option<&Tensor<W>>,
    eps: f32,
    rms: bool,
) -> Result<NormOutput<T>> {
    let dims = validate(x, weight, bias, eps)?;
    match x.device() {
        Device::Cpu => cpu::norm(x, weight, bias, eps, rms, &dims),
        Device::Cuda(_) => gpu_norm(x, weight, bias, eps, rms, &dims),
    }
}

fn gpu_norm<T: Element, W: Element>(
    x: &Tensor<T>,
    weight: &Tensor<W>,
    bias: Option<&Tensor<W>>,
    eps: f32,
    rms: bool,
    d: &Dims,
) -> Result<NormOutput<T>> {
    let (xg, wg) = (x.gpu_data("x")?, weight.gpu_data("weight")?);
    let gpu = xg.gpu().clone();
    let y = GpuTensor::<T>::uninit(&gpu, xg.shape())?;
    let mean = if rms { None } else { Some(GpuTensor::<f32>::uninit(&gpu, &d.stat_shape)?) };
    let rstd = GpuTensor::<f32>::uninit(&gpu, &d.stat_shape)?;
    let params = NormParams {
        x: xg.device_addr(),
        weight: wg.device_addr(),
        bias: match bias {
            Some(b) => b.gpu_data("bias")?.device_addr(),
            None => 0,
        },
        y: y.device_addr(),
        mean: mean.as_ref().map_or(0, |m| m.device_addr()),
        rstd: rstd.device_addr(),
        rows: d.rows as u32,
        cols: d.cols as u32,
        eps,
        _pad: 0,
    };
    let threads = norm_threads(d.cols as u32, T::DTYPE.size_bytes());
    let kernel = format!("{}_fwd_{}_t{threads}", if rms { "rmsnorm" } else { "layernorm" }, T::DTYPE.suffix());
    let cfg = LaunchGrid {
        grid: ((d.rows as u32).min(NORM_MAX_GRID), 1, 1),
        block: threads,
        smem: norm_smem_bytes(d.cols as u32, T::DTYPE.size_bytes()),
    };
    gpu.launch(&kernel, cfg, &params)?;
    Ok(NormOutput { y: Tensor::Cuda(y), mean: mean.map(Tensor::Cuda), rstd: Tensor::Cuda(rstd) })
}
