//! The selective-scan backward kernel. The forward's thread mapping (CTA: one batch row, a
//! run of `channels` channels of one group; thread: one channel and a slice of NS states),
//! walking the sequence from the end, one checkpoint segment (SEG = 32 steps) at a time.
//!
//! First in each checkpoint interval (SCAN_CHECKPOINT = 4 segments) it visits: the
//! advance pass steps the state from the forward's checkpoint through the interval's
//! earlier segments (u, delta, B staged) and keeps each segment's starting state in HBM
//! scratch (`starts`). Then per segment:
//!   HBM  -> SRAM  u, delta, dout, z rows of the CTA's channels, B and C rows of the
//!                 group (cp.async, one stage)
//!   SRAM -> SRAM  per (channel, step): dt = delta', dtu = delta' u, dy = dout silu(z);
//!                 B and C in f32, transposed (the forward's tile)
//!   pass A        from the segment's starting state, the recurrence forward over its
//!                 blocks of SCAN_BWD_BLOCK (4) steps; the state at the start of blocks
//!                 1.. to SRAM (`snap`)
//!   walk          block by block from the last: its states and decays recomputed into
//!                 registers (hs, decays: 4 x NS each), then stepped back to front:
//!                   gh   = dh + dy C                  (dL/dh_t)
//!                   dB  += gh dtu,  dC += dy h_t       (summed over channels, below)
//!                   sgb  = sum_n gh B,  sga = sum_n gh dA h_{t-1} A,  y = sum_n h_t C
//!                   dA  += dt gh dA h_{t-1},  dh = gh dA
//!                 sgb, sga, y summed over the channel's slices (shuffles) replace dt,
//!                 dtu, dy of that step in SRAM
//!   dB, dC        per step: summed over the warp's channels (warp_sum.rs: shuffles at
//!                 4 states per thread, an SRAM exchange at 8), over the CTA's warps in
//!                 SRAM (`red`, every flush_steps steps), then one partial per CTA to HBM
//!                 (stored, or added with red.global.add)
//!   epilogue      per (channel, 16-byte vector): du = dt sgb + D dy, ddelta = (u sgb +
//!                 sga) softplus'(x), dz = dout (y + D u) silu'(z) to HBM; dD and
//!                 ddelta_bias summed per channel in SRAM
//! At the end: dh is dinitial_state, the dA sums and the SRAM sums go to per-batch-row
//! partials (the host sums them over the batch with `scan_bwd_sum_f32`, in order).
//!
//! Cost per (step, state): ~2.6 ex2 (the advance 3/4, pass A 7/8, the block recompute 1)
//! and ~50 instructions in all, against the forward's 1 and ~12 (SASS of the d_state 16
//! kernel, 4 states per thread: 507 instructions per 4-step block of the walk, the
//! recompute included, ~200 per thread and step with the other passes).
//! SRAM: ScanBwdSmem::new(d_state, elem, NS): 48 KiB at d_state 16, bf16 (4 CTAs per SM on
//! the H100), 88 KiB at d_state 64.
//! Kernels per (dtype, NS): one reads the slice count from the launch; the SCAN_BWD_FIXED
//! pairs also have one built for theirs (`S`), whose layout and loops are constants.

use super::common::{BcTile, LOG2E, bc_to_f32, copy_vec};
use super::warp_sum::{red_plan, reduce_bc};
use super::*;
use crate::device::act::{sigmoid, silu, softplus};
use crate::device::atomic::red_add_f32;
use crate::device::cp_async::{commit, wait_group};
use crate::device::math::{exp2, fma};
use crate::device::thread::{block_x, block_y, sync_threads, tid};
use crate::device::warp::shfl_xor;
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut, Sram, unroll};

const SEG: u32 = SCAN_BWD_SEG;
/// Segments per checkpoint interval.
const PER: u32 = SCAN_CHECKPOINT / SCAN_BWD_SEG;
const BLOCK: u32 = SCAN_BWD_BLOCK;
const B: usize = BLOCK as usize;
const LN2: f32 = core::f32::consts::LN_2;

/// Where this CTA sits: batch row, group, its channels [c0, c0 + n_ch), and its index
/// among the group's CTAs (its part of dB and dC in deterministic mode).
#[derive(Clone, Copy)]
struct Cta {
    b: usize,
    g: usize,
    c0: usize,
    n_ch: u32,
    part: u32,
}

