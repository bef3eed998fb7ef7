//! GPU path of the attention forward: picks the kernel and its tile for the head dim (on
//! Hopper, the `wgmma` kernels fed by the tensor memory accelerator for the d=64 and
//! d=128 tiles, 1.1-1.6x the `mma.sync` kernels on the H100, docs/PERF.md; elsewhere and
//! for the other head dims, the `mma.sync` kernels), fills the launch parameters
//! (`kernels-gpu/src/attention`; for the Hopper kernels, the tensor maps of q, k and v)
//! and launches one CTA per (query block, batch x head).

use super::Problem;
use crate::kernels::attention::{AttnFwdParams, WgFwdParams, WgTile, fwd_tile_for, wg_tile_for};
use crate::kernels::tensor_map::TensorMap;
use crate::runtime::ptx::Arch;
use crate::runtime::tensor_map::tiled_4d;
use crate::runtime::{GpuTensor, LaunchGrid};
use crate::{DType, Element, Error, Result};
use std::sync::OnceLock;

/// Runs the forward kernel: returns (o like q, lse `[batch, heads_q, seqlen_q]`).
pub(crate) fn forward<T: Element>(
    q: &GpuTensor<T>,
    k: &GpuTensor<T>,
    v: &GpuTensor<T>,
    p: &Problem,
) -> Result<(GpuTensor<T>, GpuTensor<f32>)> {
    // The Hopper kernels, where they cover the head dim and the copy engine can describe
    // q, k and v (`row_map`): otherwise the mma.sync kernels.
    let arch = q.gpu().arch();
    let maps =
        (wgmma_enabled() && arch == Arch::Sm90a).then(|| wg_tile_for(p.head_dim as u32)).flatten().and_then(|tile| {
            Some((
                row_map(q, p, p.seqlen_q, p.heads_q, tile.block_m())?,
                row_map(k, p, p.seqlen_k, p.heads_kv, tile.block_n)?,
                row_map(v, p, p.seqlen_k, p.heads_kv, tile.block_n)?,
            ))
        });
    let (kernel, cfg) = fwd_launch(p, T::DTYPE, arch, maps.is_some()).ok_or_else(|| head_dim_error(p))?;
    // Limits of the launch, checked before anything is allocated: positions are i32 in
    // the kernel, and the grid's dimensions are bounded.
    check_positions(p)?;
    check_grid(p, &cfg)?;
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
    match maps {
        Some((q_map, k_map, v_map)) => gpu.launch(&kernel, cfg, &WgFwdParams { q_map, k_map, v_map, base: params })?,
        None => gpu.launch(&kernel, cfg, &params)?,
    }
    Ok((o, lse))
}

/// The Hopper forward kernels for the head dims they cover, unless `FLASHSCAN_WGMMA_FWD=0`
/// (read once per process), which keeps the `mma.sync` kernels on a Hopper GPU too: for
/// A/B runs, and for the tests of those kernels on an H100.
fn wgmma_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    switch_on(&ON, "FLASHSCAN_WGMMA_FWD")
}

/// A switch read once per process into `cell`: on unless the variable `var` is "0".
pub(super) fn switch_on(cell: &OnceLock<bool>, var: &str) -> bool {
    *cell.get_or_init(|| std::env::var_os(var).is_none_or(|v| v != "0"))
}

/// The tensor map of a `[batch, seqlen, heads, head_dim]` tensor for the Hopper kernels'
/// copies: boxes of 64 columns x 1 head x `rows` positions x 1 batch, 128-byte swizzle,
/// zeros past every extent (the head dim included, so a padded head dim reads zero
/// columns). None where the copy engine cannot describe it: an empty extent (nothing to
/// copy), or a map the driver refuses; the caller then runs the mma.sync kernels.
pub(super) fn row_map<T: Element>(
    t: &GpuTensor<T>,
    p: &Problem,
    seqlen: usize,
    heads: usize,
    rows: u32,
) -> Option<TensorMap> {
    if p.batch == 0 || seqlen == 0 || heads == 0 {
        return None;
    }
    let (d, e) = (p.head_dim as u64, T::DTYPE.size_bytes() as u64);
    let dims = [d, heads as u64, seqlen as u64, p.batch as u64];
    let strides = [d * e, heads as u64 * d * e, seqlen as u64 * heads as u64 * d * e];
    tiled_4d("tensor", T::DTYPE, t.device_addr(), dims, strides, [WgTile::SLAB, 1, rows, 1]).ok()
}

/// The forward kernel for a problem on a GPU of build `arch` (`wgmma`: take the Hopper
/// kernels where there is one), and its launch shape: one CTA per (query block, batch x
/// head), the query blocks along x, or along y in the causal kernels (`heads_first`).
/// None for a head dim above 256.
pub(crate) fn fwd_launch(p: &Problem, dtype: DType, arch: Arch, wgmma: bool) -> Option<(String, LaunchGrid)> {
    // Saturated: `check_grid` rejects a count past the grid's limits.
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let bh = count(p.batch * p.heads_q);
    if wgmma
        && arch == Arch::Sm90a
        && let Some(tile) = wg_tile_for(p.head_dim as u32)
    {
        let m_blocks = count(p.seqlen_q.div_ceil(tile.block_m() as usize));
        let cfg = LaunchGrid { grid: (m_blocks, bh, 1), block: tile.threads(), smem: tile.smem_bytes() };
        return Some((format!("attn_fwd_wg_d{}_{}", tile.d, dtype.suffix()), cfg));
    }
    let tile = fwd_tile_for(p.head_dim as u32)?;
    let m_blocks = count(p.seqlen_q.div_ceil(tile.block_m() as usize));
    let (order, grid) = if heads_first(p, m_blocks) { ("causal_", (bh, m_blocks, 1)) } else { ("", (m_blocks, bh, 1)) };
    let cfg = LaunchGrid { grid, block: tile.threads(), smem: tile.smem_bytes() };
    Some((format!("attn_fwd_{order}d{}_{}", tile.d, dtype.suffix()), cfg))
}

