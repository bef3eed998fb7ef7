//! The split-KV decode kernel (Flash-Decoding). Per CTA: split `block_x` of the key
//! range, query rows [16 block_y, 16 block_y + 16) of kv head `block_z % heads_kv` of
//! sequence `block_z / heads_kv`. Query row r is token r / group of query head
//! kv_head x group + r % group, so one pass over the cache serves the whole group.
//!
//! Memory story:
//!   params        the first 16 sequences' lengths: no trip to HBM before the first
//!                 K / V copies
//!   HBM  -> SRAM  Q rows once; K, V key blocks (64 keys), STAGES deep, cp.async with the
//!                 L2 prefetch hint, through the page table when the cache is paged;
//!                 K / V rows unpadded (2D bytes) with their 16-byte chunks swizzled, so
//!                 that each 128-byte line of HBM is one L2 request and one SRAM
//!                 wavefront (padded rows, 16 bytes off the line, asked for 1.5x the
//!                 sectors) and ldmatrix stays free of bank conflicts
//!   SRAM -> regs  ldmatrix: Q and K plain, V transposed; warp w loads and takes keys
//!                 16w..16w+15 of every block, so the warps stream independently
//!   regs          S, P, each warp's O accumulator and softmax state (16 rows)
//!   SRAM          the warps' (max, sum, O) merged once at the end
//!   regs -> HBM   o and lse (one split), or the split's f32 o and lse, once
//!   HBM  -> regs  (splits > 1) the last CTA of the row block to finish reads every
//!                 split's o and lse back (from L2) and writes o and lse (`combine.rs`)

use super::block::{Mask, accumulate_pv_at, inv_row_sum, mask_scores, online_softmax, row_lse, scores_at, softcap};
use super::combine::{MergeRow, merge_row};
use super::decode::{AttnSplitParams, INLINE_SEQLENS, SPLIT_D64, SPLIT_D128, SPLIT_D256, SPLIT_ROWS};
use super::tile::load_tile_at;
use crate::device::atomic::{atom_add_acq_rel_u32, fence_gpu};
use crate::device::cp_async::{commit, cp_async_16, cp_async_16_prefetch, wait_group};
use crate::device::ldmatrix::ldmatrix_x4;
use crate::device::math::{exp2, max};
use crate::device::thread::{block_x, block_y, block_z, grid_y, lane, sync_threads, sync_warp, tid, warp};
use crate::device::warp::shfl_xor;
use crate::device::{Bf16, F16, FragA, FragC, Hbm, HbmMut, Sram, TensorElem, unroll};
use crate::layout::swizzle_chunk;

/// Const parameters: element type T; tile head dim D; WARPS (each 16 keys of a BN-key
/// block); STAGES deep K/V pipeline and WAIT = STAGES - 2 (the cp.async groups that may
/// stay in flight when a block is computed); DK = D/16 k-steps of Q K^T, DN = D/8
/// n-tiles of O; PITCH = 2D + 16, the Q rows' pitch; MPITCH the merge's f32 row pitch.
#[inline(always)]
unsafe fn attn_split<
    T: TensorElem,
    const D: u32,
    const WARPS: u32,
    const STAGES: u32,
    const WAIT: u32,
    const DK: usize,
    const DN: usize,
    const PITCH: u32,
    const MPITCH: u32,
