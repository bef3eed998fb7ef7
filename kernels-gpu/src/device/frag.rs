//! Register fragments of `mma.sync.m16n8k16`: what each lane holds. Index them only with
//! constants (unrolled loops) so they stay in registers. The element maps are in
//! `crate::layout` (frag_a_coord, frag_b_coord, frag_c_coord).

/// m16 x k16 A operand: 4 b32 registers = 8 bf16/f16 values per lane.
#[derive(Clone, Copy)]
pub struct FragA(pub [u32; 4]);

/// k16 x n8 B operand: 2 b32 registers = 4 values per lane.
#[derive(Clone, Copy)]
pub struct FragB(pub [u32; 2]);

/// m16 x n8 f32 accumulator: 4 f32 per lane (rows lane/4 and lane/4 + 8).
#[derive(Clone, Copy)]
pub struct FragC(pub [f32; 4]);

impl FragC {
    #[inline(always)]
    pub const fn zero() -> FragC {
        FragC([0.0; 4])
    }
}
