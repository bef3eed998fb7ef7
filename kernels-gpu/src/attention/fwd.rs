//! The forward kernel. Per CTA: query rows [r0, r0 + BLOCK_M) of one (batch, head).
//! Per warp: 16 x MT query rows; per lane, each m16 tile gives two rows
//! (lane / 4 and lane / 4 + 8) and pairs of columns (2 * (lane % 4) + {0, 1}).
//!
//! Memory story:
//!   HBM  -> SRAM  Q tile once; K, V tiles per key block, STAGES (2 or 3) deep, cp.async:
//!                 block i + STAGES - 1 is in flight while block i is computed
//!   SRAM -> regs  ldmatrix (Q, K plain: they are row-major [row][d]; V transposed)
//!   regs          S, P (f32 -> bf16/f16 in place), O accumulator, row max m, row sum l
//!   regs -> HBM   O (rounded) and lse, once

use super::block::{
    Mask, accumulate_pv, accumulate_pv_at, inv_row_sum, mask_scores, online_softmax, online_softmax_lazy, row_lse,
    scores, scores_at, softcap,
};
use super::tile::{load_tile, load_tile_at};
use super::{AttnFwdParams, FWD_D32, FWD_D64, FWD_D96, FWD_D128, FWD_D192, FWD_D256};
use crate::device::cp_async::{commit, cp_async_16, wait_group};
use crate::device::ldmatrix::ldmatrix_x4;
use crate::device::thread::{block_x, block_y, grid_x, grid_y, lane, sync_threads, tid, warp};
use crate::device::unroll::pinned_u64;
use crate::device::warp::shfl_xor;
use crate::device::{Bf16, F16, FragA, FragC, Hbm, HbmMut, Sram, TensorElem, unroll};
use crate::layout::swizzle_chunk;

/// Lazy rescaling's slack (see `online_softmax_lazy`), in the exp2 domain: P <= 2^8,
/// which bf16 and f16 hold with their full relative precision.
const RESCALE_SLACK: f32 = 8.0;

/// This CTA's (query block, batch x head), heaviest query blocks first: with a causal
/// mask a query block's work grows with its index, and the GPU starts CTAs in grid order
/// (x fastest), so the longest start first and the shortest fill the tail. The grid is
/// (query blocks, batch x heads): one head's blocks together, neighbouring CTAs sharing K
/// and V in L2; or, HEADS_FIRST (the causal kernels), (batch x heads, query blocks):
/// every head's block i before any head's block i - 1. Special registers only, which
/// ptxas re-reads where it needs them instead of holding them.
#[inline(always)]
pub(super) fn fwd_cta<const HEADS_FIRST: bool>() -> (u32, u32) {
    if HEADS_FIRST { (grid_y() - 1 - block_y(), block_x()) } else { (grid_x() - 1 - block_x(), block_y()) }
}

/// The kernel body. Const parameters: element type T; tile head dim D; WARPS; MT m16
/// tiles per warp; BN keys per block; QREG (Q fragments in registers); STAGES K/V
/// pipeline stages (2 or 3); LAZY (lazy O rescaling); and the derived fragment counts
/// DK = D/16 (k-steps of Q K^T), DN = D/8 (n-tiles of O), KN = SN/8 (n-tiles of S) and
/// KK = SN/16 (k-steps of P V) for SN keys per softmax step, STEPS = BN/SN softmax steps
/// per key block; PITCH = 2D + 16; HEADS_FIRST, the grid's order (`fwd_cta`); SWZ, K / V
/// rows unpadded and swizzled (`FwdTile::kv_swizzle`).
#[inline(always)]
unsafe fn attn_fwd<
    T: TensorElem,
    const D: u32,
    const WARPS: u32,
    const MT: usize,
    const BN: u32,
    const QREG: bool,
    const STAGES: u32,
    const LAZY: bool,
    const DK: usize,
    const DN: usize,
    const KN: usize,
    const KK: usize,
    const STEPS: usize,
    const PITCH: u32,
    const HEADS_FIRST: bool,
    const SWZ: bool,
