//! Mamba selective scan. Shared by host and device: the launch parameters, the chunking
//! constants and the SRAM budget.
//!
//! Recurrence per (batch b, channel c, state n), with g = c / (dim / groups):
//!   dA_t = exp(delta_t * A[c, n]),   h_t = dA_t * h_{t-1} + delta_t * B[b, g, n, t] * u_t,
//!   y_t = sum_n h_t[n] * C[b, g, n, t] + D[c] * u_t,   out_t = y_t * silu(z_t),
//! delta_t = softplus(delta_t + delta_bias[c]) when asked. f32 math, f32 state.

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
