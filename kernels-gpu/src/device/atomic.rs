//! Atomics and fences as explicit PTX (rustc's nvptx atomics have open issues).

use core::arch::asm;

/// `red.global.add.f32` — adds without returning the old value.
#[inline(always)]
pub unsafe fn red_add_f32(p: *mut f32, v: f32) {
    unsafe { asm!("red.global.add.f32 [{0}], {1};", in(reg64) p as u64, in(reg32) v, options(nostack)) }
}

/// Adds `a` and `b` to `p[0]` and `p[1]` (`p` 8-byte aligned): one
/// `red.global.add.v2.f32` where the target has it (sm_90 with PTX ISA 8.1), else two
/// `red.global.add.f32`.
#[inline(always)]
pub unsafe fn red_add_v2_f32(p: *mut f32, a: f32, b: f32) {
    #[cfg(all(target_feature = "sm_90", target_feature = "ptx81"))]
    unsafe {
        asm!("red.global.add.v2.f32 [{0}], {{{1}, {2}}};", in(reg64) p as u64, in(reg32) a, in(reg32) b, options(nostack))
    }
    #[cfg(not(all(target_feature = "sm_90", target_feature = "ptx81")))]
    unsafe {
        red_add_f32(p, a);
        red_add_f32(p.add(1), b);
    }
}

/// `fence.acq_rel.gpu;`
#[inline(always)]
pub fn fence_gpu() {
    unsafe { asm!("fence.acq_rel.gpu;", options(nostack)) }
}

/// `atom.acq_rel.gpu.global.add.u32` — adds `v` and returns the old value. Release: this
/// thread's earlier writes (and those a barrier ordered before it) are visible at GPU
/// scope to whoever reads the new value; acquire: what the earlier adders released is
/// visible to this thread's later reads.
#[inline(always)]
pub unsafe fn atom_add_acq_rel_u32(p: *mut u32, v: u32) -> u32 {
    let old: u32;
    unsafe {
        asm!("atom.acq_rel.gpu.global.add.u32 {0}, [{1}], {2};",
             out(reg32) old, in(reg64) p as u64, in(reg32) v, options(nostack))
    }
    old
}
