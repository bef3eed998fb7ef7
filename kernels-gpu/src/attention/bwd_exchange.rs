//! The backward's main kernel in FlashAttention-2's exchange layout (`BwdTile::exchange`,
//! the d=64 and d=128 tiles; d=64's DSPLIT is 1: no query split, each warp's S / dP
//! sub-steps cover the whole query block and it reads back its own keys' P^T, dS^T).
//! Per CTA: keys [n0, n0 + BN) of one (batch, kv head), for every query head of its
//! group, as in `bwd.rs`; the warps are arranged differently per product:
//!
//! - S^T = K Q^T and dP^T = V dO^T: warp w takes keys 16 MT (w / DSPLIT) .. + 16 MT and
//!   queries SQ (w % DSPLIT) .. + SQ (SQ = BM / DSPLIT), in SUBS sub-steps of SQ / SUBS
//!   queries (which bounds S and dP to 8 MT SQ / SUBS registers each); each K / V
//!   fragment feeds SQ / SUBS / 8 mma and each Q / dO fragment MT.
//! - dV += P^T dO and dK += dS^T Q: warp w takes the same keys and columns
//!   SW (w % DSPLIT) .. + SW (SW = D / DSPLIT) over the whole query block, reading P^T
//!   and dS^T (every query part of its keys) from SRAM.
//! - dQ = dS K: warp w takes query rows 16 MQ (w % (BM / 16 MQ)) .. + 16 MQ and a D / CS
//!   column chunk.
//!
//! Memory story:
//!   HBM  -> SRAM  K, V tiles once per key block; per query block Q, lse and D in 2
//!                 stages (cp.async: block i+1 loads while block i is computed), dO in
//!                 DOS stages (one stage: block i+1's dO loads once every warp is past dV)
//!   SRAM -> regs  ldmatrix: K, V as A and Q, dO as B of S^T and dP^T; P^T, dS^T as A
//!                 and dO, Q transposed as B of dV, dK; dS^T and K transposed for dQ
//!   regs          S^T / P^T and dP^T / dS^T of one sub-step, the dK and dV accumulators
//!                 (f32: 16 MT keys x SW columns each) for the whole query loop
//!   regs -> SRAM  P^T and dS^T rounded to T ([key][query], each warp its quadrant)
//!   regs -> HBM   dQ += dS K (f32 red.add, or read-add-write in the deterministic
//!                 mode) per query block; dK, dV once at the end

#[cfg(target_feature = "sm_90a")]
use super::backward::BWD_D128_SM90;
use super::backward::{AttnBwdParams, BWD_D64, BWD_D128};
use super::block::{accumulate_rolled, scores_rolled, to_a_frags};
use super::bwd::{BwdCta, grad_scores_for};
use super::tile::load_tile;
use crate::device::atomic::red_add_v2_f32;
use crate::device::cp_async::{commit, wait_group};
use crate::device::ldmatrix::{ldmatrix_x4, ldmatrix_x4_trans};
use crate::device::thread::{block_x, grid_x, lane, sync_threads, tid, warp};
use crate::device::unroll::{opaque, pinned_u64};
use crate::device::{Bf16, F16, FragA, FragC, Hbm, HbmMut, Sram, TensorElem, unroll};

/// The kernel body. Const parameters: element type T; tile head dim D; WARPS; MT m16 key
/// tiles per warp; BM query rows per step; DSPLIT warps per 16 MT keys (query quadrants
/// of S / dP, column slices of dK / dV); SUBS sub-steps of S / dP; DOS dO stages; and the
/// derived counts BN = 16 MT WARPS / DSPLIT keys, DK = D / 16 (k-steps of S^T and dP^T),
/// QN = BM / DSPLIT / SUBS / 8 (their n-tiles per sub-step), QK = QN / 2, SN = D / DSPLIT
/// / 8 (n-tiles of a dK / dV slice), NK = BN / 16 (k-steps of dQ), MQ m16 row tiles and
/// CN = D / CS / 8 n-tiles of a dQ chunk, PITCH = 2D + 16, DSP = 2 BM + 16.
#[inline(always)]
unsafe fn attn_bwd_exchange<
    T: TensorElem,
    const D: u32,
    const WARPS: u32,
    const MT: usize,
    const BM: u32,
    const DSPLIT: u32,
    const SUBS: u32,
    const DOS: u32,
    const BN: u32,
    const DK: usize,
    const QN: usize,
    const QK: usize,
    const SN: usize,
    const NK: usize,
    const MQ: usize,
    const CN: usize,
    const PITCH: u32,
    const DSP: u32,
