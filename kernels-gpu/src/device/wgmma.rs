//! Hopper's warpgroup tensor-core product, `wgmma.mma_async` (sm_90a only): one
//! warpgroup (4 consecutive warps, 128 threads) computes D[64 x N] (+)= A[64 x 16] B[16 x N]
//! with f32 accumulators, A from SRAM (a matrix descriptor) or from registers, B from
//! SRAM. The product runs asynchronously: `fence` before it, `commit` after it, and
//! `wait` before the accumulators are read.
//!
//! Register layouts: warp w of the warpgroup owns rows 16w .. 16w+15, and within its 16
//! rows every lane holds exactly what `mma.sync.m16n8k16` would: the accumulator is N/8
//! `FragC`s (n-tile j = columns 8j .. 8j+7), the register A operand one `FragA`. So the
//! softmax helpers of `attention::block` and `to_a_frags` apply unchanged.
//!
//! SRAM layout: the no-swizzle canonical layout of 8-row x 16-byte "core matrices", each
//! 128 contiguous bytes (row r of a core matrix at byte 16 r). A descriptor names the
//! start address and two strides: LBO between core matrices adjacent along K, SBO between
//! core matrices adjacent along M or N. `crate::layout::core_offset` stores a [rows x d]
//! tile with the d chunks of each 8-row group side by side, so for a K-major operand
//! (K = d: Q, K) LBO = 128 and SBO = 16 d, and for V read MN-major (K = keys, N = d,
//! the transpose flag set) LBO = 16 d and SBO = 128.

use super::elem::TensorElem;
use super::frag::{FragA, FragC};
use core::arch::asm;

/// The 64-bit shared-memory matrix descriptor (no swizzle): start address, LBO and SBO,
/// each in units of 16 bytes (14 bits; shared addresses are below 256 KiB).
#[inline(always)]
pub fn descriptor(addr: u32, lbo: u32, sbo: u32) -> u64 {
    ((addr as u64 & 0x3FFFF) >> 4) | (((lbo as u64) >> 4) << 16) | (((sbo as u64) >> 4) << 32)
}

/// A descriptor of a 128-byte-swizzled operand (the layout the tensor memory accelerator
/// writes with `CU_TENSOR_MAP_SWIZZLE_128B`: 8-row atoms of 128-byte rows, 1024 bytes,
/// each row's 16-byte chunks XORed with its row index). K-major: LBO unused (1), SBO =
/// 1024 between 8-row groups, a k-step of 16 elements advances the start by 32 bytes
/// inside the row. MN-major: LBO between 64-element-wide atoms, SBO = 1024 between
/// 8-row groups along K. The atoms start on 1024-byte boundaries (base offset 0).
#[inline(always)]
pub fn descriptor_sw128(addr: u32, lbo: u32, sbo: u32) -> u64 {
    descriptor(addr, lbo, sbo) | (1u64 << 62)
}

/// A K-major 128-byte-swizzled operand at `addr` (rows along M or N, the reduction along
/// the 128-byte rows of its 64-column slabs).
#[inline(always)]
pub fn sw128_k_major(addr: u32) -> u64 {
    descriptor_sw128(addr, 16, 1024)
}

/// What k-step `kk` (16 columns of 16-bit elements) adds to a [`sw128_k_major`]
/// descriptor of a tile of `rows` rows: 32 bytes along the row, 4 per slab, then the next
/// slab (rows x 128 bytes on).
#[inline(always)]
pub fn sw128_k_step(kk: usize, rows: u32) -> u64 {
    ((kk as u32 / 4) * rows * 128 + (kk as u32 % 4) * 32) as u64 / 16
}

/// An MN-major 128-byte-swizzled operand at `addr` (the reduction along the rows, M or N
/// along the 128-byte rows) of a tile of `rows` rows: LBO one slab (the next 64 columns).
#[inline(always)]
pub fn sw128_mn_major(addr: u32, rows: u32) -> u64 {
    descriptor_sw128(addr, rows * 128, 1024)
}

/// What a k-step of 16 rows adds to a [`sw128_mn_major`] descriptor (2048 bytes).
pub const SW128_ROW_STEP: u64 = 16 * 128 / 16;

/// `wgmma.fence.sync.aligned;` — orders this warpgroup's earlier register accesses
/// before the products that follow (needed before the first product and whenever an
/// accumulator or a register A operand was written by other instructions).
#[inline(always)]
pub fn fence() {
    unsafe { asm!("wgmma.fence.sync.aligned;", options(nostack)) }
}

/// `wgmma.commit_group.sync.aligned;` — closes the group of products issued since the
/// last commit.
#[inline(always)]
pub fn commit() {
    unsafe { asm!("wgmma.commit_group.sync.aligned;", options(nostack)) }
}

/// `fence.proxy.async.shared::cta;` — makes this thread's ordinary and `cp.async` writes
/// to SRAM visible to the async proxy that `wgmma` reads SRAM through (then a barrier).
#[inline(always)]
pub fn fence_proxy_async() {
    unsafe { asm!("fence.proxy.async.shared::cta;", options(nostack)) }
}

/// Keeps register A operands alive up to this point (an empty asm that reads them,
/// placed after the `wait` of the products that read them): a register A operand must
/// not be overwritten while its product runs, and without this LLVM may give the next
/// block's P the same registers as soon as the asm issuing the product has "read" them
/// (ptxas then serializes every wgmma: C7513).
#[inline(always)]
pub fn hold<const K: usize>(a: &[FragA; K]) {
    super::unroll::<K, _>(|k| unsafe {
        asm!("// hold {0} {1} {2} {3}", in(reg32) a[k].0[0], in(reg32) a[k].0[1], in(reg32) a[k].0[2],
             in(reg32) a[k].0[3], options(nostack))
    });
}

