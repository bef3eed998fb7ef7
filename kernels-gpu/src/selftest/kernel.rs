//! One small kernel per primitive; the comment on each says what goes in and out.

use super::*;
use crate::device::cp_async::{commit, cp_async_16, wait_group};
use crate::device::ldmatrix::{ldmatrix_x2, ldmatrix_x2_trans, ldmatrix_x4, ldmatrix_x4_trans};
use crate::device::math::{exp2, rcp};
use crate::device::thread::{lane, sync_threads, tid};
use crate::device::warp::{block_sum, shfl_idx, shfl_xor, warp_max, warp_sum};
use crate::device::{Bf16, Elem, F16, FragA, FragB, FragC, Hbm, HbmMut, Sram, TensorElem};

/// Copies a 16 x 16 tile of u16 (row-major, 32-byte rows) into SRAM with one thread.
unsafe fn tile_to_sram(src: Hbm<u16>, rows: u32, cols: u32, dst: Sram) {
    if tid() == 0 {
        let mut i = 0;
        while i < rows * cols {
            unsafe { dst.st_b16(2 * i, src.load(i as usize)) };
            i += 1;
        }
    }
    sync_threads();
}

/// One warp. a: u16[16 x 16] row-major. c: u32[32 lanes x 8]: registers 0-3 of
/// `ldmatrix.x4`, then 4-7 of `ldmatrix.x4.trans`, over the same row addresses.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_ldmatrix(p: SelftestParams) {
    let tile = Sram::at(0);
    unsafe { tile_to_sram(Hbm::from_addr(p.a), 16, 16, tile) };
    let l = lane();
    // Lanes 0-15 address rows 0-15 of the left half, 16-31 of the right half.
    let addr = tile.byte((l % 16) * 32 + (l / 16) * 16);
    let r = unsafe { ldmatrix_x4(addr) };
    let t = unsafe { ldmatrix_x4_trans(addr) };
    let out = HbmMut::<u32>::from_addr(p.c).offset(l as usize * 8);
    for i in 0..4 {
        unsafe {
            out.store(i, r[i]);
            out.store(4 + i, t[i]);
        }
    }
}

/// One warp. a: A[16 x 16], b: B[16 x 8] stored k-major ([k][n], n contiguous),
/// c: Bt[8 x 16] = B^T stored n-major ([n][k]), d: f32 out[2 x 16 x 8]:
/// A B with B through `ldmatrix.x2.trans` (the P V path of attention), then A Bt^T with
/// Bt through plain `ldmatrix.x2` (the Q K^T path).
unsafe fn mma_test<T: TensorElem>(p: &SelftestParams) {
    let a_s = Sram::at(0);
    let b_s = Sram::at(512);
    let bt_s = Sram::at(768);
    unsafe {
        tile_to_sram(Hbm::from_addr(p.a), 16, 16, a_s);
        tile_to_sram(Hbm::from_addr(p.b), 16, 8, b_s);
        tile_to_sram(Hbm::from_addr(p.c), 8, 16, bt_s);
    }
    let l = lane();
    let a = FragA(unsafe { ldmatrix_x4(a_s.byte((l % 16) * 32 + (l / 16) * 16)) });
    // x2 uses the addresses of lanes 0-15: k rows 0-15 of B (16 bytes each) ...
    let b = FragB(unsafe { ldmatrix_x2_trans(b_s.byte((l % 16) * 16)) });
    // ... or, for Bt, n rows 0-7 at k 0 (lanes 0-7) and at k 8 (lanes 8-15).
    let bt = FragB(unsafe { ldmatrix_x2(bt_s.byte((l % 8) * 32 + ((l / 8) % 2) * 16)) });
    let mut c1 = FragC::zero();
    let mut c2 = FragC::zero();
    T::mma(&mut c1, &a, &b);
    T::mma(&mut c2, &a, &bt);
    let out = HbmMut::<f32>::from_addr(p.d);
    for e in 0..4u32 {
        let (r, c) = crate::layout::frag_c_coord(l, e);
        let i = (r * 8 + c) as usize;
        unsafe {
            out.store(i, c1.0[e as usize]);
            out.store(128 + i, c2.0[e as usize]);
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_mma_bf16(p: SelftestParams) {
    unsafe { mma_test::<Bf16>(&p) }
}

#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_mma_f16(p: SelftestParams) {
    unsafe { mma_test::<F16>(&p) }
}

/// 256 threads. a: source bytes (n of them valid), c: out[CP_ASYNC_BYTES]. Two commit
/// groups of 4 KiB each; bytes past n must arrive as zeros (cp.async zero-fill).
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_cp_async(p: SelftestParams) {
    let buf = Sram::at(0);
    let src = Hbm::<u8>::from_addr(p.a);
    let half = CP_ASYNC_BYTES / 2;
    let t = tid();
    for g in 0..2u32 {
        let off = g * half + t * 16;
        let valid = if off >= p.n {
            0
        } else if p.n - off >= 16 {
            16
        } else {
            p.n - off
        };
        let from = if valid == 0 { src.ptr() } else { src.offset(off as usize).ptr() };
        unsafe { cp_async_16(buf.byte(off), from, valid) };
        commit();
    }
    let out = HbmMut::<u32>::from_addr(p.c);
    // First group landed (one may still be in flight), then the second.
    wait_group::<1>();
    sync_threads();
    let copy_out = |off: u32| {
        let v = unsafe { buf.ld_v4(off) };
        for i in 0..4 {
            unsafe { out.store((off / 4) as usize + i, v[i]) };
        }
    };
    copy_out(t * 16);
    wait_group::<0>();
    sync_threads();
    copy_out(half + t * 16);
}

/// 256 threads. a: f32 x[256], c: f32 out[256 x WARP_TEST_OUTPUTS]:
/// warp_sum, warp_max, shfl_xor(x, 1), shfl_idx(x, 3), block_sum, exp2, rcp,
/// bf16 round trip, f16 round trip, warp_sum of lane ids.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_warp(p: SelftestParams) {
    let t = tid();
    let x = unsafe { Hbm::<f32>::from_addr(p.a).load(t as usize) };
    let scratch = Sram::at(0);
    let vals = [
        warp_sum(x),
        warp_max(x),
        shfl_xor(x, 1),
        shfl_idx(x, 3),
        block_sum(x, scratch),
        exp2(x),
        rcp(x),
        Bf16::from_f32(x).to_f32(),
        F16::from_f32(x).to_f32(),
        warp_sum(lane() as f32),
    ];
    let out = HbmMut::<f32>::from_addr(p.c).offset((t * WARP_TEST_OUTPUTS) as usize);
    for i in 0..WARP_TEST_OUTPUTS as usize {
        unsafe { out.store(i, vals[i]) };
    }
}
