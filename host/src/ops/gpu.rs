//! GPU path of the elementwise operators: fills the launch parameters of
//! `kernels-gpu/src/elementwise`.

use super::{Ew, RotaryShape, RotaryStyle, RotaryTables};
use crate::kernels::elementwise::{EW_MAX_GRID, EW_THREADS, EW_UNROLL, EwParams, RotaryParams};
use crate::runtime::{GpuTensor, LaunchGrid};
use crate::{Element, Error, Result, Tensor};

pub(super) fn elementwise<T: Element>(e: &Ew<'_, T>) -> Result<Tensor<T>> {
    let xg = e.x.gpu_data("x")?;
    let gpu = xg.gpu().clone();
    let shape = xg.shape();
    let cols = shape[shape.len() - 1];
    if cols > u32::MAX as usize {
        return Err(Error::Shape { arg: "x", got: shape.to_vec(), expected: "a last dimension below 2^32".into() });
    }
    let y = GpuTensor::<T>::uninit(&gpu, shape)?;
    let n = xg.len();
    let params = EwParams {
        x: xg.device_addr(),
        z: match e.z {
            Some(z) => z.gpu_data("z")?.device_addr(),
            None => 0,
        },
        bias: match e.bias {
            Some(b) => b.gpu_data("bias")?.device_addr(),
            None => 0,
        },
        y: y.device_addr(),
        n: n as u64,
        cols: cols as u32,
        op: e.op as u32,
    };
    let lanes = (16 / T::DTYPE.size_bytes()) as usize;
    let per_cta = (EW_THREADS * EW_UNROLL) as usize * lanes;
    let grid = n.div_ceil(per_cta).clamp(1, EW_MAX_GRID as usize) as u32;
    let cfg = LaunchGrid { grid: (grid, 1, 1), block: EW_THREADS, smem: 0 };
    gpu.launch(&format!("ew_{}", T::DTYPE.suffix()), cfg, &params)?;
    Ok(Tensor::Cuda(y))
}

pub(super) fn rotary<T: Element>(x: &Tensor<T>, tables: &RotaryTables, s: &RotaryShape) -> Result<Tensor<T>> {
    let xg = x.gpu_data("x")?;
    let gpu = xg.gpu().clone();
    if s.seqlen > u32::MAX as usize
        || s.heads > u32::MAX as usize
        || s.head_dim > u32::MAX as usize
        || s.position_offset > u32::MAX as usize
    {
        return Err(Error::Shape { arg: "x", got: xg.shape().to_vec(), expected: "dimensions below 2^32".into() });
    }
    let y = GpuTensor::<T>::uninit(&gpu, xg.shape())?;
    let params = RotaryParams {
        x: xg.device_addr(),
        cos: tables.cos.gpu_data("tables.cos")?.device_addr(),
        sin: tables.sin.gpu_data("tables.sin")?.device_addr(),
        y: y.device_addr(),
        rows: (s.batch * s.seqlen * s.heads) as u64,
        seqlen: s.seqlen as u32,
        heads: s.heads as u32,
        head_dim: s.head_dim as u32,
        rot_dim: s.rot_dim as u32,
        position_offset: s.position_offset as u32,
        interleaved: (s.style == RotaryStyle::Interleaved) as u32,
    };
    let grid = xg.len().div_ceil(EW_THREADS as usize).clamp(1, EW_MAX_GRID as usize) as u32;
    let cfg = LaunchGrid { grid: (grid, 1, 1), block: EW_THREADS, smem: 0 };
    gpu.launch(&format!("rotary_{}", T::DTYPE.suffix()), cfg, &params)?;
    Ok(Tensor::Cuda(y))
}
