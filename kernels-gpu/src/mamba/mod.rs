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
mod fwd;

/// The state is saved every `SCAN_CHECKPOINT` steps: checkpoint i is h before step
/// i * SCAN_CHECKPOINT (checkpoint 0 is the initial state). The backward recomputes each
/// segment from its checkpoint. Layout f32 `[batch, dim, n_checkpoints, d_state]`.
pub const SCAN_CHECKPOINT: u32 = 512;

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
///   bc       B and C of the chunk in f32, transposed: [steps][2 states + 4]. A row holds
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
        let z = bc + steps * (2 * states + 4) * 4;
        let total = z + channels * SCAN_RAW_PITCH;
        ScanSmem { slices, channels, states, steps, stage_bytes, delta, du, bc, z, total }
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
        assert_eq!(scan_checkpoints(512), 1);
        assert_eq!(scan_checkpoints(513), 2);
    }
}
