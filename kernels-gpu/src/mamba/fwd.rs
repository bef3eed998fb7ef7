//! The selective-scan forward kernel. Per CTA: one batch row, a run of `channels`
//! channels of one group; per thread: one channel and a slice of 16 of its states, for
//! the whole sequence (see the module doc for why no block-wide scan is needed).
//!
//! Memory story, per chunk of `steps` steps (32 for bf16/f16, 16 for f32):
//!   HBM  -> SRAM  u, delta, z rows of the CTA's channels and B, C rows of the group,
//!                 64 bytes each, cp.async, two stages: chunk k+1 flies while k computes
//!   SRAM -> SRAM  B, C converted to f32 once per CTA (every channel reads them)
//!   regs          h (16 states), A * log2(e) (16), the step's delta and delta * u
//!   regs -> SRAM  partial y per slice; SRAM -> HBM: out = (sum y + D u) silu(z), 16-byte
//!                 stores; the state at every SCAN_CHECKPOINT-th step, and the final state
//! SRAM: ScanSmem::new(d_state, elem) (89.6 KB for bf16 at d_state <= 16: 2 CTAs per SM).

use super::*;
use crate::device::cp_async::{commit, cp_async_16, wait_group};
use crate::device::math::{exp2, fma, max, rcp};
use crate::device::thread::{block_x, block_y, sync_threads, tid};
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut, Sram, unroll};

const LOG2E: f32 = core::f32::consts::LOG2_E;
const NS: usize = SCAN_STATES_PER_THREAD as usize;
const PITCH: u32 = SCAN_RAW_PITCH;

/// ln(1 + e^x) = max(x, 0) + log1p(e^-|x|), with log1p(e) = 2 atanh(s), s = e / (2 + e)
/// <= 1/3, summed to s^13: relative error ~1e-8 over the whole range (lg2.approx would
/// lose 1e-5 near 1), one ex2 and one rcp. NaN stays NaN; x -> +inf gives x.
#[inline(always)]
fn softplus(x: f32) -> f32 {
    let e = exp2(-x.abs() * LOG2E);
    let s = e * rcp(2.0 + e);
    let s2 = s * s;
    let series = 2.0
        + s2 * (2.0 / 3.0
            + s2 * (2.0 / 5.0 + s2 * (2.0 / 7.0 + s2 * (2.0 / 9.0 + s2 * (2.0 / 11.0 + s2 * (2.0 / 13.0))))));
    max(x, 0.0) + s * series
}

/// x * sigmoid(x), with ex2 and rcp on the special-function unit.
#[inline(always)]
fn silu(x: f32) -> f32 {
    x * rcp(1.0 + exp2(-x * LOG2E))
}

/// Where this CTA sits: batch row, group, its channels [c0, c0 + n_ch).
#[derive(Clone, Copy)]
struct Cta {
    b: usize,
    g: usize,
    c0: usize,
    n_ch: u32,
}

/// Issues the copies of chunk `k` (steps [k * steps, (k + 1) * steps)) into raw stage
/// `stage`: rows u[0..channels), delta[..), z[..) PITCH bytes apart, then B[0..states),
/// C[..) SCAN_CHUNK_BYTES apart, 4 16-byte vectors each. Rows of absent channels or states and steps
/// past the end arrive as zeros. When a row is not 16-byte aligned in HBM (seqlen * elem
/// bytes not a multiple of 16) the chunk is copied element by element, synchronously.
#[inline(always)]
unsafe fn stage_chunk<T: Elem>(p: &ScanFwdParams, lay: ScanSmem, cta: Cta, k: u32, stage: u32, aligned: bool) {
    let lanes = T::LANES as u32;
    let t0 = k * lay.steps;
    let ch = lay.channels;
    let states = SCAN_STATES_PER_THREAD * lay.slices;
    let rows = 3 * ch + 2 * states;
    let seqlen = p.seqlen as usize;
    let dst_base = Sram::at(lay.u(stage));
    let mut i = tid();
    while i < rows * 4 {
        let (r, vec) = (i / 4, i % 4);
        // (tensor, row index in it, row valid)
        let (addr, row, ok) = if r < 3 * ch {
            let which = r / ch;
            let rc = r % ch;
            let addr = if which == 0 {
                p.u
            } else if which == 1 {
                p.delta
            } else {
                p.z
            };
            (addr, (cta.b * p.dim as usize + cta.c0 + rc as usize), rc < cta.n_ch && addr != 0)
        } else {
            let rs = r - 3 * ch;
            let (addr, n) = if rs < states { (p.b, rs) } else { (p.c, rs - states) };
            (addr, ((cta.b * p.groups as usize + cta.g) * p.d_state as usize + n as usize), n < p.d_state)
        };
        let t = t0 + vec * lanes;
        let src = Hbm::<T>::from_addr(addr);
        let row_at = if r < 3 * ch { r * PITCH } else { 3 * ch * PITCH + (r - 3 * ch) * SCAN_CHUNK_BYTES };
        let dst = dst_base.byte(row_at + vec * 16);
        if aligned {
            let ok = ok && t < p.seqlen;
            // A zero-byte copy still needs a valid address: the tensor base.
            let from = if ok { src.offset(row * seqlen + t as usize).ptr() } else { src.ptr() };
            unsafe { cp_async_16(dst, from as *const u8, if ok { 16 } else { 0 }) };
        } else {
            let mut e = 0;
            while e < lanes {
                let v = if ok && t + e < p.seqlen {
                    unsafe { src.load(row * seqlen + (t + e) as usize) }
                } else {
                    T::from_f32(0.0)
                };
                unsafe { T::st_sram(Sram { addr: dst }, e * T::BYTES, v) };
                e += 1;
            }
        }
        i += SCAN_THREADS;
    }
}

