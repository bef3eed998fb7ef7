//! The Hopper forward kernel (sm_90a): the forward of `fwd.rs` with S = Q K^T and
//! O += P V on `wgmma.mma_async`. Per CTA: query rows [r0, r0 + 64 WG) of one (batch,
//! head); warpgroup g (warps 4g .. 4g+3) owns rows r0 + 64g .. +63, and its warp w the 16
//! rows r0 + 16w ..; each lane holds what an `mma.sync` m16 tile would (rows l/4 and
//! l/4 + 8, column pairs 2 (l % 4)), so the softmax is `block.rs`'s with one row tile.
//!
//! Memory story:
//!   HBM  -> SRAM  Q tile once; K, V tiles per key block (BN keys), 2 stages each, as
//!                 boxes of the tensor memory accelerator (one thread issues them; an
//!                 mbarrier per stage counts the bytes): K_{j+1} and V_j are in flight
//!                 while S_j = Q K_j^T and O += P_{j-1} V_{j-1} run. Rows past a
//!                 sequence's end and columns past the head dim land as zeros.
//!   SRAM          128-byte swizzle: a [rows x d] tile is d/64 slabs of rows x 128 B,
//!                 each row's 16-byte chunks XORed with (row % 8), so the tensor cores
//!                 read it without bank conflicts
//!   SRAM -> TC    wgmma reads Q and K (K-major descriptors) and V (MN-major) directly
//!   regs          S (64 x BN f32 per warpgroup), P (bf16/f16, the register A operand of
//!                 P V), O accumulator, row max m, row sum l
//!   regs -> HBM   O (rounded) and lse, once

use super::block::{Mask, inv_row_sum, mask_scores, online_softmax_lazy_deferred, rescale_o, row_lse, softcap};
use super::{WG_D64, WG_D128, WgFwdParams, WgTile};
use crate::device::sram::arena;
use crate::device::thread::{lane, sync_threads, tid, warp};
use crate::device::tma::{
    ParamAddr, SLAB_ROW, arrive_expect_tx, fence_mbar_init, load_slabs, mbar_init, mbar_wait, prefetch_map,
};
use crate::device::warp::shfl_xor;
use crate::device::wgmma::{SW128_ROW_STEP, WgAcc, WgElem, hold, sw128_k_major, sw128_k_step, sw128_mn_major};
use crate::device::{Bf16, F16, FragA, FragC, HbmMut, unroll};

/// Lazy rescaling's slack in the exp2 domain (as `fwd.rs`): P <= 2^8.
const RESCALE_SLACK: f32 = 8.0;

/// The kernel body. Const parameters: element type T; tile head dim D; WG warpgroups; BN
/// keys per block; and the derived counts DK = D/16 (k-steps of Q K^T), DN = D/8 (n-tiles
/// of O), KN = BN/8 (n-tiles of S), KK = BN/16 (k-steps of P V).
#[inline(always)]
unsafe fn attn_fwd_wg<
    A: ParamAddr,
    T: WgElem,
    const D: u32,
    const WG: u32,
    const BN: u32,
    const DK: usize,
    const DN: usize,
    const KN: usize,
    const KK: usize,
