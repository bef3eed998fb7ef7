//! Asynchronous HBM -> SRAM copies (sm_80+): the copy engine fills SRAM while the
//! threads compute; groups of copies are committed and waited on in order.

use core::arch::asm;

/// `cp.async.cg.shared.global [dst], [src], 16, src_bytes;` — copies `src_bytes` (0..=16)
/// and zero-fills the rest of the 16 bytes: a row past the end of a tensor is loaded as
/// zeros with `src_bytes = 0` (src must still be a valid address: pass the tensor base).
#[inline(always)]
pub unsafe fn cp_async_16(dst: u32, src: *const u8, src_bytes: u32) {
    unsafe {
        asm!("cp.async.cg.shared.global [{0}], [{1}], 16, {2};",
             in(reg32) dst, in(reg64) src as u64, in(reg32) src_bytes, options(nostack));
    }
}

/// [`cp_async_16`] with the L2 prefetch hint, `cp.async.cg.shared.global.L2::128B`: the
/// L2 fetches the whole 128-byte line from HBM at once. For streams that read whole rows
/// once (the split-KV decode's K/V: 2% faster on the H100).
#[inline(always)]
pub unsafe fn cp_async_16_prefetch(dst: u32, src: *const u8, src_bytes: u32) {
    unsafe {
        asm!("cp.async.cg.shared.global.L2::128B [{0}], [{1}], 16, {2};",
             in(reg32) dst, in(reg64) src as u64, in(reg32) src_bytes, options(nostack));
    }
}

/// `cp.async.ca.shared.global [dst], [src], 4, src_bytes;` — one 4-byte word (0 or 4
/// bytes copied, the rest zero-filled), for f32 rows that are not 16-byte aligned.
#[inline(always)]
pub unsafe fn cp_async_4(dst: u32, src: *const u8, src_bytes: u32) {
    unsafe {
        asm!("cp.async.ca.shared.global [{0}], [{1}], 4, {2};",
             in(reg32) dst, in(reg64) src as u64, in(reg32) src_bytes, options(nostack));
    }
}

/// `cp.async.commit_group;` — closes the group of copies issued since the last commit.
#[inline(always)]
pub fn commit() {
    unsafe { asm!("cp.async.commit_group;", options(nostack)) }
}

/// `cp.async.wait_group N;` — waits until at most N committed groups are still in
/// flight (this thread's copies only: a barrier must follow before others read them).
#[inline(always)]
pub fn wait_group<const N: u32>() {
    unsafe { asm!("cp.async.wait_group {n};", n = const N, options(nostack)) }
}

/// `cp.async.wait_all;`
#[inline(always)]
pub fn wait_all() {
    unsafe { asm!("cp.async.wait_all;", options(nostack)) }
}
