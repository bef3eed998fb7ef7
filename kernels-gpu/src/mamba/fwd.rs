//! The selective-scan forward kernel. Per CTA: one batch row, a run of `channels`
//! channels of one group; per thread: one channel and a slice of NS (4, 8 or 16) of its states, for the
//! whole sequence (see the module doc for why no block-wide scan is needed). The slices
//! of a channel sit in adjacent lanes of one warp, so y is summed over them by shuffles.
//!
//! Memory story, per chunk of `steps` steps (32 for bf16/f16, 16 for f32):
//!   HBM  -> SRAM  u, delta rows of the CTA's channels and B, C rows of the group, 64
//!                 bytes each, cp.async, two stages: chunk k+1 flies while k computes;
//!                 z rows of chunk k, one stage, in flight until the epilogue
//!   SRAM -> SRAM  once per (channel, step): delta' = softplus(delta + bias), delta' u;
//!                 once per (state, step): B, C in f32, transposed to [step][state]
//!   regs          h (NS states), A log2(e) (NS), 8 steps' delta', delta' u, y
//!   regs -> SRAM  y over the delta' u it replaces; SRAM -> HBM: out = (y + D u) silu(z),
//!                 16-byte stores; the state every SCAN_CHECKPOINT
//!                 steps and at the end
//! SRAM: ScanSmem::new(d_state, elem, NS): 51.5 KiB for bf16 at d_state 16 with NS = 8
//! (raw stages 24 KiB, delta/du 18 KiB, B/C 4.5 KiB, z 5 KiB): 4 CTAs, 16 warps per SM.

use super::common::{BcTile, LOG2E, bc_to_f32, bits4, copy_vec, pick};
use super::*;
use crate::device::act::{silu, softplus};
use crate::device::cp_async::{commit, wait_group};
use crate::device::math::{exp2, fma};
use crate::device::thread::{block_x, block_y, sync_threads, tid};
use crate::device::warp::shfl_xor;
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut, Sram, unroll};

const PITCH: u32 = SCAN_RAW_PITCH;

/// Where this CTA sits: batch row, group, its channels [c0, c0 + n_ch).
#[derive(Clone, Copy)]
struct Cta {
    b: usize,
    g: usize,
    c0: usize,
    n_ch: u32,
}

/// Issues the copies of chunk `k` (steps [k * steps, (k + 1) * steps)) into raw stage
/// `stage`: rows u[0..channels), delta[..) PITCH bytes apart, then B[0..states), C[..)
/// SCAN_CHUNK_BYTES apart, 4 16-byte vectors each. Rows of absent channels or states and
/// steps past the end arrive as zeros. When a row is not 16-byte aligned in HBM
/// (seqlen * elem bytes not a multiple of 16) the chunk is copied element by element,
/// synchronously.
#[inline(always)]
unsafe fn stage_chunk<T: Elem>(p: &ScanFwdParams, lay: ScanSmem, cta: Cta, k: u32, stage: u32, aligned: bool) {
    let lanes = T::LANES as u32;
    let t0 = k * lay.steps;
    // u and delta: the same rows and offsets, two copies per vector (one address
    // computation: these loops run every chunk, and a selected tensor per vector cost ~35
    // instructions per copy).
    let mut i = tid();
    while i < lay.channels * 4 {
        let (r, vec) = (i / 4, i % 4);
        let row = cta.b * p.dim as usize + cta.c0 + r as usize;
        let (t, ok, at) = (t0 + vec * lanes, r < cta.n_ch, r * PITCH + vec * 16);
        unsafe {
            copy_vec::<T>(Sram::at(lay.u(stage)).byte(at), p.u, row, t, ok, p.seqlen, aligned);
            copy_vec::<T>(Sram::at(lay.delta_raw(stage)).byte(at), p.delta, row, t, ok, p.seqlen, aligned);
        }
        i += SCAN_THREADS;
    }
    // B and C: one row per state (rows past d_state are zeros).
    let mut i = tid();
    while i < lay.states * 4 {
        let (n, vec) = (i / 4, i % 4);
        let row = (cta.b * p.groups as usize + cta.g) * p.d_state as usize + n as usize;
        let (t, ok, at) = (t0 + vec * lanes, n < p.d_state, n * SCAN_CHUNK_BYTES + vec * 16);
        unsafe {
            copy_vec::<T>(Sram::at(lay.b(stage)).byte(at), p.b, row, t, ok, p.seqlen, aligned);
            copy_vec::<T>(Sram::at(lay.c(stage)).byte(at), p.c, row, t, ok, p.seqlen, aligned);
        }
        i += SCAN_THREADS;
    }
}

