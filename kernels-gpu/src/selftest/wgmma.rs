//! The `wgmma` self-test (sm_90a only): one warpgroup, the descriptors and register
//! layouts of the Hopper attention forward on small products.

use super::*;
use crate::attention::tile::load_core_tile;
use crate::device::cp_async::{commit, wait_group};
use crate::device::thread::{lane, sync_threads, tid, warp};
use crate::device::wgmma::{WgAcc, descriptor, fence_proxy_async};
use crate::device::{Bf16, FragA, FragC, Hbm, HbmMut, Sram, unroll};
use crate::layout::{CORE_STRIDE, core_tile_bytes, frag_a_coord, frag_c_coord};

/// 128 threads. a: A[64 x 16], b: Bt[128 x 16], c: V[16 x 64] (bf16, row-major).
/// d: f32 out[64 x 128 + 64 x 64], row-major: S = A Bt^T with A and Bt from SRAM
/// (K-major), then O = A V with A from registers and V from SRAM (MN-major, transposed).
/// The tiles go through `load_core_tile`, the attention kernel's loader.
#[unsafe(no_mangle)]
pub unsafe extern "ptx-kernel" fn selftest_wgmma_bf16(p: SelftestParams) {
    // A: 64 rows x 2 chunks, Bt: 128 x 2, V: 16 x 8, one after the other.
    let (a_bytes, bt_bytes) = (core_tile_bytes(64, 2), core_tile_bytes(128, 2));
    let (a_s, bt_s, v_s) = (Sram::at(0), Sram::at(a_bytes), Sram::at(a_bytes + bt_bytes));
    let t = tid();
    unsafe {
        load_core_tile::<16>(64, 128, t, a_s, Hbm::from_addr(p.a), 16, 64, 16);
        load_core_tile::<16>(128, 128, t, bt_s, Hbm::from_addr(p.b), 16, 128, 16);
        load_core_tile::<64>(16, 128, t, v_s, Hbm::from_addr(p.c), 64, 16, 64);
    }
    commit();
    wait_group::<0>();
    fence_proxy_async();
    sync_threads();

    let (l, w) = (lane(), warp());
    // S: 64 x 128 (n128), K = 16 (2 chunks): SBO = one 8-row group of 2 core matrices.
    let group = core_tile_bytes(8, 2);
    let mut s = [FragC::zero(); 16];
    s.fence();
    unsafe {
        s.mma_ss::<Bf16>(descriptor(a_s.addr, CORE_STRIDE, group), descriptor(bt_s.addr, CORE_STRIDE, group), false)
    };
    crate::device::wgmma::commit();
    s.wait::<0>();

    // O: 64 x 64 (n64), A from registers (this warp's 16 rows), V: 16 keys x 64.
    let a_hbm = Hbm::<u16>::from_addr(p.a);
    let mut a = FragA([0; 4]);
    unroll::<4, _>(|reg| {
        let half = |e: u32| {
            let (r, c) = frag_a_coord(l, e);
            unsafe { a_hbm.load(((16 * w + r) * 16 + c) as usize) as u32 }
        };
        a.0[reg] = half(2 * reg as u32) | (half(2 * reg as u32 + 1) << 16);
    });
    let mut o = [FragC::zero(); 8];
    o.fence();
    // V MN-major: LBO = one 8-key group of 8 core matrices, SBO = between the d chunks.
    unsafe { o.mma_rs_trans::<Bf16>(&a, descriptor(v_s.addr, core_tile_bytes(8, 8), CORE_STRIDE)) };
    crate::device::wgmma::commit();
    o.wait::<0>();

    let out = HbmMut::<f32>::from_addr(p.d);
    unroll::<16, _>(|j| {
        unroll::<4, _>(|e| {
            let (r, c) = frag_c_coord(l, e as u32);
            let (row, col) = (16 * w + r, 8 * j as u32 + c);
            unsafe { out.store((row * 128 + col) as usize, s[j].0[e]) };
            if j < 8 {
                unsafe { out.store((64 * 128 + row * 64 + col) as usize, o[j].0[e]) };
            }
        })
    });
}
