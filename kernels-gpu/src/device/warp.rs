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

/// Chan et al.'s merge of two partial (count, mean, M2 = sum of squared deviations).
#[inline(always)]
pub fn merge_moments(a: (f32, f32, f32), b: (f32, f32, f32)) -> (f32, f32, f32) {
    let n = a.0 + b.0;
    if n == 0.0 {
        return (0.0, 0.0, 0.0);
    }
    let delta = b.1 - a.1;
    let wb = b.0 / n;
    (n, a.1 + delta * wb, a.2 + b.2 + delta * delta * a.0 * wb)
}

/// (count, mean, M2) over the block from each thread's partial, merged pairwise in a
/// fixed order (deterministic): one reduction gives a two-pass-accurate variance.
/// `scratch` holds 3 f32 per warp (at most 32 warps). Ends with a barrier.
#[inline(always)]
pub fn block_moments(mut m: (f32, f32, f32), scratch: Sram) -> (f32, f32, f32) {
    let mut k = 1;
    while k < 32 {
        let other = (shfl_xor(m.0, k), shfl_xor(m.1, k), shfl_xor(m.2, k));
        // Lower lane first, so both partners compute the identical merge.
        m = if lane() & k == 0 { merge_moments(m, other) } else { merge_moments(other, m) };
        k *= 2;
    }
    if lane() == 0 {
        let w = 12 * warp();
        unsafe {
            scratch.st_f32(w, m.0);
            scratch.st_f32(w + 4, m.1);
            scratch.st_f32(w + 8, m.2);
        }
    }
    sync_threads();
    let nwarps = block_threads().div_ceil(32);
    let mut total = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < nwarps {
        let part = unsafe { (scratch.ld_f32(12 * i), scratch.ld_f32(12 * i + 4), scratch.ld_f32(12 * i + 8)) };
        total = merge_moments(total, part);
        i += 1;
    }
    sync_threads();
    total
}
