//! GPU path of Flash-Decoding: the append / rotate kernel and the split-KV kernel, whose
//! last CTA per row block merges the splits (`kernels-gpu/src/attention/{kv_append,
//! split_kv, combine}.rs`).

use super::decode::DecodeProblem;
use super::kv_cache::{KvCache, Rotary};
use super::{AttentionOutput, kernel_window};
use crate::kernels::attention::decode::{
    APPEND_THREADS, AttnSplitParams, INLINE_SEQLENS, KvAppendParams, SPLIT_BLOCK_N, SPLIT_ROWS, default_splits,
    split_tile_for,
};
use crate::runtime::{GpuTensor, LaunchGrid};
use crate::{Element, Error, Result, Tensor};

/// Launches `kv_append`: new tokens into the cache (k rotated when asked) and, with
/// `q` = (q, q_out), q rotated into q_out. The cache lengths are not advanced here.
pub(super) fn append<T: Element>(
    cache: &mut KvCache<T>,
    new_kv: Option<(&Tensor<T>, &Tensor<T>)>,
    q: Option<(&GpuTensor<T>, &GpuTensor<T>)>,
    rotary: Option<Rotary<'_>>,
) -> Result<()> {
    let (lens, table) = cache.device_index()?;
    let gpu = cache.k.gpu_data("cache.k")?.gpu().clone();
    let (k_new, v_new, seqlen_new) = match new_kv {
        Some((k, v)) => (k.gpu_data("k_new")?.device_addr(), v.gpu_data("v_new")?.device_addr(), k.shape()[1]),
        None => (0, 0, 0),
    };
    let (cos, sin, rot_dim) = match rotary {
        Some(r) => (
            r.tables.cos.gpu_data("rotary.tables.cos")?.device_addr(),
            r.tables.sin.gpu_data("rotary.tables.sin")?.device_addr(),
            2 * r.tables.cos.shape()[1],
        ),
        None => (0, 0, 0),
    };
    let (q_addr, q_out, seqlen_q, heads_q) = match q {
        Some((q, out)) => (q.device_addr(), out.device_addr(), q.shape()[1], q.shape()[2]),
        None => (0, 0, 0, 0),
    };
    let params = KvAppendParams {
        k_new,
        v_new,
        k_cache: cache.k.gpu_data("cache.k")?.device_addr(),
        v_cache: cache.v.gpu_data("cache.v")?.device_addr(),
        block_table: table,
        seqlens: lens,
        q: q_addr,
        q_out,
        cos,
        sin,
        kv_seq_stride: cache.unit_stride() as u64,
        batch: cache.batch as u32,
        seqlen_new: seqlen_new as u32,
        seqlen_q: seqlen_q as u32,
        heads_q: heads_q as u32,
        heads_kv: cache.heads_kv as u32,
        head_dim: cache.head_dim as u32,
        rot_dim: rot_dim as u32,
        interleaved: rotary.is_some_and(|r| r.style == crate::ops::RotaryStyle::Interleaved) as u32,
        page_size: if cache.table.is_some() { cache.rows_per_unit as u32 } else { 0 },
        pages_per_seq: cache.pages_per_seq as u32,
    };
    let n = cache.batch * (2 * seqlen_new * cache.heads_kv + seqlen_q * heads_q) * cache.head_dim;
    if n == 0 {
        return Ok(());
    }
    let grid = n.div_ceil(APPEND_THREADS as usize).min(65535 * 8) as u32;
    let cfg = LaunchGrid { grid: (grid, 1, 1), block: APPEND_THREADS, smem: 0 };
    gpu.launch(&format!("kv_append_{}", T::DTYPE.suffix()), cfg, &params)
}

