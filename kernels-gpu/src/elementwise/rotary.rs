//! `rotary_*`: one thread per output element (row, feature j), grid-stride. Its partner
//! feature (the other half of its pair) is read by the neighbouring thread too, so HBM
//! sees x once through L1; cos and sin rows are shared by the heads and batch rows of a
//! position and stay in L2.

use super::*;
use crate::device::math::{div_rem, fma};
use crate::device::thread::{block_x, grid_x, tid};
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut};

/// Feature j of the row whose element i it is, rotated to position `pos`: x_j cos +
/// sign x_partner sin, the CPU's order (one product rounded, then an FMA). Features at or
/// past `rot` are returned as they are. Shared with the KV-cache append
/// (`attention::kv_append`).
#[inline(always)]
pub(crate) unsafe fn rotated<T: Elem>(
    x: Hbm<T>,
    i: usize,
    j: usize,
    rot: usize,
    interleaved: bool,
    (cos, sin): (Hbm<f32>, Hbm<f32>),
    pos: usize,
) -> f32 {
    let xj = unsafe { x.load(i) }.to_f32();
    if j >= rot {
        return xj;
    }
    let half = rot / 2;
    // (pair index, partner element, sign of the partner's term)
    let (pair, partner, sign) = if interleaved {
        if j % 2 == 0 { (j / 2, i + 1, -1.0f32) } else { (j / 2, i - 1, 1.0) }
    } else if j < half {
        (j, i + half, -1.0)
    } else {
        (j - half, i - half, 1.0)
    };
    let at = pos * half + pair;
    let (c, s) = unsafe { (cos.load(at), sin.load(at)) };
    let xp = unsafe { x.load(partner) }.to_f32();
    fma(sign * xp, s, xj * c)
}

#[inline(always)]
unsafe fn rotary<T: Elem>(p: &RotaryParams) {
    let hd = p.head_dim as usize;
    let total = p.rows as usize * hd;
    let (x, y) = (Hbm::<T>::from_addr(p.x), HbmMut::<T>::from_addr(p.y));
    let tables = (Hbm::<f32>::from_addr(p.cos), Hbm::<f32>::from_addr(p.sin));
    let stride = grid_x() as usize * EW_THREADS as usize;
    let mut i = block_x() as usize * EW_THREADS as usize + tid() as usize;
    while i < total {
        let (row, j) = div_rem(i, hd);
        let t = div_rem(div_rem(row, p.heads as usize).0, p.seqlen as usize).1;
        let pos = p.position_offset as usize + t;
        let out = unsafe { rotated(x, i, j, p.rot_dim as usize, p.interleaved != 0, tables, pos) };
        unsafe { y.store(i, T::from_f32(out)) };
        i += stride;
    }
}

macro_rules! rotary_entry {
    ($name:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: RotaryParams) {
            unsafe { rotary::<$t>(&p) }
        }
    };
}

rotary_entry!(rotary_f32, f32);
rotary_entry!(rotary_bf16, Bf16);
rotary_entry!(rotary_f16, F16);