>(
    p: &AttnFwdParams,
) {
    const {
        assert!(DK as u32 * 16 == D && DN as u32 * 8 == D && KK * 2 == KN && PITCH == 2 * D + 16);
        assert!((STEPS * KN) as u32 * 8 == BN);
        assert!(STAGES == 2 || STAGES == 3)
    };
    let block_m = WARPS * 16 * MT as u32;
    let threads = WARPS * 32;
    let (l, w) = (lane(), warp());

    let (m_block, bh) = fwd_cta::<HEADS_FIRST>();
    // max(1): the host never passes 0, and a provably non-zero divisor leaves no
    // divide-by-zero panic path in the kernel.
    let (b, h) = (bh / p.heads_q.max(1), bh % p.heads_q.max(1));
    let kv_h = h / p.group.max(1);
    let (sq, sk) = (p.seqlen_q as i32, p.seqlen_k as i32);
    let r0 = (m_block * block_m) as i32;
    let r_end = if r0 + block_m as i32 > sq { sq } else { r0 + block_m as i32 };
    let mask = Mask { seqlen_k: sk, shift: sk - sq, left: p.window_left, right: p.window_right };

    // Key range any row of this block sees, rounded out to whole key blocks.
    let (n_lo, n_hi) = mask.key_range(r0, r_end - 1);
    let nb_lo = n_lo / BN as i32;
    let nb_hi = if n_hi > n_lo { (n_hi + BN as i32 - 1) / BN as i32 } else { nb_lo };

    // SRAM (see FwdTile): Q at 0, then K stages, then V stages.
    let s_q = Sram::at(0);
    let s_k = |st: u32| Sram::at(if SWZ { block_m * PITCH + st * BN * 2 * D } else { (block_m + st * BN) * PITCH });
    let s_v = |st: u32| {
        Sram::at(if SWZ {
            block_m * PITCH + (STAGES + st) * BN * 2 * D
        } else {
            (block_m + (STAGES + st) * BN) * PITCH
        })
    };
    // With SWZ, K / V row r is 2D bytes and its chunk ch sits at swizzle_chunk(r, ch).
    let kv_at = |r: u32, ch: u32| r * 2 * D + swizzle_chunk(r, ch, D / 8) * 16;

    let q_hbm =
        Hbm::<u16>::from_addr(p.q).offset(b as usize * p.q_batch_stride as usize + h as usize * p.head_dim as usize);
    let kv_off = b as usize * p.k_batch_stride as usize + kv_h as usize * p.head_dim as usize;
    let k_hbm = Hbm::<u16>::from_addr(p.k).offset(kv_off);
    let v_hbm = Hbm::<u16>::from_addr(p.v).offset(kv_off);
    let (q_rs, k_rs) = (p.q_row_stride as usize, p.k_row_stride as usize);

    // One K or V block (`v`) into stage `st`.
    let load_block = |nb: i32, st: u32, v: bool| {
        let first = nb * BN as i32;
        let src = if v { v_hbm } else { k_hbm }.offset(first as usize * k_rs);
        // The row stride re-derived per block: the tile's row offsets (one 64-bit
        // product per chunk of this thread) are recomputed here, not held across the loop.
        let rs = pinned_u64(k_rs as u64) as usize;
        let dst = if v { s_v(st) } else { s_k(st) };
        if SWZ {
            let copy = |to, from, n| unsafe { cp_async_16(to, from, n) };
            let place = |r, ch| dst.byte(kv_at(r, ch));
            unsafe { load_tile_at::<D>(copy, place, BN, threads, tid(), src, rs, sk - first, p.head_dim) };
        } else {
            unsafe { load_tile::<D, PITCH>(BN, threads, tid(), dst, src, rs, sk - first, p.head_dim) };
        }
    };
    let load_kv = |nb: i32, st: u32| {
        load_block(nb, st, false);
        load_block(nb, st, true);
    };
    // With 2 stages K and V of a block are separate groups: S = Q K^T starts while V is
    // still in flight (a second barrier per block, before the first O += P V).
    let split = STAGES == 2;

    // Group 0: Q and the first K/V block (K only when split; V is group 1).
    unsafe {
        load_tile::<D, PITCH>(block_m, threads, tid(), s_q, q_hbm.offset(r0 as usize * q_rs), q_rs, sq - r0, p.head_dim)
    };
    if nb_lo < nb_hi {
        if split {
            load_block(nb_lo, 0, false);
            commit();
            load_block(nb_lo, 0, true);
        } else {
            load_kv(nb_lo, 0);
        }
    } else if split {
        commit();
    }
    commit();
    // With 3 stages, group 1: the second K/V block (an empty group if there is none, so
    // that group i always holds block i and one wait count fits every iteration).
    if STAGES == 3 {
        if nb_lo + 1 < nb_hi {
            load_kv(nb_lo + 1, 1);
        }
        commit();
    }

    // This warp's rows within the tile, and this lane's ldmatrix row addresses.
    let warp_row = w * 16 * MT as u32;
    let q_lane = (warp_row + l % 16) * PITCH + (l / 16) * 16;
    let q_addr = |s_q: Sram, mt: usize, kk: usize| s_q.byte(q_lane + mt as u32 * 16 * PITCH + kk as u32 * 32);

    let mut q_frag = [[FragA([0; 4]); DK]; MT];
    let mut o_acc = [[FragC::zero(); DN]; MT];
    let mut row_max = [[f32::NEG_INFINITY; 2]; MT];
    let mut row_sum = [[0.0f32; 2]; MT];
    let score_log2 = p.score_log2;

    let mut nb = nb_lo;
    let mut stage = 0u32;
    while nb < nb_hi {
        // Block nb landed (with 3 stages the newest group, block nb+1, may still be in
        // flight), and every warp is past block nb-1, so its stage can take block
        // nb + STAGES - 1: one barrier per block.
        // Split (2 stages): the groups in flight are K_nb, V_nb; wait for K_nb only.
        if STAGES == 3 || split {
            wait_group::<1>();
        } else {
            wait_group::<0>();
        }
        sync_threads();
        let next = nb + (STAGES as i32 - 1);
        let next_stage = if stage == 0 { STAGES - 1 } else { stage - 1 };
        if split {
            if next < nb_hi {
                load_block(next, next_stage, false);
            }
            commit();
            if next < nb_hi {
                load_block(next, next_stage, true);
            }
        } else if next < nb_hi {
            load_kv(next, next_stage);
        }
        commit();
        // Q's lane address re-derived per block, so the MT x DK fragment addresses are
        // immediates on one register, not MT x DK registers live across the loop.
        let s_q_now = s_q.pinned();
        if QREG && nb == nb_lo {
            unroll::<MT, _>(|mt| {
                unroll::<DK, _>(|kk| q_frag[mt][kk] = FragA(unsafe { ldmatrix_x4(q_addr(s_q_now, mt, kk)) }))
            });
        }

        // The block in steps of SN = 8 KN keys: S = Q K^T ([16 x MT rows] x [SN keys] per
        // warp), the soft-cap and mask, the online softmax, O += P V.
        unroll::<STEPS, _>(|step| {
            let key0 = (step * KN * 8) as u32;
            let mut s = if SWZ {
                let s_k_now = s_k(stage);
                scores_at::<T, MT, DK, KN, KK>(
                    |mt, kk| if QREG { q_frag[mt][kk] } else { FragA(unsafe { ldmatrix_x4(q_addr(s_q_now, mt, kk)) }) },
                    |key, ch| s_k_now.byte(kv_at(key, ch)),
                    key0,
                )
            } else {
                scores::<T, MT, DK, KN, KK, PITCH>(
                    |mt, kk| if QREG { q_frag[mt][kk] } else { FragA(unsafe { ldmatrix_x4(q_addr(s_q_now, mt, kk)) }) },
                    s_k(stage),
                    key0,
                )
            };

            // Soft-capping, then the mask where this step crosses a boundary.
            if p.softcap != 0 {
                softcap(&mut s, p.score_pre);
            }
            let c0 = nb * BN as i32 + key0 as i32;
            if !mask.covers(r0, r_end - 1, c0, c0 + (KN * 8) as i32) {
                let row_of = |mt: usize, hf: usize| r0 + (warp_row + mt as u32 * 16 + l / 4 + 8 * hf as u32) as i32;
                mask_scores(&mut s, mask, row_of, c0);
            }

            // Online softmax in registers; P stays there as the A operand of O += P V.
            let (m_run, l_run) = (&mut row_max, &mut row_sum);
            let p_frag = if LAZY {
                online_softmax_lazy::<T, MT, KN, KK, DN>(&mut s, m_run, l_run, &mut o_acc, score_log2, RESCALE_SLACK)
            } else {
                online_softmax::<T, MT, KN, KK, DN>(&mut s, m_run, l_run, &mut o_acc, score_log2)
            };
            if split && step == 0 {
                // V_nb landed (K_{nb+1}, V_{nb+1} may be in flight), for every thread.
                wait_group::<2>();
                sync_threads();
            }
            if SWZ {
                let s_v_now = s_v(stage);
                let v_at = |key, ch| s_v_now.byte(kv_at(key, ch));
                accumulate_pv_at::<T, MT, KK, DN>(&mut o_acc, |mt, kk| p_frag[mt][kk], v_at, key0);
            } else {
                accumulate_pv::<T, MT, KK, DN, PITCH>(&mut o_acc, |mt, kk| p_frag[mt][kk], s_v(stage), key0);
            }
        });
        stage = if stage + 1 == STAGES { 0 } else { stage + 1 };
        nb += 1;
    }
    wait_group::<0>();

    // Epilogue: O / l rounded to T, and lse = ln(sum exp(s)) = (m * score_log2 + log2 l) ln 2.
    // A row that saw no key: O = 0, lse = +inf.
    let o_hbm = HbmMut::<u32>::from_addr(p.o);
    let lse_hbm = HbmMut::<f32>::from_addr(p.lse);
    let o_base = b as usize * p.q_batch_stride as usize + h as usize * p.head_dim as usize;
    unroll::<MT, _>(|mt| {
        unroll::<2, _>(|hf| {
            let mut sum = row_sum[mt][hf];
            sum += shfl_xor(sum, 1);
            sum += shfl_xor(sum, 2);
            let row = r0 + (warp_row + mt as u32 * 16 + l / 4 + 8 * hf as u32) as i32;
            let inv = inv_row_sum(sum);
            if row < sq {
                let row_off = o_base + row as usize * q_rs;
                unroll::<DN, _>(|dn| {
                    let col = dn as u32 * 8 + (l % 4) * 2;
                    if col < p.head_dim {
                        let v = T::pack2(o_acc[mt][dn].0[2 * hf] * inv, o_acc[mt][dn].0[2 * hf + 1] * inv);
                        // Two halves = one b32 at an even element index.
                        unsafe { o_hbm.store((row_off + col as usize) / 2, v) };
                    }
                });
                if l % 4 == 0 {
                    let mx = row_max[mt][hf];
                    let m_use = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
                    let lse = if sum == 0.0 { f32::INFINITY } else { row_lse(m_use, sum, score_log2) };
                    unsafe { lse_hbm.store((bh as usize) * p.seqlen_q as usize + row as usize, lse) };
                }
            }
        })
    });
}

