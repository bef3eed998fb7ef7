//! Mamba selective scan. Shared by host and device: the launch parameters, the chunking
//! constants and the SRAM layout.
//!
//! Recurrence per (batch b, channel c, state n), with g = c / (dim / groups):
//!   dA_t = exp(delta_t * A[c, n]),   h_t = dA_t * h_{t-1} + delta_t * B[b, g, n, t] * u_t,
//!   y_t = sum_n h_t[n] * C[b, g, n, t] + D[c] * u_t,   out_t = y_t * silu(z_t),
//! delta_t = softplus(delta_t + delta_bias[c]) when asked. f32 math, f32 state.
//!
//! The forward kernel (fwd.rs) gives each thread one channel and a slice of 4, 8 or 16
//! states (`scan_states_per_thread`) and walks the WHOLE sequence sequentially: the
//! states are independent recurrences (instruction-level parallelism), the threads of
//! (batch, channel, slice) give the thread-level parallelism that keeps the
//! special-function unit (one ex2 per step and state, the kernel's floor) busy, with no
//! block-wide scan at all. HBM sees each input once and each output once.

#[cfg(target_arch = "nvptx64")]
mod bwd;
#[cfg(target_arch = "nvptx64")]
mod common;
#[cfg(target_arch = "nvptx64")]
mod fwd;
#[cfg(target_arch = "nvptx64")]
mod warp_sum;

/// The state is saved every `SCAN_CHECKPOINT` steps: checkpoint i is h before step
/// i * SCAN_CHECKPOINT (checkpoint 0 is the initial state). Layout f32 `[batch, dim,
/// n_checkpoints, d_state]`: 1/128 of a `[batch, dim, seqlen, d_state]` tensor. (Every 32
/// steps cost the forward 0.17-0.24 ms at b = 8, dim = 4096, L = 4096, d_state 16: the
/// extra state writes; measured on an H200.)
pub const SCAN_CHECKPOINT: u32 = 128;

/// The backward kernel walks the sequence in segments of this many steps, in reverse: a
/// segment's inputs fit its SRAM. Per checkpoint interval it first steps the state from
/// the checkpoint to each of the interval's segment starts (`ScanBwdSmem::starts`).
pub const SCAN_BWD_SEG: u32 = 32;

/// The largest d_state.
pub const SCAN_MAX_STATE: u32 = 256;

/// Number of checkpoints for a sequence of `seqlen` steps (at least 1).
pub const fn scan_checkpoints(seqlen: u32) -> u32 {
    if seqlen == 0 { 1 } else { seqlen.div_ceil(SCAN_CHECKPOINT) }
}

/// Threads per CTA of the forward kernel.
pub const SCAN_THREADS: u32 = 128;
/// States each thread carries in registers (one slice of d_state), by d_state: 4 up to
/// 4, 8 up to 16, 16 above. Fewer states per thread give more threads (at b = 8,
/// dim = 4096, d_state 16, 16 states per thread left 8 warps per SM and the SFU idle 57%
/// of the time; 8 gave 1.19 ms, 4 gave 1.38 ms: each thread also pays per-step loads,
/// shuffles and its share of the per-channel work); more keep the per-CTA conversion of
/// B and C (d_state x steps per chunk, shared by the CTA's `128 / slices` channels) small.
pub const fn scan_states_per_thread(d_state: u32) -> u32 {
    if d_state <= 4 {
        4
    } else if d_state <= 16 {
        8
    } else {
        16
    }
}

/// The states per thread for a launch of `threads_per_state_slice(ns) = batch x dim x
/// slices` threads on `sms` SMs: `scan_states_per_thread`, halved (down to 4, at most
/// 32 slices per channel) while the launch has fewer than 12 warps per SM, where the
/// SFU starves for lack of warps (b = 8, dim = 2048, d_state 16: 8 states per thread give
/// 7.75 warps per SM and 39% of the ex2 floor).
pub const fn scan_states_for_launch(d_state: u32, channels: u64, sms: u32) -> u32 {
    let mut ns = scan_states_per_thread(d_state);
    while ns > 4 {
        let half = ns / 2;
        let slices = scan_slices_for(d_state, ns) as u64;
        if slices * 2 > 32 || channels * slices >= sms as u64 * 12 * 32 {
            break;
        }
        ns = half;
    }
    ns
}
/// Bytes of each input row staged per chunk: 4 16-byte vectors, so a chunk is 32 steps
/// of bf16/f16 or 16 steps of f32.
pub const SCAN_CHUNK_BYTES: u32 = 64;
/// SRAM pitch of a staged u or delta row: 64 bytes + 16 of padding, so that the 16-byte
/// vectors the conversion pass reads from 8 rows at once fall in different banks. B and C
/// rows are read as whole vectors by consecutive threads: no padding.
pub const SCAN_RAW_PITCH: u32 = SCAN_CHUNK_BYTES + 16;

