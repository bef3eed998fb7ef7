//! Thread, warp and block indices; barriers.

use core::arch::nvptx;

/// `mov.u32 %r, %tid.x`
#[inline(always)]
pub fn tid() -> u32 {
    unsafe { nvptx::_thread_idx_x() as u32 }
}

/// `mov.u32 %r, %ntid.x`
#[inline(always)]
pub fn block_threads() -> u32 {
    unsafe { nvptx::_block_dim_x() as u32 }
}

/// `mov.u32 %r, %ctaid.x`
#[inline(always)]
pub fn block_x() -> u32 {
    unsafe { nvptx::_block_idx_x() as u32 }
}

/// `mov.u32 %r, %ctaid.y`
#[inline(always)]
pub fn block_y() -> u32 {
    unsafe { nvptx::_block_idx_y() as u32 }
}

/// `mov.u32 %r, %ctaid.z`
#[inline(always)]
pub fn block_z() -> u32 {
    unsafe { nvptx::_block_idx_z() as u32 }
}

/// `mov.u32 %r, %nctaid.x`
#[inline(always)]
pub fn grid_x() -> u32 {
    unsafe { nvptx::_grid_dim_x() as u32 }
}

/// `mov.u32 %r, %nctaid.y`
#[inline(always)]
pub fn grid_y() -> u32 {
    unsafe { nvptx::_grid_dim_y() as u32 }
}

/// Lane within the warp (tid % 32; blocks are 1-D in this crate).
#[inline(always)]
pub fn lane() -> u32 {
    tid() % 32
}

/// Warp within the block (tid / 32).
#[inline(always)]
pub fn warp() -> u32 {
    tid() / 32
}

/// `bar.sync 0;` — every thread of the block, and their shared-memory accesses.
/// Through LLVM's `llvm.nvvm.barrier0`, which is *convergent*: LLVM may not duplicate it
/// into divergent branches. (An `asm!` barrier is not convergent, and LLVM's tail
/// duplication once gave threads of one kernel different barrier counts: a hang.)
#[inline(always)]
pub fn sync_threads() {
    unsafe { core::arch::nvptx::_syncthreads() }
}

/// `bar.sync id, n;` — a named barrier among `n` threads (a multiple of 32).
/// Through the convergent `llvm.nvvm.barrier.sync.cnt`.
#[inline(always)]
pub fn sync_named(id: u32, n: u32) {
    unsafe { barrier_sync_cnt(id, n) }
}

/// `bar.warp.sync 0xffffffff;` — every lane of the warp, and their shared-memory accesses
/// (a warp that owns its own SRAM region needs no block barrier). Through the convergent
/// `llvm.nvvm.bar.warp.sync`.
#[inline(always)]
pub fn sync_warp() {
    unsafe { bar_warp_sync(0xffff_ffff) }
}

unsafe extern "C" {
    #[link_name = "llvm.nvvm.barrier.sync.cnt"]
    fn barrier_sync_cnt(id: u32, n: u32);
    #[link_name = "llvm.nvvm.bar.warp.sync"]
    fn bar_warp_sync(mask: u32);
}
