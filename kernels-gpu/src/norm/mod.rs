//! LayerNorm and RMSNorm forward: one CTA per row, the row staged in SRAM.
//!
//! HBM traffic is the floor: x read once, y written once (plus weight/bias, which stay
//! in L2 across rows, and 8 bytes of statistics per row).

#[cfg(target_arch = "nvptx64")]
mod kernel;

/// Launch parameters (one definition for host and device). Addresses are device
/// pointers; `bias` and `mean` are 0 when absent (RMSNorm has neither).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NormParams {
    /// x `[rows, cols]`, row-major, the kernel's element type.
    pub x: u64,
    /// weight `[cols]`.
    pub weight: u64,
    /// bias `[cols]` or 0.
    pub bias: u64,
    /// y `[rows, cols]`.
    pub y: u64,
    /// f32 `[rows]` or 0.
    pub mean: u64,
    /// f32 `[rows]`: 1 / sqrt(var + eps) (LayerNorm) or 1 / sqrt(mean(x^2) + eps) (RMSNorm).
    pub rstd: u64,
    pub rows: u32,
    pub cols: u32,
    pub eps: f32,
    pub _pad: u32,
}

/// Threads per CTA for rows of at most `NORM_SHORT_ROW_BYTES`: 4 warps. Small CTAs keep
/// more rows resident per SM (16), each in its own phase (load, reduce, write), so HBM
/// always has loads in flight: a 4096-wide bf16 row is 512 vectors, all in flight at once
/// (4 per thread). Measured on the H200: [16384 x 4096] bf16 at 89% of copy bandwidth
/// with 128 threads, 76% with 256.
pub const NORM_THREADS_SHORT: u32 = 128;
/// Threads per CTA for longer rows: 8 warps. SRAM (the row) then limits the CTAs per SM
/// (7 for 32 KiB rows), so each CTA needs more threads to keep as many loads in flight.
pub const NORM_THREADS_LONG: u32 = 256;
/// Rows up to this many bytes take the short-row kernel.
pub const NORM_SHORT_ROW_BYTES: u32 = 8192;

/// Threads per CTA for a row of `cols` elements of `elem_bytes` bytes. The thread count
/// is a compile-time constant of each kernel (`_t128`, `_t256`), so the kernel's vector
/// addresses are base + immediate and it stays at 32 registers.
pub const fn norm_threads(cols: u32, elem_bytes: u32) -> u32 {
    if cols * elem_bytes <= NORM_SHORT_ROW_BYTES { NORM_THREADS_SHORT } else { NORM_THREADS_LONG }
}
/// Longest row: 16384 f32 = 64 KiB of SRAM (bf16/f16 rows take half that).
pub const NORM_MAX_COLS: u32 = 16384;
/// Most CTAs in the grid; larger row counts are walked grid-stride.
pub const NORM_MAX_GRID: u32 = 65535 * 16;

/// Bytes of SRAM scratch for the block reduction: one f32 per warp.
pub const NORM_SCRATCH_BYTES: u32 = 32 * 4;

/// SRAM layout: [row: cols x elem bytes, padded to 16][reduction scratch: 32 f32].
pub const fn norm_smem_bytes(cols: u32, elem_bytes: u32) -> u32 {
    (cols * elem_bytes).div_ceil(16) * 16 + NORM_SCRATCH_BYTES
}

/// The most a short-row (`_t128`) launch asks for: an 8 KiB row, 8 320 bytes.
pub const NORM_SHORT_SMEM_BUDGET: u32 = norm_smem_bytes(NORM_SHORT_ROW_BYTES, 1);

/// The most any norm launch asks for: a 16384-wide f32 row, 65 664 bytes.
pub const NORM_SMEM_BUDGET: u32 = norm_smem_bytes(NORM_MAX_COLS, 4);