>(
    wp: &WgFwdParams,
) where
    [FragC; KN]: WgAcc,
    [FragC; DN]: WgAcc,
{
    const { assert!(DK as u32 * 16 == D && DN as u32 * 8 == D && KN as u32 * 8 == BN && KK * 2 == KN) };
    let p = &wp.base;
    let tile = WgTile { d: D, warpgroups: WG, block_n: BN };
    let block_m = tile.block_m();
    let (l, w) = (lane(), warp());
    let g = w / 4;

    let (m_block, bh) = super::fwd::fwd_cta::<false>();
    let (b, h) = (bh / p.heads_q.max(1), bh % p.heads_q.max(1));
    let kv_h = h / p.group.max(1);
    let (sq, sk) = (p.seqlen_q as i32, p.seqlen_k as i32);
    let r0 = (m_block * block_m) as i32;
    let r_end = if r0 + block_m as i32 > sq { sq } else { r0 + block_m as i32 };
    let mask = Mask { seqlen_k: sk, shift: sk - sq, left: p.window_left, right: p.window_right };

    // Key blocks any row of the CTA sees, and this warpgroup's rows (for the mask test).
    let (n_lo, n_hi) = mask.key_range(r0, r_end - 1);
    let nb_lo = n_lo / BN as i32;
    let nb_hi = if n_hi > n_lo { (n_hi + BN as i32 - 1) / BN as i32 } else { nb_lo };
    let g_r0 = r0 + 64 * g as i32;
    let g_r1 = if g_r0 + 63 < r_end { g_r0 + 63 } else { r_end - 1 };

    // SRAM: the arena aligned up to 1024 bytes, then Q, 2 K stages, 2 V stages and the
    // mbarriers (see WgTile).
    let base = (arena() + WgTile::ALIGN - 1) & !(WgTile::ALIGN - 1);
    let s_q = base;
    let s_k = |st: u32| base + tile.k_offset(st);
    let s_v = |st: u32| base + tile.v_offset(st);
    let bar_q = base + tile.barrier_offset();
    let bar_k = |st: u32| bar_q + 8 + 8 * st;
    let bar_v = |st: u32| bar_q + 8 + 8 * WgTile::STAGES + 8 * st;

    // The tensor maps, in the parameter struct (param space): Q [batch, seqlen_q,
    // heads_q, d], K / V [batch, seqlen_k, heads_kv, d], coordinates innermost first.
    let maps = A::param_addr();
    let (q_map, k_map, v_map) = (maps, maps + 128, maps + 256);
    let kv_bytes = tile.tile_bytes(BN);
    // Issued by thread 0: K block nb into stage st, V block nb into stage st.
    let load_k = |nb: i32, st: u32| {
        unsafe { arrive_expect_tx(bar_k(st), kv_bytes) };
        unsafe { load_slabs::<D>(k_map, s_k(st), BN, kv_h, nb * BN as i32, b, bar_k(st)) };
    };
    let load_v = |nb: i32, st: u32| {
        unsafe { arrive_expect_tx(bar_v(st), kv_bytes) };
        unsafe { load_slabs::<D>(v_map, s_v(st), BN, kv_h, nb * BN as i32, b, bar_v(st)) };
    };
    let leader = tid() == 0;

    // Block j (i = j - nb_lo) sits in stage i & 1, its barrier's phase (i / 2) & 1.
    let stage = |j: i32| (j - nb_lo) as u32 & 1;
    let parity = |j: i32| ((j - nb_lo) as u32 >> 1) & 1;

    if nb_lo < nb_hi {
        if leader {
            unsafe {
                prefetch_map(q_map);
                prefetch_map(k_map);
                prefetch_map(v_map);
                mbar_init(bar_q, 1);
                unroll::<{ WgTile::STAGES as usize }, _>(|st| {
                    mbar_init(bar_k(st as u32), 1);
                    mbar_init(bar_v(st as u32), 1);
                });
            }
            fence_mbar_init();
            unsafe { arrive_expect_tx(bar_q, tile.tile_bytes(block_m)) };
            unsafe { load_slabs::<D>(q_map, s_q, block_m, h, r0, b, bar_q) };
            load_k(nb_lo, 0);
        }
        // The barriers are initialized before anyone waits on them.
        sync_threads();
    }

    // Descriptors, 128-byte swizzle: Q and K K-major (d is the reduction), V MN-major (the
    // keys are; d along its rows).
    let q_desc = sw128_k_major(s_q + 64 * g * SLAB_ROW);
    let k_desc = |st: u32| sw128_k_major(s_k(st));
    let v_desc = |st: u32| sw128_mn_major(s_v(st), BN);

    let warp_row = w * 16;
    let mut o_acc = [[FragC::zero(); DN]; 1];
    let mut s = [[FragC::zero(); KN]; 1];
    let mut row_max = [[f32::NEG_INFINITY; 2]; 1];
    let mut row_sum = [[0.0f32; 2]; 1];
    let score_log2 = p.score_log2;

    // Step j: every warp is past step j-1, whose products (the last readers of K_{j-1}
    // and V_{j-2}) were waited for: their stages take K_{j+1} and V_j.
    let begin_step = |j: i32| {
        sync_threads();
        if leader {
            if j + 1 < nb_hi {
                load_k(j + 1, stage(j + 1));
            }
            if j < nb_hi {
                load_v(j, stage(j));
            }
        }
    };
    // S = Q K_j^T: DK products m64 n BN k16, one group (after K_j has landed).
    let issue_s = |s: &mut [[FragC; KN]; 1], j: i32| {
        mbar_wait(bar_k(stage(j)), parity(j));
        let kd = k_desc(stage(j));
        s[0].fence();
        unroll::<DK, _>(|kk| unsafe {
            s[0].mma_ss::<T>(q_desc + sw128_k_step(kk, block_m), kd + sw128_k_step(kk, BN), kk != 0)
        });
        crate::device::wgmma::commit();
    };
    // O += P_j V_j: KK products m64 n D k16, P from registers, one group (after V_j).
    let issue_pv = |o: &mut [[FragC; DN]; 1], p_frag: &[[FragA; KK]; 1], j: i32| {
        mbar_wait(bar_v(stage(j)), parity(j));
        let vd = v_desc(stage(j));
        o[0].fence();
        unroll::<KK, _>(|kk| unsafe { o[0].mma_rs_trans::<T>(&p_frag[0][kk], vd + SW128_ROW_STEP * kk as u64) });
        crate::device::wgmma::commit();
    };
    // Block j's soft-cap, mask and online softmax (O's rescale deferred): P_j, alpha.
    let softmax = |s: &mut [[FragC; KN]; 1], m: &mut [[f32; 2]; 1], sum: &mut [[f32; 2]; 1], j: i32| {
        if p.softcap != 0 {
            softcap(s, p.score_pre);
        }
        let c0 = j * BN as i32;
        if !mask.covers(g_r0, g_r1, c0, c0 + BN as i32) {
            let row_of = |_mt: usize, hf: usize| r0 + (warp_row + l / 4 + 8 * hf as u32) as i32;
            mask_scores(s, mask, row_of, c0);
        }
        online_softmax_lazy_deferred::<T, 1, KN, KK>(s, m, sum, score_log2, RESCALE_SLACK)
    };

    // Software pipeline (FlashAttention-3's intra-warpgroup overlap): step j issues
    // S_j = Q K_j^T and O += P_{j-1} V_{j-1}, then runs block j's softmax on the CUDA cores
    // while the tensor cores do P_{j-1} V_{j-1}; O's rescale by block j's new maxima waits
    // for that product. The first and last steps are peeled off, so that every product
    // and every wait sits on control flow uniform over the CTA (ptxas serializes wgmma
    // around waits it must insert on divergent paths). Both warpgroups run every key
    // block of the CTA (the mask covers the rows a block does not reach).
    if nb_lo < nb_hi {
        mbar_wait(bar_q, 0);
        begin_step(nb_lo);
        issue_s(&mut s, nb_lo);
        s[0].wait::<0>();
        // O is still zero: its rescale factors do not matter.
        let (mut p_frag, _, _) = softmax(&mut s, &mut row_max, &mut row_sum, nb_lo);
        let mut j = nb_lo + 1;
        while j < nb_hi {
            begin_step(j);
            issue_s(&mut s, j);
            issue_pv(&mut o_acc, &p_frag, j - 1);
            s[0].wait::<1>();
            let (p_next, alpha, _) = softmax(&mut s, &mut row_max, &mut row_sum, j);
            o_acc[0].wait::<0>();
            hold(&p_frag[0]);
            // Unconditional (alpha = 1 when no max moved): an O write on a branch makes
            // ptxas serialize every wgmma (C7518 / C7513).
            rescale_o(&mut o_acc, &alpha);
            p_frag = p_next;
            j += 1;
        }
        begin_step(nb_hi);
        issue_pv(&mut o_acc, &p_frag, nb_hi - 1);
        o_acc[0].wait::<0>();
    }

    // Epilogue: O / l rounded to T, and lse = (m * score_log2 + log2 l) ln 2. A row that
    // saw no key: O = 0, lse = +inf.
    let o_hbm = HbmMut::<u32>::from_addr(p.o);
    let lse_hbm = HbmMut::<f32>::from_addr(p.lse);
    let o_base = b as usize * p.q_batch_stride as usize + h as usize * p.head_dim as usize;
    unroll::<2, _>(|hf| {
        let mut sum = row_sum[0][hf];
        sum += shfl_xor(sum, 1);
        sum += shfl_xor(sum, 2);
        let row = r0 + (warp_row + l / 4 + 8 * hf as u32) as i32;
        let inv = inv_row_sum(sum);
        if row < sq {
            let row_off = o_base + row as usize * p.q_row_stride as usize;
            unroll::<DN, _>(|dn| {
                let col = dn as u32 * 8 + (l % 4) * 2;
                if col < p.head_dim {
                    let v = T::pack2(o_acc[0][dn].0[2 * hf] * inv, o_acc[0][dn].0[2 * hf + 1] * inv);
                    unsafe { o_hbm.store((row_off + col as usize) / 2, v) };
                }
            });
            if l % 4 == 0 {
                let mx = row_max[0][hf];
                let m_use = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
                let lse = if sum == 0.0 { f32::INFINITY } else { row_lse(m_use, sum, score_log2) };
                unsafe { lse_hbm.store((bh as usize) * p.seqlen_q as usize + row as usize, lse) };
            }
        }
    });
}

macro_rules! wg_entry {
    ($name:ident, $t:ty, $tile:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: WgFwdParams) {
            const TL: WgTile = $tile;
            // The parameter struct's generic address (its PTX symbol is `<entry>_param_0`).
            crate::device::tma::kernel_param!(Param, $name);
            unsafe {
                attn_fwd_wg::<
                    Param,
                    $t,
                    { TL.d },
                    { TL.warpgroups },
                    { TL.block_n },
                    { (TL.d / 16) as usize },
                    { (TL.d / 8) as usize },
                    { (TL.block_n / 8) as usize },
                    { (TL.block_n / 16) as usize },
                >(&p)
            }
        }
    };
}

wg_entry!(attn_fwd_wg_d64_bf16, Bf16, WG_D64);
wg_entry!(attn_fwd_wg_d128_bf16, Bf16, WG_D128);
wg_entry!(attn_fwd_wg_d64_f16, F16, WG_D64);
wg_entry!(attn_fwd_wg_d128_f16, F16, WG_D128);
