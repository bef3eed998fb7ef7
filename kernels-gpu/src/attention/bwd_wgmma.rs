//! The Hopper backward's main kernel (sm_90a, the fast mode): `bwd_exchange.rs`'s
//! algorithm with every product on `wgmma.mma_async`. Per CTA: keys [n0, n0 + 128) of
//! one (batch, kv head), for every query head of its group, as in `bwd.rs`; warpgroup g
//! (warps 4g .. 4g+3) owns keys n0 + 64g .. +63, and its warp w the 16 keys
//! n0 + 64g + 16 (w % 4) ..; each lane holds what an `mma.sync` m16 tile would (keys
//! l/4 and l/4 + 8, query pairs 2 (l % 4)), so `bwd.rs`'s elementwise step applies.
//!
//! Per query block of BM rows:
//! - S^T = K Q^T and dP^T = V dO^T: m64 (keys) x n BM (queries), K / V and Q / dO from
//!   SRAM (K-major);
//! - P^T = exp(S^T - lse), dS^T = P^T (dP^T - D) in registers (`grad_scores`);
//! - dV += P^T dO: P^T from registers, dO from SRAM (N-major: d along the rows);
//! - dS^T to SRAM, then dK += dS^T Q (dS^T K-major, Q N-major) and dQ = dS K: m64
//!   (queries) x n64 (d), dS M-major and K N-major, all from SRAM: at d=128 (BM = 64)
//!   warpgroup g takes columns 64g .. +63, at d=64 (BM = 128) queries 64g .. +63, both
//!   over the 128 keys.
//!
//! Memory story:
//!   HBM  -> SRAM  K, V once (tensor memory accelerator, one mbarrier); Q, dO per query
//!                 block in 2 stages (block i+1 lands while block i is computed), lse
//!                 and D by cp.async beside them. 128-byte swizzle: a [rows x d] tile is
//!                 d/64 slabs of rows x 128 B
//!   SRAM -> TC    wgmma reads K, V, Q, dO and dS^T through descriptors
//!   regs          S^T / P^T and dP^T / dS^T of one block, dK and dV (f32) for the
//!                 whole query loop, dQ of one block
//!   regs -> SRAM  dS^T rounded to T ([key][query] in slabs of 64 queries, swizzled like
//!                 the tiles)
//!   regs -> HBM   dQ += dS K (f32 red.add) per query block; dK, dV once at the end

use super::backward::{WG_BWD_D64, WG_BWD_D128, WgBwdParams, WgBwdTile};
use super::block::to_a_frags;
use super::bwd::{BwdCta, grad_scores_for};
use crate::device::atomic::red_add_v2_f32;
use crate::device::cp_async::{commit, wait_group};
use crate::device::sram::arena;
use crate::device::thread::{block_x, lane, sync_threads, tid, warp};
use crate::device::tma::{
    ParamAddr, SLAB_ROW, arrive_expect_tx, fence_mbar_init, load_slabs, mbar_init, mbar_wait, prefetch_map,
};
use crate::device::wgmma::{
    SW128_ROW_STEP, WgAcc, WgElem, fence_proxy_async, hold, sw128_k_major, sw128_k_step, sw128_mn_major,
};
use crate::device::{Bf16, F16, FragA, FragC, HbmMut, Sram, unroll};

/// Keys per CTA; bytes per row of a swizzled slab.
const BN: u32 = WgBwdTile::BLOCK_N;
const ROW: u32 = SLAB_ROW;

/// The kernel body. Const parameters: the tensor maps' address A; element type T; tile
/// head dim D; BM queries per block; and the derived counts DK = D/16 (k-steps of S^T
/// and dP^T), DN = D/8 (n-tiles of dK, dV), QN = BM/8 (n-tiles of S^T), QK = BM/16
/// (k-steps of dV, dK).
#[inline(always)]
unsafe fn attn_bwd_wg<
    A: ParamAddr,
    T: WgElem,
    const D: u32,
    const BM: u32,
    const DK: usize,
    const DN: usize,
    const QN: usize,
    const QK: usize,
    const HALVES: usize,
    const QB: usize,
