//! Elementwise operators of the example blocks, fused where that saves HBM traffic, and
//! the rotary embedding. Shared by host and device: op codes and launch parameters.
//!
//! `ew_*` streams 16-byte vectors (the norm kernels' pattern, no SRAM): y = op(x [+ bias
//! broadcast over the last axis], z), one read of each input and one write of y.

#[cfg(target_arch = "nvptx64")]
mod kernel;
#[cfg(target_arch = "nvptx64")]
pub(crate) mod rotary;

/// What `ew_*` computes, per element, with x' = x + bias[col] (x when there is no bias).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EwOp {
    /// x' (a bias add on its own)
    Identity = 0,
    /// x' sigmoid(x')
    Silu = 1,
    /// GELU, tanh form, of x'
    GeluTanh = 2,
    /// ln(1 + e^x') (x' above 20: x')
    Softplus = 3,
    /// x' + z (the residual add)
    Add = 4,
    /// x' silu(z) (the Mamba gate)
    MulSilu = 5,
}

impl EwOp {
    /// Whether the op reads z.
    pub const fn binary(self) -> bool {
        matches!(self, EwOp::Add | EwOp::MulSilu)
    }
}

/// Threads per CTA of `ew_*` and `rotary_*`.
pub const EW_THREADS: u32 = 256;
/// 16-byte vectors each thread has in flight per loop trip.
pub const EW_UNROLL: u32 = 4;
/// Most CTAs of an `ew_*` grid; longer tensors are walked grid-stride.
pub const EW_MAX_GRID: u32 = 65535 * 8;

/// Launch parameters of `ew_*` (one definition for host and device).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EwParams {
    /// x, z (or 0), y: `n` contiguous elements of the kernel's type.
    pub x: u64,
    pub z: u64,
    /// bias `[cols]` (or 0), added to x along its last axis of `cols` elements.
    pub bias: u64,
    pub y: u64,
    pub n: u64,
    pub cols: u32,
    /// EwOp as u32.
    pub op: u32,
}

/// Launch parameters of `rotary_*`: x and y `[batch, seqlen, heads, head_dim]`, cos and
/// sin f32 `[table_rows, rot_dim / 2]`; token t of the call has position
/// `position_offset + t`. The first rot_dim features of each head are rotated, the rest
/// copied: GPT-NeoX style (`interleaved` 0) pairs feature i with i + rot_dim / 2,
/// interleaved (GPT-J) style pairs 2i with 2i + 1; pair i turns by angle_i(position):
///   out_a = x_a cos - x_b sin,   out_b = x_b cos + x_a sin.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RotaryParams {
    pub x: u64,
    pub cos: u64,
    pub sin: u64,
    pub y: u64,
    /// batch x seqlen x heads rows of head_dim.
    pub rows: u64,
    pub seqlen: u32,
    pub heads: u32,
    pub head_dim: u32,
    pub rot_dim: u32,
    pub position_offset: u32,
    pub interleaved: u32,
}