/// Steps per chunk for an element of `elem_bytes` bytes.
pub const fn scan_chunk_steps(elem_bytes: u32) -> u32 {
    SCAN_CHUNK_BYTES / elem_bytes
}

/// Byte offset of step `t`'s row in a bc tile of `row` bytes per step. The conversion
/// (bc_to_f32) stores one staged 16-byte vector per thread, a step at a time; rows are 4
/// words mod 32 apart and a vector spans 8 (or 4) rows, so without a skew the 4 vectors a
/// warp stores at once land in the same banks. Vector v = t elem_bytes / 16's rows are
/// moved 16 (v mod 2 + `pair` (v / 2)) bytes on: `pair` 2 spreads the forward's rows (8
/// states per thread: a warp's 8 B / C rows use words {0-3, 16-19}) and the f32 backward's,
/// 4 the 16-bit backward's ({0-3, 8-11}); tests check both.
pub const fn scan_bc_at(t: u32, row: u32, elem_bytes: u32, pair: u32) -> u32 {
    let v = t * elem_bytes / 16;
    t * row + 16 * ((v & 1) + pair * (v >> 1))
}

/// The forward's bc skew (scan_bc_at).
const SCAN_FWD_BC_PAIR: u32 = 2;

/// The backward's bc skew for `elem_bytes` inputs (scan_bc_at).
const fn scan_bwd_bc_pair(elem_bytes: u32) -> u32 {
    if elem_bytes < 4 { 4 } else { 2 }
}

/// Bytes of a bc tile of `steps` rows (scan_bc_at), a multiple of 16.
pub const fn scan_bc_bytes(steps: u32, row: u32, elem_bytes: u32, pair: u32) -> u32 {
    (scan_bc_at(steps - 1, row, elem_bytes, pair) + row).next_multiple_of(16)
}

/// Threads that share one channel (its d_state split in slices of `ns`), a power of two
/// so that the slices of a channel sit in one warp (at most 32).
pub const fn scan_slices_for(d_state: u32, ns: u32) -> u32 {
    let s = d_state.div_ceil(ns);
    if s <= 1 { 1 } else { s.next_power_of_two() }
}

/// SRAM layout of one forward CTA (byte offsets from the arena start):
///   raw[2]   two stages of cp.async input: u and delta rows (`channels` each,
///            SCAN_RAW_PITCH apart), then B and C rows (`8 * slices` each, one per
///            state, SCAN_CHUNK_BYTES apart)
///   delta    delta' of the chunk, f32 [channels][steps + 4] (bias and softplus applied)
///   du       delta' * u, f32 [channels][steps + 4]; after the scan, y (same place)
///   bc       B and C of the chunk in f32, transposed: [steps][2 states + 4], each staged
///            vector's rows 16 bytes on (scan_bc_at: no bank conflicts). A row holds
///            quarter 0 (states 0..4) of every slice as (B x4, C x4) pairs, then quarter
///            1, ...: a thread's B and C quarter are 32 contiguous bytes (one address
///            register, immediate offsets) and a warp's slices read adjacent ones
///   z        z rows of the chunk (`channels`, SCAN_RAW_PITCH apart), one stage: issued
///            at the chunk's start, read by its epilogue
/// The + 4 paddings spread rows read together over the banks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScanSmem {
    pub slices: u32,
    pub channels: u32,
    pub states: u32,
    pub steps: u32,
    pub elem_bytes: u32,
    pub stage_bytes: u32,
    pub delta: u32,
    pub du: u32,
    pub bc: u32,
    pub z: u32,
    pub total: u32,
}

