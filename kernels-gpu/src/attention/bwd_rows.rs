//! The backward's two per-row passes, one warp per query row (b, h, i), each lane 8
//! columns (head_dim <= 256 = 32 lanes x 8), 16-byte loads and stores:
//!
//! - `attn_bwd_pre_*` (before the main kernel): D = rowsum(dO * O) in f32, and zeros
//!   of the row in every dQ accumulator.
//! - `attn_bwd_dq_*` (after it): dq = scale * sum over the accumulators, in split order
//!   (so the deterministic mode's result does not depend on timing), rounded to T.

use super::backward::{AttnBwdRowParams, BWD_ROW_THREADS};
use crate::device::math::fma;
use crate::device::thread::{block_x, lane, warp};
use crate::device::warp::warp_sum;
use crate::device::{Bf16, F16, Hbm, HbmMut, TensorElem};

/// (row index in the [batch, heads_q, seqlen_q] order of lse and D, element offset of
/// the row in q's layout), or None past the last row.
#[inline(always)]
fn row_of(p: &AttnBwdRowParams) -> Option<(usize, usize)> {
    let row = block_x() * (BWD_ROW_THREADS / 32) + warp();
    if row >= p.rows {
        return None;
    }
    let (sq, hq) = (p.seqlen_q.max(1), p.heads_q.max(1));
    let (i, bh) = (row % sq, row / sq);
    let (h, b) = (bh % hq, bh / hq);
    let at = b as usize * p.q_batch_stride as usize + i as usize * p.q_row_stride as usize + (h * p.head_dim) as usize;
    Some((row as usize, at))
}

#[inline(always)]
unsafe fn attn_bwd_pre<T: TensorElem>(p: &AttnBwdRowParams) {
    let Some((row, at)) = row_of(p) else { return };
    let col = lane() as usize * 8;
    let hd = p.head_dim as usize;
    let mut dot = 0.0f32;
    if col < hd {
        let o = T::unpack_v4(unsafe { Hbm::<u16>::from_addr(p.o).load_v4(at + col) });
        let d_o = T::unpack_v4(unsafe { Hbm::<u16>::from_addr(p.dout).load_v4(at + col) });
        let mut e = 0;
        while e < 8 {
            dot = fma(o[e], d_o[e], dot);
            e += 1;
        }
        let acc = HbmMut::<f32>::from_addr(p.dq_acc);
        let mut s = 0;
        while s < p.splits as usize {
            let base = s * p.dq_split_stride as usize + row * hd + col;
            unsafe {
                acc.store_v4(base, [0; 4]);
                acc.store_v4(base + 4, [0; 4]);
            }
            s += 1;
        }
    }
    let dot = warp_sum(dot);
    if lane() == 0 {
        unsafe { HbmMut::<f32>::from_addr(p.delta).store(row, dot) };
    }
}

#[inline(always)]
unsafe fn attn_bwd_dq<T: TensorElem>(p: &AttnBwdRowParams) {
    let Some((row, at)) = row_of(p) else { return };
    let col = lane() as usize * 8;
    let hd = p.head_dim as usize;
    if col >= hd {
        return;
    }
    let acc = Hbm::<f32>::from_addr(p.dq_acc);
    let mut sum = [0.0f32; 8];
    let mut s = 0;
    while s < p.splits as usize {
        let base = s * p.dq_split_stride as usize + row * hd + col;
        let (lo, hi) = unsafe { (acc.load_v4(base), acc.load_v4(base + 4)) };
        let mut e = 0;
        while e < 4 {
            sum[e] += f32::from_bits(lo[e]);
            sum[e + 4] += f32::from_bits(hi[e]);
            e += 1;
        }
        s += 1;
    }
    let mut e = 0;
    while e < 8 {
        sum[e] *= p.scale;
        e += 1;
    }
    unsafe { HbmMut::<u16>::from_addr(p.dq).store_v4(at + col, T::pack_v4(&sum)) };
}

macro_rules! row_entries {
    ($pre:ident, $dq:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $pre(p: AttnBwdRowParams) {
            unsafe { attn_bwd_pre::<$t>(&p) }
        }
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $dq(p: AttnBwdRowParams) {
            unsafe { attn_bwd_dq::<$t>(&p) }
        }
    };
}

row_entries!(attn_bwd_pre_bf16, attn_bwd_dq_bf16, Bf16);
row_entries!(attn_bwd_pre_f16, attn_bwd_dq_f16, F16);
