//! GPU path of the decode steps: fills the launch parameters of `kernels-gpu/src/decode`.
//! Both kernels update their state in place in HBM and return a new output tensor.

use crate::kernels::decode::{ConvUpdateParams, DECODE_THREADS, SsmUpdateParams, ssm_chunks, ssm_slices};
use crate::runtime::{GpuTensor, LaunchGrid};
use crate::tensor::device_addr_or_0 as addr;
use crate::{Element, Error, Result, Tensor};

/// CTAs of DECODE_THREADS for `threads` threads, within the grid's x limit.
fn blocks(threads: usize, arg: &'static str, shape: &[usize]) -> Result<u32> {
    let b = threads.div_ceil(DECODE_THREADS as usize);
    if b > i32::MAX as usize {
        return Err(Error::Shape {
            arg,
            got: shape.to_vec(),
            expected: "batch x dim small enough for one grid".into(),
        });
    }
    Ok(b as u32)
}

pub(super) fn conv1d_update<T: Element>(
    x: &Tensor<T>,
    conv_state: &mut Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    silu: bool,
    (batch, dim, width): (usize, usize, usize),
) -> Result<Tensor<T>> {
    let xg = x.gpu_data("x")?;
    let gpu = xg.gpu().clone();
    let grid = blocks(batch * dim, "x", x.shape())?;
    if dim > u32::MAX as usize || batch > u32::MAX as usize {
        return Err(Error::Shape { arg: "x", got: x.shape().to_vec(), expected: "batch and dim below 2^32".into() });
    }
    let y = GpuTensor::<T>::uninit(&gpu, &[batch, dim])?;
    let params = ConvUpdateParams {
        x: xg.device_addr(),
        conv_state: conv_state.gpu_data("conv_state")?.device_addr(),
        weight: weight.gpu_data("weight")?.device_addr(),
        bias: addr(bias, "bias")?,
        y: y.device_addr(),
        batch: batch as u32,
        dim: dim as u32,
        width: width as u32,
        silu: silu as u32,
    };
    let cfg = LaunchGrid { grid: (grid, 1, 1), block: DECODE_THREADS, smem: 0 };
    gpu.launch(&format!("conv1d_update_{}", T::DTYPE.suffix()), cfg, &params)?;
    Ok(Tensor::Cuda(y))
}

/// The validated sizes of a selective_state_update call.
pub(super) struct SsmDims {
    pub batch: usize,
    pub dim: usize,
    pub d_state: usize,
    pub groups: usize,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn selective_state_update<T: Element>(
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
    s: &SsmDims,
) -> Result<Tensor<T>> {
    let sg = state.gpu_data("state")?;
    let gpu = sg.gpu().clone();
    let n = s.d_state as u32;
    let slices = ssm_slices(n);
    let grid = blocks(s.batch * s.dim * slices as usize, "state", sg.shape())?;
    if s.dim > u32::MAX as usize || s.batch > u32::MAX as usize {
        return Err(Error::Shape {
            arg: "state",
            got: sg.shape().to_vec(),
            expected: "batch and dim below 2^32".into(),
        });
    }
    let out = GpuTensor::<T>::uninit(&gpu, &[s.batch, s.dim])?;
    let params = SsmUpdateParams {
        state: sg.device_addr(),
        x: x.gpu_data("x")?.device_addr(),
        delta: delta.gpu_data("delta")?.device_addr(),
        z: addr(z, "z")?,
        out: out.device_addr(),
        a: a.gpu_data("a")?.device_addr(),
        b: b.gpu_data("b")?.device_addr(),
        c: c.gpu_data("c")?.device_addr(),
        d: addr(d, "d")?,
        delta_bias: addr(delta_bias, "delta_bias")?,
        batch: s.batch as u32,
        dim: s.dim as u32,
        d_state: n,
        groups: s.groups as u32,
        channels_per_group: (s.dim / s.groups) as u32,
        slices,
        chunks: ssm_chunks(n),
        delta_softplus: delta_softplus as u32,
    };
    let cfg = LaunchGrid { grid: (grid, 1, 1), block: DECODE_THREADS, smem: 0 };
    gpu.launch(&format!("ssm_update_{}", T::DTYPE.suffix()), cfg, &params)?;
    Ok(Tensor::Cuda(out))
}