>(
    p: &AttnSplitParams,
) {
    const { assert!(DK as u32 * 16 == D && DN as u32 * 8 == D && PITCH == 2 * D + 16 && WAIT + 2 == STAGES) };
    let bn = WARPS * 16;
    let threads = WARPS * 32;
    let (l, w) = (lane(), warp());
    let rows_per_cta = SPLIT_ROWS;

    let split = block_x();
    let r0 = (block_y() * rows_per_cta) as i32;
    // max(1): the host never passes 0; a provably non-zero divisor leaves no trap path.
    let group = p.group.max(1);
    let heads_kv = (p.heads_q / group).max(1);
    let (b, kv_h) = (block_z() / heads_kv, block_z() % heads_kv);
    let hd = p.head_dim;
    let sq = p.seqlen_q as i32;
    let cached = if (b as usize) < INLINE_SEQLENS {
        // Constant indices only: a run-time index would copy the parameters to the stack.
        let mut n = 0;
        unroll::<INLINE_SEQLENS, _>(|i| {
            if i as u32 == b {
                n = p.seqlens_inline[i];
            }
        });
        n
    } else {
        unsafe { Hbm::<u32>::from_addr(p.seqlens).load(b as usize) }
    };
    let len = (cached + p.seqlen_new) as i32;
    let rows = group as i32 * sq;
    let r_last = if r0 + rows_per_cta as i32 > rows { rows - 1 } else { r0 + rows_per_cta as i32 - 1 };
    // Query tokens of this CTA's rows, and the keys any of them sees.
    let (t_lo, t_hi) = ((r0 as u32 / group) as i32, (r_last.max(0) as u32 / group) as i32);
    let mask = Mask { seqlen_k: len, shift: len - sq, left: p.window_left, right: p.window_right };
    let (n_lo, n_hi) = mask.key_range(t_lo, t_hi);
    // Whole key blocks of that range, shared evenly among the splits.
    let nb_first = n_lo / bn as i32;
    let nb_end = if n_hi > n_lo { (n_hi + bn as i32 - 1) / bn as i32 } else { nb_first };
    let per = ((nb_end - nb_first) as u32).div_ceil(p.splits.max(1)) as i32;
    let nb_lo = if nb_first + split as i32 * per < nb_end { nb_first + split as i32 * per } else { nb_end };
    let nb_hi = if nb_lo + per < nb_end { nb_lo + per } else { nb_end };
    let n_blocks = nb_hi - nb_lo;

    // SRAM: Q rows at 0, then K stages, then V stages (SplitTile::smem_bytes). A K / V
    // row is 2D bytes; chunk ch of row r sits at chunk swizzle_chunk(r, ch).
    let s_q = Sram::at(0);
    let row_bytes = 2 * D;
    let s_k = |st: u32| Sram::at(rows_per_cta * PITCH + st * bn * row_bytes);
    let s_v = |st: u32| Sram::at(rows_per_cta * PITCH + (STAGES + st) * bn * row_bytes);
    let kv_at = |r: u32, ch: u32| r * row_bytes + swizzle_chunk(r, ch, D / 8) * 16;

    // Q rows: each its own (token, head) address; rows past the end arrive as zeros.
    let q_hbm = Hbm::<u16>::from_addr(p.q).offset(b as usize * p.q_batch_stride as usize);
    let chunks = D / 8;
    let mut i = 0;
    while i < (rows_per_cta * chunks).div_ceil(threads) {
        let c = tid() + i * threads;
        if c < rows_per_cta * chunks {
            let (r, ch) = (c / chunks, c % chunks);
            let row = r0 + r as i32;
            let ok = row < rows && ch * 8 < hd;
            let (t, g) = (row as u32 / group, row as u32 % group);
            let at = t as usize * p.q_row_stride as usize + ((kv_h * group + g) * hd + ch * 8) as usize;
            let from = if ok { q_hbm.offset(at).ptr() } else { q_hbm.ptr() };
            unsafe { cp_async_16(s_q.byte(r * PITCH + ch * 16), from as *const u8, if ok { 16 } else { 0 }) };
        }
        i += 1;
    }

    // Warp w computes (and loads) keys 16w .. 16w+15 of every block.
    let key0 = w * 16;
    let k_rs = p.k_row_stride as usize;
    let table = Hbm::<u32>::from_addr(p.block_table);
    let (k_hbm, v_hbm) = (Hbm::<u16>::from_addr(p.k), Hbm::<u16>::from_addr(p.v));
    let load_kv = |nb: i32, st: u32| {
        let first = (nb * bn as i32) as u32;
        // Element offset of this warp's first key, kv head kv_h: a page holds whole
        // key blocks, so the warp's 16 keys lie in one page.
        let row0 = if p.block_table != 0 {
            let (ps, warp_first) = (p.page_size.max(1), first + key0);
            let page = unsafe { table.load((b * p.pages_per_seq + warp_first / ps) as usize) };
            page as usize * p.kv_seq_stride as usize + (warp_first % ps) as usize * k_rs
        } else {
            b as usize * p.kv_seq_stride as usize + (first + key0) as usize * k_rs
        } + (kv_h * hd) as usize;
        // This warp's 16 keys only: it alone reads them (no CTA barrier per block).
        let rows_valid = len - first as i32 - key0 as i32;
        // Whole rows read once: the copies ask L2 for whole 128-byte lines, and each
        // line lands, its chunks swizzled, on one line of SRAM.
        let copy = |d, s, n| unsafe { cp_async_16_prefetch(d, s, n) };
        let (sk, sv) = (s_k(st), s_v(st));
        let k_place = |r: u32, ch: u32| sk.byte(kv_at(key0 + r, ch));
        let v_place = |r: u32, ch: u32| sv.byte(kv_at(key0 + r, ch));
        unsafe {
            load_tile_at::<D>(copy, k_place, 16, 32, l, k_hbm.offset(row0), k_rs, rows_valid, hd);
            load_tile_at::<D>(copy, v_place, 16, 32, l, v_hbm.offset(row0), k_rs, rows_valid, hd);
        }
    };

    // Groups 0 .. STAGES-2: Q with the first block, then the next ones (an empty group
    // when there is none, so that group i always holds block nb_lo + i).
    let mut i = 0;
    while i < STAGES - 1 {
        if (i as i32) < n_blocks {
            load_kv(nb_lo + i as i32, i);
        }
        commit();
        i += 1;
    }

    let q_lane = (l % 16) * PITCH + (l / 16) * 16;
    let mut o_acc = [[FragC::zero(); DN]; 1];
    let mut row_max = [[f32::NEG_INFINITY; 2]; 1];
    let mut row_sum = [[0.0f32; 2]; 1];

    // ib: this split's block number; nb: the block's number in the sequence.
    let mut ib = 0i32;
    let mut stage = 0u32;
    while ib < n_blocks {
        let nb = nb_lo + ib;
        // This warp's part of block nb landed, and the warp is past block nb-1, whose
        // stage takes nb+STAGES-1. Each warp reads only the keys it loaded, so a warp
        // barrier suffices, except that the first block waits for every warp's Q rows.
        wait_group::<WAIT>();
        if ib == 0 {
            sync_threads();
        } else {
            sync_warp();
        }
        if ib + (STAGES as i32 - 1) < n_blocks {
            load_kv(nb + STAGES as i32 - 1, if stage == 0 { STAGES - 1 } else { stage - 1 });
        }
        commit();

        let s_q_now = s_q.pinned();
        let (sk, sv) = (s_k(stage), s_v(stage));
        let mut s = scores_at::<T, 1, DK, 2, 1>(
            |_, kk| FragA(unsafe { ldmatrix_x4(s_q_now.byte(q_lane + kk as u32 * 32)) }),
            |key, ch| sk.byte(kv_at(key, ch)),
            key0,
        );
        if p.softcap != 0 {
            softcap(&mut s, p.score_pre);
        }
        let c0 = nb * bn as i32;
        if !mask.covers(t_lo, t_hi, c0, c0 + bn as i32) {
            let row_of = |_: usize, hf: usize| ((r0 as u32 + l / 4 + 8 * hf as u32) / group) as i32;
            mask_scores(&mut s, mask, row_of, c0 + key0 as i32);
        }
        let p_frag = online_softmax::<T, 1, 2, 1, DN>(&mut s, &mut row_max, &mut row_sum, &mut o_acc, p.score_log2);
        accumulate_pv_at::<T, 1, 1, DN>(&mut o_acc, |mt, kk| p_frag[mt][kk], |key, ch| sv.byte(kv_at(key, ch)), key0);

        stage = if stage + 1 == STAGES { 0 } else { stage + 1 };
        ib += 1;
    }
    wait_group::<0>();
    sync_threads();

    // Merge the warps in SRAM, over the drained K/V stages: per warp 16 maxima, 16 sums
    // and its O (16 x D f32, rows MPITCH bytes apart); then 16 (max, sum) of the CTA.
    let s_max = Sram::at(rows_per_cta * PITCH);
    let s_sum = s_max.skip(WARPS * 16 * 4);
    let s_o = s_sum.skip(WARPS * 16 * 4);
    let s_row = s_o.skip(WARPS * 16 * MPITCH);
    let score_log2 = p.score_log2;
    let mut sum = row_sum[0];
    unroll::<2, _>(|hf| {
        sum[hf] += shfl_xor(sum[hf], 1);
        sum[hf] += shfl_xor(sum[hf], 2);
        if l % 4 == 0 {
            let r = l / 4 + 8 * hf as u32;
            unsafe {
                s_max.st_f32((w * 16 + r) * 4, row_max[0][hf]);
                s_sum.st_f32((w * 16 + r) * 4, sum[hf]);
            }
        }
    });
    sync_threads();
    unroll::<2, _>(|hf| {
        let r = l / 4 + 8 * hf as u32;
        let mut m = f32::NEG_INFINITY;
        for v in 0..WARPS {
            m = max(m, unsafe { s_max.ld_f32((v * 16 + r) * 4) });
        }
        // No key seen by any warp: m = -inf; scale by 2^(-inf) = 0 against 0, not NaN.
        let m_use = if m == f32::NEG_INFINITY { 0.0 } else { m };
        let mut total = 0.0f32;
        for v in 0..WARPS {
            let (mv, sv) = unsafe { (s_max.ld_f32((v * 16 + r) * 4), s_sum.ld_f32((v * 16 + r) * 4)) };
            total += sv * exp2((mv - m_use) * score_log2);
        }
        let mine = exp2((row_max[0][hf] - m_use) * score_log2);
        unroll::<DN, _>(|dn| {
            let col = dn as u32 * 8 + (l % 4) * 2;
            let at = (w * 16 + r) * MPITCH + col * 4;
            unsafe {
                s_o.st_f32(at, o_acc[0][dn].0[2 * hf] * mine);
                s_o.st_f32(at + 4, o_acc[0][dn].0[2 * hf + 1] * mine);
            }
        });
        if w == 0 && l % 4 == 0 {
            unsafe {
                s_row.st_f32(r * 8, m_use);
                s_row.st_f32(r * 8 + 4, total);
            }
        }
    });
    sync_threads();

    // Write-out: each thread sums 4 columns of one row over the warps. A row with no
    // visible key: o = 0 and lse = +inf (one split) or -inf (a split's partial: no mass).
    let (batch, heads_q) = (p.batch, p.heads_q);
    let quads = D / 4;
    let mut i = 0;
    while i < (rows_per_cta * quads).div_ceil(threads) {
        let c = tid() + i * threads;
        if c < rows_per_cta * quads {
            let (r, col) = (c / quads, (c % quads) * 4);
            let row = r0 + r as i32;
            if row < rows && col < hd {
                let mut acc = [0.0f32; 4];
                for v in 0..WARPS {
                    let x = unsafe { s_o.ld_v4((v * 16 + r) * MPITCH + col * 4) };
                    unroll::<4, _>(|e| acc[e] += f32::from_bits(x[e]));
                }
                let (m_use, total) = unsafe { (s_row.ld_f32(r * 8), s_row.ld_f32(r * 8 + 4)) };
                let inv = inv_row_sum(total);
                let (t, hq) = (row as u32 / group, kv_h * group + row as u32 % group);
                let lse_row = ((b * heads_q + hq) * p.seqlen_q + t) as usize;
                let lse = row_lse(m_use, total, score_log2);
                if p.splits <= 1 {
                    let at = b as usize * p.q_batch_stride as usize
                        + t as usize * p.q_row_stride as usize
                        + (hq * hd + col) as usize;
                    let o = HbmMut::<u32>::from_addr(p.o);
                    unsafe {
                        o.store(at / 2, T::pack2(acc[0] * inv, acc[1] * inv));
                        o.store(at / 2 + 1, T::pack2(acc[2] * inv, acc[3] * inv));
                    }
                    if col == 0 {
                        let v = if total == 0.0 { f32::INFINITY } else { lse };
                        unsafe { HbmMut::<f32>::from_addr(p.lse).store(lse_row, v) };
                    }
                } else {
                    let part = split as usize * (batch * heads_q * p.seqlen_q) as usize + lse_row;
                    let v = [
                        (acc[0] * inv).to_bits(),
                        (acc[1] * inv).to_bits(),
                        (acc[2] * inv).to_bits(),
                        (acc[3] * inv).to_bits(),
                    ];
                    unsafe { HbmMut::<f32>::from_addr(p.o_part).store_v4(part * hd as usize + col as usize, v) };
                    if col == 0 {
                        let v = if total == 0.0 { f32::NEG_INFINITY } else { lse };
                        unsafe { HbmMut::<f32>::from_addr(p.lse_part).store(part, v) };
                    }
                }
            }
        }
        i += 1;
    }
    if p.splits <= 1 {
        return;
    }

    // The last CTA of this (row block, batch x kv head) to finish merges every split's
    // partial. The barrier orders every thread's partial stores before thread 0's
    // fence, which releases them at GPU scope together (the pattern of a grid-wide
    // barrier); one count per CTA on the row block's counter (acq_rel) tells the last,
    // whose barrier then orders its threads' loads after the acquire. The last puts the
    // counter back to zero for the next launch.
    sync_threads();
    let s_last = Sram::at(0);
    if tid() == 0 {
        fence_gpu();
        let counter = HbmMut::<u32>::from_addr(p.counters).offset((block_z() * grid_y() + block_y()) as usize);
        let last = unsafe { atom_add_acq_rel_u32(counter.ptr(), 1) } + 1 == p.splits;
        if last {
            unsafe { counter.store(0, 0) };
        }
        unsafe { s_last.st_b32(0, last as u32) };
    }
    sync_threads();
    if unsafe { s_last.ld_b32(0) } == 0 {
        return;
    }
    // One warp per row of this CTA.
    let mut r = w;
    while r < rows_per_cta {
        let row = r0 + r as i32;
        if row < rows {
            let (t, hq) = (row as u32 / group, kv_h * group + row as u32 % group);
            let lse_row = ((b * heads_q + hq) * p.seqlen_q + t) as usize;
            let o_row =
                b as usize * p.q_batch_stride as usize + t as usize * p.q_row_stride as usize + (hq * hd) as usize;
            let m = MergeRow {
                o_part: HbmMut::from_addr(p.o_part),
                lse_part: HbmMut::from_addr(p.lse_part),
                o: HbmMut::from_addr(p.o),
                lse: HbmMut::from_addr(p.lse),
                rows: (batch * heads_q * p.seqlen_q) as usize,
                splits: p.splits as usize,
                row: lse_row,
                o_row,
                head_dim: hd as usize,
            };
            unsafe { merge_row::<T>(m) };
        }
        r += WARPS;
    }
}

macro_rules! split_entry {
    ($name:ident, $t:ty, $tile:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: AttnSplitParams) {
            const TL: super::decode::SplitTile = $tile;
            unsafe {
                attn_split::<
                    $t,
                    { TL.d },
                    { TL.warps },
                    { TL.stages },
                    { TL.stages - 2 },
                    { (TL.d / 16) as usize },
                    { (TL.d / 8) as usize },
                    { TL.pitch() },
                    { TL.merge_pitch() },
                >(&p)
            }
        }
    };
}

split_entry!(attn_split_d64_bf16, Bf16, SPLIT_D64);
split_entry!(attn_split_d128_bf16, Bf16, SPLIT_D128);
split_entry!(attn_split_d256_bf16, Bf16, SPLIT_D256);
split_entry!(attn_split_d64_f16, F16, SPLIT_D64);
split_entry!(attn_split_d128_f16, F16, SPLIT_D128);
split_entry!(attn_split_d256_f16, F16, SPLIT_D256);