impl ScanSmem {
    /// The layout for `ns` states per thread (`scan_states_for_launch`).
    pub const fn new(d_state: u32, elem_bytes: u32, ns: u32) -> ScanSmem {
        let slices = scan_slices_for(d_state, ns);
        let channels = SCAN_THREADS / slices;
        let states = ns * slices;
        let steps = scan_chunk_steps(elem_bytes);
        let stage_bytes = 2 * channels * SCAN_RAW_PITCH + 2 * states * SCAN_CHUNK_BYTES;
        let delta = 2 * stage_bytes;
        let du = delta + channels * (steps + 4) * 4;
        let bc = du + channels * (steps + 4) * 4;
        let z = bc + scan_bc_bytes(steps, (2 * states + 4) * 4, elem_bytes, SCAN_FWD_BC_PAIR);
        let total = z + channels * SCAN_RAW_PITCH;
        ScanSmem { slices, channels, states, steps, elem_bytes, stage_bytes, delta, du, bc, z, total }
    }
    /// Byte offset of raw stage `s`'s u, delta, B and C rows.
    pub const fn u(self, s: u32) -> u32 {
        s * self.stage_bytes
    }
    pub const fn delta_raw(self, s: u32) -> u32 {
        self.u(s) + self.channels * SCAN_RAW_PITCH
    }
    pub const fn b(self, s: u32) -> u32 {
        self.u(s) + 2 * self.channels * SCAN_RAW_PITCH
    }
    pub const fn c(self, s: u32) -> u32 {
        self.b(s) + self.states * SCAN_CHUNK_BYTES
    }
    /// Bytes per row of the delta and du tiles.
    pub const fn row_f32(self) -> u32 {
        (self.steps + 4) * 4
    }
    /// Bytes per (step) row of bc.
    pub const fn bc_row(self) -> u32 {
        (2 * self.states + 4) * 4
    }
    /// The skew of bc's rows (scan_bc_at).
    pub const fn bc_pair(self) -> u32 {
        SCAN_FWD_BC_PAIR
    }
    /// Byte offset of step t's row in bc (scan_bc_at).
    pub const fn bc_at(self, t: u32) -> u32 {
        scan_bc_at(t, self.bc_row(), self.elem_bytes, self.bc_pair())
    }
}

/// The most SRAM any forward launch asks for (d_state 256, 16-bit inputs: 133 KiB, under
/// sm_80's 163 KiB per block).
pub const SCAN_FWD_SMEM_BUDGET: u32 = {
    // The largest B/C tiles come with the most states per CTA: d_state 256 at 8 states
    // per thread (32 slices) or 16 (16 slices) — both 256 states; 2-byte and 4-byte inputs.
    let mut most = 0;
    let mut ns = 8;
    while ns <= 16 {
        let mut eb = 2;
        while eb <= 4 {
            let t = ScanSmem::new(SCAN_MAX_STATE, eb, ns).total;
            if t > most {
                most = t;
            }
            eb += 2;
        }
        ns *= 2;
    }
    most
};

/// Launch parameters of the forward (one definition for host and device). Tensors are
/// contiguous in the layouts of the module doc; optional ones are 0 when absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanFwdParams {
    /// u, delta, z (or 0), out: `[batch, dim, seqlen]`, the kernel's element type.
    pub u: u64,
    pub delta: u64,
    pub z: u64,
    pub out: u64,
    /// A f32 `[dim, d_state]`.
    pub a: u64,
    /// B, C `[batch, groups, d_state, seqlen]`, the element type.
    pub b: u64,
    pub c: u64,
    /// D, delta_bias f32 `[dim]` or 0.
    pub d: u64,
    pub delta_bias: u64,
    /// f32 `[batch, dim, d_state]`: initial state (or 0) and final state.
    pub initial_state: u64,
    pub final_state: u64,
    /// f32 `[batch, dim, scan_checkpoints(seqlen), d_state]`.
    pub checkpoints: u64,
    pub batch: u32,
    pub dim: u32,
    pub seqlen: u32,
    pub d_state: u32,
    pub groups: u32,
    /// dim / groups.
    pub channels_per_group: u32,
    /// CTAs per (batch, group) along the channels: ceil(channels_per_group / channels).
    pub ctas_per_group: u32,
    /// 1: delta = softplus(delta + bias).
    pub delta_softplus: u32,
}