/// Issues the copies of the segment at `t0` into the raw rows (dout, z and C only for a
/// segment the walk visits: the advance pass reads u, delta and B); zeros past the end
/// and for absent channels or states.
#[inline(always)]
unsafe fn stage_segment<T: Elem>(p: &ScanBwdParams, lay: ScanBwdSmem, cta: Cta, t0: u32, aligned: bool, walk: bool) {
    let (vecs, lanes) = (SEG * T::BYTES / 16, T::LANES as u32);
    let mut i = tid();
    while i < lay.channels * vecs {
        let (r, vec) = (i / vecs, i % vecs);
        let row = cta.b * p.dim as usize + cta.c0 + r as usize;
        let (t, ok) = (t0 + vec * lanes, r < cta.n_ch);
        let at = |k: u32| Sram::at(lay.raw(k, r)).byte(vec * 16);
        unsafe {
            copy_vec::<T>(at(0), p.u, row, t, ok, p.seqlen, aligned);
            copy_vec::<T>(at(1), p.delta, row, t, ok, p.seqlen, aligned);
            if walk {
                copy_vec::<T>(at(2), p.dout, row, t, ok, p.seqlen, aligned);
                if p.z != 0 {
                    copy_vec::<T>(at(3), p.z, row, t, ok, p.seqlen, aligned);
                }
            }
        }
        i += lay.threads;
    }
    let mut i = tid();
    while i < lay.states * vecs {
        let (n, vec) = (i / vecs, i % vecs);
        let row = (cta.b * p.groups as usize + cta.g) * p.d_state as usize + n as usize;
        let (t, ok, at) = (t0 + vec * lanes, n < p.d_state, n * lay.raw_row + vec * 16);
        unsafe {
            copy_vec::<T>(Sram::at(lay.raw_b).byte(at), p.b, row, t, ok, p.seqlen, aligned);
            if walk {
                copy_vec::<T>(Sram::at(lay.raw_c).byte(at), p.c, row, t, ok, p.seqlen, aligned);
            }
        }
        i += lay.threads;
    }
}

/// Per (channel, step) of the staged segment: dt = delta' (0 past the end: the state
/// is kept, nothing flows), dtu = dt u, and for a segment the walk visits dy = dout
/// silu(z) (or dout), into the f32 tiles.
#[inline(always)]
unsafe fn convert_segment<T: Elem>(p: &ScanBwdParams, lay: ScanBwdSmem, valid: u32, walk: bool) {
    let (vecs, lanes) = (SEG * T::BYTES / 16, T::LANES as u32);
    let mut i = tid();
    while i < lay.channels * vecs {
        let (r, vec) = (i / vecs, i % vecs);
        let bias = unsafe { Sram::at(lay.coef).ld_f32((lay.channels + r) * 4) };
        let raw = |k: u32| T::unpack_v4(unsafe { Sram::at(lay.raw(k, r)).ld_v4(vec * 16) });
        let (ur, dr) = (raw(0), raw(1));
        let (mut dt, mut dtu) = ([0.0f32; 8], [0.0f32; 8]);
        if p.delta_softplus != 0 {
            unroll::<8, _>(|e| dt[e] = softplus(dr[e] + bias));
        } else {
            unroll::<8, _>(|e| dt[e] = dr[e] + bias);
        }
        unroll::<8, _>(|e| {
            if vec * lanes + e as u32 >= valid {
                dt[e] = 0.0;
            }
            dtu[e] = dt[e] * ur[e];
        });
        let at = r * lay.row_f32() + vec * lanes * 4;
        store_f32s::<T>(Sram::at(lay.dt + at), &dt);
        store_f32s::<T>(Sram::at(lay.dtu + at), &dtu);
        if walk {
            let mut dy = raw(2);
            if p.z != 0 {
                let zr = raw(3);
                unroll::<8, _>(|e| dy[e] = dy[e] * silu(zr[e]));
            }
            store_f32s::<T>(Sram::at(lay.dy + at), &dy);
        }
        i += lay.threads;
    }
}

/// The first `T::LANES` of `v` to SRAM as 16-byte vectors.
#[inline(always)]
fn store_f32s<T: Elem>(dst: Sram, v: &[f32; 8]) {
    unroll::<2, _>(|half| {
        if half * 4 < T::LANES {
            let w = [
                v[half * 4].to_bits(),
                v[half * 4 + 1].to_bits(),
                v[half * 4 + 2].to_bits(),
                v[half * 4 + 3].to_bits(),
            ];
            unsafe { dst.st_v4(half as u32 * 16, w) };
        }
    });
}