/// The grid's order (the kernels' `fwd_cta`): with a causal mask (a bounded right
/// window) query blocks differ in work, and every head's heaviest block goes first
/// (H100, N = 2048 / 4096: +3.5% at d=64, +5-11% at d=128; docs/PERF.md), where the
/// query blocks fit the grid's y dimension.
fn heads_first(p: &Problem, m_blocks: u32) -> bool {
    p.window_right.is_some() && m_blocks <= GRID_Y_MAX
}

/// The grid's y dimension holds at most 65535 CTAs.
const GRID_Y_MAX: u32 = 65535;

/// The launch fits the grid: at most 65535 along y (batch x heads_q, or the query blocks
/// in the causal order) and 2^31 - 1 along x.
fn check_grid(p: &Problem, cfg: &LaunchGrid) -> Result<()> {
    if cfg.grid.1 > GRID_Y_MAX || cfg.grid.0 > i32::MAX as u32 {
        return Err(Error::Shape {
            arg: "q",
            got: vec![p.batch, p.seqlen_q, p.heads_q, p.head_dim],
            expected: "batch x heads_q <= 65535 (the grid's y dimension; with a bounded right window, \
                       such as causal, batch x heads_q < 2^31 while the query blocks, seqlen_q / 64 or / 128, are <= 65535)"
                .into(),
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(head_dim: usize, seqlen_q: usize) -> Problem {
        Problem {
            batch: 2,
            seqlen_q,
            seqlen_k: 100,
            heads_q: 4,
            heads_kv: 2,
            head_dim,
            scale: 1.0,
            softcap: 0.0,
            window_left: None,
            window_right: None,
        }
    }

    #[test]
    fn hopper_runs_wgmma_for_the_d64_and_d128_tiles_unless_switched_off() {
        let name = |hd, arch, wg| fwd_launch(&problem(hd, 300), DType::BF16, arch, wg).map(|(n, _)| n);
        for (hd, tile) in [(40, 64), (64, 64), (104, 128), (128, 128)] {
            assert_eq!(name(hd, Arch::Sm90a, true), Some(format!("attn_fwd_wg_d{tile}_bf16")));
            assert_eq!(name(hd, Arch::Sm90a, false), Some(format!("attn_fwd_d{tile}_bf16")));
            assert_eq!(name(hd, Arch::Sm80, true), Some(format!("attn_fwd_d{tile}_bf16")));
        }
        for (hd, tile) in [(8, 32), (32, 32), (96, 96), (136, 192), (256, 256)] {
            assert_eq!(name(hd, Arch::Sm90a, true), Some(format!("attn_fwd_d{tile}_bf16")));
        }
        assert_eq!(name(264, Arch::Sm90a, true), None);
        let (kernel, cfg) = fwd_launch(&problem(128, 300), DType::F16, Arch::Sm90a, true).expect("a tile");
        assert_eq!(kernel, "attn_fwd_wg_d128_f16");
        // 300 rows in blocks of 128, 2 x 4 (batch, head) pairs, 2 warpgroups; 160 KiB of
        // tiles, 1 KiB of alignment slack, 5 mbarriers.
        assert_eq!((cfg.grid, cfg.block, cfg.smem), ((3, 8, 1), 256, 160 * 1024 + 1024 + 40));
        let (kernel, cfg) = fwd_launch(&problem(128, 300), DType::F16, Arch::Sm90a, false).expect("a tile");
        assert_eq!(kernel, "attn_fwd_d128_f16");
        assert_eq!((cfg.grid, cfg.block), ((3, 8, 1), 128));
    }

    #[test]
    fn causal_masks_run_the_heads_first_kernels() {
        let causal = Problem { window_right: Some(0), ..problem(64, 300) };
        let (kernel, cfg) = fwd_launch(&causal, DType::BF16, Arch::Sm90a, false).expect("a tile");
        // (batch x heads, query blocks of 128): every head's last block starts first.
        assert_eq!((kernel.as_str(), cfg.grid), ("attn_fwd_causal_d64_bf16", (8, 3, 1)));
        let window = Problem { window_left: Some(5), ..problem(96, 300) };
        let (kernel, cfg) = fwd_launch(&window, DType::F16, Arch::Sm80, false).expect("a tile");
        assert_eq!((kernel.as_str(), cfg.grid), ("attn_fwd_d96_f16", (3, 8, 1)));
        // More query blocks than the grid's y dimension holds: the plain order.
        let long = Problem { seqlen_q: 65536 * 128, ..causal };
        let (kernel, cfg) = fwd_launch(&long, DType::BF16, Arch::Sm90a, false).expect("a tile");
        assert_eq!((kernel.as_str(), cfg.grid), ("attn_fwd_d64_bf16", (65536, 8, 1)));
        assert!(check_grid(&long, &cfg).is_ok());
        let heads = Problem { batch: 65536, heads_q: 1, heads_kv: 1, ..problem(64, 300) };
        let (_, cfg) = fwd_launch(&heads, DType::BF16, Arch::Sm90a, false).expect("a tile");
        assert!(matches!(check_grid(&heads, &cfg), Err(Error::Shape { arg: "q", .. })));
    }
}
