//! bf16 / f16 packing: two 16-bit values in one b32 register (the low half first), as
//! the tensor-core operands and 4-byte stores want them.

use core::arch::asm;

/// `cvt.rn.bf16x2.f32` — (lo, hi) rounded to nearest-even into one b32.
#[inline(always)]
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // PTX puts the first source in the upper half.
    unsafe {
        asm!("cvt.rn.bf16x2.f32 {0}, {1}, {2};", out(reg32) r, in(reg32) hi, in(reg32) lo, options(pure, nomem, nostack))
    }
    r
}

/// `cvt.rn.f16x2.f32` — (lo, hi) rounded to nearest-even into one b32.
#[inline(always)]
pub fn pack_f16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    unsafe {
        asm!("cvt.rn.f16x2.f32 {0}, {1}, {2};", out(reg32) r, in(reg32) hi, in(reg32) lo, options(pure, nomem, nostack))
    }
    r
}

/// bf16 bits to f32: exact (bf16 is the top half of an f32).
#[inline(always)]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `cvt.rn.bf16.f32`
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let r: u16;
    unsafe { asm!("cvt.rn.bf16.f32 {0}, {1};", out(reg16) r, in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// `cvt.f32.f16` — exact.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let r: f32;
    unsafe { asm!("cvt.f32.f16 {0}, {1};", out(reg32) r, in(reg16) h, options(pure, nomem, nostack)) }
    r
}

/// `cvt.rn.f16.f32`
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    let r: u16;
    unsafe { asm!("cvt.rn.f16.f32 {0}, {1};", out(reg16) r, in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// The (lo, hi) halves of a packed pair.
#[inline(always)]
pub fn split_b32(v: u32) -> (u16, u16) {
    (v as u16, (v >> 16) as u16)
}