>(
    wp: &WgBwdParams,
) where
    [FragC; QN]: WgAcc,
    [FragC; DN]: WgAcc,
    [FragC; 8]: WgAcc,
{
    const {
        assert!(
            DK as u32 * 16 == D
                && DN as u32 * 8 == D
                && QN == 8
                && QK == 4
                && HALVES as u32 * 64 == BM
                && QB as u32 * 16 == BM
        )
    };
    let p = &wp.base;
    let tile = WgBwdTile { d: D, block_m: BM };
    let (l, w) = (lane(), warp());
    let (g, wq) = (w / 4, w % 4);

    let cta = BwdCta::of(p);
    let BwdCta { b, kvh, sq, sk, hd, mask, .. } = cta;
    let n0 = (block_x() * BN) as i32;
    let plan = cta.steps(n0, BN, BM);
    let (steps, step_at) = (plan.count, |it: u32| plan.at(it));

    // SRAM (see WgBwdTile), the arena aligned up to 1024 bytes.
    let base = (arena() + WgBwdTile::ALIGN - 1) & !(WgBwdTile::ALIGN - 1);
    let s_k = base;
    let s_v = base + tile.v_offset();
    let s_q = |st: u32| base + tile.q_offset(st);
    let s_do = |st: u32| base + tile.do_offset(st);
    let s_ds = base + tile.ds_offset();
    let s_lse = |st: u32| Sram { addr: base + tile.lse_offset(st) };
    let s_delta = |st: u32| Sram { addr: base + tile.delta_offset(st) };
    let bar_kv = base + tile.barrier_offset();
    let bar_step = |st: u32| bar_kv + 8 + 8 * st;

    let maps = A::param_addr();
    let (q_map, k_map, v_map, do_map) = (maps, maps + 128, maps + 256, maps + 384);
    let leader = tid() == 0;
    // Step `it`'s Q and dO (thread 0, the copy engine) and lse and D (cp.async) into
    // stage `st`.
    let load_step = |it: u32, st: u32| {
        let (h, r0) = step_at(it);
        if leader {
            unsafe { arrive_expect_tx(bar_step(st), 2 * tile.tile_bytes(BM)) };
            unsafe {
                load_slabs::<D>(q_map, s_q(st), BM, h, r0 as i32, b, bar_step(st));
                load_slabs::<D>(do_map, s_do(st), BM, h, r0 as i32, b, bar_step(st));
            }
        }
        unsafe { cta.load_row_stats(p, h, r0, BM, s_lse(st), s_delta(st)) };
    };

    if steps > 0 {
        if leader {
            unsafe {
                prefetch_map(q_map);
                prefetch_map(k_map);
                prefetch_map(v_map);
                prefetch_map(do_map);
                mbar_init(bar_kv, 1);
                mbar_init(bar_step(0), 1);
                mbar_init(bar_step(1), 1);
            }
            fence_mbar_init();
            unsafe { arrive_expect_tx(bar_kv, 2 * tile.tile_bytes(BN)) };
            unsafe {
                load_slabs::<D>(k_map, s_k, BN, kvh, n0, b, bar_kv);
                load_slabs::<D>(v_map, s_v, BN, kvh, n0, b, bar_kv);
            }
        }
        load_step(0, 0);
        commit();
        // The barriers are initialized before anyone waits on them.
        sync_threads();
        mbar_wait(bar_kv, 0);
    }

    // Descriptors, 128-byte swizzle (`device::wgmma`): K-major where d is the reduction
    // (S^T, dP^T) or dS^T's queries are (dK), MN-major where the rows are (dV, dK's Q, dQ).
    // Per step, from the arena's base through an opaque `mov` (so that LLVM recomputes
    // them in the loop instead of holding every k-step's 64-bit descriptor across it):
    // this warpgroup's keys in the K and V tiles (A of S^T and dP^T); for dQ = dS K
    // (m64 n64 over the 128 keys), warpgroup g takes columns 64g.. of the 64 queries at
    // d=128, queries 64g.. (dS^T's query slab g) of the 128 at d=64.
    let (dq_q0, dq_col0) = if BM == 128 { (64 * g, 0) } else { (0, 64 * g) };
    let descs = || {
        let bp = Sram { addr: base }.pinned().addr;
        let k_desc = sw128_k_major(bp + 64 * g * ROW);
        let v_desc = sw128_k_major(bp + tile.v_offset() + 64 * g * ROW);
        let ds_desc = sw128_mn_major(bp + tile.ds_offset() + (dq_q0 / 64) * BN * ROW, BN);
        let kt_desc = sw128_mn_major(bp + (dq_col0 / 64) * BN * ROW, BN);
        // dS^T as the A of dK += dS^T Q: this warpgroup's rows, K-major.
        let dst_desc = sw128_k_major(bp + tile.ds_offset() + 64 * g * ROW);
        (k_desc, v_desc, ds_desc, kt_desc, dst_desc)
    };

    let mut dk_acc = [[FragC::zero(); DN]; 1];
    let mut dv_acc = [[FragC::zero(); DN]; 1];
    let key0 = n0 + (64 * g + 16 * wq + l / 4) as i32;
    let dq_acc = HbmMut::<f32>::from_addr(p.dq_acc);

    let mut it = 0;
    while it < steps {
        let st = it & 1;
        // lse / D of step it landed, and every warp is past step it-1 (its stage and
        // dS^T are free).
        wait_group::<0>();
        sync_threads();
        if it + 1 < steps {
            load_step(it + 1, st ^ 1);
        }
        commit();
        mbar_wait(bar_step(st), (it >> 1) & 1);
        let (h, r0) = step_at(it);
        let r0 = r0 as i32;

        let (k_desc, v_desc, ds_desc, kt_desc, dst_desc) = descs();
        // The lane's dS^T address in SRAM ([key][query] in BM/64 slabs of 128-byte rows of
        // 64 queries, swizzled: chunk c of a row at (c ^ row % 8) x 16, row % 8 = l/4). The
        // row starts on 128 bytes, so chunk c's address is one XOR of chunk 0's (which holds
        // l/4 in bits 4-6), taken through an opaque `mov` per step: otherwise LLVM holds
        // all 16 addresses across the loop.
        let ds_lane = Sram { addr: s_ds + (64 * g + 16 * wq + l / 4) * ROW + (l / 4) * 16 + (l % 4) * 4 }.pinned();
        // P^T of the previous half: a register A operand of dV, alive until its product
        // is waited for.
        let mut pa_prev = [[FragA([0; 4]); QK]; 1];
        // Per half of 64 queries (one at d=128, two at d=64, which bounds S^T and dP^T to
        // 32 registers each):
        unroll::<HALVES, _>(|hh| {
            let q0 = 64 * hh as u32;
            // S^T = K Q^T and dP^T = V dO^T (m64 n64), one group each; their waits also
            // wait for the previous half's dV.
            let mut s = [[FragC::zero(); QN]; 1];
            let mut dp = [[FragC::zero(); QN]; 1];
            let (q_desc, do_desc) = (sw128_k_major(s_q(st) + q0 * ROW), sw128_k_major(s_do(st) + q0 * ROW));
            s[0].fence();
            unroll::<DK, _>(|kk| unsafe {
                s[0].mma_ss::<T>(k_desc + sw128_k_step(kk, BN), q_desc + sw128_k_step(kk, BM), kk != 0)
            });
            crate::device::wgmma::commit();
            dp[0].fence();
            unroll::<DK, _>(|kk| unsafe {
                dp[0].mma_ss::<T>(v_desc + sw128_k_step(kk, BN), do_desc + sw128_k_step(kk, BM), kk != 0)
            });
            crate::device::wgmma::commit();
            s[0].wait::<1>();
            dp[0].wait::<0>();
            if hh > 0 {
                hold(&pa_prev[0]);
            }

            // P^T and dS^T in place (masking only where the half crosses a mask boundary or
            // the end of the queries).
            let rh = r0 + q0 as i32;
            let full = rh + 64 <= sq && mask.covers(rh, rh + 63, n0, n0 + BN as i32);
            let (lse_now, delta_now) = (s_lse(st).skip(q0 * 4), s_delta(st).skip(q0 * 4));
            grad_scores_for(p, &mut s, &mut dp, lse_now, delta_now, full, mask, rh, key0);
            let pa = [to_a_frags::<T, QN, QK>(&s[0])];
            let dsa = [to_a_frags::<T, QN, QK>(&dp[0])];

            // dV += P^T dO (m64 n D, k over this half's queries): P^T from registers, dO
            // N-major; one group.
            dv_acc[0].fence();
            unroll::<QK, _>(|kk| unsafe {
                dv_acc[0]
                    .mma_rs_trans::<T>(&pa[0][kk], sw128_mn_major(s_do(st) + q0 * ROW, BM) + SW128_ROW_STEP * kk as u64)
            });
            crate::device::wgmma::commit();

            // dS^T to SRAM (slab hh): register e of A fragment kk is query chunk 2kk + e/2,
            // key row l/4 + 8 (e % 2) of this warp's 16.
            unroll::<QK, _>(|kk| {
                unroll::<4, _>(|e| {
                    let c = 2 * kk as u32 + e as u32 / 2;
                    let at = (ds_lane.addr ^ (c * 16)) + hh as u32 * BN * ROW + 8 * ROW * (e as u32 % 2);
                    unsafe { Sram { addr: at }.st_b32(0, dsa[0][kk].0[e]) };
                })
            });
            pa_prev = pa;
        });
        // Visible to the tensor cores' reads (the async proxy), from every warp.
        fence_proxy_async();
        sync_threads();

        // dK += dS^T Q (m64 n D): this warpgroup's dS^T rows K-major, Q N-major; one group.
        dk_acc[0].fence();
        unroll::<QB, _>(|kk| unsafe {
            dk_acc[0].mma_ss_major::<T, 0, 1>(
                dst_desc + sw128_k_step(kk, BN),
                sw128_mn_major(s_q(st), BM) + SW128_ROW_STEP * kk as u64,
                true,
            )
        });
        crate::device::wgmma::commit();

        // dQ (m64 queries x n64 columns) = dS K: dS M-major, K N-major.
        let mut dq = [[FragC::zero(); 8]; 1];
        dq[0].fence();
        unroll::<{ (BN / 16) as usize }, _>(|kk| unsafe {
            dq[0].mma_ss_major::<T, 1, 1>(
                ds_desc + SW128_ROW_STEP * kk as u64,
                kt_desc + SW128_ROW_STEP * kk as u64,
                kk != 0,
            )
        });
        crate::device::wgmma::commit();
        dq[0].wait::<0>();
        dv_acc[0].wait::<0>();
        dk_acc[0].wait::<0>();
        hold(&pa_prev[0]);

        // This lane's dQ elements: queries r0 + dq_q0 + 16 (w % 4) + l/4 + 8 hf, columns
        // dq_col0 + 8 cn + 2 (l % 4).
        let acc_row = cta.stat_row(p, h);
        let row_of = |hf: usize| r0 + (dq_q0 + 16 * wq + l / 4 + 8 * hf as u32) as i32;
        if r0 + BM as i32 <= sq && hd == D {
            let first = dq_acc.offset((acc_row + row_of(0) as usize) * D as usize + (dq_col0 + (l % 4) * 2) as usize);
            unroll::<2, _>(|hf| {
                unroll::<8, _>(|cn| {
                    let c = &dq[0][cn].0;
                    let dst = first.offset(hf * 8 * D as usize + cn * 8);
                    unsafe { red_add_v2_f32(dst.ptr(), c[2 * hf], c[2 * hf + 1]) };
                })
            });
        } else {
            unroll::<2, _>(|hf| {
                let row = row_of(hf);
                unroll::<8, _>(|cn| {
                    let col = dq_col0 + cn as u32 * 8 + (l % 4) * 2;
                    if row < sq && col < hd {
                        let c = &dq[0][cn].0;
                        let dst = dq_acc.offset((acc_row + row as usize) * hd as usize + col as usize);
                        unsafe { red_add_v2_f32(dst.ptr(), c[2 * hf], c[2 * hf + 1]) };
                    }
                })
            });
        }
        it += 1;
    }
    wait_group::<0>();

    // Epilogue: dK (times the softmax scale) and dV rounded to T, once.
    let (dk_hbm, dv_hbm) = (HbmMut::<u32>::from_addr(p.dk), HbmMut::<u32>::from_addr(p.dv));
    let (k_rs, kv_off) = (p.k_row_stride as usize, b as usize * p.k_batch_stride as usize + (kvh * hd) as usize);
    unroll::<2, _>(|hf| {
        let key = key0 + 8 * hf as i32;
        if key < sk {
            let at = kv_off + key as usize * k_rs;
            unroll::<DN, _>(|dn| {
                let col = dn as u32 * 8 + (l % 4) * 2;
                if col < hd {
                    let c = &dk_acc[0][dn].0;
                    let dk = T::pack2(c[2 * hf] * p.scale, c[2 * hf + 1] * p.scale);
                    let dv = T::pack2(dv_acc[0][dn].0[2 * hf], dv_acc[0][dn].0[2 * hf + 1]);
                    unsafe {
                        dk_hbm.store((at + col as usize) / 2, dk);
                        dv_hbm.store((at + col as usize) / 2, dv);
                    }
                }
            });
        }
    });
}

macro_rules! bwd_wg_entry {
    ($name:ident, $t:ty, $tile:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: WgBwdParams) {
            const TL: WgBwdTile = $tile;
            // The parameter struct's generic address (its PTX symbol is `<entry>_param_0`).
            crate::device::tma::kernel_param!(Param, $name);
            unsafe {
                attn_bwd_wg::<
                    Param,
                    $t,
                    { TL.d },
                    { TL.block_m },
                    { (TL.d / 16) as usize },
                    { (TL.d / 8) as usize },
                    8,
                    4,
                    { (TL.block_m / 64) as usize },
                    { (TL.block_m / 16) as usize },
                >(&p)
            }
        }
    };
}

bwd_wg_entry!(attn_bwd_wg_d64_bf16, Bf16, WG_BWD_D64);
bwd_wg_entry!(attn_bwd_wg_d64_f16, F16, WG_BWD_D64);
bwd_wg_entry!(attn_bwd_wg_d128_bf16, Bf16, WG_BWD_D128);
bwd_wg_entry!(attn_bwd_wg_d128_f16, F16, WG_BWD_D128);
