//! Element types on the device: f32 and the two 16-bit floats (carried as raw bits,
//! since nvptx inline asm takes no f16 operands). Math is always f32.

use super::frag::{FragA, FragB, FragC};
use super::pack::*;
use super::sram::Sram;
use crate::dtype::DType;

/// bf16 bits.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Bf16(pub u16);

/// IEEE f16 bits.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct F16(pub u16);

/// An input/output element: converts to and from f32, and moves through SRAM and
/// 16-byte vectors (`LANES` elements per 16 bytes).
pub trait Elem: Copy {
    const DTYPE: DType;
    const BYTES: u32;
    /// Elements per 16-byte vector.
    const LANES: usize;
    fn to_f32(self) -> f32;
    fn from_f32(x: f32) -> Self;
    unsafe fn ld_sram(s: Sram, offset: u32) -> Self;
    unsafe fn st_sram(s: Sram, offset: u32, v: Self);
    /// The first `LANES` entries of the result are the vector's elements.
    fn unpack_v4(v: [u32; 4]) -> [f32; 8];
    /// Packs the first `LANES` entries.
    fn pack_v4(x: &[f32; 8]) -> [u32; 4];
}

impl Elem for f32 {
    const DTYPE: DType = DType::F32;
    const BYTES: u32 = 4;
    const LANES: usize = 4;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    unsafe fn ld_sram(s: Sram, offset: u32) -> Self {
        unsafe { s.ld_f32(offset) }
    }
    #[inline(always)]
    unsafe fn st_sram(s: Sram, offset: u32, v: Self) {
        unsafe { s.st_f32(offset, v) }
    }
    #[inline(always)]
    fn unpack_v4(v: [u32; 4]) -> [f32; 8] {
        let f = f32::from_bits;
        [f(v[0]), f(v[1]), f(v[2]), f(v[3]), 0.0, 0.0, 0.0, 0.0]
    }
    #[inline(always)]
    fn pack_v4(x: &[f32; 8]) -> [u32; 4] {
        [x[0].to_bits(), x[1].to_bits(), x[2].to_bits(), x[3].to_bits()]
    }
}

macro_rules! half_elem {
    ($t:ident, $dtype:expr, $to:ident, $from:ident, $pack2:ident) => {
        impl Elem for $t {
            const DTYPE: DType = $dtype;
            const BYTES: u32 = 2;
            const LANES: usize = 8;
            #[inline(always)]
            fn to_f32(self) -> f32 {
                $to(self.0)
            }
            #[inline(always)]
            fn from_f32(x: f32) -> Self {
                $t($from(x))
            }
            #[inline(always)]
            unsafe fn ld_sram(s: Sram, offset: u32) -> Self {
                $t(unsafe { s.ld_b16(offset) })
            }
            #[inline(always)]
            unsafe fn st_sram(s: Sram, offset: u32, v: Self) {
                unsafe { s.st_b16(offset, v.0) }
            }
            #[inline(always)]
            fn unpack_v4(v: [u32; 4]) -> [f32; 8] {
                let mut out = [0.0f32; 8];
                let mut i = 0;
                while i < 4 {
                    let (lo, hi) = split_b32(v[i]);
                    out[2 * i] = $to(lo);
                    out[2 * i + 1] = $to(hi);
                    i += 1;
                }
                out
            }
            #[inline(always)]
            fn pack_v4(x: &[f32; 8]) -> [u32; 4] {
                [$pack2(x[0], x[1]), $pack2(x[2], x[3]), $pack2(x[4], x[5]), $pack2(x[6], x[7])]
            }
        }
    };
}

half_elem!(Bf16, DType::BF16, bf16_to_f32, f32_to_bf16, pack_bf16x2);
half_elem!(F16, DType::F16, f16_to_f32, f32_to_f16, pack_f16x2);

/// A 16-bit type the tensor cores multiply (`mma.sync.m16n8k16` with f32 accumulators).
pub trait TensorElem: Elem {
    /// Two f32 values rounded into one packed operand register.
    fn pack2(lo: f32, hi: f32) -> u32;
    /// D = A * B + D.
    fn mma(d: &mut FragC, a: &FragA, b: &FragB);
}

impl TensorElem for Bf16 {
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        pack_bf16x2(lo, hi)
    }
    #[inline(always)]
    fn mma(d: &mut FragC, a: &FragA, b: &FragB) {
        super::mma::mma_bf16(d, a, b)
    }
}

impl TensorElem for F16 {
    #[inline(always)]
    fn pack2(lo: f32, hi: f32) -> u32 {
        pack_f16x2(lo, hi)
    }
    #[inline(always)]
    fn mma(d: &mut FragC, a: &FragA, b: &FragB) {
        super::mma::mma_f16(d, a, b)
    }
}