>(
    p: &AttnBwdParams,
) {
    const {
        assert!(
            BM % 32 == 0
                && BN * DSPLIT == 16 * MT as u32 * WARPS
                && DK as u32 * 16 == D
                && QN as u32 * 8 * SUBS * DSPLIT == BM
                && QK * 2 == QN
                && (DOS == 1 || DOS == 2)
                && SN as u32 * 8 * DSPLIT == D
                && NK as u32 * 16 == BN
                && PITCH == 2 * D + 16
                && DSP == 2 * BM + 16
        )
    };
    let threads = WARPS * 32;
    let (l, w) = (lane(), warp());
    let rt_count = BM / (16 * MQ as u32);
    let cs = WARPS / rt_count;
    // This warp's keys, S / dP queries and dK / dV slice; its dQ row group and column chunk.
    let (kt, slice) = (w / DSPLIT, w % DSPLIT);
    let (rt, chunk) = (w % rt_count, w / rt_count);
    let (sw, cw) = (D / DSPLIT, D / cs);
    let sub_q = QN as u32 * 8;
    let sq0 = slice * sub_q * SUBS;

    let cta = BwdCta::of(p);
    let BwdCta { b, kvh, sq, sk, hd, mask, .. } = cta;
    let n_blocks = p.seqlen_k.div_ceil(BN);

    // SRAM (see BwdTile): K, V, 2 stages of Q, DOS of dO, dS^T, P^T, 2 stages of lse and D.
    let s_k = Sram::at(0);
    let s_v = Sram::at(BN * PITCH);
    let s_q = |st: u32| Sram::at((2 * BN + st * BM) * PITCH);
    let s_do = |st: u32| Sram::at((2 * BN + (2 + st % DOS) * BM) * PITCH);
    let ds_at = (2 * BN + (2 + DOS) * BM) * PITCH;
    let (s_ds, s_p) = (Sram::at(ds_at), Sram::at(ds_at + BN * DSP));
    let s_lse = |st: u32| Sram::at(ds_at + 2 * BN * DSP + st * BM * 4);
    let s_delta = |st: u32| Sram::at(ds_at + 2 * BN * DSP + (2 + st) * BM * 4);

    let (q_rs, k_rs) = (p.q_row_stride as usize, p.k_row_stride as usize);
    // Element offset of this (batch, kv head) in k / v / dk / dv, recomputed where used
    // (through `pinned_u64`: not held across the query loop).
    let kv_off = || pinned_u64(b as u64 * p.k_batch_stride + (kvh * hd) as u64) as usize;
    let (q_all, do_all) = (Hbm::<u16>::from_addr(p.q), Hbm::<u16>::from_addr(p.dout));
    // The dQ accumulator (the deterministic mode adds this CTA's split where it writes).
    let dq_acc = HbmMut::<f32>::from_addr(p.dq_acc);

    // This warp's first key in the block, and the A-fragment row address of its keys in
    // a K or V tile (row-major, PITCH) and in P^T or dS^T ([key][query], DSP).
    let warp_key = kt * 16 * MT as u32;
    let key_lane = (warp_key + l % 16) * PITCH + (l / 16) * 16;
    let key_lane_t = (warp_key + l % 16) * DSP + (l / 16) * 16;

    let mut nb = block_x();
    while nb < n_blocks {
        let n0 = (nb * BN) as i32;
        let plan = cta.steps(n0, BN, BM);
        let (steps, step_at) = (plan.count, |it: u32| plan.at(it));
        // Element offset of step `it`'s first row in q / dout, and its rows before seqlen_q.
        let step_rows = |it: u32| {
            let (h, r0) = step_at(it);
            (b as usize * p.q_batch_stride as usize + r0 as usize * q_rs + h as usize * hd as usize, sq - r0 as i32)
        };
        let load_do = |it: u32, st: u32| {
            let (row0, valid) = step_rows(it);
            unsafe { load_tile::<D, PITCH>(BM, threads, tid(), s_do(st), do_all.offset(row0), q_rs, valid, hd) };
        };
        // Q, lse and D of step `it` into stage `st` (and dO, with two dO stages).
        let load_step = |it: u32, st: u32| {
            let (h, r0) = step_at(it);
            let (row0, valid) = step_rows(it);
            unsafe {
                load_tile::<D, PITCH>(BM, threads, tid(), s_q(st), q_all.offset(row0), q_rs, valid, hd);
                if DOS == 2 {
                    load_do(it, st);
                }
                cta.load_row_stats(p, h, r0, BM, s_lse(st), s_delta(st));
            }
        };

        // The previous key block's warps are done with K, V, P^T and dS^T.
        sync_threads();
        // Group 0: K, V and the first query block (this thread's copy addresses derived
        // from a pinned thread index: recomputed per key block, not held across it).
        unsafe {
            let valid = sk - n0;
            let at = kv_off() + n0 as usize * k_rs;
            let t = pinned_u64(tid() as u64) as u32;
            load_tile::<D, PITCH>(BN, threads, t, s_k, Hbm::<u16>::from_addr(p.k).offset(at), k_rs, valid, hd);
            load_tile::<D, PITCH>(BN, threads, t, s_v, Hbm::<u16>::from_addr(p.v).offset(at), k_rs, valid, hd);
        }
        if steps > 0 {
            load_step(0, 0);
            if DOS == 1 {
                load_do(0, 0);
            }
        }
        commit();

        let mut dk_acc = [[FragC::zero(); SN]; MT];
        let mut dv_acc = [[FragC::zero(); SN]; MT];
        let mut it = 0;
        let mut stage = 0;
        while it < steps {
            // Step it landed, and every warp is past step it-1 (its stage, P^T and dS^T
            // are free).
            wait_group::<0>();
            sync_threads();
            if it + 1 < steps {
                load_step(it + 1, stage ^ 1);
            }
            commit();
            let (h, r0) = step_at(it);
            let r0 = r0 as i32;
            let (k_now, v_now) = (s_k.pinned(), s_v.pinned());
            let (q_now, do_now) = (s_q(stage).pinned(), s_do(stage).pinned());
            let key_frag = |tile: Sram, mt: usize, kk: u32| {
                FragA(unsafe { ldmatrix_x4(tile.byte(key_lane + mt as u32 * 16 * PITCH + kk * 32)) })
            };
            let full = r0 + BM as i32 <= sq && mask.covers(r0, r0 + BM as i32 - 1, n0, n0 + BN as i32);
            let key0 = n0 + (warp_key + l / 4) as i32;

            // Per sub-step: dP^T = V dO^T and S^T = K Q^T on [16 MT keys x 8 QN queries],
            // P^T = exp(S - lse) and dS^T = P (dP - D) in place (masking only where the
            // block crosses a mask boundary or the end of the queries), both to SRAM.
            let mut sub = 0;
            while sub < opaque(SUBS) {
                let q0 = sq0 + sub * sub_q;
                let (q_mine, do_mine) = (q_now.skip(q0 * PITCH), do_now.skip(q0 * PITCH));
                let mut dp =
                    scores_rolled::<T, MT, QN, QK, PITCH>(|mt, kk| key_frag(v_now, mt, kk), do_mine, opaque(DK as u32));
                let mut s =
                    scores_rolled::<T, MT, QN, QK, PITCH>(|mt, kk| key_frag(k_now, mt, kk), q_mine, opaque(DK as u32));
                let (lse_now, delta_now) = (s_lse(stage).skip(q0 * 4), s_delta(stage).skip(q0 * 4));
                let r_mine = r0 + q0 as i32;
                grad_scores_for(p, &mut s, &mut dp, lse_now, delta_now, full, mask, r_mine, key0);
                // [key][query], rounded to T: register e of A fragment kk is n-tile
                // 2kk + e / 2, key row l / 4 + 8 (e % 2) of tile mt.
                let (p_now, ds_now) = (s_p.pinned(), s_ds.pinned());
                unroll::<MT, _>(|mt| {
                    let (pa, dsa) = (to_a_frags::<T, QN, QK>(&s[mt]), to_a_frags::<T, QN, QK>(&dp[mt]));
                    unroll::<QK, _>(|kk| {
                        unroll::<4, _>(|e| {
                            let key = warp_key + mt as u32 * 16 + l / 4 + 8 * (e as u32 % 2);
                            let col = q0 + (kk as u32 * 2 + e as u32 / 2) * 8 + (l % 4) * 2;
                            unsafe {
                                p_now.st_b32(key * DSP + col * 2, pa[kk].0[e]);
                                ds_now.st_b32(key * DSP + col * 2, dsa[kk].0[e]);
                            }
                        })
                    })
                });
                sub += 1;
            }
            sync_threads();

            // dV += P^T dO and dK += dS^T Q on this warp's keys and column slice, over the
            // whole query block.
            let (p_now, ds_now) = (s_p.pinned(), s_ds.pinned());
            let key_frag_t = |tile: Sram, mt: usize, kk: u32| {
                FragA(unsafe { ldmatrix_x4(tile.byte(key_lane_t + mt as u32 * 16 * DSP + kk * 32)) })
            };
            let qk = opaque(BM / 16);
            let slice_at = slice * sw * 2;
            accumulate_rolled::<T, MT, SN, PITCH>(
                &mut dv_acc,
                |mt, kk| key_frag_t(p_now, mt, kk),
                do_now.skip(slice_at),
                qk,
            );
            if DOS == 1 {
                // Every warp is past dV: the next step's dO loads during dK and dQ.
                sync_threads();
                if it + 1 < steps {
                    load_do(it + 1, 0);
                }
                commit();
            }
            accumulate_rolled::<T, MT, SN, PITCH>(
                &mut dk_acc,
                |mt, kk| key_frag_t(ds_now, mt, kk),
                q_now.skip(slice_at),
                qk,
            );

            // dQ (this warp's 16 MQ rows x CN n-tiles) = dS K: dS read from dS^T with
            // ldmatrix.trans (keys are its k dimension), K transposed as in P V.
            let mut dq = [[FragC::zero(); CN]; MQ];
            let ds_lane = (l % 8 + (l / 16) * 8) * DSP + (rt * 16 * MQ as u32 + ((l / 8) % 2) * 8) * 2;
            accumulate_rolled::<T, MQ, CN, PITCH>(
                &mut dq,
                |mq, kk| FragA(unsafe { ldmatrix_x4_trans(ds_now.byte(ds_lane + mq as u32 * 32 + kk * 16 * DSP)) }),
                k_now.skip(chunk * cw * 2),
                opaque(NK as u32),
            );
            // This lane's accumulator elements: rows r0 + 16 (MQ rt + mq) + l / 4 + 8 hf,
            // column pairs chunk * cw + 8 cn + 2 (l % 4) (None past seqlen_q or the head dim).
            let acc_row = cta.stat_row(p, h);
            let at = |mq: usize, hf: usize, cn: usize| {
                let row = r0 + ((MQ as u32 * rt + mq as u32) * 16 + l / 4 + 8 * hf as u32) as i32;
                let col = chunk * cw + cn as u32 * 8 + (l % 4) * 2;
                (row < sq && col < hd).then(|| dq_acc.offset((acc_row + row as usize) * hd as usize + col as usize))
            };
            if p.deterministic != 0 {
                // Read-add-write into accumulator `block_x`, all reads first (see bwd.rs).
                let split = block_x() as usize * p.dq_split_stride as usize;
                let at = |mq: usize, hf: usize, cn: usize| at(mq, hf, cn).map(|a| a.offset(split));
                let mut old = [[[[0.0f32; 2]; CN]; 2]; MQ];
                unroll::<MQ, _>(|mq| {
                    unroll::<2, _>(|hf| {
                        unroll::<CN, _>(|cn| {
                            if let Some(dst) = at(mq, hf, cn) {
                                old[mq][hf][cn] = unsafe { [dst.load(0), dst.load(1)] };
                            }
                        })
                    })
                });
                unroll::<MQ, _>(|mq| {
                    unroll::<2, _>(|hf| {
                        unroll::<CN, _>(|cn| {
                            if let Some(dst) = at(mq, hf, cn) {
                                let (c, o) = (&dq[mq][cn].0, old[mq][hf][cn]);
                                unsafe {
                                    dst.store(0, o[0] + c[2 * hf]);
                                    dst.store(1, o[1] + c[2 * hf + 1]);
                                }
                            }
                        })
                    })
                });
            } else if r0 + BM as i32 <= sq && hd == D {
                // Every row and column of the block is real: no per-element tests, and the
                // elements' offsets from this lane's first one are constants.
                let row = acc_row + (r0 as u32 + MQ as u32 * rt * 16 + l / 4) as usize;
                let first = dq_acc.offset(row * D as usize + (chunk * cw + (l % 4) * 2) as usize);
                unroll::<MQ, _>(|mq| {
                    unroll::<2, _>(|hf| {
                        unroll::<CN, _>(|cn| {
                            let dst = first.offset((mq * 16 + hf * 8) * D as usize + cn * 8);
                            let c = &dq[mq][cn].0;
                            unsafe { red_add_v2_f32(dst.ptr(), c[2 * hf], c[2 * hf + 1]) };
                        })
                    })
                });
            } else {
                unroll::<MQ, _>(|mq| {
                    unroll::<2, _>(|hf| {
                        unroll::<CN, _>(|cn| {
                            if let Some(dst) = at(mq, hf, cn) {
                                let c = &dq[mq][cn].0;
                                unsafe { red_add_v2_f32(dst.ptr(), c[2 * hf], c[2 * hf + 1]) };
                            }
                        })
                    })
                });
            }
            it += 1;
            stage ^= 1;
        }
        wait_group::<0>();

        // Epilogue: dK (times the softmax scale) and dV rounded to T, once.
        let (dk_hbm, dv_hbm) = (HbmMut::<u32>::from_addr(p.dk), HbmMut::<u32>::from_addr(p.dv));
        unroll::<MT, _>(|mt| {
            unroll::<2, _>(|hf| {
                let key = n0 + (warp_key + mt as u32 * 16 + l / 4 + 8 * hf as u32) as i32;
                if key < sk {
                    let at = kv_off() + key as usize * k_rs;
                    unroll::<SN, _>(|sn| {
                        let col = slice * sw + sn as u32 * 8 + (l % 4) * 2;
                        if col < hd {
                            let c = &dk_acc[mt][sn].0;
                            let dk = T::pack2(c[2 * hf] * p.scale, c[2 * hf + 1] * p.scale);
                            let dv = T::pack2(dv_acc[mt][sn].0[2 * hf], dv_acc[mt][sn].0[2 * hf + 1]);
                            // Two halves = one b32 at an even element index.
                            unsafe {
                                dk_hbm.store((at + col as usize) / 2, dk);
                                dv_hbm.store((at + col as usize) / 2, dv);
                            }
                        }
                    });
                }
            })
        });
        nb += grid_x();
    }
}

