//! Compile-time loop unrolling. Register fragments are arrays that must be indexed only
//! by constants to stay in registers; LLVM does not fully unroll the larger loops of a
//! kernel on its own (it then puts the arrays on the stack). `unroll::<N>(|i| ...)`
//! writes the body out N times with `i` a literal, so every index is a constant.

/// Calls `f(0)`, `f(1)`, ..., `f(N - 1)`, written out (N <= 32).
#[inline(always)]
pub fn unroll<const N: usize, F: FnMut(usize)>(mut f: F) {
    const { assert!(N <= 32, "unroll supports up to 32 iterations") };
    macro_rules! expand {
        ($($i:literal)*) => { $( if $i < N { f($i); } )* };
    }
    expand!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
}

/// `x` through an opaque `mov.u32`: a loop bounded by it is a runtime loop that LLVM
/// cannot fully unroll (for loops that must stay rolled; see `attention::block`).
#[inline(always)]
pub fn opaque(x: u32) -> u32 {
    let y: u32;
    unsafe { core::arch::asm!("mov.u32 {o}, {i};", o = out(reg32) y, i = in(reg32) x, options(pure, nomem, nostack)) };
    y
}

/// `x` through a `mov.u64` that LLVM may neither fold nor move: called inside a loop,
/// everything derived from it is recomputed there instead of being hoisted out of the
/// loop into registers that stay live across it (like [`crate::device::Sram::pinned`]).
#[inline(always)]
pub fn pinned_u64(x: u64) -> u64 {
    let y: u64;
    unsafe { core::arch::asm!("mov.u64 {o}, {i};", o = out(reg64) y, i = in(reg64) x, options(nomem, nostack)) };
    y
}
