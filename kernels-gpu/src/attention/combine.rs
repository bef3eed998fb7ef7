//! The merge of the split-KV partials, run inside `attn_split_*` by the last CTA of each
//! (row block, batch x kv head) to finish (see `split_kv.rs`): no second launch. One
//! warp per query row; its lanes hold the row's split lse values, then read 4 columns
//! each of the f32 partial o per split (16-byte loads, 16 splits in flight), and write o
//! (rounded) and lse once.
//!   lse = log sum_s exp(lse_s),   o = sum_s exp(lse_s - lse) o_s
//! A row no split saw a key for (every lse_s = -inf): o = 0 and lse = +inf.
//! The partials were written by other CTAs of the same launch: the loads are GPU-scope
//! (`ld.relaxed.gpu`, past the SM's L1), after the acquire of the split counter.

use crate::device::math::{exp2, log2, max};
use crate::device::thread::lane;
use crate::device::warp::{shfl_idx, warp_max, warp_sum};
use crate::device::{HbmMut, TensorElem, unroll};

const LN2: f32 = core::f32::consts::LN_2;
const LOG2E: f32 = core::f32::consts::LOG2_E;

/// Where one query row's partials and results live. `row` indexes lse `[batch, heads_q,
/// seqlen_q]`; the partials are f32 `[splits, rows, head_dim]` and `[splits, rows]`;
/// the row's o starts at element `o_row` of o.
#[derive(Clone, Copy)]
pub struct MergeRow {
    pub o_part: HbmMut<f32>,
    pub lse_part: HbmMut<f32>,
    pub o: HbmMut<u32>,
    pub lse: HbmMut<f32>,
    pub rows: usize,
    pub splits: usize,
    pub row: usize,
    pub o_row: usize,
    pub head_dim: usize,
}

/// Splits whose 16-byte partial loads are in flight together.
const IN_FLIGHT: usize = 16;

/// Merges one row's split partials; every lane of the warp calls it with the same row.
#[inline(always)]
pub unsafe fn merge_row<T: TensorElem>(m: MergeRow) {
    let l = lane();
    let (rows, splits, row, hd) = (m.rows, m.splits, m.row, m.head_dim);

    // Lane i holds the lse of splits i, i + 32, i + 64, i + 96 (at most 128 splits), so
    // the loop over splits below reads no lse from memory.
    let mut mine = [f32::NEG_INFINITY; 4];
    unroll::<4, _>(|j| {
        let s = l as usize + 32 * j;
        if s < splits {
            mine[j] = f32::from_bits(unsafe { m.lse_part.load_b32_gpu(s * rows + row) });
        }
    });
    // The largest split lse (max.f32 skips NaN; a NaN lse_s still reaches the sum).
    let mx = warp_max(max(max(mine[0], mine[1]), max(mine[2], mine[3])));
    let m_use = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
    let mut sum = 0.0f32;
    unroll::<4, _>(|j| sum += exp2((mine[j] - m_use) * LOG2E));
    let sum = warp_sum(sum);
    let lse = m_use + log2(sum) * LN2;
    // Each split's weight exp(lse_s - lse): 0 for a split without keys, NaN when anything is.
    let mut wgt = [0.0f32; 4];
    unroll::<4, _>(|j| wgt[j] = exp2((mine[j] - lse) * LOG2E));

    // The column loop is uniform over the warp (the shuffles below need every lane);
    // lanes past the head dim skip their loads and stores.
    let mut c0 = 0;
    while c0 < hd {
        let col = c0 + l as usize * 4;
        let live = col < hd;
        let mut acc = [0.0f32; 4];
        if sum > 0.0 || sum != sum {
            // IN_FLIGHT splits' loads issued before their sums: the loop is bound by
            // memory latency, not by bandwidth.
            let mut s0 = 0;
            while s0 < splits {
                let mut x = [[0u32; 4]; IN_FLIGHT];
                unroll::<IN_FLIGHT, _>(|i| {
                    if live && s0 + i < splits {
                        x[i] = unsafe { m.o_part.load_v4_gpu(((s0 + i) * rows + row) * hd + col) };
                    }
                });
                unroll::<IN_FLIGHT, _>(|i| {
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
                s0 += IN_FLIGHT;
            }
        }
        if live {
            unsafe {
                m.o.store((m.o_row + col) / 2, T::pack2(acc[0], acc[1]));
                m.o.store((m.o_row + col) / 2 + 1, T::pack2(acc[2], acc[3]));
            }
        }
        c0 += 128;
    }
    if l == 0 {
        let v = if sum == 0.0 { f32::INFINITY } else { lse };
        unsafe { m.lse.store(row, v) };
    }
}