/// `T::LANES` f32 from SRAM (16-byte vectors).
#[inline(always)]
fn load_f32s<T: Elem>(src: Sram) -> [f32; 8] {
    let mut v = [0.0f32; 8];
    unroll::<2, _>(|half| {
        if half * 4 < T::LANES {
            let w = unsafe { src.ld_v4(half as u32 * 16) };
            unroll::<4, _>(|q| v[half * 4 + q] = f32::from_bits(w[q]));
        }
    });
    v
}

/// One block's BLOCK consecutive f32 of a tile row (16-byte vectors).
#[inline(always)]
fn load_block(src: Sram) -> [f32; B] {
    let mut v = [0.0f32; B];
    unroll::<{ B / 4 }, _>(|q| {
        let w = unsafe { src.ld_v4(q as u32 * 16) };
        unroll::<4, _>(|e| v[q * 4 + e] = f32::from_bits(w[e]));
    });
    v
}

/// This thread's B (`c` false) or C quarters of one step's bc row: NS values.
#[inline(always)]
fn bc_of<const NS: usize>(row: Sram, quarter: u32, c: bool) -> [f32; NS] {
    let mut v = [0.0f32; NS];
    unroll::<4, _>(|k| {
        if k * 4 < NS {
            let w = unsafe { row.ld_v4(k as u32 * quarter + if c { 16 } else { 0 }) };
            unroll::<4, _>(|q| v[k * 4 + q] = f32::from_bits(w[q]));
        }
    });
    v
}

/// `h` as NS / 4 16-byte vectors: `put(q, words)` for vector q.
#[inline(always)]
fn put_quads<const NS: usize>(h: &[f32; NS], mut put: impl FnMut(u32, [u32; 4])) {
    unroll::<4, _>(|q| {
        if q * 4 < NS {
            let i = q * 4;
            put(q as u32, [h[i].to_bits(), h[i + 1].to_bits(), h[i + 2].to_bits(), h[i + 3].to_bits()]);
        }
    });
}

/// NS floats from NS / 4 16-byte vectors: `get(q)` gives vector q.
#[inline(always)]
fn get_quads<const NS: usize>(mut get: impl FnMut(u32) -> [u32; 4]) -> [f32; NS] {
    let mut h = [0.0f32; NS];
    unroll::<4, _>(|q| {
        if q * 4 < NS {
            let w = get(q as u32);
            unroll::<4, _>(|e| h[q * 4 + e] = f32::from_bits(w[e]));
        }
    });
    h
}

/// One block of BLOCK steps of the recurrence from `h`; `keep(i, h)` sees the state
/// after step i. The forward's exact arithmetic, so the states are the forward's.
#[inline(always)]
fn block_forward<const NS: usize>(
    h: &mut [f32; NS],
    a2: &[f32; NS],
    dt: &[f32; B],
    dtu: &[f32; B],
    row0: Sram,
    bc_row: u32,
    quarter: u32,
    mut keep: impl FnMut(usize, &[f32; NS], &[f32; NS]),
) {
    unroll::<B, _>(|i| {
        let b = bc_of::<NS>(Sram { addr: row0.addr + i as u32 * bc_row }, quarter, false);
        let mut decay = [0.0f32; NS];
        unroll::<NS, _>(|n| {
            decay[n] = exp2(dt[i] * a2[n]);
            h[n] = fma(decay[n], h[n], dtu[i] * b[n]);
        });
        keep(i, h, &decay);
    });
}

/// The walk's per-step sums over a channel's `slices` (>= 4; used at >= 8) adjacent
/// lanes, as a reduce-scatter: the values (sgb, sga, y, 0) halve over the first two slice
/// bits (3 shuffles, not 6), the rest are plain sums. Slice s < 4 ends with value 2 (s &
/// 1) + (s >> 1) summed over the slices; each sum is ((v0 + v1) + (v2 + v3)) + ..., as
/// with butterflies of every value, so the result is bitwise the same.
#[inline(always)]
fn sum_over_slices(sgb: f32, sga: f32, y: f32, slice: u32, slices: u32) -> f32 {
    let (k0, k1, x0, x1) = if slice & 1 != 0 { (y, 0.0, sgb, sga) } else { (sgb, sga, y, 0.0) };
    let (a0, a1) = (k0 + shfl_xor(x0, 1), k1 + shfl_xor(x1, 1));
    let (k, x) = if slice & 2 != 0 { (a1, a0) } else { (a0, a1) };
    let mut v = k + shfl_xor(x, 2);
    let mut off = 4;
    while off < slices {
        v += shfl_xor(v, off);
        off *= 2;
    }
    v
}

