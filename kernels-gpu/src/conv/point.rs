//! The conv's sum at one step, shared by the prefill kernels (fwd.rs, bwd.rs) and the
//! decode step (`crate::decode`): the same f32 operations in the same order, so one
//! decode step gives bitwise the prefill's output at that step.

use crate::device::math::fma;
use crate::device::unroll;

/// `bias + sum_{k < width} weight[k] xpad[t + k]`, as FMAs in the order k = 0, 1, ...,
/// width - 1 (the CPU's order). `wr` holds the weights reversed, `wr[m] = weight[width -
/// 1 - m]` (m = how far back the tap reads; 0 past the width), and `win[last]` is
/// xpad[t + width - 1], the newest input: tap m reads `win[last - m]`. `last` >= 7 and
/// < N after inlining, so every index is a constant and `win` stays in registers.
#[inline(always)]
pub fn conv_point<const N: usize>(bias: f32, wr: &[f32; 8], width: u32, win: &[f32; N], last: usize) -> f32 {
    let mut acc = bias;
    unroll::<8, _>(|i| {
        let m = 7 - i;
        if (m as u32) < width {
            acc = fma(wr[m], win[last - m], acc);
        }
    });
    acc
}