/// Issues the copies of chunk `k` of z (the CTA's rows) into the z stage: its own group,
/// so the epilogue can wait for it while the next chunk's inputs are still in flight.
#[inline(always)]
unsafe fn stage_z<T: Elem>(p: &ScanFwdParams, lay: ScanSmem, cta: Cta, k: u32, aligned: bool) {
    let mut i = tid();
    while i < lay.channels * 4 {
        let (r, vec) = (i / 4, i % 4);
        let row = cta.b * p.dim as usize + cta.c0 + r as usize;
        let dst = Sram::at(lay.z + r * PITCH).byte(vec * 16);
        let t = k * lay.steps + vec * T::LANES as u32;
        unsafe { copy_vec::<T>(dst, p.z, row, t, r < cta.n_ch, p.seqlen, aligned) };
        i += SCAN_THREADS;
    }
}

#[inline(always)]
unsafe fn scan_fwd<T: Elem, const NS: usize>(p: &ScanFwdParams) {
    let lay = ScanSmem::new(p.d_state, T::BYTES, NS as u32);
    let lanes = T::LANES as u32;
    let seqlen = p.seqlen as usize;
    let t_id = tid();
    // Adjacent lanes hold the slices of one channel.
    let (ch_l, slice) = (t_id / lay.slices, t_id % lay.slices);
    let cpg = p.channels_per_group.max(1);
    let part = block_x() % p.ctas_per_group.max(1);
    let g = block_x() / p.ctas_per_group.max(1);
    let first = part * lay.channels;
    let n_ch = if cpg - first < lay.channels { cpg - first } else { lay.channels };
    let cta = Cta { b: block_y() as usize, g: g as usize, c0: (g * cpg + first) as usize, n_ch };
    let active = ch_l < n_ch;
    let c = cta.c0 + ch_l as usize;
    let bc = cta.b * p.dim as usize + c;
    let n0 = slice * NS as u32;
    let aligned = (p.seqlen * T::BYTES) % 16 == 0;

    // Registers: this thread's NS states and A log2(e) (0 for states past d_state, so they
    // stay 0 and add nothing).
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
    // The conversion pass and the epilogue give thread t the 16-byte vectors i = t + 128
    // m (m < 4) of the chunk: channel i / 4 = t / 4 + 32 m, always the same channels, so
    // their delta_bias and D are loaded once, here (not on the critical path of either).
    const ITEMS: usize = 4;
    let (mut bias_r, mut d_r) = ([0.0f32; ITEMS], [0.0f32; ITEMS]);
    unroll::<ITEMS, _>(|m| {
        let r = t_id / 4 + 32 * m as u32;
        let of = |addr: u64| unsafe { Hbm::<f32>::from_addr(addr).load(cta.c0 + r as usize) };
        if r < cta.n_ch && p.delta_bias != 0 {
            bias_r[m] = of(p.delta_bias);
        }
        if r < cta.n_ch && p.d != 0 {
            d_r[m] = of(p.d);
        }
    });
    let n_ckpt = scan_checkpoints(p.seqlen) as usize;
    let save = |h: &[f32; NS], dst: HbmMut<f32>| {
        unroll::<NS, _>(|n| {
            if (state(n) as u32) < p.d_state {
                unsafe { dst.store(state(n), h[n]) };
            }
        });
    };

    let chunks = p.seqlen.div_ceil(lay.steps);
    unsafe { stage_chunk::<T>(p, lay, cta, 0, 0, aligned) };
    commit();
    let mut k = 0;
    while k < chunks {
        let stage = k & 1;
        let t0 = k * lay.steps;
        let valid = if p.seqlen - t0 < lay.steps { p.seqlen - t0 } else { lay.steps };
        // Chunk k landed for every thread, and every thread is past chunk k-1's epilogue:
        // its raw stage takes chunk k+1, and the f32 tiles are free.
        wait_group::<0>();
        sync_threads();
        // Group order: z of chunk k, then the inputs of chunk k+1 (the epilogue waits for
        // the first only).
        if p.z != 0 {
            unsafe { stage_z::<T>(p, lay, cta, k, aligned) };
        }
        commit();
        if k + 1 < chunks {
            unsafe { stage_chunk::<T>(p, lay, cta, k + 1, stage ^ 1, aligned) };
        }
        commit();
        if active && t0 % SCAN_CHECKPOINT == 0 {
            let at = (bc * n_ckpt + (t0 / SCAN_CHECKPOINT) as usize) * p.d_state as usize;
            save(&h, HbmMut::<f32>::from_addr(p.checkpoints).offset(at));
        }

        // delta' and delta' u, once per (channel, step): one 16-byte raw vector per item.
        // Steps past the end get delta' = 0 (and delta' u = 0): dA = 1, no input, h kept.
        // A rolled loop (unrolled, its items' loads all go up front: 144 registers).
        let mut m = 0;
        while m < lay.channels.div_ceil(32) {
            let i = t_id + SCAN_THREADS * m;
            if i >= lay.channels * 4 {
                break;
            }
            let (r, vec) = (i / 4, i % 4);
            let bias = pick(&bias_r, m);
            let dr = T::unpack_v4(unsafe { Sram::at(lay.delta_raw(stage) + r * PITCH).ld_v4(vec * 16) });
            let ur = T::unpack_v4(unsafe { Sram::at(lay.u(stage) + r * PITCH).ld_v4(vec * 16) });
            let (mut dl, mut du) = ([0.0f32; 8], [0.0f32; 8]);
            // One branch per vector, not per element.
            if p.delta_softplus != 0 {
                unroll::<8, _>(|e| dl[e] = softplus(dr[e] + bias));
            } else {
                unroll::<8, _>(|e| dl[e] = dr[e] + bias);
            }
            unroll::<8, _>(|e| {
                if vec * lanes + (e as u32) >= valid {
                    dl[e] = 0.0;
                }
                du[e] = dl[e] * ur[e];
            });
            let at = r * lay.row_f32() + vec * lanes * 4;
            unroll::<2, _>(|half| {
                if half * 4 < T::LANES {
                    unsafe { Sram::at(lay.delta + at).st_v4(half as u32 * 16, bits4(&dl, half * 4)) };
                    unsafe { Sram::at(lay.du + at).st_v4(half as u32 * 16, bits4(&du, half * 4)) };
                }
            });
            m += 1;
        }
        // B, C -> f32, transposed into the bc tile (layout in ScanSmem), once for all
        // channels.
        let tile = BcTile {
            raw: Sram::at(lay.b(stage)).addr,
            row_bytes: SCAN_CHUNK_BYTES,
            tile: Sram::at(lay.bc).addr,
            tile_row: lay.bc_row(),
            states: lay.states,
            slices: lay.slices,
            threads: SCAN_THREADS,
            pair: lay.bc_pair(),
        };
        unsafe { bc_to_f32::<T, NS>(tile, t_id, true) };
        sync_threads();

        // The scan, 8 steps at a time: h = exp(delta' A) h + delta' u B; y = <h, C>.
        let dl_row = Sram::at(lay.delta + ch_l * lay.row_f32());
        let du_row = Sram::at(lay.du + ch_l * lay.row_f32());
        // Byte distance between the quarters (states 4k..4k+4) of a slice in a row.
        let quarter = lay.slices * 32;
        let mut tb = 0;
        while tb < valid {
            let dl = unsafe { [dl_row.ld_v4(tb * 4), dl_row.ld_v4(tb * 4 + 16)] };
            let du = unsafe { [du_row.ld_v4(tb * 4), du_row.ld_v4(tb * 4 + 16)] };
            let mut ys = [0.0f32; 8];
            // This thread's quarter 0 in step tb's row; tb is a multiple of 8, so step
            // tb + j's row is bc_at(j) past it (immediate offsets).
            let row0 = Sram::at(lay.bc + lay.bc_at(tb) + slice * 32).pinned();
            unroll::<8, _>(|j| {
                let mut bq = [[0u32; 4]; 4];
                let mut cq = [[0u32; 4]; 4];
                let row = Sram { addr: row0.addr + lay.bc_at(j as u32) };
                unroll::<4, _>(|k| {
                    if k * 4 < NS {
                        let q = Sram { addr: row.addr + k as u32 * quarter };
                        bq[k] = unsafe { q.ld_v4(0) };
                        cq[k] = unsafe { q.ld_v4(16) };
                    }
                });
                let (d, x) = (f32::from_bits(dl[j / 4][j % 4]), f32::from_bits(du[j / 4][j % 4]));
                // Two partial sums: half the length of the dependent FMA chain.
                let mut y2 = [0.0f32; 2];
                unroll::<NS, _>(|n| {
                    let da = exp2(d * a2[n]);
                    h[n] = fma(da, h[n], x * f32::from_bits(bq[n / 4][n % 4]));
                    y2[n % 2] = fma(h[n], f32::from_bits(cq[n / 4][n % 4]), y2[n % 2]);
                });
                ys[j] = y2[0] + y2[1];
            });
            // y sums over the channel's slices: adjacent lanes, butterfly shuffles.
            let mut off = 1;
            while off < lay.slices {
                unroll::<8, _>(|j| ys[j] += shfl_xor(ys[j], off));
                off *= 2;
            }
            // Every slice of this channel has read du[tb..tb+8] (the shuffle needed their
            // sums), so y can take its place.
            if slice == 0 {
                unsafe { du_row.st_v4(tb * 4, bits4(&ys, 0)) };
                unsafe { du_row.st_v4(tb * 4 + 16, bits4(&ys, 4)) };
            }
            tb += 8;
        }
        wait_group::<1>();
        sync_threads();

        // Epilogue: one 16-byte output vector per item.
        let mut m = 0;
        while m < lay.channels.div_ceil(32) {
            let i = t_id + SCAN_THREADS * m;
            let (r, vec) = (i / 4, i % 4);
            let t = t0 + vec * lanes;
            if r < cta.n_ch && t < p.seqlen {
                let cc = cta.c0 + r as usize;
                let at = (cta.b * p.dim as usize + cc) * seqlen + t as usize;
                let mut y = [0.0f32; 8];
                let y_at = Sram::at(lay.du + r * lay.row_f32() + vec * lanes * 4);
                unroll::<2, _>(|half| {
                    if half * 4 < T::LANES {
                        let v = unsafe { y_at.ld_v4(half as u32 * 16) };
                        unroll::<4, _>(|q| y[half * 4 + q] = f32::from_bits(v[q]));
                    }
                });
                let uv = T::unpack_v4(unsafe { Sram::at(lay.u(stage) + r * PITCH).ld_v4(vec * 16) });
                let dd = pick(&d_r, m);
                unroll::<8, _>(|e| y[e] = fma(dd, uv[e], y[e]));
                if p.z != 0 {
                    let zv = T::unpack_v4(unsafe { Sram::at(lay.z + r * PITCH).ld_v4(vec * 16) });
                    unroll::<8, _>(|e| y[e] *= silu(zv[e]));
                }
                let out = HbmMut::<T>::from_addr(p.out);
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
            m += 1;
        }
        k += 1;
    }
    wait_group::<0>();
    if active {
        save(&h, HbmMut::<f32>::from_addr(p.final_state).offset(bc * p.d_state as usize));
    }
}

macro_rules! scan_fwd_entry {
    ($name:ident, $t:ty, $ns:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: ScanFwdParams) {
            unsafe { scan_fwd::<$t, $ns>(&p) }
        }
    };
}

// Suffix: states per thread (scan_states_per_thread).
scan_fwd_entry!(scan_fwd_f32_s4, f32, 4);
scan_fwd_entry!(scan_fwd_f32_s8, f32, 8);
scan_fwd_entry!(scan_fwd_f32_s16, f32, 16);
scan_fwd_entry!(scan_fwd_bf16_s4, Bf16, 4);
scan_fwd_entry!(scan_fwd_bf16_s8, Bf16, 8);
scan_fwd_entry!(scan_fwd_bf16_s16, Bf16, 16);
scan_fwd_entry!(scan_fwd_f16_s4, F16, 4);
scan_fwd_entry!(scan_fwd_f16_s8, F16, 8);
scan_fwd_entry!(scan_fwd_f16_s16, F16, 16);