/// After a flush's barrier: the CTA's dB and dC of steps [t, t + flush_steps), summed
/// over the warps in order, into this CTA's part (deterministic) or added to the one part.
#[inline(always)]
unsafe fn push_bc(p: &ScanBwdParams, lay: ScanBwdSmem, cta: Cta, t: u32) {
    // Items over the layout's states (a power of two, like flush_steps: shifts, not
    // divisions), those past d_state skipped.
    let (f, ds) = (lay.flush_steps.max(1), p.d_state as usize);
    let (f_log2, s_log2) = (f.trailing_zeros(), lay.states.trailing_zeros());
    let mut i = tid();
    while i < 2 * lay.states * f {
        let (io, n, which) = (i & (f - 1), (i >> f_log2) & (lay.states - 1), i >> (f_log2 + s_log2));
        let mut part = [0.0f32; 8];
        unroll::<8, _>(|w| {
            if (w as u32) < lay.threads / 32 {
                part[w] = unsafe { Sram::at(lay.red + lay.red_at(w as u32, which, n, io)).ld_f32(0) };
            }
        });
        let s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
        let step = t + io;
        if step < p.seqlen && (n as usize) < ds {
            let part = if p.deterministic != 0 { cta.part as usize } else { 0 };
            let row = (((part * 2 + which as usize) * p.batch as usize + cta.b) * p.groups as usize + cta.g) * ds
                + n as usize;
            let dst = HbmMut::<f32>::from_addr(p.dbc).offset(row * p.seqlen as usize + step as usize);
            if p.deterministic != 0 {
                unsafe { dst.store(0, s) };
            } else {
                unsafe { red_add_f32(dst.ptr(), s) };
            }
        }
        i += lay.threads;
    }
}

/// The segment's outputs, one 16-byte vector of a channel per item, from the staged
/// inputs and the walk's sgb, sga, y; dD and ddelta_bias terms summed into `acc`.
#[inline(always)]
unsafe fn epilogue<T: Elem>(p: &ScanBwdParams, lay: ScanBwdSmem, cta: Cta, t0: u32, aligned: bool) {
    let (vecs, lanes) = (SEG * T::BYTES / 16, T::LANES as u32);
    let mut i = tid();
    // Whole warps go round the loop (the shuffles below need every lane): the bound is
    // rounded up to 32 items (4 channels of bf16 rows are 16).
    let items = lay.channels * vecs;
    while i < items.next_multiple_of(32) {
        let (r, vec) = (i / vecs, i % vecs);
        let t = t0 + vec * lanes;
        let (mut dd_sum, mut dbias_sum) = (0.0f32, 0.0f32);
        if i < items && r < cta.n_ch && t < p.seqlen {
            let cc = cta.c0 + r as usize;
            let at = (cta.b * p.dim as usize + cc) * p.seqlen as usize + t as usize;
            let raw = |k: u32| T::unpack_v4(unsafe { Sram::at(lay.raw(k, r)).ld_v4(vec * 16) });
            let (u, dl, g) = (raw(0), raw(1), raw(2));
            let tile = |off: u32| load_f32s::<T>(Sram::at(off + r * lay.row_f32() + vec * lanes * 4));
            let (sgb, sga, y) = (tile(lay.dt), tile(lay.dtu), tile(lay.dy));
            let coef = Sram::at(lay.coef);
            let (d, bias) = unsafe { (coef.ld_f32(r * 4), coef.ld_f32((lay.channels + r) * 4)) };
            let (mut du, mut ddelta, mut dz) = ([0.0f32; 8], [0.0f32; 8], [0.0f32; 8]);
            let mut dy = g;
            if p.z != 0 {
                let z = raw(3);
                unroll::<8, _>(|e| {
                    let sz = sigmoid(z[e]);
                    dy[e] = g[e] * z[e] * sz;
                    dz[e] = g[e] * fma(d, u[e], y[e]) * sz * fma(z[e], 1.0 - sz, 1.0);
                });
            }
            unroll::<8, _>(|e| {
                let x = dl[e] + bias;
                let (dt, slope) = if p.delta_softplus != 0 { (softplus(x), sigmoid(x)) } else { (x, 1.0) };
                du[e] = fma(dt, sgb[e], d * dy[e]);
                ddelta[e] = fma(u[e], sgb[e], sga[e] * LN2) * slope;
                if e < T::LANES && t + (e as u32) < p.seqlen {
                    dd_sum = fma(dy[e], u[e], dd_sum);
                    dbias_sum += ddelta[e];
                }
            });
            let store = |addr: u64, v: &[f32; 8]| {
                let out = HbmMut::<T>::from_addr(addr);
                if aligned {
                    unsafe { out.store_v4(at, T::pack_v4(v)) };
                } else {
                    unroll::<8, _>(|e| {
                        if e < T::LANES && t + (e as u32) < p.seqlen {
                            unsafe { out.store(at + e, T::from_f32(v[e])) };
                        }
                    });
                }
            };
            store(p.du, &du);
            store(p.ddelta, &ddelta);
            if p.dz != 0 {
                store(p.dz, &dz);
            }
        }
        // The row's vectors sit in `vecs` adjacent lanes.
        let mut off = 1;
        while off < vecs {
            dd_sum += shfl_xor(dd_sum, off);
            dbias_sum += shfl_xor(dbias_sum, off);
            off *= 2;
        }
        // One writer per row (the same thread every segment): no race.
        if vec == 0 && i < items && r < cta.n_ch {
            let acc = Sram::at(lay.acc);
            unsafe {
                acc.st_f32(r * 4, acc.ld_f32(r * 4) + dd_sum);
                acc.st_f32((lay.channels + r) * 4, acc.ld_f32((lay.channels + r) * 4) + dbias_sum);
            }
        }
        i += lay.threads;
    }
}

