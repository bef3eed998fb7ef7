//! GPU path of the attention forward: picks the kernel's tile for the head dim, fills
//! the launch parameters (`kernels-gpu/src/attention`) and launches one CTA per
//! (query block, batch x head).

use super::Problem;
use crate::kernels::attention::{AttnFwdParams, fwd_tile_for};
use crate::runtime::{GpuTensor, LaunchGrid};
use crate::{Element, Error, Result};

/// Runs the forward kernel: returns (o like q, lse `[batch, heads_q, seqlen_q]`).
pub(crate) fn forward<T: Element>(
    q: &GpuTensor<T>,
    k: &GpuTensor<T>,
    v: &GpuTensor<T>,
    p: &Problem,
) -> Result<(GpuTensor<T>, GpuTensor<f32>)> {
    let tile = fwd_tile_for(p.head_dim as u32).ok_or_else(|| head_dim_error(p))?;
    // Limits of the launch, checked before anything is allocated: positions are i32 in
    // the kernel, and batch x heads_q is the grid's y dimension.
    check_positions(p)?;
    if p.batch * p.heads_q > 65535 {
        return Err(Error::Shape {
            arg: "q",
            got: q.shape().to_vec(),
            expected: "batch x heads_q <= 65535 (the grid's y dimension)".into(),
        });
    }
    let gpu = q.gpu().clone();
    let o = GpuTensor::<T>::uninit(&gpu, q.shape())?;
    let lse = GpuTensor::<f32>::uninit(&gpu, &[p.batch, p.heads_q, p.seqlen_q])?;
    let (window_left, window_right) = p.kernel_windows();
    let (softcap, score_pre, score_log2) = p.kernel_scores();
    let params = AttnFwdParams {
        q: q.device_addr(),
        k: k.device_addr(),
        v: v.device_addr(),
        o: o.device_addr(),
        lse: lse.device_addr(),
        q_batch_stride: (p.seqlen_q * p.heads_q * p.head_dim) as u64,
        k_batch_stride: (p.seqlen_k * p.heads_kv * p.head_dim) as u64,
        q_row_stride: (p.heads_q * p.head_dim) as u32,
        k_row_stride: (p.heads_kv * p.head_dim) as u32,
        seqlen_q: p.seqlen_q as u32,
        seqlen_k: p.seqlen_k as u32,
        heads_q: p.heads_q as u32,
        group: (p.heads_q / p.heads_kv) as u32,
        head_dim: p.head_dim as u32,
        window_left,
        window_right,
        softcap,
        score_pre,
        score_log2,
    };
    let kernel = format!("attn_fwd_d{}_{}", tile.d, T::DTYPE.suffix());
    let m_blocks = p.seqlen_q.div_ceil(tile.block_m() as usize) as u32;
    let cfg = LaunchGrid {
        grid: (m_blocks, (p.batch * p.heads_q) as u32, 1),
        block: tile.threads(),
        smem: tile.smem_bytes(),
    };
    gpu.launch(&kernel, cfg, &params)?;
    Ok((o, lse))
}

/// The error for a head dim no kernel tile covers (validation rules it out first).
pub(super) fn head_dim_error(p: &Problem) -> Error {
    Error::Value { arg: "head_dim", got: p.head_dim.to_string(), expected: "at most 256".into() }
}

/// Positions are i32 in the attention kernels: both lengths at most i32::MAX.
pub(super) fn check_positions(p: &Problem) -> Result<()> {
    for (arg, n) in [("seqlen_q", p.seqlen_q), ("seqlen_k", p.seqlen_k)] {
        if n > i32::MAX as usize {
            return Err(Error::Value { arg, got: n.to_string(), expected: format!("at most {}", i32::MAX) });
        }
    }
    Ok(())
}