macro_rules! fwd_entry {
    ($name:ident, $t:ty, $tile:expr) => {
        fwd_entry!($name, $t, $tile, false);
    };
    ($name:ident, $t:ty, $tile:expr, $heads_first:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: AttnFwdParams) {
            const TL: super::FwdTile = $tile;
            unsafe {
                attn_fwd::<
                    $t,
                    { TL.d },
                    { TL.warps },
                    { TL.m_tiles as usize },
                    { TL.block_n },
                    { TL.q_in_regs },
                    { TL.stages },
                    { TL.lazy_rescale },
                    { (TL.d / 16) as usize },
                    { (TL.d / 8) as usize },
                    { (TL.step_n / 8) as usize },
                    { (TL.step_n / 16) as usize },
                    { (TL.block_n / TL.step_n) as usize },
                    { TL.pitch() },
                    $heads_first,
                    { TL.kv_swizzle },
                >(&p)
            }
        }
    };
}

fwd_entry!(attn_fwd_d32_bf16, Bf16, FWD_D32);
fwd_entry!(attn_fwd_d64_bf16, Bf16, FWD_D64);
fwd_entry!(attn_fwd_d96_bf16, Bf16, FWD_D96);
fwd_entry!(attn_fwd_d128_bf16, Bf16, FWD_D128);
fwd_entry!(attn_fwd_d192_bf16, Bf16, FWD_D192);
fwd_entry!(attn_fwd_d256_bf16, Bf16, FWD_D256);
fwd_entry!(attn_fwd_d32_f16, F16, FWD_D32);
fwd_entry!(attn_fwd_d64_f16, F16, FWD_D64);
fwd_entry!(attn_fwd_d96_f16, F16, FWD_D96);
fwd_entry!(attn_fwd_d128_f16, F16, FWD_D128);
fwd_entry!(attn_fwd_d192_f16, F16, FWD_D192);
fwd_entry!(attn_fwd_d256_f16, F16, FWD_D256);
// The same kernels with the causal grid order (`fwd_cta`).
fwd_entry!(attn_fwd_causal_d32_bf16, Bf16, FWD_D32, true);
fwd_entry!(attn_fwd_causal_d64_bf16, Bf16, FWD_D64, true);
fwd_entry!(attn_fwd_causal_d96_bf16, Bf16, FWD_D96, true);
fwd_entry!(attn_fwd_causal_d128_bf16, Bf16, FWD_D128, true);
fwd_entry!(attn_fwd_causal_d192_bf16, Bf16, FWD_D192, true);
fwd_entry!(attn_fwd_causal_d256_bf16, Bf16, FWD_D256, true);
fwd_entry!(attn_fwd_causal_d32_f16, F16, FWD_D32, true);
fwd_entry!(attn_fwd_causal_d64_f16, F16, FWD_D64, true);
fwd_entry!(attn_fwd_causal_d96_f16, F16, FWD_D96, true);
fwd_entry!(attn_fwd_causal_d128_f16, F16, FWD_D128, true);
fwd_entry!(attn_fwd_causal_d192_f16, F16, FWD_D192, true);
fwd_entry!(attn_fwd_causal_d256_f16, F16, FWD_D256, true);
