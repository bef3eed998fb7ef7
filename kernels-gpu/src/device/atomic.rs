//! Atomics and fences as explicit PTX (rustc's nvptx atomics have open issues).

use core::arch::asm;

/// `red.global.add.f32` — adds without returning the old value.
#[inline(always)]
pub unsafe fn red_add_f32(p: *mut f32, v: f32) {
    unsafe { asm!("red.global.add.f32 [{0}], {1};", in(reg64) p as u64, in(reg32) v, options(nostack)) }
}

/// `fence.acq_rel.gpu;`
#[inline(always)]
pub fn fence_gpu() {
    unsafe { asm!("fence.acq_rel.gpu;", options(nostack)) }
}
