//! Warp shuffles and reductions; block reductions through a small SRAM scratch.

use super::sram::Sram;
use super::thread::{block_threads, lane, sync_threads, warp};
use core::arch::asm;

const FULL: u32 = 0xffff_ffff;

/// `shfl.sync.bfly.b32` — the value of lane `lane ^ mask`.
#[inline(always)]
pub fn shfl_xor(v: f32, mask: u32) -> f32 {
    let r: f32;
    unsafe { asm!("shfl.sync.bfly.b32 {0}, {1}, {2}, 0x1f, {3};", out(reg32) r, in(reg32) v, in(reg32) mask, in(reg32) FULL, options(nomem, nostack)) }
    r
}

/// `shfl.sync.idx.b32` — the value of lane `src`.
#[inline(always)]
pub fn shfl_idx(v: f32, src: u32) -> f32 {
    let r: f32;
    unsafe { asm!("shfl.sync.idx.b32 {0}, {1}, {2}, 0x1f, {3};", out(reg32) r, in(reg32) v, in(reg32) src, in(reg32) FULL, options(nomem, nostack)) }
    r
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
