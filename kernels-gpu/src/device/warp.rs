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

/// Count, mean and M2 (sum of squared deviations from the mean) over the block, from
/// each thread's partial (count, its own mean, its own M2). One barrier round, and
/// accurate like a two-pass variance: partials are combined as sums of deviations from
/// a shift K that is itself a mean of real values (lane 0's within a warp, warp 0's
/// across warps), so S2 - S1^2 / n never cancels more than the data's own spread
/// around K. Deterministic (fixed order). `scratch`: 3 f32 per warp. Ends with a barrier.
#[inline(always)]
pub fn block_moments(count: f32, mean: f32, m2: f32, scratch: Sram) -> (f32, f32, f32) {
    // Lane 0 of a warp holds values whenever any lane does (values go to threads in order).
    let k = shfl_idx(mean, 0);
    let d = mean - k;
    let n = warp_sum(count);
    let s1 = warp_sum(count * d);
    let s2 = warp_sum(m2 + count * d * d);
    if lane() == 0 {
        let (mean_w, m2_w) = if n > 0.0 { (k + s1 / n, s2 - s1 * s1 / n) } else { (0.0, 0.0) };
        let w = 12 * warp();
        unsafe {
            scratch.st_f32(w, n);
            scratch.st_f32(w + 4, mean_w);
            scratch.st_f32(w + 8, m2_w);
        }
    }
    sync_threads();
    let nwarps = block_threads().div_ceil(32);
    let k = unsafe { scratch.ld_f32(4) };
    let (mut n, mut s1, mut s2) = (0.0f32, 0.0f32, 0.0f32);
    let mut i = 0;
    while i < nwarps {
        let (nw, mw, m2w) = unsafe { (scratch.ld_f32(12 * i), scratch.ld_f32(12 * i + 4), scratch.ld_f32(12 * i + 8)) };
        let d = mw - k;
        n += nw;
        s1 += nw * d;
        s2 += m2w + nw * d * d;
        i += 1;
    }
    sync_threads();
    if n > 0.0 { (n, k + s1 / n, super::math::max(s2 - s1 * s1 / n, 0.0)) } else { (0.0, 0.0, 0.0) }
}
