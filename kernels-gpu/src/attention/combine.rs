//! `attn_combine_*`: merges the split-KV kernel's per-split partials. One warp per query
//! row (b, h, t); its lanes read the row's split lse values, then 4 columns each of the
//! f32 partial o per split (16-byte loads), and write o (rounded) and lse once.
//!   lse = log sum_s exp(lse_s),   o = sum_s exp(lse_s - lse) o_s
//! A row no split saw a key for (every lse_s = -inf): o = 0 and lse = +inf.

use super::decode::{AttnCombineParams, COMBINE_THREADS};
use crate::device::math::{exp2, log2, max};
use crate::device::thread::{block_x, lane, warp};
use crate::device::warp::{shfl_idx, warp_max, warp_sum};
use crate::device::{Bf16, F16, Hbm, HbmMut, TensorElem, unroll};

const LN2: f32 = core::f32::consts::LN_2;
const LOG2E: f32 = core::f32::consts::LOG2_E;

#[inline(always)]
unsafe fn attn_combine<T: TensorElem>(p: &AttnCombineParams) {
    let row = block_x() * (COMBINE_THREADS / 32) + warp();
    if row >= p.rows {
        return;
    }
    let l = lane();
    let (rows, splits) = (p.rows as usize, p.splits as usize);
    let lse_part = Hbm::<f32>::from_addr(p.lse_part);
    let lse_of = |s: usize| unsafe { lse_part.load(s * rows + row as usize) };

    // Lane i holds the lse of splits i, i + 32, i + 64, i + 96 (at most 128 splits), so
    // the loop over splits below reads no lse from memory.
    let mut mine = [f32::NEG_INFINITY; 4];
    unroll::<4, _>(|j| {
        let s = l as usize + 32 * j;
        if s < splits {
            mine[j] = lse_of(s);
        }
    });
    // The largest split lse (max.f32 skips NaN; a NaN lse_s still reaches the sum).
    let m = warp_max(max(max(mine[0], mine[1]), max(mine[2], mine[3])));
    let m_use = if m == f32::NEG_INFINITY { 0.0 } else { m };
    let mut sum = 0.0f32;
    unroll::<4, _>(|j| sum += exp2((mine[j] - m_use) * LOG2E));
    let sum = warp_sum(sum);
    let lse = m_use + log2(sum) * LN2;
    // Each split's weight exp(lse_s - lse): 0 for a split without keys, NaN when anything is.
    let mut wgt = [0.0f32; 4];
    unroll::<4, _>(|j| wgt[j] = exp2((mine[j] - lse) * LOG2E));

    // (b, h, t) of the row, for o's [batch, seqlen_q, heads_q, head_dim] layout.
    let (sq, hq) = (p.seqlen_q.max(1), p.heads_q.max(1));
    let (t, bh) = (row % sq, row / sq);
    let (h, b) = (bh % hq, bh / hq);
    let o_row =
        b as usize * p.q_batch_stride as usize + t as usize * p.q_row_stride as usize + (h * p.head_dim) as usize;
    let o_part = Hbm::<f32>::from_addr(p.o_part);
    let o = HbmMut::<u32>::from_addr(p.o);
    let hd = p.head_dim as usize;
    // The column loop is uniform over the warp (the shuffles below need every lane);
    // lanes past the head dim skip their loads and stores.
    let mut c0 = 0;
    while c0 < hd {
        let col = c0 + l as usize * 4;
        let live = col < hd;
        let mut acc = [0.0f32; 4];
        if sum > 0.0 || sum != sum {
            // 8 splits' 16-byte loads in flight before their sums: the loop is bound by
            // memory latency, not by bandwidth.
            let mut s0 = 0;
            while s0 < splits {
                let mut x = [[0u32; 4]; 8];
                unroll::<8, _>(|i| {
                    if live && s0 + i < splits {
                        x[i] = unsafe { o_part.load_v4(((s0 + i) * rows + row as usize) * hd + col) };
                    }
                });
                unroll::<8, _>(|i| {
                    let s = s0 + i;
                    // Split s's weight lives in lane s % 32, slot s / 32 (every lane asks).
                    let slot = s / 32;
                    let held = if slot == 0 {
                        wgt[0]
                    } else if slot == 1 {
                        wgt[1]
                    } else if slot == 2 {
                        wgt[2]
                    } else {
                        wgt[3]
                    };
                    let w = shfl_idx(held, (s % 32) as u32);
                    if s < splits {
                        unroll::<4, _>(|e| acc[e] += w * f32::from_bits(x[i][e]));
                    }
                });
                s0 += 8;
            }
        }
        if live {
            unsafe {
                o.store((o_row + col) / 2, T::pack2(acc[0], acc[1]));
                o.store((o_row + col) / 2 + 1, T::pack2(acc[2], acc[3]));
            }
        }
        c0 += 128;
    }
    if l == 0 {
        let v = if sum == 0.0 { f32::INFINITY } else { lse };
        unsafe { HbmMut::<f32>::from_addr(p.lse).store(row as usize, v) };
    }
}

macro_rules! combine_entry {
    ($name:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: AttnCombineParams) {
            unsafe { attn_combine::<$t>(&p) }
        }
    };
}

combine_entry!(attn_combine_bf16, Bf16);
combine_entry!(attn_combine_f16, F16);