/// Appends, rotates q, and runs the split-KV kernel (which also merges the splits).
pub(super) fn decode<T: Element>(
    q: &Tensor<T>,
    cache: &mut KvCache<T>,
    new_kv: Option<(&Tensor<T>, &Tensor<T>)>,
    rotary: Option<Rotary<'_>>,
    p: &DecodeProblem,
) -> Result<AttentionOutput<T>> {
    let q = q.gpu_data("q")?;
    let gpu = q.gpu().clone();
    let tile = split_tile_for(p.head_dim as u32).ok_or_else(|| Error::Value {
        arg: "head_dim",
        got: p.head_dim.to_string(),
        expected: "at most 256".into(),
    })?;
    let group = p.heads_q / p.heads_kv;
    let row_blocks = (group * p.seqlen_q).div_ceil(SPLIT_ROWS as usize);
    if row_blocks > 65535 || p.batch * p.heads_kv > 65535 {
        return Err(Error::Shape {
            arg: "q",
            got: q.shape().to_vec(),
            expected: "heads_q / heads_kv x seqlen_q <= 65535 x 16 and batch x heads_kv <= 65535 (the grid's limits)"
                .into(),
        });
    }

    // The rotated q, when rotary is on (positions need the cache lengths, on the device).
    let q_rot = match rotary {
        Some(_) => Some(GpuTensor::<T>::uninit(&gpu, q.shape())?),
        None => None,
    };
    if new_kv.is_some() || rotary.is_some() {
        append(cache, new_kv, q_rot.as_ref().map(|r| (q, r)), rotary)?;
    }
    let q_used = q_rot.as_ref().unwrap_or(q);

    let longest = cache.seqlens.iter().max().copied().unwrap_or(0) + p.seqlen_new;
    let ctas = (p.batch * p.heads_kv * row_blocks) as u32;
    let per_sm = ((gpu.smem_optin() + 1024) / (tile.smem_bytes() + 1024)).clamp(1, tile.fill_per_sm);
    let splits = match p.num_splits {
        Some(n) => n as u32,
        None => default_splits(ctas, gpu.sm_count() * per_sm, longest.div_ceil(SPLIT_BLOCK_N as usize) as u32),
    };

    let o = GpuTensor::<T>::uninit(&gpu, q.shape())?;
    let lse = GpuTensor::<f32>::uninit(&gpu, &[p.batch, p.heads_q, p.seqlen_q])?;
    // The split partials, f32 o [splits, rows, head_dim] then lse [splits, rows], in the
    // device's scratch (no allocation per call).
    let rows = p.batch * p.heads_q * p.seqlen_q;
    let (o_part, lse_part) = if splits > 1 {
        let o_len = splits as usize * rows * p.head_dim;
        let at = gpu.scratch_f32(o_len + splits as usize * rows)?;
        (at, at + 4 * o_len as u64)
    } else {
        (0, 0)
    };
    let (lens, table) = cache.device_index()?;
    // A left window of `longest` keys or more, and a right one of seqlen_q or more, hide
    // no key of any sequence (see `Problem::kernel_windows`).
    let (window_left, window_right) =
        (kernel_window(p.window_left, longest), kernel_window(p.window_right, p.seqlen_q));
    let params = AttnSplitParams {
        q: q_used.device_addr(),
        k: cache.k.gpu_data("cache.k")?.device_addr(),
        v: cache.v.gpu_data("cache.v")?.device_addr(),
        block_table: table,
        seqlens: lens,
        o: o.device_addr(),
        lse: lse.device_addr(),
        o_part,
        lse_part,
        counters: if splits > 1 { gpu.counters(ctas as usize)? } else { 0 },
        q_batch_stride: (p.seqlen_q * p.heads_q * p.head_dim) as u64,
        kv_seq_stride: cache.unit_stride() as u64,
        batch: p.batch as u32,
        q_row_stride: (p.heads_q * p.head_dim) as u32,
        k_row_stride: (p.heads_kv * p.head_dim) as u32,
        seqlen_q: p.seqlen_q as u32,
        seqlen_new: p.seqlen_new as u32,
        heads_q: p.heads_q as u32,
        group: group as u32,
        head_dim: p.head_dim as u32,
        page_size: if cache.table.is_some() { cache.rows_per_unit as u32 } else { 0 },
        pages_per_seq: cache.pages_per_seq as u32,
        splits,
        window_left,
        window_right,
        softcap: (p.softcap > 0.0) as u32,
        score_pre: if p.softcap > 0.0 { p.scale / p.softcap } else { 0.0 },
        score_log2: std::f32::consts::LOG2_E * if p.softcap > 0.0 { p.softcap } else { p.scale },
        seqlens_inline: inline_seqlens(cache.seqlens()),
    };
    let kernel = format!("attn_split_d{}_{}", tile.d, T::DTYPE.suffix());
    let cfg = LaunchGrid {
        grid: (splits, row_blocks as u32, (p.batch * p.heads_kv) as u32),
        block: tile.threads(),
        smem: tile.smem_bytes(),
    };
    gpu.launch(&kernel, cfg, &params)?;
    Ok(AttentionOutput { o: Tensor::Cuda(o), lse: Tensor::Cuda(lse) })
}

/// The first [`INLINE_SEQLENS`] cached lengths, as the kernel's parameters carry them
/// (the kernel reads the device copy for the sequences after them).
fn inline_seqlens(seqlens: &[usize]) -> [u32; INLINE_SEQLENS] {
    let mut v = [0u32; INLINE_SEQLENS];
    for (d, &n) in v.iter_mut().zip(seqlens) {
        *d = n as u32;
    }
    v
}
