//! The backward's main kernel (every tile but d=64's and d=128's, which run the exchange
//! layout of `bwd_exchange.rs`). Per CTA: keys [n0, n0 + BN) of one (batch, kv head),
//! for every query head of its group. Warp w owns keys 16 (w / DSPLIT) .. + 16 of the block
//! and columns SW (w % DSPLIT) .. + SW of their dK, dV (SW = D / DSPLIT); in the dQ step
//! it owns query rows 16 (w % (BM / 16)) .. + 16 and a D / CS column chunk.
//!
//! Memory story:
//!   HBM  -> SRAM  K, V tiles once per key block; per query block Q, dO, lse and D,
//!                 2 stages (cp.async: block i+1 loads while block i is computed)
//!   SRAM -> regs  ldmatrix (K, V as A operands and Q, dO as B of S^T = K Q^T and
//!                 dP^T = V dO^T; Q, dO transposed as B of dK, dV; dS^T and K transposed
//!                 for dQ)
//!   regs          S^T / P^T and dP^T / dS^T of the warp's 16 keys x BM queries, the dK
//!                 and dV accumulators (f32) for the whole query loop
//!   regs -> SRAM  dS^T rounded to T (every warp's dQ step reads all keys of the block)
//!   regs -> HBM   dQ += dS K (f32 red.add, or read-add-write in the deterministic
//!                 mode) per query block; dK, dV once at the end

use super::backward::{AttnBwdParams, BWD_D32, BWD_D96, BWD_D192, BWD_D256};
use super::block::{Mask, accumulate_pv, accumulate_rolled, scores_rolled, tanh_precise, to_a_frags};
use super::tile::load_tile;
use crate::device::atomic::red_add_f32;
use crate::device::cp_async::{commit, cp_async_4, wait_group};
use crate::device::ldmatrix::{ldmatrix_x4, ldmatrix_x4_trans};
use crate::device::math::{exp2, fma};
use crate::device::thread::{block_x, block_y, grid_x, lane, sync_threads, tid, warp};
use crate::device::unroll::opaque;
use crate::device::{Bf16, F16, FragA, FragC, Hbm, HbmMut, Sram, TensorElem, unroll};

const LOG2E: f32 = core::f32::consts::LOG2_E;

/// The kernel body. Const parameters: element type T; tile head dim D; WARPS; MT m16 key
/// tiles per warp; BM query rows per step; DSPLIT warps per 16 MT keys; and the derived
/// counts BN = 16 MT WARPS / DSPLIT keys, DK = D / 16 (k-steps of S^T and dP^T), QN = BM / 8 (their n-tiles), QK = BM / 16
/// (k-steps of dV and dK), SN = D / DSPLIT / 8 (n-tiles of a dK / dV slice), NK = BN / 16
/// (k-steps of dQ), CN = D / CS / 8 (n-tiles of a dQ chunk), PITCH = 2D + 16,
/// DSP = 2 BM + 16.
#[inline(always)]
unsafe fn attn_bwd<
    T: TensorElem,
    const D: u32,
    const WARPS: u32,
    const MT: usize,
    const BM: u32,
    const DSPLIT: u32,
    const BN: u32,
    const DK: usize,
    const QN: usize,
    const QK: usize,
    const SN: usize,
    const NK: usize,
    const CN: usize,
    const PITCH: u32,
    const DSP: u32,