/// The backward of one CTA. `S`: the slices per channel the kernel is built for (its
/// layout is then a compile-time constant: SCAN_BWD_FIXED), or 0 for any (from the launch).
#[inline(always)]
unsafe fn scan_bwd<T: Elem, const NS: usize, const S: u32>(p: &ScanBwdParams) {
    let lay = if S > 0 {
        ScanBwdSmem::for_slices(S, T::BYTES, NS as u32, scan_bwd_threads(S))
    } else {
        ScanBwdSmem::with_threads(p.d_state, T::BYTES, NS as u32, p.threads)
    };
    let t_id = tid();
    let slices = lay.slices.max(1);
    let (ch_l, slice) = (t_id / slices, t_id % slices);
    let cpg = p.channels_per_group.max(1);
    let part = block_x() % p.ctas_per_group.max(1);
    let g = block_x() / p.ctas_per_group.max(1);
    let first = part * lay.channels;
    let n_ch = if cpg - first < lay.channels { cpg - first } else { lay.channels };
    let cta = Cta { b: block_y() as usize, g: g as usize, c0: (g * cpg + first) as usize, n_ch, part };
    let active = ch_l < n_ch;
    let c = cta.c0 + ch_l as usize;
    let bc = cta.b * p.dim as usize + c;
    let ds = p.d_state as usize;
    let n0 = slice as usize * NS;
    let has = |n: usize| active && ((n0 + n) as u32) < p.d_state;
    let aligned = (p.seqlen * T::BYTES) % 16 == 0;

    // Registers: A log2(e), dL/dh (from dfinal_state), the dA sums. Zero for absent
    // states and channels, which then add nothing anywhere.
    let (mut a2, mut dh, mut da) = ([0.0f32; NS], [0.0f32; NS], [0.0f32; NS]);
    unroll::<NS, _>(|n| {
        if has(n) {
            a2[n] = unsafe { Hbm::<f32>::from_addr(p.a).load(c * ds + n0 + n) } * LOG2E;
            if p.dfinal_state != 0 {
                dh[n] = unsafe { Hbm::<f32>::from_addr(p.dfinal_state).load(bc * ds + n0 + n) };
            }
        }
    });
    // acc = 0; coef = D, delta_bias (0 for absent channels or tensors). The first
    // segment's barriers order these before their readers.
    let mut i = t_id;
    while i < lay.channels {
        let of = |addr: u64| {
            if addr != 0 && i < n_ch { unsafe { Hbm::<f32>::from_addr(addr).load(cta.c0 + i as usize) } } else { 0.0 }
        };
        let (acc, coef) = (Sram::at(lay.acc), Sram::at(lay.coef));
        unsafe {
            acc.st_f32(i * 4, 0.0);
            acc.st_f32((lay.channels + i) * 4, 0.0);
            coef.st_f32(i * 4, of(p.d));
            coef.st_f32((lay.channels + i) * 4, of(p.delta_bias));
        }
        i += lay.threads;
    }

    let n_ckpt = scan_checkpoints(p.seqlen);
    let plan = red_plan::<NS>(lay);
    let quarter = lay.slices * 32;
    let f = lay.flush_steps.max(1);
    let (dt_row, dtu_row, dy_row) = (
        Sram::at(lay.dt + ch_l * lay.row_f32()),
        Sram::at(lay.dtu + ch_l * lay.row_f32()),
        Sram::at(lay.dy + ch_l * lay.row_f32()),
    );
    // With 8 or more slices (sum_over_slices), slice s < 3 of a channel stores sum s of
    // each step (0 sgb over dt, 1 sga over dtu, 2 y over dy: the tiles are `channels` rows
    // apart); the others hold nothing to store (`my_sum` 3 and up). H100, b = 8, dim =
    // 4096, L = 4096: d_state 64 (8 slices) 31.98 -> 31.50 ms; d_state 16 (4 slices: 128
    // registers, the most for 4 CTAs per SM) 4.716 -> 4.781 ms, so 4 slices keep the
    // butterflies.
    let my_sum = if slice < 4 { (slice & 1) * 2 + (slice >> 1) } else { 4 };
    let my_row = dt_row.skip(my_sum.min(2) * lay.channels * lay.row_f32());
    let snap = |j: u32| Sram::at(lay.snap + ((j - 1) * lay.threads + t_id) * NS as u32 * 4);
    let tile = BcTile {
        raw: Sram::at(lay.raw_b).addr,
        row_bytes: lay.raw_row,
        tile: Sram::at(lay.bc).addr,
        tile_row: lay.bc_row(),
        states: lay.states,
        slices: lay.slices,
        threads: lay.threads,
        pair: lay.bc_pair(),
    };
    // The segment at t0 into SRAM: staged, then dt / dtu and the B tile (dy and C too
    // when it is to be walked).
    let prepare = |t0: u32, valid: u32, walk: bool| {
        // Every thread is past the previous segment's last use of the raw rows and tiles.
        sync_threads();
        unsafe { stage_segment::<T>(p, lay, cta, t0, aligned, walk) };
        commit();
        wait_group::<0>();
        sync_threads();
        unsafe { convert_segment::<T>(p, lay, valid, walk) };
        unsafe { bc_to_f32::<T, NS>(tile, t_id, walk) };
        sync_threads();
    };
    // This thread's B, C quarter in block j's first bc row, and one block of the
    // recurrence (the advance pass and pass A).
    // (A block's rows share one staged vector: BLOCK divides 16 / elem bytes.)
    let row_of = |j: u32| Sram::at(lay.bc + lay.bc_at(j * BLOCK) + slice * 32).pinned();
    let step_block = |h: &mut [f32; NS], j: u32| {
        let (dt, dtu) = (load_block(dt_row.skip(j * BLOCK * 4)), load_block(dtu_row.skip(j * BLOCK * 4)));
        block_forward::<NS>(h, &a2, &dt, &dtu, row_of(j), lay.bc_row(), quarter, |_, _, _| {});
    };
    let cta_id = (block_y() * crate::device::thread::grid_x() + block_x()) as usize;
    let starts = HbmMut::<f32>::from_addr(p.starts)
        .offset((cta_id * lay.threads as usize + t_id as usize) * (PER as usize - 1) * NS);
    let start_of = |k: u32| starts.offset((k as usize - 1) * NS);
    let n_seg = p.seqlen.div_ceil(SEG);
    let checkpoint = |c: u32| {
        let mut h = [0.0f32; NS];
        unroll::<NS, _>(|n| {
            if has(n) {
                let at = (bc * n_ckpt as usize + c as usize) * ds + n0 + n;
                h[n] = unsafe { Hbm::<f32>::from_addr(p.checkpoints).load(at) };
            }
        });
        h
    };
    let mut s = n_seg;
    while s > 0 {
        s -= 1;
        let (c, k) = (s / PER, s % PER);
        if s + 1 == n_seg || k + 1 == PER {
            // The first segment visited of checkpoint interval c: step the state from its
            // checkpoint to the start of each earlier segment of the interval (all whole).
            let mut h = checkpoint(c);
            let mut kk = 0;
            while kk < k {
                prepare((c * PER + kk) * SEG, SEG, false);
                let mut j = 0;
                while j < SEG / BLOCK {
                    step_block(&mut h, j);
                    j += 1;
                }
                kk += 1;
                let to = start_of(kk);
                put_quads(&h, |q, w| unsafe { to.store_v4(q as usize * 4, w) });
            }
        }
        let t0 = s * SEG;
        let valid = if p.seqlen - t0 < SEG { p.seqlen - t0 } else { SEG };
        prepare(t0, valid, true);

        // The state before the segment: the checkpoint, or the advance pass's (reloaded,
        // not kept in registers across the interval).
        let h0 = if k == 0 {
            checkpoint(c)
        } else {
            // Coherent loads: this thread wrote them in this launch.
            let from = start_of(k);
            get_quads(|q| unsafe { from.load_v4(q as usize * 4) })
        };
        let blocks = valid.div_ceil(BLOCK);

        // Pass A: the states at the start of blocks 1.. (block 0 starts from h0).
        let mut h = h0;
        let mut j = 0;
        while j + 1 < blocks {
            step_block(&mut h, j);
            j += 1;
            let to = snap(j);
            put_quads(&h, |q, w| unsafe { to.st_v4(q * 16, w) });
        }

        // The walk.
        let mut j = blocks;
        while j > 0 {
            j -= 1;
            let start = if j > 0 {
                let from = snap(j);
                get_quads(|q| unsafe { from.ld_v4(q * 16) })
            } else {
                h0
            };
            let (dt, dtu) = (load_block(dt_row.skip(j * BLOCK * 4)), load_block(dtu_row.skip(j * BLOCK * 4)));
            let row0 = row_of(j);
            let (mut hs, mut decays) = ([[0.0f32; NS]; B], [[0.0f32; NS]; B]);
            let mut h = start;
            block_forward::<NS>(&mut h, &a2, &dt, &dtu, row0, lay.bc_row(), quarter, |i, h, d| {
                hs[i] = *h;
                decays[i] = *d;
            });
            // The walk reads B, C, dtu and dy step by step (a fresh address: not the
            // recompute's loads kept alive for the block); it takes the recompute's
            // decays (BLOCK x NS registers; ptxas had kept most of them anyway).
            let walk_row0 = row0.pinned();
            let dy = load_block(dy_row.skip(j * BLOCK * 4));
            unroll::<B, _>(|k| {
                let i = B - 1 - k;
                let step = j * BLOCK + i as u32;
                let row = walk_row0.skip(i as u32 * lay.bc_row());
                let (b, cc) = (bc_of::<NS>(row, quarter, false), bc_of::<NS>(row, quarter, true));
                let (dt_i, dtu_i, dy_i) = (dt[i], dtu[i], dy[i]);
                let prev = if i == 0 { start } else { hs[if i == 0 { 0 } else { i - 1 }] };
                let (mut y, mut sgb, mut sga) = (0.0f32, 0.0f32, 0.0f32);
                let (mut dbv, mut dcv) = ([0.0f32; NS], [0.0f32; NS]);
                unroll::<NS, _>(|n| {
                    let decay = decays[i][n];
                    let gh = fma(dy_i, cc[n], dh[n]);
                    y = fma(hs[i][n], cc[n], y);
                    dbv[n] = gh * dtu_i;
                    dcv[n] = dy_i * hs[i][n];
                    sgb = fma(gh, b[n], sgb);
                    let carried = gh * decay;
                    let gd = carried * prev[n];
                    sga = fma(a2[n], gd, sga);
                    da[n] = fma(dt_i, gd, da[n]);
                    dh[n] = carried;
                });
                // Every slice of the channel has read step i's dt, dtu, dy (its shuffled
                // sums needed them): the sums take their place.
                if lay.slices >= 8 {
                    let v = sum_over_slices(sgb, sga, y, slice, lay.slices);
                    if my_sum < 3 {
                        unsafe { my_row.st_f32(step * 4, v) };
                    }
                } else {
                    let mut off = 1;
                    while off < lay.slices {
                        y += shfl_xor(y, off);
                        sgb += shfl_xor(sgb, off);
                        sga += shfl_xor(sga, off);
                        off *= 2;
                    }
                    if slice == 0 {
                        unsafe {
                            dt_row.st_f32(step * 4, sgb);
                            dtu_row.st_f32(step * 4, sga);
                            dy_row.st_f32(step * 4, y);
                        }
                    }
                }
                reduce_bc::<NS>(&dbv, &dcv, plan, lay, step % f);
                if step % f == 0 {
                    sync_threads();
                    unsafe { push_bc(p, lay, cta, t0 + step) };
                    sync_threads();
                }
            });
        }
        unsafe { epilogue::<T>(p, lay, cta, t0, aligned) };
    }

    // dA of this batch row; dL/dh before the first step; the SRAM sums of dD, ddelta_bias.
    unroll::<NS, _>(|n| {
        if has(n) {
            unsafe { HbmMut::<f32>::from_addr(p.da_part).store(bc * ds + n0 + n, da[n]) };
            if p.dinitial_state != 0 {
                unsafe { HbmMut::<f32>::from_addr(p.dinitial_state).store(bc * ds + n0 + n, dh[n]) };
            }
        }
    });
    sync_threads();
    let mut i = t_id;
    while i < n_ch {
        let at = cta.b * p.dim as usize + cta.c0 + i as usize;
        let acc = Sram::at(lay.acc);
        unsafe {
            HbmMut::<f32>::from_addr(p.dd_part).store(at, acc.ld_f32(i * 4));
            HbmMut::<f32>::from_addr(p.dbias_part).store(at, acc.ld_f32((lay.channels + i) * 4));
        }
        i += lay.threads;
    }
}

