//! Shared memory (SRAM): the one dynamic arena `smem` declared at module scope, carved
//! into regions at compile-time offsets by each kernel's `const` layout.

use core::arch::asm;

core::arch::global_asm!(".extern .shared .align 128 .b8 smem[];");

/// `mov.u32 %r, smem;` — the 32-bit shared address of the arena's first byte.
#[inline(always)]
pub fn arena() -> u32 {
    let a: u32;
    unsafe { asm!("mov.u32 {0}, smem;", out(reg32) a, options(pure, nomem, nostack)) }
    a
}

/// A region of the arena, as a 32-bit shared address. Offsets below are in bytes.
#[derive(Clone, Copy)]
pub struct Sram {
    pub addr: u32,
}

impl Sram {
    /// The region starting `offset` bytes into the arena.
    #[inline(always)]
    pub fn at(offset: u32) -> Sram {
        Sram { addr: arena() + offset }
    }

    /// The same region through an opaque `mov.u32`: called inside a loop, it stops LLVM
    /// from hoisting every `base + constant` address out of the loop into its own
    /// register (ptxas folds the constants into `[reg+imm]` operands instead).
    #[inline(always)]
    pub fn pinned(self) -> Sram {
        let addr: u32;
        unsafe {
            core::arch::asm!("mov.u32 {o}, {i};", o = out(reg32) addr, i = in(reg32) self.addr, options(nomem, nostack))
        };
        Sram { addr }
    }

    #[inline(always)]
    pub fn byte(self, offset: u32) -> u32 {
        self.addr + offset
    }

    /// The region starting `offset` bytes further on.
    #[inline(always)]
    pub fn skip(self, offset: u32) -> Sram {
        Sram { addr: self.addr + offset }
    }

    /// `ld.shared.f32`
    #[inline(always)]
    pub unsafe fn ld_f32(self, offset: u32) -> f32 {
        let v: f32;
        unsafe {
            asm!("ld.shared.f32 {0}, [{1}];", out(reg32) v, in(reg32) self.addr + offset, options(readonly, nostack))
        }
        v
    }

    /// `st.shared.f32`
    #[inline(always)]
    pub unsafe fn st_f32(self, offset: u32, v: f32) {
        unsafe { asm!("st.shared.f32 [{0}], {1};", in(reg32) self.addr + offset, in(reg32) v, options(nostack)) }
    }

    /// `ld.shared.b32`
    #[inline(always)]
    pub unsafe fn ld_b32(self, offset: u32) -> u32 {
        let v: u32;
        unsafe {
            asm!("ld.shared.b32 {0}, [{1}];", out(reg32) v, in(reg32) self.addr + offset, options(readonly, nostack))
        }
        v
    }

    /// `st.shared.b32`
    #[inline(always)]
    pub unsafe fn st_b32(self, offset: u32, v: u32) {
        unsafe { asm!("st.shared.b32 [{0}], {1};", in(reg32) self.addr + offset, in(reg32) v, options(nostack)) }
    }

    /// `ld.shared.b16`
    #[inline(always)]
    pub unsafe fn ld_b16(self, offset: u32) -> u16 {
        let v: u16;
        unsafe {
            asm!("ld.shared.b16 {0}, [{1}];", out(reg16) v, in(reg32) self.addr + offset, options(readonly, nostack))
        }
        v
    }

    /// `st.shared.b16`
    #[inline(always)]
    pub unsafe fn st_b16(self, offset: u32, v: u16) {
        unsafe { asm!("st.shared.b16 [{0}], {1};", in(reg32) self.addr + offset, in(reg16) v, options(nostack)) }
    }

    /// `ld.shared.v4.b32` — 16 bytes (16-byte aligned offset).
    #[inline(always)]
    pub unsafe fn ld_v4(self, offset: u32) -> [u32; 4] {
        let (a, b, c, d): (u32, u32, u32, u32);
        unsafe {
            asm!("ld.shared.v4.b32 {{{0}, {1}, {2}, {3}}}, [{4}];",
                 out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) self.addr + offset,
                 options(readonly, nostack));
        }
        [a, b, c, d]
    }

    /// `st.shared.v4.b32` — 16 bytes (16-byte aligned offset).
    #[inline(always)]
    pub unsafe fn st_v4(self, offset: u32, v: [u32; 4]) {
        unsafe {
            asm!("st.shared.v4.b32 [{0}], {{{1}, {2}, {3}, {4}}};",
                 in(reg32) self.addr + offset, in(reg32) v[0], in(reg32) v[1], in(reg32) v[2], in(reg32) v[3],
                 options(nostack));
        }
    }
}
