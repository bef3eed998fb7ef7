//! GPU path of the attention backward: three launches on the device's stream.
//!
//! 1. `attn_bwd_pre`: D = rowsum(dO * O) f32 `[batch, heads_q, seqlen_q]`, and the f32
//!    dQ accumulator(s) zeroed.
//! 2. `attn_bwd`: one CTA per (key block, batch x kv head) (fast mode), or `splits` CTAs
//!    per (batch, kv head) that each take every `splits`-th key block (deterministic
//!    mode); dK and dV written once, dQ added into the accumulator(s). On Hopper, the
//!    fast mode at the d=64 and d=128 tiles runs `attn_bwd_wg` (`wgmma`, tiles copied by
//!    the tensor memory accelerator; `FLASHSCAN_WGMMA_BWD=0` keeps `mma.sync`).
//! 3. `attn_bwd_dq`: dq = scale x the accumulators' sum (in split order), rounded.
//!
//! Extra device memory: D (4 bytes per query row and head) and the accumulator(s)
//! (4 x head_dim bytes per row and head, times `splits` in the deterministic mode):
//! O(N), nothing N x N.

use super::gpu::{check_positions, head_dim_error, row_map, switch_on};
use super::{AttentionGrads, Problem};
use crate::kernels::attention::backward::{
    AttnBwdParams, AttnBwdRowParams, BWD_ROW_THREADS, WG_BWD_D64, WG_BWD_D128, WgBwdParams, WgBwdTile, bwd_tile_for,
};
use crate::runtime::ptx::Arch;
use crate::runtime::{GpuTensor, LaunchGrid};
use crate::{Element, Error, Result, Tensor};
use std::sync::OnceLock;

