//! HBM -> SRAM staging of one step of a row, shared by the forward and the backward.
//! A staged tensor is `[halo][body][tail]` 16-byte vector slots (ConvSmem::slot); slot j
//! holds the row's vector `vbase + j`, that is elements `(vbase + j) * lanes - shift ..`
//! (shift: see mod.rs). With `vec_loads`, a vector wholly inside the row is one cp.async
//! and one past the row's end a zero fill; every other vector (before the row's start,
//! straddling its ends, or all of them without `vec_loads`) goes element by element, with
//! the initial state (or zeros) before element 0 and zeros past the end.

use super::*;
use crate::device::cp_async::cp_async_16;
use crate::device::thread::lane;
use crate::device::{Elem, Hbm, Sram, unroll};

/// One row of a staged tensor: its first element, the initial state's row (null when
/// absent or for dy), the row length, w1 = width - 1, the elements of vector 0 before the
/// row's start (`shift`), and whether vectors inside the row may move as 16 bytes (the
/// row start minus `shift` elements is 16-byte aligned).
#[derive(Clone, Copy)]
pub(super) struct RowSrc<T> {
    pub src: Hbm<T>,
    pub init: Hbm<T>,
    pub seqlen: usize,
    pub w1: usize,
    pub shift: i64,
    pub vec_loads: bool,
}

impl<T: Elem> RowSrc<T> {
    /// Stages the row's vector `gv` (any i64: before the row, inside, past it) at SRAM
    /// address `dst`.
    #[inline(always)]
    pub unsafe fn stage_vec(self, dst: u32, gv: i64) {
        let lanes = T::LANES as i64;
        let t0 = gv * lanes - self.shift;
        let (inside, past) = (t0 >= 0 && t0 + lanes <= self.seqlen as i64, t0 >= self.seqlen as i64);
        if self.vec_loads && (inside || past) {
            // Past the end: 0 bytes copied from a valid address, 16 zero-filled.
            let (ptr, bytes) = if inside { (self.src.offset(t0 as usize).ptr(), 16) } else { (self.src.ptr(), 0) };
            unsafe { cp_async_16(dst, ptr as *const u8, bytes) };
        } else {
            unroll::<8, _>(|e| {
                if e < T::LANES {
                    let t = t0 + e as i64;
                    let v = if t >= 0 {
                        if (t as usize) < self.seqlen { unsafe { self.src.load(t as usize) } } else { T::from_f32(0.0) }
                    } else if !self.init.is_null() && t >= -(self.w1 as i64) {
                        unsafe { self.init.load((self.w1 as i64 + t) as usize) }
                    } else {
                        T::from_f32(0.0)
                    };
                    unsafe { T::st_sram(Sram { addr: dst }, e as u32 * T::BYTES, v) };
                }
            });
        }
    }

    /// This lane's share of staging one step into tensor `which` of stage `s`: body
    /// vectors lane, lane + 32, ... (`VECS` of them), and, when asked, the halo (the
    /// 8 / lanes vectors before the body) and the tail (as many after it). Vectors of the
    /// row are `vbase + j` for slot j.
    #[inline(always)]
    pub unsafe fn stage_step<const VECS: usize>(
        self,
        lay: ConvSmem,
        region: Sram,
        s: u32,
        which: u32,
        vbase: i64,
        halo: bool,
        tail: bool,
    ) {
        let ln = lane() as i32;
        let hv = (8 / T::LANES) as i32;
        unroll::<VECS, _>(|k| {
            let j = k as i32 * 32 + ln;
            unsafe { self.stage_vec(region.byte(lay.slot(s, which, j)), vbase + j as i64) };
        });
        if halo && ln < hv {
            let j = -1 - ln;
            unsafe { self.stage_vec(region.byte(lay.slot(s, which, j)), vbase + j as i64) };
        }
        if tail && ln < hv {
            let j = lay.body as i32 + ln;
            unsafe { self.stage_vec(region.byte(lay.slot(s, which, j)), vbase + j as i64) };
        }
    }
}