/// Threads per CTA of the backward kernel, at most (`scan_bwd_threads`).
pub const SCAN_BWD_THREADS: u32 = 128;

/// Threads of a backward CTA with `slices` threads per channel: 128, but at most 64
/// channels (each channel's segment tiles take 1.3-2.3 KiB of SRAM). Measured at b = 8,
/// dim = 4096, L = 4096, d_state 16, bf16 (H200): 128 threads (132 registers, 3 CTAs or
/// 12 warps per SM) 6.9 ms, 256 threads (1 CTA, 8 warps) 8.5 ms; each CTA writes one
/// dB / dC partial, so fewer threads mean more partials, which cost less than the warps.
pub const fn scan_bwd_threads(slices: u32) -> u32 {
    if slices < 2 { 64 } else { SCAN_BWD_THREADS }
}

/// The backward walks a segment in blocks of this many steps: a block's states are
/// recomputed into registers (SCAN_BWD_BLOCK x NS) and walked back to front.
pub const SCAN_BWD_BLOCK: u32 = 4;
/// The most steps of dB / dC the `red` tile holds between flushes.
pub const SCAN_BWD_FLUSH: u32 = 8;
/// SRAM for the cross-warp reduction of dB and dC: flushed every `flush_steps` steps
/// (SCAN_BWD_FLUSH, fewer for large d_state) so that it stays within this.
pub const SCAN_BWD_RED_BUDGET: u32 = 16 * 1024;

/// (states per thread, slices) pairs with their own backward kernels (`scan_bwd_*_s{NS}_x{S}`),
/// built for that slice count: the layout, the dB / dC sums and the shuffles are
/// compile-time (d_state 9..=16 and 33..=64 by default, Mamba's usual sizes). Other
/// pairs take the kernels that read the slice count from the launch. SASS at d_state 16:
/// the walk's loop body (a 4-step block) is 466 instructions here against 1399 there
/// (runtime loops, divisions, predicates spilled to registers), and 16-bit inputs fit 4
/// CTAs per SM without spills. H100, b = 8, dim = 4096, L = 4096, bf16: 7.64 -> 5.56 ms
/// at d_state 16 (6.14 with 3 CTAs per SM), 66.5 -> 34.7 ms at d_state 64.
pub const SCAN_BWD_FIXED: &[(u32, u32)] = &[(4, 4), (8, 8)];

/// Whether `(ns, slices)` has a fixed-slice backward kernel (SCAN_BWD_FIXED).
pub const fn scan_bwd_fixed(ns: u32, slices: u32) -> bool {
    let mut i = 0;
    while i < SCAN_BWD_FIXED.len() {
        if SCAN_BWD_FIXED[i].0 == ns && SCAN_BWD_FIXED[i].1 == slices {
            return true;
        }
        i += 1;
    }
    false
}

/// States per thread of the backward, by d_state: 4 up to 16, 8 above (32 slices at
/// d_state 256). Never 16: a block holds SCAN_BWD_BLOCK x NS recomputed states in
/// registers.
pub const fn scan_bwd_states_per_thread(d_state: u32) -> u32 {
    if d_state <= 16 { 4 } else { 8 }
}

