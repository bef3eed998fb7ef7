//! `conv1d_update_*`: one thread per (batch, channel). It reads the channel's w1 state
//! entries and the new input into the window the prefill kernel uses, computes the output
//! with the prefill's `conv_point` (so one step is bitwise the prefill's output at that
//! step), and writes the state shifted left by one with x appended. A warp's threads hold
//! adjacent channels, whose state rows are adjacent in HBM.

use super::*;
use crate::conv::point::conv_point;
use crate::device::act::silu;
use crate::device::math::div_rem;
use crate::device::thread::{block_x, tid};
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut, unroll};

#[inline(always)]
unsafe fn conv1d_update<T: Elem>(p: &ConvUpdateParams) {
    let row = (block_x() * DECODE_THREADS + tid()) as usize;
    let dim = p.dim as usize;
    if row >= p.batch as usize * dim {
        return;
    }
    let c = div_rem(row, dim).1;
    let width = p.width as usize;
    let w1 = width - 1;
    let w = Hbm::<T>::from_addr(p.weight).offset(c * width);
    let state = HbmMut::<T>::from_addr(p.conv_state).offset(row * w1);
    let xv = unsafe { Hbm::<T>::from_addr(p.x).load(row) };
    // win[8] = x (the newest input), win[8 - m] = the input m steps back.
    let mut win = [0.0f32; 9];
    let mut raw = [T::from_f32(0.0); 8];
    let mut wr = [0.0f32; 8];
    unroll::<8, _>(|m| {
        if m < width {
            wr[m] = unsafe { w.load(w1 - m) }.to_f32();
        }
        if m >= 1 && m <= w1 {
            raw[m] = unsafe { state.load(w1 - m) };
            win[8 - m] = raw[m].to_f32();
        }
    });
    win[8] = xv.to_f32();
    let bias = if p.bias != 0 { unsafe { Hbm::<T>::from_addr(p.bias).load(c) }.to_f32() } else { 0.0 };
    let mut y = conv_point(bias, &wr, p.width, &win, 8);
    if p.silu != 0 {
        y = silu(y);
    }
    unsafe { HbmMut::<T>::from_addr(p.y).store(row, T::from_f32(y)) };
    // Shift: state[j] = state[j + 1] (the input w1 - 1 - j steps back), state[w1 - 1] = x.
    unroll::<8, _>(|m| {
        if m >= 1 && m < w1 {
            unsafe { state.store(w1 - 1 - m, raw[m]) };
        }
    });
    if w1 > 0 {
        unsafe { state.store(w1 - 1, xv) };
    }
}

macro_rules! conv_update_entry {
    ($name:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: ConvUpdateParams) {
            unsafe { conv1d_update::<$t>(&p) }
        }
    };
}

conv_update_entry!(conv1d_update_f32, f32);
conv_update_entry!(conv1d_update_bf16, Bf16);
conv_update_entry!(conv1d_update_f16, F16);
