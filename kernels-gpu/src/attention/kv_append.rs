//! `kv_append_*`: the new tokens' K (rotated to their positions when rot_dim > 0) and V
//! written into the KV cache, contiguous or paged, and q rotated to its positions. One
//! thread per element, grid-stride over [k_new | v_new | q]; a rotated feature reads its
//! pair partner too (the neighbouring thread's element, from L1).

use super::decode::{APPEND_THREADS, KvAppendParams};
use crate::device::math::div_rem;
use crate::device::thread::{block_x, grid_x, tid};
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut};
use crate::elementwise::rotary::rotated;

#[inline(always)]
unsafe fn kv_append<T: Elem>(p: &KvAppendParams) {
    let hd = p.head_dim as usize;
    let (new, sq) = (p.seqlen_new as usize, p.seqlen_q as usize);
    let (heads_kv, heads_q) = (p.heads_kv.max(1) as usize, p.heads_q.max(1) as usize);
    let n_kv = p.batch as usize * new * heads_kv * hd;
    let n_q = if p.q_out != 0 { p.batch as usize * sq * heads_q * hd } else { 0 };
    let tables = (Hbm::<f32>::from_addr(p.cos), Hbm::<f32>::from_addr(p.sin));
    let rot = p.rot_dim as usize;
    let interleaved = p.interleaved != 0;
    let seqlens = Hbm::<u32>::from_addr(p.seqlens);
    let table = Hbm::<u32>::from_addr(p.block_table);
    let k_rs = heads_kv * hd;

    let stride = grid_x() as usize * APPEND_THREADS as usize;
    let mut i = block_x() as usize * APPEND_THREADS as usize + tid() as usize;
    while i < 2 * n_kv + n_q {
        if i < 2 * n_kv {
            // K (first half) or V: element e of [batch, new, heads_kv, hd].
            let is_v = i >= n_kv;
            let e = if is_v { i - n_kv } else { i };
            let (row, j) = div_rem(e, hd);
            let (bt, h) = div_rem(row, heads_kv);
            let (b, t) = div_rem(bt, new.max(1));
            let pos = unsafe { seqlens.load(b) } as usize + t;
            let at = if p.block_table != 0 {
                let (pi, off) = div_rem(pos, p.page_size.max(1) as usize);
                let page = unsafe { table.load(b * p.pages_per_seq as usize + pi) } as usize;
                page * p.kv_seq_stride as usize + off * k_rs
            } else {
                b * p.kv_seq_stride as usize + pos * k_rs
            } + h * hd
                + j;
            if is_v {
                let x = unsafe { Hbm::<T>::from_addr(p.v_new).load(e) };
                unsafe { HbmMut::<T>::from_addr(p.v_cache).store(at, x) };
            } else {
                let x = unsafe { rotated(Hbm::<T>::from_addr(p.k_new), e, j, rot, interleaved, tables, pos) };
                unsafe { HbmMut::<T>::from_addr(p.k_cache).store(at, T::from_f32(x)) };
            }
        } else {
            // q: element e of [batch, seqlen_q, heads_q, hd], token t at the bottom-right
            // aligned position seqlens[b] + new - seqlen_q + t.
            let e = i - 2 * n_kv;
            let (row, j) = div_rem(e, hd);
            let (b, t) = div_rem(div_rem(row, heads_q).0, sq.max(1));
            let pos = (unsafe { seqlens.load(b) } as usize + new + t).wrapping_sub(sq);
            let x = unsafe { rotated(Hbm::<T>::from_addr(p.q), e, j, rot, interleaved, tables, pos) };
            unsafe { HbmMut::<T>::from_addr(p.q_out).store(e, T::from_f32(x)) };
        }
        i += stride;
    }
}

macro_rules! append_entry {
    ($name:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: KvAppendParams) {
            unsafe { kv_append::<$t>(&p) }
        }
    };
}

append_entry!(kv_append_bf16, Bf16);
append_entry!(kv_append_f16, F16);
