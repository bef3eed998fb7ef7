//! Mamba selective scan. Shared by host and device: the launch parameters, the chunking
//! constants and the SRAM layout.
//!
//! Recurrence per (batch b, channel c, state n), with g = c / (dim / groups):
//!   dA_t = exp(delta_t * A[c, n]),   h_t = dA_t * h_{t-1} + delta_t * B[b, g, n, t] * u_t,
//!   y_t = sum_n h_t[n] * C[b, g, n, t] + D[c] * u_t,   out_t = y_t * silu(z_t),
//! delta_t = softplus(delta_t + delta_bias[c]) when asked. f32 math, f32 state.
//!
//! The forward kernel (fwd.rs) gives each thread one channel and a slice of
//! `SCAN_STATES_PER_THREAD` states and walks the WHOLE sequence sequentially: the 16
//! states are 16 independent recurrences, enough instruction-level parallelism to keep
//! the special-function unit (one ex2 per step and state, the kernel's floor) busy, with
//! no block-wide scan at all. HBM sees each input once and each output once.

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
/// States each thread carries in registers (one slice of d_state).
pub const SCAN_STATES_PER_THREAD: u32 = 16;
/// Bytes of each input row staged per chunk: 4 16-byte vectors, so a chunk is 32 steps
/// of bf16/f16 or 16 steps of f32.
pub const SCAN_CHUNK_BYTES: u32 = 64;
/// SRAM pitch of a staged u, delta or z row: 64 bytes + 16 of padding, so that the
/// threads of a warp (one channel each) reading the same step hit 8 different bank
/// groups. B and C rows are read as whole vectors by consecutive threads: no padding.
pub const SCAN_RAW_PITCH: u32 = SCAN_CHUNK_BYTES + 16;

/// Steps per chunk for an element of `elem_bytes` bytes.
pub const fn scan_chunk_steps(elem_bytes: u32) -> u32 {
    SCAN_CHUNK_BYTES / elem_bytes
}

/// Threads that share one channel (its d_state split in slices of 16), a power of two
/// so that it divides the CTA: 1 for d_state <= 16, ..., 16 for d_state <= 256.
pub const fn scan_slices(d_state: u32) -> u32 {
    let s = d_state.div_ceil(SCAN_STATES_PER_THREAD);
    if s <= 1 { 1 } else { s.next_power_of_two() }
}

/// SRAM layout of one forward CTA (all offsets in bytes from the arena start):
///   raw[2]  two stages of cp.async input: u, delta, z rows (`channels` each,
///           SCAN_RAW_PITCH bytes apart), then B and C rows (`16 * slices` each, one per
///           state, SCAN_CHUNK_BYTES apart)
///   b_f32   B of the chunk converted to f32, [16 * slices][steps + 4]
///   c_f32   C likewise
///   y       per-slice partial y, f32 [slices][channels][steps + 4] (128 rows)
/// The + 4 padding makes 16-byte reads of 8 consecutive rows hit different banks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScanSmem {
    pub slices: u32,
    pub channels: u32,
    pub steps: u32,
    pub stage_bytes: u32,
    pub b_f32: u32,
    pub c_f32: u32,
    pub y: u32,
    pub total: u32,
}

impl ScanSmem {
    pub const fn new(d_state: u32, elem_bytes: u32) -> ScanSmem {
        let slices = scan_slices(d_state);
        let channels = SCAN_THREADS / slices;
        let states = SCAN_STATES_PER_THREAD * slices;
        let steps = scan_chunk_steps(elem_bytes);
        let row_f32 = (steps + 4) * 4;
        let stage_bytes = 3 * channels * SCAN_RAW_PITCH + 2 * states * SCAN_CHUNK_BYTES;
        let b_f32 = 2 * stage_bytes;
        let c_f32 = b_f32 + states * row_f32;
        let y = c_f32 + states * row_f32;
        let total = y + SCAN_THREADS * row_f32;
        ScanSmem { slices, channels, steps, stage_bytes, b_f32, c_f32, y, total }
    }
    /// Byte offset of raw stage `s`'s u, delta, z, B, C rows.
    pub const fn u(self, s: u32) -> u32 {
        s * self.stage_bytes
    }
    pub const fn delta(self, s: u32) -> u32 {
        self.u(s) + self.channels * SCAN_RAW_PITCH
    }
    pub const fn z(self, s: u32) -> u32 {
        self.u(s) + 2 * self.channels * SCAN_RAW_PITCH
    }
    pub const fn b(self, s: u32) -> u32 {
        self.u(s) + 3 * self.channels * SCAN_RAW_PITCH
    }
    pub const fn c(self, s: u32) -> u32 {
        self.b(s) + SCAN_STATES_PER_THREAD * self.slices * SCAN_CHUNK_BYTES
    }
    /// Bytes per f32 row of b_f32, c_f32 and y.
    pub const fn row_f32(self) -> u32 {
        (self.steps + 4) * 4
    }
}

/// The most SRAM any forward launch asks for (d_state 256, 16-bit inputs: 158 KiB, under
/// sm_80's 163 KiB per block).
pub const SCAN_FWD_SMEM_BUDGET: u32 = {
    let a = ScanSmem::new(SCAN_MAX_STATE, 2).total;
    let b = ScanSmem::new(SCAN_MAX_STATE, 4).total;
    if a > b { a } else { b }
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
            for eb in [2, 4] {
                let s = ScanSmem::new(d_state, eb);
                assert_eq!(s.slices * s.channels, SCAN_THREADS);
                assert!(s.slices * SCAN_STATES_PER_THREAD >= d_state);
                assert!(s.total <= SCAN_FWD_SMEM_BUDGET && s.total <= 163 * 1024);
                for off in [s.u(1), s.delta(0), s.z(1), s.b(1), s.c(1), s.b_f32, s.c_f32, s.y, s.row_f32()] {
                    assert_eq!(off % 16, 0, "d_state {d_state}: offset {off} not 16-byte aligned");
                }
            }
        }
        assert_eq!(ScanSmem::new(16, 2).steps, 32);
        assert_eq!(scan_slices(17), 2);
        assert_eq!(scan_slices(65), 8);
        assert_eq!(scan_checkpoints(512), 1);
        assert_eq!(scan_checkpoints(513), 2);
    }
}
