//! Copying a [rows x d] tile of a packed [seq, heads, d] tensor from HBM into SRAM with
//! `cp.async`, in the padded layout of `FwdTile::pitch`. Rows past the sequence end and
//! columns past the real head dim arrive as zeros (cp.async zero-fill), so the tensor
//! cores can run on whole tiles. `load_core_tile` writes the core-matrix layout that
//! Hopper's `wgmma` reads instead.

use crate::device::cp_async::cp_async_16;
use crate::device::{Hbm, Sram};

/// Issues the copies of rows [0, rows) of `src` (row `r` at `src + r * row_stride`
/// elements) into `dst` (row `r` at `dst + r * PITCH` bytes). `rows_valid` rows and
/// `head_dim` columns are real. `threads` threads (this one is number `t` of them) take
/// 16-byte chunks round-robin (`rows` and `threads` are compile-time constants at every
/// call, after inlining).
/// The caller commits the group and waits on it.
#[inline(always)]
pub unsafe fn load_tile<const D: u32, const PITCH: u32>(
    rows: u32,
    threads: u32,
    t: u32,
    dst: Sram,
    src: Hbm<u16>,
    row_stride: usize,
    rows_valid: i32,
    head_dim: u32,
) {
    let copy = |to, from, n| unsafe { cp_async_16(to, from, n) };
    let place = |r, ch| dst.byte(r * PITCH + ch * 16);
    unsafe { load_tile_at::<D>(copy, place, rows, threads, t, src, row_stride, rows_valid, head_dim) }
}

/// [`load_tile`] into any tile layout (the padded rows, the swizzled K / V rows of the
/// split-KV decode and the d=64 forward, `wgmma`'s core matrices): `place(row, chunk)` is
/// the shared address of 16-byte chunk `chunk` of row `row`, and `copy(dst, src,
/// src_bytes)` issues each copy (e.g. with the L2 prefetch hint).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn load_tile_at<const D: u32>(
    copy: impl Fn(u32, *const u8, u32),
    place: impl Fn(u32, u32) -> u32,
    rows: u32,
    threads: u32,
    t: u32,
    src: Hbm<u16>,
    row_stride: usize,
    rows_valid: i32,
    head_dim: u32,
) {
    let chunks = D / 8;
    let total = rows * chunks;
    let mut i = 0;
    while i < total.div_ceil(threads) {
        let c = t + i * threads;
        if total % threads == 0 || c < total {
            let (r, ch) = (c / chunks, c % chunks);
            let ok = (r as i32) < rows_valid && ch * 8 < head_dim;
            // A zero-byte copy still needs a valid address: the tile base.
            let from = if ok { src.offset(r as usize * row_stride + ch as usize * 8).ptr() } else { src.ptr() };
            copy(place(r, ch), from as *const u8, if ok { 16 } else { 0 });
        }
        i += 1;
    }
}

/// [`load_tile`] into the `wgmma` core-matrix layout (`crate::layout::core_offset`, D/8
/// chunks a row) instead of padded rows. Chunks go round-robin in row order, as in
/// [`load_tile`]: 8 consecutive threads read one 128-byte line of a row and, with the
/// padded core-matrix stride, write 8 different bank groups.
#[cfg(target_feature = "sm_90a")]
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub unsafe fn load_core_tile<const D: u32>(
    rows: u32,
    threads: u32,
    t: u32,
    dst: Sram,
    src: Hbm<u16>,
    row_stride: usize,
    rows_valid: i32,
    head_dim: u32,
) {
    let copy = |to, from, n| unsafe { cp_async_16(to, from, n) };
    let place = |r, ch| dst.byte(crate::layout::core_offset(r, ch, D / 8));
    unsafe { load_tile_at::<D>(copy, place, rows, threads, t, src, row_stride, rows_valid, head_dim) }
}