#[inline(always)]
unsafe fn scan_fwd<T: Elem>(p: &ScanFwdParams) {
    let lay = ScanSmem::new(p.d_state, T::BYTES);
    let (steps, lanes) = (lay.steps, T::LANES as u32);
    let seqlen = p.seqlen as usize;
    let t_id = tid();
    let (slice, ch_l) = (t_id / lay.channels, t_id % lay.channels);
    let cpg = p.channels_per_group.max(1);
    let part = block_x() % p.ctas_per_group.max(1);
    let g = block_x() / p.ctas_per_group.max(1);
    let first = part * lay.channels;
    let n_ch = if cpg - first < lay.channels { cpg - first } else { lay.channels };
    let cta = Cta { b: block_y() as usize, g: g as usize, c0: (g * cpg + first) as usize, n_ch };
    let active = ch_l < n_ch;
    let c = cta.c0 + ch_l as usize;
    let bc = cta.b * p.dim as usize + c;
    let n0 = slice * SCAN_STATES_PER_THREAD;
    let aligned = (p.seqlen * T::BYTES) % 16 == 0;

    // Registers: this thread's 16 states and A * log2(e) (0 for states past d_state, so
    // they stay 0 and add nothing).
    let mut h = [0.0f32; NS];
    let mut a2 = [0.0f32; NS];
    let state = |n: usize| n0 as usize + n;
    unroll::<NS, _>(|n| {
        if active && (state(n) as u32) < p.d_state {
            a2[n] = unsafe { Hbm::<f32>::from_addr(p.a).load(c * p.d_state as usize + state(n)) } * LOG2E;
            if p.initial_state != 0 {
                h[n] = unsafe { Hbm::<f32>::from_addr(p.initial_state).load(bc * p.d_state as usize + state(n)) };
            }
        }
    });
    let bias = if active && p.delta_bias != 0 { unsafe { Hbm::<f32>::from_addr(p.delta_bias).load(c) } } else { 0.0 };
    let n_ckpt = scan_checkpoints(p.seqlen) as usize;
    let save = |h: &[f32; NS], dst: HbmMut<f32>| {
        unroll::<NS, _>(|n| {
            if (state(n) as u32) < p.d_state {
                unsafe { dst.store(state(n), h[n]) };
            }
        });
    };

    let chunks = p.seqlen.div_ceil(steps);
    unsafe { stage_chunk::<T>(p, lay, cta, 0, 0, aligned) };
    commit();
    let mut k = 0;
    while k < chunks {
        let stage = k & 1;
        let t0 = k * steps;
        // Chunk k landed for every thread, and every thread is past chunk k-1's epilogue:
        // its raw stage takes chunk k+1, and b_f32, c_f32 and y are free.
        wait_group::<0>();
        sync_threads();
        if k + 1 < chunks {
            unsafe { stage_chunk::<T>(p, lay, cta, k + 1, stage ^ 1, aligned) };
        }
        commit();
        if active && t0 % SCAN_CHECKPOINT == 0 {
            let at = (bc * n_ckpt + (t0 / SCAN_CHECKPOINT) as usize) * p.d_state as usize;
            save(&h, HbmMut::<f32>::from_addr(p.checkpoints).offset(at));
        }

        // B, C -> f32, once for all channels: one 16-byte raw vector per item.
        let states = SCAN_STATES_PER_THREAD * lay.slices;
        let mut i = t_id;
        while i < 2 * states * 4 {
            let (r, vec) = (i / 4, i % 4);
            let raw = Sram::at(lay.b(stage)).byte(r * SCAN_CHUNK_BYTES + vec * 16);
            let f = T::unpack_v4(unsafe { Sram { addr: raw }.ld_v4(0) });
            let dst = Sram::at(lay.b_f32 + r * lay.row_f32() + vec * lanes * 4);
            // Constant indices only (lanes is 4 or 8): no array goes to the stack.
            unroll::<2, _>(|half| {
                if half * 4 < T::LANES {
                    let q = half * 4;
                    let v = [f[q].to_bits(), f[q + 1].to_bits(), f[q + 2].to_bits(), f[q + 3].to_bits()];
                    unsafe { dst.st_v4(q as u32 * 4, v) };
                }
            });
            i += SCAN_THREADS;
        }
        sync_threads();

        // The scan: `valid` steps of this chunk, 4 at a time. Steps past the end get
        // delta = 0 (and u = 0 from the zero-fill): dA = 1, no input, h unchanged.
        let valid = if p.seqlen - t0 < steps { p.seqlen - t0 } else { steps };
        let u_row = Sram::at(lay.u(stage) + ch_l * PITCH);
        let d_row = Sram::at(lay.delta(stage) + ch_l * PITCH);
        let b_rows = Sram::at(lay.b_f32 + n0 * lay.row_f32()).pinned();
        let c_rows = Sram::at(lay.c_f32 + n0 * lay.row_f32()).pinned();
        let y_row = Sram::at(lay.y + t_id * lay.row_f32());
        let mut tb = 0;
        while tb < valid {
            let mut dl = [0.0f32; 4];
            let mut du = [0.0f32; 4];
            unroll::<4, _>(|j| {
                let t = tb + j as u32;
                let uv = unsafe { T::ld_sram(u_row, t * T::BYTES) }.to_f32();
                let mut d = unsafe { T::ld_sram(d_row, t * T::BYTES) }.to_f32() + bias;
                if p.delta_softplus != 0 {
                    d = softplus(d);
                }
                if t >= valid {
                    d = 0.0;
                }
                dl[j] = d;
                du[j] = d * uv;
            });
            let mut ys = [0.0f32; 4];
            unroll::<NS, _>(|n| {
                let bv = unsafe { b_rows.ld_v4(n as u32 * lay.row_f32() + tb * 4) };
                let cv = unsafe { c_rows.ld_v4(n as u32 * lay.row_f32() + tb * 4) };
                unroll::<4, _>(|j| {
                    let da = exp2(dl[j] * a2[n]);
                    h[n] = fma(da, h[n], du[j] * f32::from_bits(bv[j]));
                    ys[j] = fma(h[n], f32::from_bits(cv[j]), ys[j]);
                });
            });
            unsafe { y_row.st_v4(tb * 4, [ys[0].to_bits(), ys[1].to_bits(), ys[2].to_bits(), ys[3].to_bits()]) };
            tb += 4;
        }
        sync_threads();

        // Epilogue: one 16-byte output vector per item, y summed over the slices.
        let mut i = t_id;
        while i < lay.channels * 4 {
            let (r, vec) = (i / 4, i % 4);
            let t = t0 + vec * lanes;
            if r < cta.n_ch && t < p.seqlen {
                let cc = cta.c0 + r as usize;
                let mut y = [0.0f32; 8];
                let mut s = 0;
                while s < lay.slices {
                    let src = Sram::at(lay.y + (s * lay.channels + r) * lay.row_f32() + vec * lanes * 4);
                    unroll::<2, _>(|half| {
                        if half * 4 < T::LANES {
                            let v = unsafe { src.ld_v4(half as u32 * 16) };
                            unroll::<4, _>(|q| {
                                y[half * 4 + q] += f32::from_bits(v[q]);
                            });
                        }
                    });
                    s += 1;
                }
                let raw = |base: u32| T::unpack_v4(unsafe { Sram::at(base + r * PITCH).ld_v4(vec * 16) });
                let dd = if p.d != 0 { unsafe { Hbm::<f32>::from_addr(p.d).load(cc) } } else { 0.0 };
                let uv = raw(lay.u(stage));
                unroll::<8, _>(|e| {
                    y[e] += dd * uv[e];
                });
                if p.z != 0 {
                    let zv = raw(lay.z(stage));
                    unroll::<8, _>(|e| {
                        y[e] *= silu(zv[e]);
                    });
                }
                let out = HbmMut::<T>::from_addr(p.out);
                let at = (cta.b * p.dim as usize + cc) * seqlen + t as usize;
                if aligned {
                    unsafe { out.store_v4(at, T::pack_v4(&y)) };
                } else {
                    unroll::<8, _>(|e| {
                        if e < T::LANES && t + (e as u32) < p.seqlen {
                            unsafe { out.store(at + e, T::from_f32(y[e])) };
                        }
                    });
                }
            }
            i += SCAN_THREADS;
        }
        k += 1;
    }
    wait_group::<0>();
    if active {
        save(&h, HbmMut::<f32>::from_addr(p.final_state).offset(bc * p.d_state as usize));
    }
}

macro_rules! scan_fwd_entry {
    ($name:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: ScanFwdParams) {
            unsafe { scan_fwd::<$t>(&p) }
        }
    };
}

scan_fwd_entry!(scan_fwd_f32, f32);
scan_fwd_entry!(scan_fwd_bf16, Bf16);
scan_fwd_entry!(scan_fwd_f16, F16);
