//! The conv1d backward kernels. With dpre[t] = dy[t] * silu'(pre[t]) (or dy[t]):
//!   dx[s]      = sum_{m = 0..=w1} weight[w1 - m] dpre[s + m]  (+ dfinal[s + w1 - L] for
//!                the last w1 steps: they are the final state)
//!   dinit[j]   = sum_{k <= j} weight[k] dpre[j - k]  (+ dfinal[j - L] when L < w1)
//!   dweight[k] = sum_{b, t} dpre[t] xpad[t + k],   dbias = sum_{b, t} dpre[t]
//!
//! `conv1d_bwd_*`, per warp task (one segment of one row, as the forward), per step:
//!   HBM  -> SRAM  x (halo: the 8 inputs before the body; tail: the 8 after) and dy
//!                 (body and tail), cp.async, two stages
//!   phase A       lane l, vectors l + 32 k and the tail: pre recomputed from the x
//!                 window (silu only), dpre -> SRAM (f32); the lane's own vectors add
//!                 dpre * xpad into its dweight / dbias registers
//!   phase B       dx of the lane's vectors from 16 dpre values in SRAM -> HBM; the
//!                 row's first task also writes dinit
//!   task end      the warp sums its dweight / dbias registers (butterfly: fixed order)
//!                 into one partial record, f32 `[dim, batch * segments, 9]`
//! `conv1d_bwd_reduce_*`: one warp per channel adds its records in a fixed order and
//! rounds dweight and dbias to T. Every sum has an order that depends only on the
//! problem: the results are bitwise reproducible (no atomics).

use super::fwd::{channel_weights, window};
use super::point::conv_point;
use super::stage::RowSrc;
use super::*;
use crate::device::act::silu_grad;
use crate::device::cp_async::{commit, wait_group};
use crate::device::math::{div_rem, fma};
use crate::device::thread::{block_x, grid_x, lane, sync_warp, warp};
use crate::device::warp::warp_sum;
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut, Sram, unroll};

const VECS: usize = CONV_BWD_VECS as usize;

/// Stages one step of x (with halo and tail) and dy (with tail) into stage `s`.
#[inline(always)]
unsafe fn stage<T: Elem>(xs: RowSrc<T>, dys: RowSrc<T>, lay: ConvSmem, region: Sram, s: u32, vbase: i64) {
    unsafe {
        xs.stage_step::<VECS>(lay, region, s, 0, vbase, true, true);
        dys.stage_step::<VECS>(lay, region, s, 1, vbase, false, true);
    }
}

/// dpre of the vector in slot j (stage st, the step's first vector vb) into g; for a
/// body vector (`owned`), its terms of dweight (reversed: `dwr[m]` is tap w1 - m) and
/// dbias.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn dpre_item<T: Elem>(
    p: &ConvParams,
    lay: ConvSmem,
    region: Sram,
    g: Sram,
    st: u32,
    vb: i64,
    j: i64,
    owned: bool,
    wr: &[f32; 8],
    bias: f32,
    dwr: &mut [f32; 8],
    db: &mut f32,
) {
    let lanes = T::LANES;
    let w1 = p.width as usize - 1;
    let l = p.seqlen as usize;
    let win = unsafe { window::<T>(lay, region, st, 0, j as i32) };
    let dyv = T::unpack_v4(unsafe { region.ld_v4(lay.slot(st, 1, j as i32)) });
    let t0 = ((vb + j) * lanes as i64) as usize;
    let mut d = [0.0f32; 8];
    unroll::<8, _>(|e| {
        if e < lanes {
            d[e] = dyv[e];
            if p.silu != 0 {
                d[e] *= silu_grad(conv_point(bias, wr, p.width, &win, 8 + e));
            }
            if t0 + e >= l {
                d[e] = 0.0;
            }
        }
    });
    if owned {
        unroll::<8, _>(|e| {
            if e < lanes {
                *db += d[e];
                unroll::<8, _>(|m| {
                    if m <= w1 {
                        dwr[m] = fma(d[e], win[8 + e - m], dwr[m]);
                    }
                });
            }
        });
    }
    let at = j as u32 * lanes as u32 * 4;
    unroll::<2, _>(|h| {
        if h * 4 < lanes {
            let v = [d[4 * h].to_bits(), d[4 * h + 1].to_bits(), d[4 * h + 2].to_bits(), d[4 * h + 3].to_bits()];
            unsafe { g.st_v4(at + 16 * h as u32, v) };
        }
    });
}