/// SRAM layout of one backward CTA (byte offsets from the arena start), for one segment
/// of SEG = SCAN_BWD_SEG steps, every element type:
///   raw     u, delta, dout, z rows of the CTA's `channels` (SEG x elem bytes + 16 of
///           padding each), then B and C rows (`states` each, SEG x elem bytes): one
///           stage, cp.async
///   dt      delta' of the segment, f32 [channels][SEG + 4]; the walk writes sum_n
///           dh B (the du / ddelta term) over it, step by step
///   dtu     delta' u, f32, same shape; the walk writes sum_n A dA h_prev dh over it
///   dy      dL/dy (dout silu(z)), f32, same shape; the walk writes y = <h, C> over it
///   bc      B and C in f32, [SEG][2 states + 4], skewed (the forward's layout)
///   snap    the state at the start of blocks 1..: [SEG / BLOCK - 1][threads][NS] f32 (snap,
///           xch and red sit in the staged B and C rows' place when they fit there)
///   xch     with 8 states per thread, per warp, one step's dB and dC of every lane,
///           2 NS x 32 f32: the warp sums them over its channels through it (4 states per
///           thread sum by shuffles: none)
///   red     per-warp dB and dC of `flush_steps` steps: [warps][2][states][red_pitch],
///           red_pitch = flush_steps + 1 words: the 32 lanes of a warp store one step
///           of 32 different (dB / dC, state) rows at once; an odd pitch puts them in 32
///           banks (a pitch of 8 put them in 4: an 8-way conflict every step)
///   acc     dD and ddelta_bias sums per channel, f32 [2][channels]
///   coef    D and delta_bias of the CTA's channels, f32 [2][channels], loaded once: the
///           conversion and the epilogue read them between barriers, where a global
///           load's latency would hold up the whole CTA
/// (The state at the start of each segment of a checkpoint interval lives in HBM, in
/// `ScanBwdParams::starts`: SRAM is full at 4 CTAs per SM.)
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScanBwdSmem {
    pub threads: u32,
    pub slices: u32,
    pub channels: u32,
    pub states: u32,
    pub elem_bytes: u32,
    pub raw_row: u32,
    pub raw_pitch: u32,
    pub raw_b: u32,
    pub raw_c: u32,
    pub dt: u32,
    pub dtu: u32,
    pub dy: u32,
    pub bc: u32,
    pub snap: u32,
    pub xch: u32,
    pub red: u32,
    pub flush_steps: u32,
    pub red_pitch: u32,
    pub acc: u32,
    pub coef: u32,
    pub total: u32,
}

impl ScanBwdSmem {
    /// The layout with `scan_bwd_threads` threads.
    pub const fn new(d_state: u32, elem_bytes: u32, ns: u32) -> ScanBwdSmem {
        Self::with_threads(d_state, elem_bytes, ns, scan_bwd_threads(scan_slices_for(d_state, ns)))
    }

    /// The layout for CTAs of `threads` threads (a multiple of 32 and of the slices).
    pub const fn with_threads(d_state: u32, elem_bytes: u32, ns: u32, threads: u32) -> ScanBwdSmem {
        Self::for_slices(scan_slices_for(d_state, ns), elem_bytes, ns, threads)
    }