>(
    p: &AttnBwdParams,
) {
    const {
        assert!(
            BN * DSPLIT == 16 * MT as u32 * WARPS
                && DK as u32 * 16 == D
                && QN as u32 * 8 == BM
                && QK * 2 == QN
                && SN as u32 * 8 * DSPLIT == D
                && NK as u32 * 16 == BN
                && PITCH == 2 * D + 16
                && DSP == 2 * BM + 16
        )
    };
    let threads = WARPS * 32;
    let (l, w) = (lane(), warp());
    let rt_count = BM / 16;
    let cs = WARPS / rt_count;
    // This warp's keys and dK/dV slice; its dQ row tile and column chunk.
    let (kt, slice) = (w / DSPLIT, w % DSPLIT);
    let (rt, chunk) = (w % rt_count, w / rt_count);
    let (sw, cw) = (D / DSPLIT, D / cs);

    let cta = BwdCta::of(p);
    let BwdCta { b, kvh, sq, sk, hd, mask, .. } = cta;
    let n_blocks = p.seqlen_k.div_ceil(BN);

    // SRAM (see BwdTile): K, V, 2 stages of Q and dO, dS^T, 2 stages of lse and D.
    let s_k = Sram::at(0);
    let s_v = Sram::at(BN * PITCH);
    let s_q = |st: u32| Sram::at((2 * BN + st * BM) * PITCH);
    let s_do = |st: u32| Sram::at((2 * BN + (2 + st) * BM) * PITCH);
    let ds_at = (2 * BN + 4 * BM) * PITCH;
    let s_ds = Sram::at(ds_at);
    let s_lse = |st: u32| Sram::at(ds_at + BN * DSP + st * BM * 4);
    let s_delta = |st: u32| Sram::at(ds_at + BN * DSP + (2 + st) * BM * 4);

    let (q_rs, k_rs) = (p.q_row_stride as usize, p.k_row_stride as usize);
    let kv_off = b as usize * p.k_batch_stride as usize + kvh as usize * hd as usize;
    let (k_hbm, v_hbm) = (Hbm::<u16>::from_addr(p.k).offset(kv_off), Hbm::<u16>::from_addr(p.v).offset(kv_off));
    let (q_all, do_all) = (Hbm::<u16>::from_addr(p.q), Hbm::<u16>::from_addr(p.dout));
    let split = if p.deterministic != 0 { block_x() as usize } else { 0 };
    let dq_acc = HbmMut::<f32>::from_addr(p.dq_acc).offset(split * p.dq_split_stride as usize);

    // This warp's first key in the block, and the A-fragment row address of its keys in
    // a K or V tile (row-major).
    let warp_key = kt * 16 * MT as u32;
    let key_lane = (warp_key + l % 16) * PITCH + (l / 16) * 16;

    let mut nb = block_x();
    while nb < n_blocks {
        let n0 = (nb * BN) as i32;
        let plan = cta.steps(n0, BN, BM);
        let (steps, step_at) = (plan.count, |it: u32| plan.at(it));
        let load_step = |it: u32, st: u32| {
            let (h, r0) = step_at(it);
            let row0 = b as usize * p.q_batch_stride as usize + r0 as usize * q_rs + h as usize * hd as usize;
            let valid = sq - r0 as i32;
            unsafe {
                load_tile::<D, PITCH>(BM, threads, tid(), s_q(st), q_all.offset(row0), q_rs, valid, hd);
                load_tile::<D, PITCH>(BM, threads, tid(), s_do(st), do_all.offset(row0), q_rs, valid, hd);
                cta.load_row_stats(p, h, r0, BM, s_lse(st), s_delta(st));
            }
        };

        // The previous key block's warps are done with K, V and dS^T.
        sync_threads();
        // Group 0: K, V and the first query block.
        unsafe {
            let valid = sk - n0;
            load_tile::<D, PITCH>(BN, threads, tid(), s_k, k_hbm.offset(n0 as usize * k_rs), k_rs, valid, hd);
            load_tile::<D, PITCH>(BN, threads, tid(), s_v, v_hbm.offset(n0 as usize * k_rs), k_rs, valid, hd);
        }
        if steps > 0 {
            load_step(0, 0);
        }
        commit();

        let mut dk_acc = [[FragC::zero(); SN]; MT];
        let mut dv_acc = [[FragC::zero(); SN]; MT];
        let mut it = 0;
        let mut stage = 0;
        while it < steps {
            // Step it landed, and every warp is past step it-1 (its stage and dS^T are free).
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

            // dP^T = V dO^T and S^T = K Q^T: [16 MT keys x BM queries] per warp.
            let mut dp =
                scores_rolled::<T, MT, QN, QK, PITCH>(|mt, kk| key_frag(v_now, mt, kk), do_now, opaque(DK as u32));
            let mut s =
                scores_rolled::<T, MT, QN, QK, PITCH>(|mt, kk| key_frag(k_now, mt, kk), q_now, opaque(DK as u32));

            // P^T = exp(S - lse) and dS^T = P (dP - D), in place. Masking only where the
            // block crosses a mask boundary or the end of the queries.
            let full = r0 + BM as i32 <= sq && mask.covers(r0, r0 + BM as i32 - 1, n0, n0 + BN as i32);
            let key0 = n0 + (warp_key + l / 4) as i32;
            let (lse_now, delta_now) = (s_lse(stage), s_delta(stage));
            if p.softcap != 0 {
                let pre = p.score_pre;
                grad_scores(&mut s, &mut dp, lse_now, delta_now, p.score_log2, full, mask, r0, key0, |x| {
                    let t = tanh_precise(x * pre);
                    (t, 1.0 - t * t)
                });
            } else {
                grad_scores(&mut s, &mut dp, lse_now, delta_now, p.score_log2, full, mask, r0, key0, |x| (x, 1.0));
            }
            let mut p_frag = [[FragA([0; 4]); QK]; MT];
            let mut ds_frag = [[FragA([0; 4]); QK]; MT];
            unroll::<MT, _>(|mt| {
                p_frag[mt] = to_a_frags::<T, QN, QK>(&s[mt]);
                ds_frag[mt] = to_a_frags::<T, QN, QK>(&dp[mt]);
            });

            // dV += P^T dO and dK += dS^T Q on this warp's column slice.
            accumulate_pv::<T, MT, QK, SN, PITCH>(&mut dv_acc, |mt, kk| p_frag[mt][kk], do_now.skip(slice * sw * 2), 0);
            accumulate_pv::<T, MT, QK, SN, PITCH>(&mut dk_acc, |mt, kk| ds_frag[mt][kk], q_now.skip(slice * sw * 2), 0);

            // dS^T to SRAM ([key][query], rounded as in the dK product): register e of
            // A fragment kk is n-tile 2kk + e / 2, key row l / 4 + 8 (e % 2) of tile mt.
            if slice == 0 {
                let ds_now = s_ds.pinned();
                unroll::<MT, _>(|mt| {
                    unroll::<QK, _>(|kk| {
                        unroll::<4, _>(|e| {
                            let key = warp_key + mt as u32 * 16 + l / 4 + 8 * (e as u32 % 2);
                            let col = (kk as u32 * 2 + e as u32 / 2) * 8 + (l % 4) * 2;
                            unsafe { ds_now.st_b32(key * DSP + col * 2, ds_frag[mt][kk].0[e]) };
                        })
                    })
                });
            }
            sync_threads();

            // dQ (this warp's 16 rows x CN n-tiles) = dS K: dS read from dS^T with
            // ldmatrix.trans (keys are its k dimension), K transposed as in P V.
            let mut dq = [[FragC::zero(); CN]; 1];
            let ds_lane = (l % 8 + (l / 16) * 8) * DSP + (rt * 16 + ((l / 8) % 2) * 8) * 2;
            let ds_now = s_ds.pinned();
            accumulate_rolled::<T, 1, CN, PITCH>(
                &mut dq,
                |_, kk| FragA(unsafe { ldmatrix_x4_trans(ds_now.byte(ds_lane + kk * 16 * DSP)) }),
                k_now.skip(chunk * cw * 2),
                opaque(NK as u32),
            );
            // This lane's accumulator elements: rows r0 + 16 rt + l / 4 + 8 hf, column pairs
            // chunk * cw + 8 cn + 2 (l % 4) (None past seqlen_q or the head dim).
            let acc_row = cta.stat_row(p, h);
            let at = |hf: usize, cn: usize| {
                let row = r0 + (rt * 16 + l / 4 + 8 * hf as u32) as i32;
                let col = chunk * cw + cn as u32 * 8 + (l % 4) * 2;
                (row < sq && col < hd).then(|| dq_acc.offset((acc_row + row as usize) * hd as usize + col as usize))
            };
            if p.deterministic != 0 {
                // Read-add-write, all reads first: a store between two loads would make
                // each load wait for the one before (the compiler cannot tell they differ).
                let mut old = [[[0.0f32; 2]; CN]; 2];
                unroll::<2, _>(|hf| {
                    unroll::<CN, _>(|cn| {
                        if let Some(dst) = at(hf, cn) {
                            old[hf][cn] = unsafe { [dst.load(0), dst.load(1)] };
                        }
                    })
                });
                unroll::<2, _>(|hf| {
                    unroll::<CN, _>(|cn| {
                        if let Some(dst) = at(hf, cn) {
                            let c = &dq[0][cn].0;
                            unsafe {
                                dst.store(0, old[hf][cn][0] + c[2 * hf]);
                                dst.store(1, old[hf][cn][1] + c[2 * hf + 1]);
                            }
                        }
                    })
                });
            } else {
                unroll::<2, _>(|hf| {
                    unroll::<CN, _>(|cn| {
                        if let Some(dst) = at(hf, cn) {
                            let c = &dq[0][cn].0;
                            unsafe {
                                red_add_f32(dst.ptr(), c[2 * hf]);
                                red_add_f32(dst.ptr().add(1), c[2 * hf + 1]);
                            }
                        }
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
                    let at = kv_off + key as usize * k_rs;
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

/// What every backward CTA takes from the launch (one definition for the three backward
/// kernels): its (batch, kv head) from the grid's y, the query heads of the kv head's
/// group, both lengths (i32), the head dim and the mask.
#[derive(Clone, Copy)]
pub(super) struct BwdCta {
    pub b: u32,
    pub kvh: u32,
    pub group: u32,
    pub sq: i32,
    pub sk: i32,
    pub hd: u32,
    pub mask: Mask,
}

/// The query-block steps of one key block: every query block (of `bm` rows) with a query
/// that sees one of its keys, for each query head of the group in turn.
#[derive(Clone, Copy)]
pub(super) struct Steps {
    pub count: u32,
    kvh: u32,
    group: u32,
    mb_lo: u32,
    nq: u32,
    bm: u32,
}

impl Steps {
    /// (query head, first row) of step `it`: every query block of head 0, then head 1...
    #[inline(always)]
    pub fn at(self, it: u32) -> (u32, u32) {
        (self.kvh * self.group + it / self.nq.max(1), (self.mb_lo + it % self.nq.max(1)) * self.bm)
    }
}

impl BwdCta {
    #[inline(always)]
    pub fn of(p: &AttnBwdParams) -> BwdCta {
        let bh = block_y();
        let (sq, sk) = (p.seqlen_q as i32, p.seqlen_k as i32);
        BwdCta {
            b: bh / p.heads_kv.max(1),
            kvh: bh % p.heads_kv.max(1),
            group: p.group.max(1),
            sq,
            sk,
            hd: p.head_dim,
            mask: Mask { seqlen_k: sk, shift: sk - sq, left: p.window_left, right: p.window_right },
        }
    }

    /// Row (b, h, 0) of lse / D and of the dQ accumulator (`[batch, heads_q, seqlen_q]`).
    #[inline(always)]
    pub fn stat_row(self, p: &AttnBwdParams, h: u32) -> usize {
        (self.b as usize * p.heads_q as usize + h as usize) * p.seqlen_q as usize
    }

    /// The steps of keys [n0, n0 + bn): query i sees key j when j - shift - right <= i <=
    /// j - shift + left (i64: no overflow); none when no query does.
    #[inline(always)]
    pub fn steps(self, n0: i32, bn: u32, bm: u32) -> Steps {
        let (sq, mask) = (self.sq, self.mask);
        let n_end = if n0 + bn as i32 > self.sk { self.sk } else { n0 + bn as i32 };
        let shift = mask.shift as i64;
        let lo = if mask.right >= 0 { n0 as i64 - shift - mask.right as i64 } else { 0 };
        let hi = if mask.left >= 0 { n_end as i64 - 1 - shift + mask.left as i64 } else { sq as i64 - 1 };
        let lo = if lo < 0 { 0 } else { lo };
        let hi = if hi > sq as i64 - 1 { sq as i64 - 1 } else { hi };
        let (mb_lo, nq) = if hi >= lo { (lo as u32 / bm, hi as u32 / bm + 1 - lo as u32 / bm) } else { (0, 0) };
        Steps { count: nq * self.group, kvh: self.kvh, group: self.group, mb_lo, nq, bm }
    }

    /// lse and D of query rows [r0, r0 + bm) of head `h` into SRAM (cp.async, 4 bytes
    /// each): lse by threads [0, bm), D by [bm, 2 bm) (whole warps: each branch takes its
    /// tensor's address as is, no per-thread pointer); rows past seqlen_q are zeros (and
    /// masked in `grad_scores`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn load_row_stats(self, p: &AttnBwdParams, h: u32, r0: u32, bm: u32, s_lse: Sram, s_delta: Sram) {
        let t = tid();
        let i = t % bm;
        let ok = (i as i32) < self.sq - r0 as i32;
        let at = self.stat_row(p, h) + if ok { (r0 + i) as usize } else { 0 };
        let n = if ok { 4 } else { 0 };
        unsafe {
            if t < bm {
                cp_async_4(s_lse.byte(i * 4), Hbm::<f32>::from_addr(p.lse).offset(at).ptr() as *const u8, n);
            } else if t < 2 * bm {
                cp_async_4(s_delta.byte(i * 4), Hbm::<f32>::from_addr(p.delta).offset(at).ptr() as *const u8, n);
            }
        }
    }
}

/// The elementwise step of one warp's [16 MT keys x BM queries] tile, in place: s (= S^T,
/// the raw q.k) becomes P^T = exp(cap(s) score_log2 - lse) and dp (= dP^T) becomes
/// dS^T = P (dP - D) cap'(s). `cap` gives (the capped score, its derivative). Lane l holds
/// keys key0 + 16 mt and key0 + 16 mt + 8 and queries r0 + 8j + 2 (l % 4) + {0, 1} of
/// n-tile j. Unless `full`, a pair the mask hides (or a query past seqlen_q) gets P = 0,
/// and a query that sees a single key gets dS = 0 exactly (its softmax is the constant
/// 1, whatever dP and D round to).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn grad_scores<const MT: usize, const QN: usize>(
    s: &mut [[FragC; QN]; MT],
    dp: &mut [[FragC; QN]; MT],
    s_lse: Sram,
    s_delta: Sram,
    score_log2: f32,
    full: bool,
    mask: Mask,
    r0: i32,
    key0: i32,
    cap: impl Fn(f32) -> (f32, f32),
) {
    let l = lane();
    unroll::<QN, _>(|j| {
        unroll::<2, _>(|i| {
            let col = j as u32 * 8 + (l % 4) * 2 + i as u32;
            let neg_lse = -unsafe { s_lse.ld_f32(col * 4) } * LOG2E;
            let delta = unsafe { s_delta.ld_f32(col * 4) };
            let query = r0 + col as i32;
            let single = !full && mask.sees_one_key(query);
            unroll::<MT, _>(|mt| {
                unroll::<2, _>(|hf| {
                    let e = 2 * hf + i;
                    let (mut x, dcap) = cap(s[mt][j].0[e]);
                    if !full {
                        // The queries [q_lo, q_hi] that see this key, recomputed here rather
                        // than held per key: 4 MT more live registers spill the d=64 tile.
                        let (q_lo, q_hi) = mask.queries_seeing(key0 + (16 * mt + 8 * hf) as i32);
                        if (query < q_lo) | (query > q_hi) {
                            x = f32::NEG_INFINITY;
                        }
                    }
                    let pr = exp2(fma(x, score_log2, neg_lse));
                    s[mt][j].0[e] = pr;
                    dp[mt][j].0[e] = if single { 0.0 } else { pr * (dp[mt][j].0[e] - delta) * dcap };
                })
            });
        })
    });
}

/// [`grad_scores`] for the launch's options: soft-capped scores (tanh, and its
/// derivative in dS), or plain ones with `full` passed as a literal, so that the mask
/// tests (if-converted into selects per score, with per-key bounds in registers) drop
/// out of the copy for unmasked blocks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn grad_scores_for<const MT: usize, const QN: usize>(
    p: &AttnBwdParams,
    s: &mut [[FragC; QN]; MT],
    dp: &mut [[FragC; QN]; MT],
    s_lse: Sram,
    s_delta: Sram,
    full: bool,
    mask: Mask,
    r0: i32,
    key0: i32,
) {
    if p.softcap != 0 {
        let pre = p.score_pre;
        grad_scores(s, dp, s_lse, s_delta, p.score_log2, full, mask, r0, key0, |x| {
            let t = tanh_precise(x * pre);
            (t, 1.0 - t * t)
        });
    } else if full {
        grad_scores(s, dp, s_lse, s_delta, p.score_log2, true, mask, r0, key0, |x| (x, 1.0));
    } else {
        grad_scores(s, dp, s_lse, s_delta, p.score_log2, false, mask, r0, key0, |x| (x, 1.0));
    }
}

macro_rules! bwd_entry {
    ($name:ident, $t:ty, $tile:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: AttnBwdParams) {
            const TL: super::backward::BwdTile = $tile;
            unsafe {
                attn_bwd::<
                    $t,
                    { TL.d },
                    { TL.warps },
                    { TL.m_tiles as usize },
                    { TL.block_m },
                    { TL.d_split },
                    { TL.block_n() },
                    { (TL.d / 16) as usize },
                    { (TL.block_m / 8) as usize },
                    { (TL.block_m / 16) as usize },
                    { (TL.d / TL.d_split / 8) as usize },
                    { (TL.block_n() / 16) as usize },
                    { (TL.d / TL.dq_col_split() / 8) as usize },
                    { TL.pitch() },
                    { TL.ds_pitch() },
                >(&p)
            }
        }
    };
}

bwd_entry!(attn_bwd_d32_bf16, Bf16, BWD_D32);
bwd_entry!(attn_bwd_d96_bf16, Bf16, BWD_D96);
bwd_entry!(attn_bwd_d192_bf16, Bf16, BWD_D192);
bwd_entry!(attn_bwd_d256_bf16, Bf16, BWD_D256);
bwd_entry!(attn_bwd_d32_f16, F16, BWD_D32);
bwd_entry!(attn_bwd_d96_f16, F16, BWD_D96);
bwd_entry!(attn_bwd_d192_f16, F16, BWD_D192);
bwd_entry!(attn_bwd_d256_f16, F16, BWD_D256);
