//! The conv1d forward kernel. Per warp task (one segment of one row, see mod.rs):
//!   HBM  -> SRAM  x: the step's 32 x VECS body vectors and the 8 inputs before them,
//!                 cp.async, two stages (step s + 1 flies while s computes)
//!   SRAM -> regs  lane l, vector j = l + 32 k: the 16 bytes of j and the 16 before it
//!                 (32 for f32) as 16 f32: the window of the vector's outputs
//!   regs          the reversed weights (8), bias; per output one FMA per tap
//!   regs -> HBM   y, 16-byte stores; the final state (w1 elements) by the row's last task
//! HBM sees x once (plus 16 bytes per 2 KiB step re-read through L2 for the halo) and y
//! once: the floor. Rows that do not start on a 16-byte boundary are walked in the
//! tensor's vectors (mod.rs), so they move by cp.async and 16-byte stores too.
//! SRAM: ConvSmem::new(CONV_FWD_VECS, .., false), 16.5 KiB per CTA.

use super::point::conv_point;
use super::stage::RowSrc;
use super::*;
use crate::device::act::silu;
use crate::device::cp_async::{commit, wait_group};
use crate::device::math::div_rem;
use crate::device::thread::{block_x, grid_x, lane, sync_warp, warp};
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut, Sram, unroll};

const VECS: usize = CONV_FWD_VECS as usize;

/// The reversed weights of channel c (`wr[m] = weight[c, w1 - m]`, 0 past the width) and
/// its bias: shared by the forward and the backward.
#[inline(always)]
pub(super) unsafe fn channel_weights<T: Elem>(p: &ConvParams, c: usize) -> ([f32; 8], f32) {
    let width = p.width as usize;
    let w = Hbm::<T>::from_addr(p.weight).offset(c * width);
    let mut wr = [0.0f32; 8];
    unroll::<8, _>(|m| {
        if m < width {
            wr[m] = unsafe { w.load(width - 1 - m) }.to_f32();
        }
    });
    let bias = if p.bias != 0 { unsafe { Hbm::<T>::from_addr(p.bias).load(c) }.to_f32() } else { 0.0 };
    (wr, bias)
}

/// The 16-float window of the vector in slot j of tensor `which`, stage s: the 8 inputs
/// before it (one 16-bit vector, two f32 ones), then its own.
#[inline(always)]
pub(super) unsafe fn window<T: Elem>(lay: ConvSmem, region: Sram, s: u32, which: u32, j: i32) -> [f32; 16] {
    let hv = 8 / T::LANES;
    let mut win = [0.0f32; 16];
    unroll::<3, _>(|h| {
        if h <= hv {
            // h < hv: the halo vectors, oldest first; h == hv: the vector itself.
            let v = T::unpack_v4(unsafe { region.ld_v4(lay.slot(s, which, j - hv as i32 + h as i32)) });
            unroll::<8, _>(|e| {
                if e < T::LANES && h * T::LANES + e < 16 {
                    win[h * T::LANES + e] = v[e];
                }
            });
        }
    });
    win
}

