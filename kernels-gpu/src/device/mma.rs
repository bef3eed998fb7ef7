//! Tensor-core products, f32 accumulators.

use super::frag::{FragA, FragB, FragC};
use core::arch::asm;

/// `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` — D = A B + D.
#[inline(always)]
pub fn mma_bf16(d: &mut FragC, a: &FragA, b: &FragB) {
    unsafe {
        asm!("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{0}, {1}, {2}, {3}}};",
             inout(reg32) d.0[0], inout(reg32) d.0[1], inout(reg32) d.0[2], inout(reg32) d.0[3],
             in(reg32) a.0[0], in(reg32) a.0[1], in(reg32) a.0[2], in(reg32) a.0[3],
             in(reg32) b.0[0], in(reg32) b.0[1],
             options(pure, nomem, nostack));
    }
}

/// `mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32` — D = A B + D.
#[inline(always)]
pub fn mma_f16(d: &mut FragC, a: &FragA, b: &FragB) {
    unsafe {
        asm!("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{0}, {1}, {2}, {3}}};",
             inout(reg32) d.0[0], inout(reg32) d.0[1], inout(reg32) d.0[2], inout(reg32) d.0[3],
             in(reg32) a.0[0], in(reg32) a.0[1], in(reg32) a.0[2], in(reg32) a.0[3],
             in(reg32) b.0[0], in(reg32) b.0[1],
             options(pure, nomem, nostack));
    }
}