/// `dst[i] = T(sum_p src[p * len + i])` (see ScanSumParams): parts added in order.
#[inline(always)]
unsafe fn scan_bwd_sum<T: Elem>(p: &ScanSumParams) {
    let stride = (crate::device::thread::grid_x() * SCAN_SUM_THREADS) as u64;
    let mut i = (block_x() * SCAN_SUM_THREADS + tid()) as u64;
    let src = Hbm::<f32>::from_addr(p.src);
    while i < p.len {
        let mut s = 0.0f32;
        let mut k = 0;
        while k < p.parts {
            s += unsafe { src.load((k as u64 * p.len + i) as usize) };
            k += 1;
        }
        let (dst, at) = if i < p.split { (p.dst, i) } else { (p.dst2, i - p.split) };
        unsafe { HbmMut::<T>::from_addr(dst).store(at as usize, T::from_f32(s)) };
        i += stride;
    }
}

macro_rules! scan_bwd_entry {
    ($name:ident, $t:ty, $ns:expr, $s:expr) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: ScanBwdParams) {
            unsafe { scan_bwd::<$t, $ns, $s>(&p) }
        }
    };
}

// Suffix: states per thread (scan_bwd_states_per_thread), any slice count.
scan_bwd_entry!(scan_bwd_f32_s4, f32, 4, 0);
scan_bwd_entry!(scan_bwd_f32_s8, f32, 8, 0);
scan_bwd_entry!(scan_bwd_bf16_s4, Bf16, 4, 0);
scan_bwd_entry!(scan_bwd_bf16_s8, Bf16, 8, 0);
scan_bwd_entry!(scan_bwd_f16_s4, F16, 4, 0);
scan_bwd_entry!(scan_bwd_f16_s8, F16, 8, 0);
// Suffix _x{S}: built for S slices (SCAN_BWD_FIXED).
scan_bwd_entry!(scan_bwd_f32_s4_x4, f32, 4, 4);
scan_bwd_entry!(scan_bwd_f32_s8_x8, f32, 8, 8);
scan_bwd_entry!(scan_bwd_bf16_s4_x4, Bf16, 4, 4);
scan_bwd_entry!(scan_bwd_bf16_s8_x8, Bf16, 8, 8);
scan_bwd_entry!(scan_bwd_f16_s4_x4, F16, 4, 4);
scan_bwd_entry!(scan_bwd_f16_s8_x8, F16, 8, 8);

macro_rules! scan_sum_entry {
    ($name:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: ScanSumParams) {
            unsafe { scan_bwd_sum::<$t>(&p) }
        }
    };
}

scan_sum_entry!(scan_bwd_sum_f32, f32);
scan_sum_entry!(scan_bwd_sum_bf16, Bf16);
scan_sum_entry!(scan_bwd_sum_f16, F16);