#[inline(always)]
unsafe fn conv1d_fwd<T: Elem>(p: &ConvParams) {
    let lay = ConvSmem::new(VECS as u32, T::BYTES, false);
    let region = Sram::at(warp() * lay.warp_bytes);
    let ln = lane() as i64;
    let (l, dim, segs) = (p.seqlen as usize, p.dim as usize, p.segments as usize);
    let w1 = p.width as usize - 1;
    let lanes = T::LANES as i64;
    let tasks = p.batch as usize * dim * segs;
    let body = lay.body as i64;
    let mut task = (block_x() * CONV_WARPS + warp()) as usize;
    while task < tasks {
        let (row, seg) = div_rem(task, segs);
        let (wr, bias) = unsafe { channel_weights::<T>(p, div_rem(row, dim).1) };
        let init = if p.initial_state != 0 {
            Hbm::<T>::from_addr(p.initial_state).offset(row * w1)
        } else {
            Hbm::from_addr(0)
        };
        // The row in the tensor's 16-byte vectors: vector gv holds elements
        // gv * lanes - shift .. (shift = 0 when rows are whole vectors).
        let shift = ((row * l) % T::LANES) as i64;
        let nvec = (shift + l as i64 + lanes - 1) / lanes;
        let src = RowSrc { src: Hbm::<T>::from_addr(p.x).offset(row * l), init, seqlen: l, w1, shift, vec_loads: true };
        let y = HbmMut::<T>::from_addr(p.y).offset(row * l);
        let v0 = (seg * CONV_SEG_STEPS as usize) as i64 * body;
        // This row may need one segment fewer than the launch's (a small shift).
        let left = if v0 < nvec { ((nvec - v0) as u64).div_ceil(lay.body as u64) } else { 0 };
        let steps = if left < CONV_SEG_STEPS as u64 { left as u32 } else { CONV_SEG_STEPS };

        // Every lane is done with the previous task's stages.
        sync_warp();
        if steps > 0 {
            unsafe { src.stage_step::<VECS>(lay, region, 0, 0, v0, true, false) };
        }
        commit();
        let mut s = 0;
        while s < steps {
            // Every lane is done reading stage s + 1's previous contents (step s - 1).
            sync_warp();
            if s + 1 < steps {
                unsafe { src.stage_step::<VECS>(lay, region, (s + 1) & 1, 0, v0 + (s as i64 + 1) * body, true, false) };
            }
            commit();
            wait_group::<1>();
            sync_warp();
            let vb = v0 + s as i64 * body;
            unroll::<VECS, _>(|k| {
                let j = k as i64 * 32 + ln;
                let gv = vb + j;
                if gv < nvec {
                    let win = unsafe { window::<T>(lay, region, s & 1, 0, j as i32) };
                    let mut o = [0.0f32; 8];
                    unroll::<8, _>(|e| {
                        if e < T::LANES {
                            o[e] = conv_point(bias, &wr, p.width, &win, 8 + e);
                        }
                    });
                    if p.silu != 0 {
                        unroll::<8, _>(|e| o[e] = silu(o[e]));
                    }
                    // A vector wholly inside the row is one aligned 16-byte store; the
                    // row's first and last (shared with its neighbours) go by element.
                    let t0 = gv * lanes - shift;
                    if t0 >= 0 && t0 + lanes <= l as i64 {
                        unsafe { y.store_v4(t0 as usize, T::pack_v4(&o)) };
                    } else {
                        unroll::<8, _>(|e| {
                            let t = t0 + e as i64;
                            if e < T::LANES && t >= 0 && t < l as i64 {
                                unsafe { y.store(t as usize, T::from_f32(o[e])) };
                            }
                        });
                    }
                }
            });
            s += 1;
        }
        // The final state: xpad[l .. l + w1], from x or (short rows) the initial state.
        if seg == segs - 1 && ln == 0 && w1 > 0 {
            let fin = HbmMut::<T>::from_addr(p.final_state).offset(row * w1);
            let mut j = 0;
            while j < w1 {
                let i = l + j;
                let v = if i >= w1 {
                    unsafe { src.src.load(i - w1) }
                } else if !init.is_null() {
                    unsafe { init.load(i) }
                } else {
                    T::from_f32(0.0)
                };
                unsafe { fin.store(j, v) };
                j += 1;
            }
        }
        task += (grid_x() * CONV_WARPS) as usize;
    }
    wait_group::<0>();
}

macro_rules! conv_fwd_entry {
    ($name:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: ConvParams) {
            unsafe { conv1d_fwd::<$t>(&p) }
        }
    };
}

conv_fwd_entry!(conv1d_fwd_f32, f32);
conv_fwd_entry!(conv1d_fwd_bf16, Bf16);
conv_fwd_entry!(conv1d_fwd_f16, F16);