/// Runs the backward on validated device tensors (shapes as in `attention::backward`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<T: Element>(
    q: &GpuTensor<T>,
    k: &GpuTensor<T>,
    v: &GpuTensor<T>,
    o: &GpuTensor<T>,
    lse: &GpuTensor<f32>,
    dout: &GpuTensor<T>,
    p: &Problem,
    deterministic: bool,
) -> Result<AttentionGrads<T>> {
    let gpu = q.gpu().clone();
    let (tile, kernel) = bwd_tile_for(p.head_dim as u32, gpu.arch() == Arch::Sm90a).ok_or_else(|| head_dim_error(p))?;
    // Launch limits, checked before anything is allocated: positions are i32 in the
    // kernels, rows are u32, and batch x heads_kv is the main grid's y dimension.
    check_positions(p)?;
    let rows = p.batch * p.heads_q * p.seqlen_q;
    if rows > (u32::MAX - BWD_ROW_THREADS) as usize {
        return Err(Error::Shape {
            arg: "q",
            got: q.shape().to_vec(),
            expected: format!("batch x heads_q x seqlen_q < {}", u32::MAX - BWD_ROW_THREADS),
        });
    }
    if p.batch * p.heads_kv > 65535 {
        return Err(Error::Shape {
            arg: "k",
            got: k.shape().to_vec(),
            expected: "batch x heads_kv <= 65535 (the grid's y dimension)".into(),
        });
    }

    let key_blocks = p.seqlen_k.div_ceil(tile.block_n() as usize);
    // Deterministic: about one wave of CTAs (one per SM), each with its own accumulator.
    let splits =
        if deterministic { (gpu.sm_count() as usize).div_ceil(p.batch * p.heads_kv).clamp(1, key_blocks) } else { 1 };
    let acc_stride = rows * p.head_dim;
    let dq_acc = GpuTensor::<f32>::uninit(&gpu, &[splits, acc_stride])?;
    let delta = GpuTensor::<f32>::uninit(&gpu, &[p.batch, p.heads_q, p.seqlen_q])?;
    let dq = GpuTensor::<T>::uninit(&gpu, q.shape())?;
    let dk = GpuTensor::<T>::uninit(&gpu, k.shape())?;
    let dv = GpuTensor::<T>::uninit(&gpu, k.shape())?;

    let q_batch_stride = (p.seqlen_q * p.heads_q * p.head_dim) as u64;
    let q_row_stride = (p.heads_q * p.head_dim) as u32;
    let rows_params = AttnBwdRowParams {
        o: o.device_addr(),
        dout: dout.device_addr(),
        delta: delta.device_addr(),
        dq: dq.device_addr(),
        dq_acc: dq_acc.device_addr(),
        q_batch_stride,
        dq_split_stride: acc_stride as u64,
        q_row_stride,
        seqlen_q: p.seqlen_q as u32,
        heads_q: p.heads_q as u32,
        head_dim: p.head_dim as u32,
        rows: rows as u32,
        splits: splits as u32,
        scale: p.scale,
    };
    let dtype = T::DTYPE.suffix();
    let row_grid =
        LaunchGrid { grid: ((rows as u32).div_ceil(BWD_ROW_THREADS / 32), 1, 1), block: BWD_ROW_THREADS, smem: 0 };
    gpu.launch(&format!("attn_bwd_pre_{dtype}"), row_grid, &rows_params)?;

    let (window_left, window_right) = p.kernel_windows();
    let (softcap, score_pre, score_log2) = p.kernel_scores();
    let params = AttnBwdParams {
        q: q.device_addr(),
        k: k.device_addr(),
        v: v.device_addr(),
        dout: dout.device_addr(),
        lse: lse.device_addr(),
        delta: delta.device_addr(),
        dq_acc: dq_acc.device_addr(),
        dk: dk.device_addr(),
        dv: dv.device_addr(),
        q_batch_stride,
        k_batch_stride: (p.seqlen_k * p.heads_kv * p.head_dim) as u64,
        dq_split_stride: acc_stride as u64,
        q_row_stride,
        k_row_stride: (p.heads_kv * p.head_dim) as u32,
        seqlen_q: p.seqlen_q as u32,
        seqlen_k: p.seqlen_k as u32,
        heads_q: p.heads_q as u32,
        heads_kv: p.heads_kv as u32,
        group: (p.heads_q / p.heads_kv) as u32,
        head_dim: p.head_dim as u32,
        window_left,
        window_right,
        softcap,
        score_pre,
        score_log2,
        scale: p.scale,
        deterministic: deterministic as u32,
    };
    // The Hopper kernel where it covers the head dim and the copy engine can describe
    // q, k, v and dout (the driver encodes their tensor maps): otherwise mma.sync.
    let hopper = (gpu.arch() == Arch::Sm90a && !deterministic && wgmma_enabled())
        .then(|| wg_bwd_tile_for(tile.d))
        .flatten()
        .and_then(|wt| {
            let bm = wt.block_m;
            let wg = WgBwdParams {
                q_map: row_map(q, p, p.seqlen_q, p.heads_q, bm)?,
                k_map: row_map(k, p, p.seqlen_k, p.heads_kv, WgBwdTile::BLOCK_N)?,
                v_map: row_map(v, p, p.seqlen_k, p.heads_kv, WgBwdTile::BLOCK_N)?,
                do_map: row_map(dout, p, p.seqlen_q, p.heads_q, bm)?,
                base: params,
            };
            Some((wt, wg))
        });
    if let Some((wt, wg)) = hopper {
        let grid = (p.seqlen_k.div_ceil(WgBwdTile::BLOCK_N as usize) as u32, (p.batch * p.heads_kv) as u32, 1);
        let cfg = LaunchGrid { grid, block: WgBwdTile::THREADS, smem: wt.smem_bytes() };
        gpu.launch(&format!("attn_bwd_wg_d{}_{dtype}", wt.d), cfg, &wg)?;
    } else {
        let cfg = LaunchGrid {
            grid: (if deterministic { splits } else { key_blocks } as u32, (p.batch * p.heads_kv) as u32, 1),
            block: tile.threads(),
            smem: tile.smem_bytes(),
        };
        gpu.launch(&format!("{kernel}_{dtype}"), cfg, &params)?;
    }
    gpu.launch(&format!("attn_bwd_dq_{dtype}"), row_grid, &rows_params)?;
    Ok(AttentionGrads { dq: Tensor::Cuda(dq), dk: Tensor::Cuda(dk), dv: Tensor::Cuda(dv) })
}

/// The Hopper backward's tile for a `mma.sync` tile head dim (d=64, d=128), if any.
fn wg_bwd_tile_for(tile_d: u32) -> Option<WgBwdTile> {
    [WG_BWD_D64, WG_BWD_D128].into_iter().find(|t| t.d == tile_d)
}

/// The Hopper backward kernels for the fast mode at the head dims they cover, unless
/// `FLASHSCAN_WGMMA_BWD=0` (read once per process): for A/B runs, and for the tests of
/// the `mma.sync` kernels on an H100.
fn wgmma_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    switch_on(&ON, "FLASHSCAN_WGMMA_BWD")
}
