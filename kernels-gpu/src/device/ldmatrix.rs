//! `ldmatrix`: 8 x 8 tiles of 16-bit values from SRAM straight into operand layout.
//! Each lane passes the shared address of one 16-byte row: lanes 0-7 the rows of the
//! first tile, 8-15 the second, and so on (x2 uses lanes 0-15).

use core::arch::asm;

/// `ldmatrix.sync.aligned.m8n8.x4.shared.b16`
#[inline(always)]
pub unsafe fn ldmatrix_x4(addr: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    unsafe {
        asm!("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {{{0}, {1}, {2}, {3}}}, [{4}];",
             out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr,
             options(readonly, nostack));
    }
    [a, b, c, d]
}

/// `ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16` — each 8 x 8 tile transposed.
#[inline(always)]
pub unsafe fn ldmatrix_x4_trans(addr: u32) -> [u32; 4] {
    let (a, b, c, d): (u32, u32, u32, u32);
    unsafe {
        asm!("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {{{0}, {1}, {2}, {3}}}, [{4}];",
             out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr,
             options(readonly, nostack));
    }
    [a, b, c, d]
}

/// `ldmatrix.sync.aligned.m8n8.x2.shared.b16`
#[inline(always)]
pub unsafe fn ldmatrix_x2(addr: u32) -> [u32; 2] {
    let (a, b): (u32, u32);
    unsafe {
        asm!("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {{{0}, {1}}}, [{2}];",
             out(reg32) a, out(reg32) b, in(reg32) addr, options(readonly, nostack));
    }
    [a, b]
}

/// `ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16`
#[inline(always)]
pub unsafe fn ldmatrix_x2_trans(addr: u32) -> [u32; 2] {
    let (a, b): (u32, u32);
    unsafe {
        asm!("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {{{0}, {1}}}, [{2}];",
             out(reg32) a, out(reg32) b, in(reg32) addr, options(readonly, nostack));
    }
    [a, b]
}
