//! Warp shuffles and reductions; block reductions through a small SRAM scratch.

use super::sram::Sram;
use super::thread::{block_threads, lane, sync_threads, warp};

const FULL: u32 = 0xffff_ffff;

// The shuffles go through LLVM's intrinsics, which are convergent (an `asm!` is not, and
// LLVM could then sink a shuffle into a branch that only some lanes take).
unsafe extern "C" {
    #[link_name = "llvm.nvvm.shfl.sync.bfly.f32"]
    fn shfl_sync_bfly_f32(mask: u32, v: f32, lane_mask: u32, clamp: u32) -> f32;
    #[link_name = "llvm.nvvm.shfl.sync.idx.f32"]
    fn shfl_sync_idx_f32(mask: u32, v: f32, src: u32, clamp: u32) -> f32;
    #[link_name = "llvm.nvvm.vote.any.sync"]
    fn vote_any_sync(mask: u32, pred: bool) -> bool;
}

/// `shfl.sync.bfly.b32` — the value of lane `lane ^ mask`.
#[inline(always)]
pub fn shfl_xor(v: f32, mask: u32) -> f32 {
    unsafe { shfl_sync_bfly_f32(FULL, v, mask, 0x1f) }
}

/// `shfl.sync.idx.b32` — the value of lane `src`.
#[inline(always)]
pub fn shfl_idx(v: f32, src: u32) -> f32 {
    unsafe { shfl_sync_idx_f32(FULL, v, src, 0x1f) }
}

/// `vote.sync.any.pred` — whether `pred` holds in any lane (the same answer in every
/// lane, so a branch on it is warp-uniform).
#[inline(always)]
pub fn any_sync(pred: bool) -> bool {
    unsafe { vote_any_sync(FULL, pred) }
}

/// Butterfly sum over the 32 lanes (every lane gets the total; same order in every lane).
#[inline(always)]
pub fn warp_sum(mut v: f32) -> f32 {
    let mut m = 16;
    while m > 0 {
        v += shfl_xor(v, m);
        m /= 2;
    }
    v
}

/// Butterfly max over the 32 lanes (`max.f32` ignores NaN operands).
#[inline(always)]
pub fn warp_max(mut v: f32) -> f32 {
    let mut m = 16;
    while m > 0 {
        v = super::math::max(v, shfl_xor(v, m));
        m /= 2;
    }
    v
}

/// Sum over the block. `scratch` holds one f32 per warp (at most 32). Every thread gets
/// the same total, summed in warp order, so the result is deterministic. Ends with a
/// barrier so that the scratch can be reused at once.
#[inline(always)]
pub fn block_sum(v: f32, scratch: Sram) -> f32 {
    let w = warp_sum(v);
    if lane() == 0 {
        unsafe { scratch.st_f32(4 * warp(), w) };
    }
    sync_threads();
    let nwarps = block_threads().div_ceil(32);
    let mut total = 0.0f32;
    let mut i = 0;
    while i < nwarps {
        total += unsafe { scratch.ld_f32(4 * i) };
        i += 1;
    }
    sync_threads();
    total
}