macro_rules! bwd_exchange_entry {
    ($name:ident, $t:ty, $tile:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: AttnBwdParams) {
            const TL: super::backward::BwdTile = $tile;
            const { assert!(TL.exchange) };
            unsafe {
                attn_bwd_exchange::<
                    $t,
                    { TL.d },
                    { TL.warps },
                    { TL.m_tiles as usize },
                    { TL.block_m },
                    { TL.d_split },
                    { TL.s_sub },
                    { TL.do_stages },
                    { TL.block_n() },
                    { (TL.d / 16) as usize },
                    { (TL.s_queries() / 8) as usize },
                    { (TL.s_queries() / 16) as usize },
                    { (TL.d / TL.d_split / 8) as usize },
                    { (TL.block_n() / 16) as usize },
                    { TL.dq_m_tiles() as usize },
                    { (TL.d / TL.dq_col_split() / 8) as usize },
                    { TL.pitch() },
                    { TL.ds_pitch() },
                >(&p)
            }
        }
    };
}

bwd_exchange_entry!(attn_bwd_d64_bf16, Bf16, BWD_D64);
bwd_exchange_entry!(attn_bwd_d64_f16, F16, BWD_D64);
bwd_exchange_entry!(attn_bwd_d128_bf16, Bf16, BWD_D128);
bwd_exchange_entry!(attn_bwd_d128_f16, F16, BWD_D128);
#[cfg(target_feature = "sm_90a")]
bwd_exchange_entry!(attn_bwd_d128x2_bf16, Bf16, BWD_D128_SM90);
#[cfg(target_feature = "sm_90a")]
bwd_exchange_entry!(attn_bwd_d128x2_f16, F16, BWD_D128_SM90);