    /// The layout for `slices` threads per channel (a power of two): it depends on d_state
    /// only through them, so a kernel built for one slice count knows it at compile time.
    pub const fn for_slices(slices: u32, elem_bytes: u32, ns: u32, threads: u32) -> ScanBwdSmem {
        let seg = SCAN_BWD_SEG;
        let channels = threads / slices;
        let states = ns * slices;
        let raw_row = seg * elem_bytes;
        let raw_pitch = raw_row + 16;
        let raw_b = 4 * channels * raw_pitch;
        let raw_c = raw_b + states * raw_row;
        let dt = raw_c + states * raw_row;
        let row_f32 = (seg + 4) * 4;
        let dtu = dt + channels * row_f32;
        let dy = dtu + channels * row_f32;
        let bc = dy + channels * row_f32;
        // Bytes of `red` per step of a flush (the tile has one more: the pitch's padding).
        let per_step = (threads / 32) * 2 * states * 4;
        let mut flush_steps = SCAN_BWD_FLUSH;
        while flush_steps > 1 && flush_steps * per_step > SCAN_BWD_RED_BUDGET {
            flush_steps /= 2;
        }
        let red_pitch = flush_steps + 1;
        // snap, xch and red are used between the B/C conversion and the segment's end:
        // they take the staged B and C rows' place when they fit there (f32 inputs).
        let snap_bytes = (seg / SCAN_BWD_BLOCK - 1) * threads * ns * 4;
        let xch_bytes = if ns >= 8 { threads * 2 * ns * 4 } else { 0 };
        let scratch = snap_bytes + xch_bytes + red_pitch * per_step;
        let after_bc = bc + scan_bc_bytes(seg, (2 * states + 4) * 4, elem_bytes, scan_bwd_bc_pair(elem_bytes));
        let snap = if scratch <= 2 * states * raw_row { raw_b } else { after_bc };
        let xch = snap + snap_bytes;
        let red = xch + xch_bytes;
        let end = if snap == raw_b { after_bc } else { (red + red_pitch * per_step).next_multiple_of(16) };
        let acc = end;
        let coef = acc + 2 * channels * 4;
        let total = coef + 2 * channels * 4;
        ScanBwdSmem {
            threads,
            slices,
            channels,
            states,
            elem_bytes,
            raw_row,
            raw_pitch,
            raw_b,
            raw_c,
            dt,
            dtu,
            dy,
            bc,
            snap,
            xch,
            red,
            flush_steps,
            red_pitch,
            acc,
            coef,
            total,
        }
    }
    /// Byte offset of raw row `r` of input `k` (0 u, 1 delta, 2 dout, 3 z).
    pub const fn raw(self, k: u32, r: u32) -> u32 {
        (k * self.channels + r) * self.raw_pitch
    }
    /// Bytes per row of the dt, dtu and dy tiles.
    pub const fn row_f32(self) -> u32 {
        (SCAN_BWD_SEG + 4) * 4
    }
    /// Bytes per (step) row of bc.
    pub const fn bc_row(self) -> u32 {
        (2 * self.states + 4) * 4
    }
    /// The skew of bc's rows (scan_bc_at).
    pub const fn bc_pair(self) -> u32 {
        scan_bwd_bc_pair(self.elem_bytes)
    }
    /// Byte offset of step t's row in bc (scan_bc_at).
    pub const fn bc_at(self, t: u32) -> u32 {
        scan_bc_at(t, self.bc_row(), self.elem_bytes, self.bc_pair())
    }
    /// Byte offset in `red` of (warp, dB or dC, state n, slot).
    pub const fn red_at(self, warp: u32, which: u32, n: u32, slot: u32) -> u32 {
        (((warp * 2 + which) * self.states + n) * self.red_pitch + slot) * 4
    }
}

/// The most SRAM any backward launch asks for (d_state 256 with f32 inputs).
pub const SCAN_BWD_SMEM_BUDGET: u32 = {
    let mut most = 0;
    let mut d_state = 1;
    while d_state <= SCAN_MAX_STATE {
        let ns = scan_bwd_states_per_thread(d_state);
        let mut eb = 2;
        while eb <= 4 {
            let t = ScanBwdSmem::new(d_state, eb, ns).total;
            if t > most {
                most = t;
            }
            eb += 2;
        }
        d_state += 1;
    }
    most
};

/// Launch parameters of the backward kernel. Tensors are contiguous; optional ones 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanBwdParams {
    /// u, delta, z (or 0), dout: `[batch, dim, seqlen]`, the element type.
    pub u: u64,
    pub delta: u64,
    pub z: u64,
    pub dout: u64,
    /// A f32 `[dim, d_state]`; B, C `[batch, groups, d_state, seqlen]`; D, delta_bias f32
    /// `[dim]` or 0.
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub d: u64,
    pub delta_bias: u64,
    /// The forward's checkpoints, f32 `[batch, dim, scan_checkpoints(seqlen), d_state]`.
    pub checkpoints: u64,
    /// f32 `[batch, dim, d_state]` or 0: the gradient flowing into the final state.
    pub dfinal_state: u64,
    /// Outputs `[batch, dim, seqlen]`, the element type: du, ddelta, dz (or 0).
    pub du: u64,
    pub ddelta: u64,
    pub dz: u64,
    /// f32 `[batch, dim, d_state]` or 0.
    pub dinitial_state: u64,
    /// Per-batch-row partials, f32: dA `[batch, dim, d_state]`, dD and ddelta_bias
    /// `[batch, dim]` (summed over the batch by `scan_bwd_sum_*` in a fixed order).
    pub da_part: u64,
    pub dd_part: u64,
    pub dbias_part: u64,
    /// dB and dC in f32, `[parts, 2, batch, groups, d_state, seqlen]` (index 0 dB, 1 dC):
    /// with `deterministic` each CTA of a group stores its own part (parts =
    /// ctas_per_group); else one part, zeroed by the host, that every CTA adds to.
    pub dbc: u64,
    pub batch: u32,
    pub dim: u32,
    pub seqlen: u32,
    pub d_state: u32,
    pub groups: u32,
    pub channels_per_group: u32,
    pub ctas_per_group: u32,
    pub delta_softplus: u32,
    pub deterministic: u32,
    /// Threads per CTA (the layout's `threads`).
    pub threads: u32,
    pub _pad: u32,
    /// Scratch f32 `[CTAs, threads, SCAN_CHECKPOINT / SCAN_BWD_SEG - 1, NS]`: each
    /// thread's state at the start of segments 1.. of the interval it is walking (L2
    /// resident: 6 MiB at b = 8, dim = 4096, d_state 16).
    pub starts: u64,
}

