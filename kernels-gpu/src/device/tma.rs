//! Hopper's tensor memory accelerator (sm_90a only): one thread asks the copy engine for
//! a whole box of a tensor, HBM -> SRAM, described by a tensor map the host encoded
//! (`cuTensorMapEncodeTiled`: shape, strides, box, 128-byte swizzle, zeros outside the
//! tensor); an mbarrier in SRAM counts the bytes as they land, and the readers wait on
//! its phase. No thread computes an address per 16 bytes, and rows past the tensor's
//! end arrive as zeros.
//!
//! The tensor maps travel inside the kernel's by-value parameter struct (the param
//! space, which the copy engine reads directly): [`ParamAddr`] takes their generic
//! address without LLVM copying the parameter to a stack frame (`crate::tensor_map`).

use core::arch::asm;

/// The generic address of a kernel's by-value parameter, implemented per kernel entry
/// by naming its PTX parameter symbol (`<kernel>_param_0`) in `mov` + `cvta.param`.
pub trait ParamAddr {
    fn param_addr() -> u64;
}

/// Defines the type `$ty` implementing [`ParamAddr`] for the kernel entry `$entry`.
macro_rules! kernel_param {
    ($ty:ident, $entry:ident) => {
        struct $ty;
        impl $crate::device::tma::ParamAddr for $ty {
            #[inline(always)]
            fn param_addr() -> u64 {
                let a: u64;
                unsafe {
                    core::arch::asm!(
                        concat!("mov.u64 {0}, ", stringify!($entry), "_param_0; cvta.param.u64 {0}, {0};"),
                        out(reg64) a, options(pure, nomem, nostack)
                    )
                };
                a
            }
        }
    };
}
pub(crate) use kernel_param;

/// `mbarrier.init.shared.b64 [bar], count;` — a barrier whose phase completes after
/// `count` arrivals and all bytes announced with [`arrive_expect_tx`] have landed.
#[inline(always)]
pub unsafe fn mbar_init(bar: u32, count: u32) {
    unsafe { asm!("mbarrier.init.shared.b64 [{0}], {1};", in(reg32) bar, in(reg32) count, options(nostack)) }
}

/// `fence.mbarrier_init.release.cluster;` — makes the initialized barriers visible to
/// the copy engine (then a block barrier for the other threads).
#[inline(always)]
pub fn fence_mbar_init() {
    unsafe { asm!("fence.mbarrier_init.release.cluster;", options(nostack)) }
}

/// `mbarrier.arrive.expect_tx.shared::cta.b64 _, [bar], bytes;` — this thread's arrival,
/// announcing `bytes` more to land before the phase completes.
#[inline(always)]
pub unsafe fn arrive_expect_tx(bar: u32, bytes: u32) {
    unsafe {
        asm!("{{ .reg .b64 st; mbarrier.arrive.expect_tx.shared::cta.b64 st, [{0}], {1}; }}",
             in(reg32) bar, in(reg32) bytes, options(nostack))
    }
}

/// Waits until the barrier's phase with parity `parity` has completed
/// (`mbarrier.try_wait.parity.shared::cta.b64` in a loop).
#[inline(always)]
pub fn mbar_wait(bar: u32, parity: u32) {
    loop {
        let done: u32;
        unsafe {
            asm!(
                "{{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [{b}], {ph}; selp.u32 {d}, 1, 0, p; }}",
                b = in(reg32) bar, ph = in(reg32) parity, d = out(reg32) done, options(nostack)
            )
        }
        if done != 0 {
            break;
        }
    }
}

/// `cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes`:
/// the box of the tensor map at generic address `map` whose first element is at
/// coordinates `c` (innermost first) into SRAM at `dst` (1024-byte aligned for the
/// 128-byte swizzle), its bytes counted on `bar`.
#[inline(always)]
pub unsafe fn load_4d(dst: u32, map: u64, c: [i32; 4], bar: u32) {
    unsafe {
        asm!(
            "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{d}], [{m}, {{{c0}, {c1}, {c2}, {c3}}}], [{b}];",
            d = in(reg32) dst, m = in(reg64) map, c0 = in(reg32) c[0], c1 = in(reg32) c[1], c2 = in(reg32) c[2],
            c3 = in(reg32) c[3], b = in(reg32) bar, options(nostack)
        )
    }
}

/// Bytes per row of a 128-byte-swizzled slab, and the elements of a 16-bit type in it.
pub const SLAB_ROW: u32 = 128;
pub const SLAB_COLS: u32 = 64;

/// Rows [first, first + rows) of head `head` in batch `batch` of a 16-bit `[batch, seq,
/// heads, D]` tensor (`map`: boxes of 64 columns x 1 x rows x 1, 128-byte swizzle) into
/// SRAM at `dst`: D/64 slabs of rows x 128 B, one box each, all counted on `bar`.
#[inline(always)]
pub unsafe fn load_slabs<const D: u32>(map: u64, dst: u32, rows: u32, head: u32, first: i32, batch: u32, bar: u32) {
    const { assert!(D % SLAB_COLS == 0 && D <= 2 * SLAB_COLS) };
    super::unroll::<2, _>(|slab| {
        if (slab as u32) * SLAB_COLS < D {
            let c = [(slab as u32 * SLAB_COLS) as i32, head as i32, first, batch as i32];
            unsafe { load_4d(dst + slab as u32 * rows * SLAB_ROW, map, c, bar) };
        }
    });
}

/// `prefetch.tensormap [map];` — fetches a tensor map into the copy engine's cache ahead
/// of its first use.
#[inline(always)]
pub unsafe fn prefetch_map(map: u64) {
    unsafe { asm!("prefetch.tensormap [{0}];", in(reg64) map, options(nostack)) }
}