#[inline(always)]
unsafe fn conv1d_bwd<T: Elem>(p: &ConvParams) {
    let lay = ConvSmem::new(VECS as u32, T::BYTES, true);
    let region = Sram::at(warp() * lay.warp_bytes);
    let g = Sram { addr: region.byte(lay.g) };
    let ln = lane() as i64;
    let lanes = T::LANES;
    let (l, dim, segs) = (p.seqlen as usize, p.dim as usize, p.segments as usize);
    let width = p.width;
    let w1 = width as usize - 1;
    let nvec = conv_row_vecs(p.seqlen, T::BYTES) as i64;
    let aligned = (l * T::BYTES as usize) % 16 == 0;
    let tasks = p.batch as usize * dim * segs;
    let body = lay.body as i64;
    let hv = (8 / lanes) as i64;
    let mut task = (block_x() * CONV_WARPS + warp()) as usize;
    while task < tasks {
        let (row, seg) = div_rem(task, segs);
        let c = div_rem(row, dim).1;
        let (wr, bias) = unsafe { channel_weights::<T>(p, c) };
        let init = if p.initial_state != 0 {
            Hbm::<T>::from_addr(p.initial_state).offset(row * w1)
        } else {
            Hbm::from_addr(0)
        };
        let xs =
            RowSrc { src: Hbm::<T>::from_addr(p.x).offset(row * l), init, seqlen: l, w1, shift: 0, vec_loads: aligned };
        let dys = RowSrc { src: Hbm::<T>::from_addr(p.dy).offset(row * l), init: Hbm::from_addr(0), ..xs };
        let dx = HbmMut::<T>::from_addr(p.dx).offset(row * l);
        let dfin =
            if p.dfinal_state != 0 { Hbm::<T>::from_addr(p.dfinal_state).offset(row * w1) } else { Hbm::from_addr(0) };
        let v0 = (seg * CONV_SEG_STEPS as usize) as i64 * body;
        let left = ((nvec - v0) as u64).div_ceil(lay.body as u64);
        let steps = if left < CONV_SEG_STEPS as u64 { left as u32 } else { CONV_SEG_STEPS };
        let mut dwr = [0.0f32; 8];
        let mut db = 0.0f32;

        sync_warp();
        unsafe { stage(xs, dys, lay, region, 0, v0) };
        commit();
        let mut s = 0;
        while s < steps {
            sync_warp();
            if s + 1 < steps {
                unsafe { stage(xs, dys, lay, region, (s + 1) & 1, v0 + (s as i64 + 1) * body) };
            }
            commit();
            wait_group::<1>();
            sync_warp();
            let st = s & 1;
            let vb = v0 + s as i64 * body;

            // Phase A: dpre of the body vectors and of the tail (lanes < hv), into g;
            // the body's terms of dweight and dbias.
            // A rolled loop: the item is large, and a closure per item was left out of line.
            let mut k = 0;
            while k < VECS as i64 {
                unsafe { dpre_item::<T>(p, lay, region, g, st, vb, k * 32 + ln, true, &wr, bias, &mut dwr, &mut db) };
                k += 1;
            }
            if ln < hv {
                unsafe { dpre_item::<T>(p, lay, region, g, st, vb, body + ln, false, &wr, bias, &mut dwr, &mut db) };
            }
            sync_warp();

            // Phase B: dx of the lane's vectors from dpre[s .. s + 16).
            unroll::<VECS, _>(|k| {
                let j = k as i64 * 32 + ln;
                let gv = vb + j;
                if gv < nvec {
                    let at = j as u32 * lanes as u32 * 4;
                    let mut gw = [0.0f32; 16];
                    unroll::<4, _>(|q| {
                        let v = unsafe { g.ld_v4(at + 16 * q as u32) };
                        unroll::<4, _>(|i| gw[4 * q + i] = f32::from_bits(v[i]));
                    });
                    let t0 = gv as usize * lanes;
                    let mut o = [0.0f32; 8];
                    unroll::<8, _>(|e| {
                        if e < lanes {
                            let mut acc = 0.0f32;
                            unroll::<8, _>(|m| {
                                if m <= w1 {
                                    acc = fma(wr[m], gw[e + m], acc);
                                }
                            });
                            // The last w1 inputs are the final state.
                            let t = t0 + e;
                            if !dfin.is_null() && t < l && t + w1 >= l {
                                acc += unsafe { dfin.load(t + w1 - l) }.to_f32();
                            }
                            o[e] = acc;
                        }
                    });
                    if aligned {
                        unsafe { dx.store_v4(t0, T::pack_v4(&o)) };
                    } else {
                        unroll::<8, _>(|e| {
                            if e < lanes && t0 + e < l {
                                unsafe { dx.store(t0 + e, T::from_f32(o[e])) };
                            }
                        });
                    }
                }
            });
            // dinit[j] = sum_{k <= j, j - k < L} weight[k] dpre[j - k] (+ dfinal[j - L]).
            if seg == 0 && s == 0 && ln == 0 && p.dinitial_state != 0 {
                let w = Hbm::<T>::from_addr(p.weight).offset(c * width as usize);
                let dinit = HbmMut::<T>::from_addr(p.dinitial_state).offset(row * w1);
                let mut j = 0;
                while j < w1 {
                    let mut acc = 0.0f32;
                    let mut k = 0;
                    while k <= j {
                        if j - k < l {
                            acc = fma(unsafe { w.load(k) }.to_f32(), unsafe { g.ld_f32(4 * (j - k) as u32) }, acc);
                        }
                        k += 1;
                    }
                    if !dfin.is_null() && j >= l {
                        acc += unsafe { dfin.load(j - l) }.to_f32();
                    }
                    unsafe { dinit.store(j, T::from_f32(acc)) };
                    j += 1;
                }
            }
            s += 1;
        }

        // The warp's partial record (every lane takes part in the butterflies).
        unroll::<8, _>(|m| dwr[m] = warp_sum(dwr[m]));
        db = warp_sum(db);
        if ln == 0 {
            let b = div_rem(row, dim).0;
            let rec = (c * p.batch as usize + b) * segs + seg;
            let out = HbmMut::<f32>::from_addr(p.partials).offset(rec * CONV_PARTIAL as usize);
            unroll::<8, _>(|m| {
                if m <= w1 {
                    unsafe { out.store(w1 - m, dwr[m]) };
                }
            });
            unsafe { out.store(CONV_MAX_WIDTH as usize, db) };
        }
        task += (grid_x() * CONV_WARPS) as usize;
    }
    wait_group::<0>();
}