/// Threads per CTA of the reductions that finish the backward.
pub const SCAN_SUM_THREADS: u32 = 256;

/// Parameters of `scan_bwd_sum_*`: `dst[i] = sum_{p < parts} src[p * len + i]` for
/// `i < split`, and `dst2[i - split]` the same for `split <= i < len`, rounded to the
/// kernel's element type. Parts are added in order: the result does not depend on the
/// launch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ScanSumParams {
    pub src: u64,
    pub dst: u64,
    pub dst2: u64,
    pub len: u64,
    pub split: u64,
    pub parts: u32,
    pub _pad: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smem_layout_fits_and_aligns() {
        for d_state in 1..=SCAN_MAX_STATE {
            for (eb, ns) in [2, 4].into_iter().flat_map(|eb| [4, 8, 16].map(|ns| (eb, ns))) {
                if scan_slices_for(d_state, ns) > 32 {
                    continue;
                }
                let s = ScanSmem::new(d_state, eb, ns);
                assert_eq!(s.slices * s.channels, SCAN_THREADS);
                assert!(s.slices * ns >= d_state && s.slices <= 32);
                assert!(s.total <= SCAN_FWD_SMEM_BUDGET && s.total <= 163 * 1024);
                for off in [s.u(1), s.delta_raw(0), s.b(1), s.c(1), s.delta, s.du, s.bc, s.z, s.row_f32(), s.bc_row()] {
                    assert_eq!(off % 16, 0, "d_state {d_state}: offset {off} not 16-byte aligned");
                }
            }
        }
        assert_eq!(ScanSmem::new(16, 2, 8).steps, 32);
        // 132 SMs: dim 2048 x batch 8 at d_state 16 drops to 4 states; dim 4096 keeps 8.
        assert_eq!(scan_states_for_launch(16, 8 * 2048, 132), 4);
        assert_eq!(scan_states_for_launch(16, 8 * 4096, 132), 8);
        assert_eq!(scan_states_for_launch(64, 8 * 4096, 132), 16);
        assert_eq!(scan_states_for_launch(256, 1, 132), 8);
        assert_eq!(scan_slices_for(4, scan_states_per_thread(4)), 1);
        assert_eq!(scan_slices_for(16, scan_states_per_thread(16)), 2);
        assert_eq!(scan_slices_for(17, scan_states_per_thread(17)), 2);
        assert_eq!(scan_slices_for(64, scan_states_per_thread(64)), 4);
        assert_eq!(scan_slices_for(65, scan_states_per_thread(65)), 8);
        assert_eq!(scan_slices_for(256, scan_states_per_thread(256)), 16);
        // 4 CTAs per SM (16 warps) at d_state 16, bf16 (1 KiB per CTA is the driver's).
        assert!(4 * (ScanSmem::new(16, 2, 8).total + 1024) <= 228 * 1024);
        assert_eq!(scan_checkpoints(128), 1);
        assert_eq!(scan_checkpoints(129), 2);
    }

    /// Whether the 4-byte words a warp stores at once fall in 32 different banks.
    fn one_per_bank(words: impl IntoIterator<Item = u32>) -> bool {
        let mut seen = 0u32;
        words.into_iter().all(|w| {
            let bit = 1 << (w % 32);
            let fresh = seen & bit == 0;
            seen |= bit;
            fresh
        })
    }

    #[test]
    fn bc_conversion_stores_are_conflict_free() {
        // bc_to_f32's first warp: item (lane) = staged row r of B then C, 16-byte vector
        // vec; its element e goes to step vec * lanes + e, column col of the state.
        let check = |states: u32, slices: u32, ns: u32, eb: u32, vecs: u32, row: u32, pair: u32| {
            let lanes = 16 / eb;
            for e in 0..lanes {
                let words = (0..32).map(|i| {
                    let (r, vec) = (i / vecs, i % vecs);
                    let (n, is_c) = if r < states { (r, 0) } else { (r - states, 1) };
                    let col = (n % ns / 4) * slices * 8 + n / ns * 8 + is_c * 4 + n % 4;
                    (scan_bc_at(vec * lanes + e, row, eb, pair) + col * 4) / 4
                });
                assert!(one_per_bank(words), "states {states}, {eb}-byte inputs, element {e}");
            }
        };
        for eb in [2, 4] {
            let f = ScanSmem::new(16, eb, 8);
            check(f.states, f.slices, 8, eb, SCAN_CHUNK_BYTES / 16, f.bc_row(), f.bc_pair());
            let b = ScanBwdSmem::new(16, eb, 4);
            check(b.states, b.slices, 4, eb, b.raw_row / 16, b.bc_row(), b.bc_pair());
        }
    }

    #[test]
    fn red_stores_are_conflict_free() {
        // d_state 16, 4 states per thread: after the reduce-scatter the 32 lanes of a warp
        // hold the 32 (dB / dC, state) sums of one step, stored into one slot.
        let lay = ScanBwdSmem::new(16, 2, 4);
        assert_eq!(2 * lay.states, 32);
        for slot in 0..lay.flush_steps {
            let words = (0..32).map(|o| lay.red_at(1, o / lay.states, o % lay.states, slot) / 4);
            assert!(one_per_bank(words), "slot {slot}");
        }
    }

    #[test]
    fn bwd_smem_layout_fits_and_aligns() {
        for d_state in 1..=SCAN_MAX_STATE {
            let ns = scan_bwd_states_per_thread(d_state);
            for eb in [2, 4] {
                let s = ScanBwdSmem::new(d_state, eb, ns);
                assert!(s.slices <= 32 && s.slices * ns >= d_state);
                assert_eq!(s.slices * s.channels, s.threads);
                assert!(s.threads % 32 == 0 && s.threads <= SCAN_BWD_THREADS && s.channels <= 64);
                // sm_80's 163 KiB per block.
                assert!(s.total <= SCAN_BWD_SMEM_BUDGET && s.total <= 163 * 1024, "d_state {d_state}: {}", s.total);
                for off in [
                    s.raw_b,
                    s.raw_c,
                    s.raw(1, 1),
                    s.dt,
                    s.dtu,
                    s.dy,
                    s.bc,
                    s.snap,
                    s.xch,
                    s.red,
                    s.acc,
                    s.coef,
                    s.row_f32(),
                    s.bc_row(),
                ] {
                    assert_eq!(off % 16, 0, "d_state {d_state}: offset {off} not 16-byte aligned");
                }
                assert!(SCAN_BWD_SEG % s.flush_steps == 0 && SCAN_BWD_SEG % SCAN_BWD_BLOCK == 0);
                assert!(SCAN_CHECKPOINT % SCAN_BWD_SEG == 0);
            }
        }
        // 4 CTAs (16 warps) per SM at d_state 16, bf16.
        assert!(4 * (ScanBwdSmem::new(16, 2, 4).total + 1024) <= 228 * 1024);
        // A fixed-slice kernel builds its layout from its slice count; the host launches it
        // with the layout of the d_state: they must agree.
        for &(ns, slices) in SCAN_BWD_FIXED {
            let mut seen = 0;
            for d_state in 1..=SCAN_MAX_STATE {
                if scan_slices_for(d_state, ns) != slices {
                    continue;
                }
                for eb in [2, 4] {
                    let fixed = ScanBwdSmem::for_slices(slices, eb, ns, scan_bwd_threads(slices));
                    assert_eq!(ScanBwdSmem::new(d_state, eb, ns), fixed, "d_state {d_state}");
                }
                seen += 1;
            }
            assert!(scan_bwd_fixed(ns, slices) && seen > 0);
        }
    }
}
