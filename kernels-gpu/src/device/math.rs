//! Fast math as PTX instructions (core has no `f32::exp` on nvptx).

use core::arch::asm;

/// `ex2.approx.ftz.f32` — 2^x on the special-function unit (max rel. error 2^-22).
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    let r: f32;
    unsafe { asm!("ex2.approx.ftz.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// `lg2.approx.ftz.f32` — log2(x).
#[inline(always)]
pub fn log2(x: f32) -> f32 {
    let r: f32;
    unsafe { asm!("lg2.approx.ftz.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// `rcp.approx.ftz.f32` — 1/x (1 ulp).
#[inline(always)]
pub fn rcp(x: f32) -> f32 {
    let r: f32;
    unsafe { asm!("rcp.approx.ftz.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// `rsqrt.approx.ftz.f32` — 1/sqrt(x).
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    let r: f32;
    unsafe { asm!("rsqrt.approx.ftz.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// `sqrt.rn.f32` — correctly rounded square root.
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    let r: f32;
    unsafe { asm!("sqrt.rn.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// `div.rn.f32` — correctly rounded division.
#[inline(always)]
pub fn div(a: f32, b: f32) -> f32 {
    let r: f32;
    unsafe { asm!("div.rn.f32 {0}, {1}, {2};", out(reg32) r, in(reg32) a, in(reg32) b, options(pure, nomem, nostack)) }
    r
}

/// `fma.rn.f32` — a * b + c with one rounding.
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let r: f32;
    unsafe {
        asm!("fma.rn.f32 {0}, {1}, {2}, {3};", out(reg32) r, in(reg32) a, in(reg32) b, in(reg32) c, options(pure, nomem, nostack))
    }
    r
}

/// `max.f32` — the larger; a NaN operand yields the other one.
#[inline(always)]
pub fn max(a: f32, b: f32) -> f32 {
    let r: f32;
    unsafe { asm!("max.f32 {0}, {1}, {2};", out(reg32) r, in(reg32) a, in(reg32) b, options(pure, nomem, nostack)) }
    r
}

/// `tanh.approx.f32` (sm_75+).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let r: f32;
    unsafe { asm!("tanh.approx.f32 {0}, {1};", out(reg32) r, in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// `a / b` and `a % b` for a divisor the launch guarantees non-zero (a shape), without
/// Rust's divide-by-zero check: that check would put a `trap` path (and a panic
/// function) into the kernel. A zero divisor is treated as 1.
#[inline(always)]
pub fn div_rem(a: usize, b: usize) -> (usize, usize) {
    let b = core::num::NonZeroUsize::new(b).unwrap_or(core::num::NonZeroUsize::MIN);
    (a / b, a % b)
}