/// The element types `wgmma` multiplies (the PTX type name picks the instruction).
pub trait WgElem: TensorElem {
    const IS_BF16: bool;
}

impl WgElem for super::Bf16 {
    const IS_BF16: bool = true;
}

impl WgElem for super::F16 {
    const IS_BF16: bool = false;
}

/// An f32 accumulator of `m64nNk16` (N/8 `FragC`s per thread).
pub trait WgAcc {
    /// D = A B (+ D if `accumulate`), A and B K-major in SRAM (descriptors).
    #[inline(always)]
    unsafe fn mma_ss<T: WgElem>(&mut self, a: u64, b: u64, accumulate: bool) {
        unsafe { self.mma_ss_major::<T, 0, 0>(a, b, accumulate) }
    }
    /// D = A B (+ D if `accumulate`), A and B in SRAM: TA = 1, A M-major (stored [k][m]),
    /// else K-major; TB = 1, B N-major (stored [k][n]), else K-major (the transpose flags).
    unsafe fn mma_ss_major<T: WgElem, const TA: u32, const TB: u32>(&mut self, a: u64, b: u64, accumulate: bool);
    /// D += A B, A from registers, B MN-major in SRAM (the transpose flag).
    unsafe fn mma_rs_trans<T: WgElem>(&mut self, a: &FragA, b: u64);
    /// [`fence`] with the accumulator as an operand (named in a PTX comment), so that no
    /// write to it is moved past the fence.
    fn fence(&mut self);
    /// `wgmma.wait_group.sync.aligned N;` — at most N groups still in flight; the
    /// accumulator is an operand (named in a PTX comment), so no read of it is moved
    /// above the wait.
    fn wait<const N: u32>(&mut self);
}

macro_rules! wg_acc {
    ($n:literal, $tiles:literal, $first:literal, [$($i:literal)*]) => {
        impl WgAcc for [FragC; $tiles] {
            #[inline(always)]
            unsafe fn mma_ss_major<T: WgElem, const TA: u32, const TB: u32>(&mut self, a: u64, b: u64, accumulate: bool) {
                macro_rules! ss {
                    ($ty:literal) => {
                        unsafe {
                            asm!(
                                concat!(
                                    "{{ .reg .pred p; setp.ne.b32 p, {sd}, 0; wgmma.mma_async.sync.aligned.m64n", $n,
                                    "k16.f32.", $ty, ".", $ty, " {{{", $first, "}" $(, ", {", $i, "}")*,
                                    "}}, {a}, {b}, p, 1, 1, {ta}, {tb}; }}"
                                ),
                                inout(reg32) self[$first / 4].0[$first % 4],
                                $(inout(reg32) self[$i / 4].0[$i % 4],)*
                                a = in(reg64) a, b = in(reg64) b, sd = in(reg32) accumulate as u32,
                                ta = const TA, tb = const TB,
                                options(nostack)
                            )
                        }
                    };
                }
                if T::IS_BF16 { ss!("bf16") } else { ss!("f16") }
            }

            #[inline(always)]
            unsafe fn mma_rs_trans<T: WgElem>(&mut self, a: &FragA, b: u64) {
                macro_rules! rs {
                    ($ty:literal) => {
                        unsafe {
                            asm!(
                                concat!(
                                    "{{ .reg .pred p; setp.ne.b32 p, {sd}, 0; wgmma.mma_async.sync.aligned.m64n", $n,
                                    "k16.f32.", $ty, ".", $ty, " {{{", $first, "}" $(, ", {", $i, "}")*,
                                    "}}, {{{a0}, {a1}, {a2}, {a3}}}, {b}, p, 1, 1, 1; }}"
                                ),
                                inout(reg32) self[$first / 4].0[$first % 4],
                                $(inout(reg32) self[$i / 4].0[$i % 4],)*
                                a0 = in(reg32) a.0[0], a1 = in(reg32) a.0[1], a2 = in(reg32) a.0[2],
                                a3 = in(reg32) a.0[3], b = in(reg64) b, sd = in(reg32) 1u32,
                                options(nostack)
                            )
                        }
                    };
                }
                if T::IS_BF16 { rs!("bf16") } else { rs!("f16") }
            }

            #[inline(always)]
            fn fence(&mut self) {
                unsafe {
                    asm!(
                        concat!("wgmma.fence.sync.aligned; // {", $first, "}" $(, " {", $i, "}")*),
                        inout(reg32) self[$first / 4].0[$first % 4],
                        $(inout(reg32) self[$i / 4].0[$i % 4],)*
                        options(nostack)
                    )
                }
            }

            #[inline(always)]
            fn wait<const N: u32>(&mut self) {
                unsafe {
                    asm!(
                        concat!("wgmma.wait_group.sync.aligned {n}; // {", $first, "}" $(, " {", $i, "}")*),
                        inout(reg32) self[$first / 4].0[$first % 4],
                        $(inout(reg32) self[$i / 4].0[$i % 4],)*
                        n = const N,
                        options(nostack)
                    )
                }
            }
        }
    };
}

wg_acc!(64, 8, 0, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31]);
wg_acc!(128, 16, 0, [1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63]);
