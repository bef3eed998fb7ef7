//! The norm kernels. Per CTA (NT = 128 or 256 threads, see norm_threads), per row:
//!   pass 1: HBM -> registers -> SRAM, 16-byte vectors, 4 in flight per thread; sum
//!           (or sum of squares for RMSNorm) in registers; block_sum.
//!   pass 2: SRAM -> registers: sum of squared deviations (LayerNorm only); block_sum.
//!   pass 3: SRAM -> registers -> HBM: y = (x - mean) * rstd * w + b.
//! Each thread reads back only the SRAM vectors it wrote, so passes 2 and 3 need no
//! barrier of their own. SRAM: norm_smem_bytes(cols, elem) <= NORM_SMEM_BUDGET.

use super::*;
use crate::device::math::{div, sqrt};
use crate::device::thread::{block_x, grid_x, tid};
use crate::device::warp::block_sum;
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut, Sram};

/// Vectors each thread has in flight in pass 1.
const UNROLL: usize = 4;

#[inline(always)]
unsafe fn norm_row<T: Elem, const RMS: bool, const NT: usize>(p: &NormParams, row: usize) {
    let cols = p.cols as usize;
    let t = tid() as usize;
    let x = Hbm::<T>::from_addr(p.x).offset(row * cols);
    let y = HbmMut::<T>::from_addr(p.y).offset(row * cols);
    let w = Hbm::<T>::from_addr(p.weight);
    let b = Hbm::<T>::from_addr(p.bias);
    let row_sram = Sram::at(0);
    let scratch = Sram::at(norm_smem_bytes(p.cols, T::BYTES) - NORM_SCRATCH_BYTES);
    // Rows start 16-byte aligned iff a row is a whole number of vectors (the host
    // allocates every tensor 256-byte aligned).
    let vectors = (cols * T::BYTES as usize) % 16 == 0;
    let lanes = T::LANES;
    let nvec = cols / lanes;

    // Pass 1: HBM -> SRAM, accumulating sum(x) or sum(x^2).
    let mut acc = 0.0f32;
    if vectors {
        let mut base = t;
        while base < nvec {
            let mut v = [[0u32; 4]; UNROLL];
            for u in 0..UNROLL {
                let i = base + u * NT;
                if i < nvec {
                    v[u] = unsafe { x.load_v4(i * lanes) };
                }
            }
            for u in 0..UNROLL {
                let i = base + u * NT;
                if i < nvec {
                    let f = T::unpack_v4(v[u]);
                    for j in 0..8 {
                        if j < lanes {
                            acc += if RMS { f[j] * f[j] } else { f[j] };
                        }
                    }
                    unsafe { row_sram.st_v4((i * 16) as u32, v[u]) };
                }
            }
            base += UNROLL * NT;
        }
    } else {
        let mut i = t;
        while i < cols {
            let v = unsafe { x.load(i) };
            let f = v.to_f32();
            acc += if RMS { f * f } else { f };
            unsafe { T::st_sram(row_sram, i as u32 * T::BYTES, v) };
            i += NT;
        }
    }
    let total = block_sum(acc, scratch);
    let n = cols as f32;

    let (mean, rstd) = if RMS {
        (0.0, div(1.0, sqrt(total / n + p.eps)))
    } else {
        let mean = total / n;
        // Pass 2: variance from SRAM, two-pass for accuracy.
        let mut sq = 0.0f32;
        if vectors {
            let mut i = t;
            while i < nvec {
                let f = T::unpack_v4(unsafe { row_sram.ld_v4((i * 16) as u32) });
                for j in 0..8 {
                    if j < lanes {
                        let d = f[j] - mean;
                        sq += d * d;
                    }
                }
                i += NT;
            }
        } else {
            let mut i = t;
            while i < cols {
                let d = unsafe { T::ld_sram(row_sram, i as u32 * T::BYTES) }.to_f32() - mean;
                sq += d * d;
                i += NT;
            }
        }
        let var = block_sum(sq, scratch) / n;
        (mean, div(1.0, sqrt(var + p.eps)))
    };

    if t == 0 {
        if p.mean != 0 {
            unsafe { HbmMut::<f32>::from_addr(p.mean).store(row, mean) };
        }
        unsafe { HbmMut::<f32>::from_addr(p.rstd).store(row, rstd) };
    }

    // Pass 3: normalise from SRAM, scale and shift (weight/bias hit L2), write HBM.
    let has_bias = !RMS && p.bias != 0;
    if vectors {
        let mut i = t;
        while i < nvec {
            let f = T::unpack_v4(unsafe { row_sram.ld_v4((i * 16) as u32) });
            let wv = T::unpack_v4(unsafe { w.load_v4(i * lanes) });
            let bv = if has_bias { T::unpack_v4(unsafe { b.load_v4(i * lanes) }) } else { [0.0; 8] };
            let mut o = [0.0f32; 8];
            for j in 0..8 {
                o[j] = (f[j] - mean) * rstd * wv[j] + bv[j];
            }
            unsafe { y.store_v4(i * lanes, T::pack_v4(&o)) };
            i += NT;
        }
    } else {
        let mut i = t;
        while i < cols {
            let f = unsafe { T::ld_sram(row_sram, i as u32 * T::BYTES) }.to_f32();
            let bias = if has_bias { unsafe { b.load(i) }.to_f32() } else { 0.0 };
            let o = (f - mean) * rstd * unsafe { w.load(i) }.to_f32() + bias;
            unsafe { y.store(i, T::from_f32(o)) };
            i += NT;
        }
    }
}

#[inline(always)]
unsafe fn norm_fwd<T: Elem, const RMS: bool, const NT: usize>(p: &NormParams) {
    let mut row = block_x();
    while row < p.rows {
        unsafe { norm_row::<T, RMS, NT>(p, row as usize) };
        // No barrier between rows: each thread reuses only its own SRAM vectors, and
        // block_sum ends with one, so the scratch is free again.
        row += grid_x();
    }
}

macro_rules! norm_entry {
    ($name:ident, $t:ty, $rms:expr, $nt:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: NormParams) {
            unsafe { norm_fwd::<$t, $rms, { $nt as usize }>(&p) }
        }
    };
}

norm_entry!(layernorm_fwd_f32_t128, f32, false, NORM_THREADS_SHORT);
norm_entry!(layernorm_fwd_bf16_t128, Bf16, false, NORM_THREADS_SHORT);
norm_entry!(layernorm_fwd_f16_t128, F16, false, NORM_THREADS_SHORT);
norm_entry!(rmsnorm_fwd_f32_t128, f32, true, NORM_THREADS_SHORT);
norm_entry!(rmsnorm_fwd_bf16_t128, Bf16, true, NORM_THREADS_SHORT);
norm_entry!(rmsnorm_fwd_f16_t128, F16, true, NORM_THREADS_SHORT);
norm_entry!(layernorm_fwd_f32_t256, f32, false, NORM_THREADS_LONG);
norm_entry!(layernorm_fwd_bf16_t256, Bf16, false, NORM_THREADS_LONG);
norm_entry!(layernorm_fwd_f16_t256, F16, false, NORM_THREADS_LONG);
norm_entry!(rmsnorm_fwd_f32_t256, f32, true, NORM_THREADS_LONG);
norm_entry!(rmsnorm_fwd_bf16_t256, Bf16, true, NORM_THREADS_LONG);
norm_entry!(rmsnorm_fwd_f16_t256, F16, true, NORM_THREADS_LONG);