#[inline(always)]
unsafe fn conv1d_bwd_reduce<T: Elem>(p: &ConvReduceParams) {
    let c = (block_x() * (CONV_REDUCE_THREADS / 32) + warp()) as usize;
    if c >= p.dim as usize {
        return; // whole warps only: the butterflies below stay full
    }
    let n = p.records as usize;
    let part = Hbm::<f32>::from_addr(p.partials).offset(c * n * CONV_PARTIAL as usize);
    let mut acc = [0.0f32; CONV_PARTIAL as usize];
    let mut r = lane() as usize;
    while r < n {
        unroll::<{ CONV_PARTIAL as usize }, _>(|q| {
            if q < p.width as usize || q == CONV_MAX_WIDTH as usize {
                acc[q] += unsafe { part.load(r * CONV_PARTIAL as usize + q) };
            }
        });
        r += 32;
    }
    unroll::<{ CONV_PARTIAL as usize }, _>(|q| acc[q] = warp_sum(acc[q]));
    if lane() == 0 {
        let width = p.width as usize;
        let dw = HbmMut::<T>::from_addr(p.dweight).offset(c * width);
        unroll::<8, _>(|k| {
            if k < width {
                unsafe { dw.store(k, T::from_f32(acc[k])) };
            }
        });
        if p.dbias != 0 {
            unsafe { HbmMut::<T>::from_addr(p.dbias).store(c, T::from_f32(acc[CONV_MAX_WIDTH as usize])) };
        }
    }
}

macro_rules! conv_bwd_entry {
    ($name:ident, $reduce:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: ConvParams) {
            unsafe { conv1d_bwd::<$t>(&p) }
        }
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $reduce(p: ConvReduceParams) {
            unsafe { conv1d_bwd_reduce::<$t>(&p) }
        }
    };
}

conv_bwd_entry!(conv1d_bwd_f32, conv1d_bwd_reduce_f32, f32);
conv_bwd_entry!(conv1d_bwd_bf16, conv1d_bwd_reduce_bf16, Bf16);
conv_bwd_entry!(conv1d_bwd_f16, conv1d_bwd_reduce_f16, F16);
