//! One-token decode steps, batched over sequences: the conv1d update (shift the new input
//! into the rolling conv state, produce the conv's output) and the selective-state update
//! (one step of the scan's recurrence, the f32 state updated in place in HBM). Shared by
//! host and device: the launch parameters and the thread split.
//!
//! Both are bound by HBM (each state element is read and written once per token) or, at
//! batch 1, by the launch itself; the kernels spread the work over many threads with
//! 16-byte accesses where the state rows allow them.

#[cfg(target_arch = "nvptx64")]
mod conv;
#[cfg(target_arch = "nvptx64")]
mod ssm;

/// Threads per CTA of both kernels.
pub const DECODE_THREADS: u32 = 128;

/// Launch parameters of `conv1d_update_*`: one thread per (batch, channel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvUpdateParams {
    /// x `[batch, dim]`, the new input.
    pub x: u64,
    /// conv_state `[batch, dim, width - 1]`, oldest first; updated in place.
    pub conv_state: u64,
    /// weight `[dim, width]`, bias `[dim]` or 0.
    pub weight: u64,
    pub bias: u64,
    /// y `[batch, dim]`.
    pub y: u64,
    pub batch: u32,
    pub dim: u32,
    pub width: u32,
    /// 1: y = silu(pre).
    pub silu: u32,
}

/// States each thread of `ssm_update_*` carries: one 16-byte vector of f32.
pub const SSM_STATES_PER_THREAD: u32 = 4;

/// Threads that share one channel: d_state / 4 rounded up to a power of two, at most 32
/// (one warp; d_state above 128 gives each thread several groups of 4 states).
pub const fn ssm_slices(d_state: u32) -> u32 {
    let s = d_state.div_ceil(SSM_STATES_PER_THREAD);
    let s = if s <= 1 { 1 } else { s.next_power_of_two() };
    if s > 32 { 32 } else { s }
}

/// Groups of 4 states each thread walks: ceil(d_state / (4 x slices)).
pub const fn ssm_chunks(d_state: u32) -> u32 {
    d_state.div_ceil(SSM_STATES_PER_THREAD * ssm_slices(d_state))
}

/// Launch parameters of `ssm_update_*`: `slices` adjacent threads per (batch, channel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SsmUpdateParams {
    /// state f32 `[batch, dim, d_state]`, updated in place.
    pub state: u64,
    /// x, delta, z (or 0), out: `[batch, dim]`, the element type.
    pub x: u64,
    pub delta: u64,
    pub z: u64,
    pub out: u64,
    /// A f32 `[dim, d_state]`.
    pub a: u64,
    /// B, C `[batch, groups, d_state]`, the element type.
    pub b: u64,
    pub c: u64,
    /// D, delta_bias f32 `[dim]` or 0.
    pub d: u64,
    pub delta_bias: u64,
    pub batch: u32,
    pub dim: u32,
    pub d_state: u32,
    pub groups: u32,
    pub channels_per_group: u32,
    /// ssm_slices(d_state), ssm_chunks(d_state).
    pub slices: u32,
    pub chunks: u32,
    /// 1: delta' = softplus(delta + delta_bias).
    pub delta_softplus: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_every_state() {
        for n in 1..=256 {
            let (s, q) = (ssm_slices(n), ssm_chunks(n));
            assert!(s.is_power_of_two() && s <= 32, "{n}");
            assert!(s * q * SSM_STATES_PER_THREAD >= n, "{n}");
            assert!(q <= 2, "{n}");
        }
        assert_eq!((ssm_slices(16), ssm_chunks(16)), (4, 1));
        assert_eq!((ssm_slices(256), ssm_chunks(256)), (32, 2));
    }
}
