//! Causal depthwise conv1d, forward and backward (the short convolution in front of
//! Mamba's scan). Shared by host and device: the launch parameters, the work split and
//! the SRAM layout.
//!
//! Per (batch b, channel c, step t), with xpad = concat(initial_state, x) along time and
//! w1 = width - 1 (the library's `host/src/mamba/conv.rs` states the same):
//!   pre[t] = bias[c] + sum_{k < width} weight[c, k] xpad[t + k]   (f32, in that order)
//!   y[t]   = silu(pre[t]) if asked, else pre[t]
//!
//! Work split: a row (b, c) of `seqlen` steps is cut into segments of `CONV_SEG_STEPS`
//! steps of 32 x `vecs` 16-byte vectors each; one warp owns one segment (a "task") and
//! walks its steps in order. Each step's vectors are staged HBM -> SRAM by cp.async into
//! the warp's own SRAM region, double-buffered (step s + 1 flies while s computes), with
//! the vectors just before the step (the halo: the w1 <= 7 previous inputs) and, for the
//! backward, just after it. Lane l then computes the outputs of vectors l, l + 32, ...:
//! consecutive lanes read and write consecutive 16 bytes of HBM. A warp needs only
//! `bar.warp.sync`, never a block barrier.
//!
//! Rows that are not a whole number of 16-byte vectors (seqlen x elem % 16 != 0) start
//! `shift` = (row x seqlen) % lanes elements past a 16-byte boundary. The forward walks
//! such a row in the 16-byte vectors of the whole tensor (vector gv of the row holds its
//! elements gv x lanes - shift ..): the vectors wholly inside the row still move by
//! cp.async and 16-byte stores, and only the first and last vector of a row (shared with
//! its neighbours) are staged and stored element by element. The backward stages such
//! rows element by element (same SRAM layout, same compute).

#[cfg(target_arch = "nvptx64")]
mod bwd;
#[cfg(target_arch = "nvptx64")]
mod fwd;
#[cfg(target_arch = "nvptx64")]
pub(crate) mod point;
#[cfg(target_arch = "nvptx64")]
mod stage;

/// The widest conv (the history a step reads is at most 7 inputs).
pub const CONV_MAX_WIDTH: u32 = 8;
/// Threads per CTA: 4 independent warps.
pub const CONV_THREADS: u32 = 128;
pub const CONV_WARPS: u32 = CONV_THREADS / 32;
/// Vectors per lane per step: the forward has 4 x 16 bytes per lane in flight per stage
/// (2 stages: 128 bytes per lane, 16.5 KiB of SRAM per 4-warp CTA).
pub const CONV_FWD_VECS: u32 = 4;
/// The backward stages two tensors (x and dy) and keeps dpre in SRAM: 2 vectors per lane.
pub const CONV_BWD_VECS: u32 = 2;
/// Steps per warp task. A row of bf16 at L = 4096 is one forward task (4 steps of 1024).
pub const CONV_SEG_STEPS: u32 = 4;
/// Vector slots before a step's body (the 8 inputs before it: 1 vector of 16-bit
/// elements, 2 of f32) and after it (the backward's look-ahead), in every stage.
pub const CONV_HALO_VECS: u32 = 2;
pub const CONV_TAIL_VECS: u32 = 2;
/// f32 values per partial record of the backward: dweight[0..8], dbias.
pub const CONV_PARTIAL: u32 = CONV_MAX_WIDTH + 1;

/// Vectors of one element row: ceil(seqlen / lanes).
pub const fn conv_row_vecs(seqlen: u32, elem_bytes: u32) -> u32 {
    let lanes = 16 / elem_bytes;
    seqlen.div_ceil(lanes)
}

/// The most 16-byte vectors of the tensor that one row of `seqlen` elements touches:
/// ceil(seqlen / lanes) when rows are aligned, ceil((seqlen + lanes - 1) / lanes) when a
/// row may start up to lanes - 1 elements past a vector's start (the forward's mapping).
pub const fn conv_row_vecs_shifted(seqlen: u32, elem_bytes: u32) -> u32 {
    let lanes = 16 / elem_bytes;
    if seqlen.is_multiple_of(lanes) { seqlen / lanes } else { (seqlen + lanes - 1).div_ceil(lanes) }
}

/// Forward segments (warp tasks) per row: enough for the shifted mapping's vectors.
pub const fn conv_fwd_segments(seqlen: u32, elem_bytes: u32) -> u32 {
    let per_seg = 32 * CONV_FWD_VECS * CONV_SEG_STEPS;
    let s = conv_row_vecs_shifted(seqlen, elem_bytes).div_ceil(per_seg);
    if s == 0 { 1 } else { s }
}

/// Segments (warp tasks) per row for `vecs` vectors per lane per step.
pub const fn conv_segments(seqlen: u32, elem_bytes: u32, vecs: u32) -> u32 {
    let per_seg = 32 * vecs * CONV_SEG_STEPS;
    let s = conv_row_vecs(seqlen, elem_bytes).div_ceil(per_seg);
    if s == 0 { 1 } else { s }
}

/// SRAM layout of one warp (byte offsets from the warp's region), for `vecs` vectors per
/// lane and an element of `elem_bytes`:
///   stage[2]   double-buffered staged input: [halo 2][body 32 x vecs][tail 2] vectors of
///              x (the forward's only tensor), then the same of dy (backward only)
///   g          backward only: dpre of the step in f32, (body + tail) vectors' elements,
///              plus 16 floats of slack so the last lane's 16-float window stays inside
/// The CTA holds CONV_WARPS of these back to back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvSmem {
    pub body: u32,
    /// Bytes of one staged tensor (halo + body + tail vectors).
    pub tensor_bytes: u32,
    pub stage_bytes: u32,
    pub g: u32,
    pub warp_bytes: u32,
}

impl ConvSmem {
    pub const fn new(vecs: u32, elem_bytes: u32, backward: bool) -> ConvSmem {
        let body = 32 * vecs;
        let tensor_bytes = (CONV_HALO_VECS + body + CONV_TAIL_VECS) * 16;
        let stage_bytes = if backward { 2 * tensor_bytes } else { tensor_bytes };
        let g = 2 * stage_bytes;
        let lanes = 16 / elem_bytes;
        let g_bytes = if backward { ((body + CONV_TAIL_VECS) * lanes + 16) * 4 } else { 0 };
        ConvSmem { body, tensor_bytes, stage_bytes, g, warp_bytes: g + g_bytes }
    }
    /// Byte offset of vector slot `j` (j = -CONV_HALO_VECS .. body + CONV_TAIL_VECS) of
    /// tensor `which` (0: x, 1: dy) in stage `s`.
    pub const fn slot(self, s: u32, which: u32, j: i32) -> u32 {
        s * self.stage_bytes + which * self.tensor_bytes + ((j + CONV_HALO_VECS as i32) as u32) * 16
    }
    /// Dynamic SRAM of a CTA.
    pub const fn cta_bytes(self) -> u32 {
        CONV_WARPS * self.warp_bytes
    }
}

/// The most SRAM a forward launch asks for (f32 and 16-bit layouts are the same size).
pub const CONV_FWD_SMEM_BUDGET: u32 = ConvSmem::new(CONV_FWD_VECS, 2, false).cta_bytes();
/// The most SRAM a backward launch asks for (16-bit: 8 f32 of dpre per vector).
pub const CONV_BWD_SMEM_BUDGET: u32 = ConvSmem::new(CONV_BWD_VECS, 2, true).cta_bytes();

/// Launch parameters of the forward and the backward (one definition for host and
/// device). Tensors are contiguous, of the kernel's element type unless noted; optional
/// ones and those of the other direction are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvParams {
    /// x `[batch, dim, seqlen]`.
    pub x: u64,
    /// weight `[dim, width]`.
    pub weight: u64,
    /// bias `[dim]` or 0.
    pub bias: u64,
    /// initial_state `[batch, dim, width - 1]` or 0.
    pub initial_state: u64,
    /// Forward: y `[batch, dim, seqlen]` and final_state `[batch, dim, width - 1]`.
    pub y: u64,
    pub final_state: u64,
    /// Backward: dy `[batch, dim, seqlen]`, dfinal_state (or 0), dx, dinitial_state (0
    /// when there is no initial state).
    pub dy: u64,
    pub dfinal_state: u64,
    pub dx: u64,
    pub dinitial_state: u64,
    /// Backward: f32 `[dim, batch * segments, CONV_PARTIAL]`, one record per warp task.
    pub partials: u64,
    pub batch: u32,
    pub dim: u32,
    pub seqlen: u32,
    pub width: u32,
    /// conv_segments(seqlen, elem, vecs).
    pub segments: u32,
    /// 1: y = silu(pre).
    pub silu: u32,
}

/// Launch parameters of the backward's second kernel: dweight and dbias from the
/// partial records, one warp per channel, in a fixed order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConvReduceParams {
    /// f32 `[dim, records, CONV_PARTIAL]`.
    pub partials: u64,
    /// dweight `[dim, width]`, dbias `[dim]` (or 0), the element type.
    pub dweight: u64,
    pub dbias: u64,
    pub dim: u32,
    pub width: u32,
    pub records: u32,
    pub _pad: u32,
}

/// Threads per CTA of the reduction: one warp per channel, 4 channels per CTA.
pub const CONV_REDUCE_THREADS: u32 = 128;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_small() {
        for eb in [2, 4] {
            for (vecs, bwd) in [(CONV_FWD_VECS, false), (CONV_BWD_VECS, true)] {
                let s = ConvSmem::new(vecs, eb, bwd);
                assert_eq!(s.warp_bytes % 16, 0);
                assert_eq!(s.slot(1, 1, -2) % 16, 0);
                assert_eq!(s.slot(0, 0, -2), 0);
                assert!(s.slot(1, bwd as u32, (s.body + CONV_TAIL_VECS) as i32) <= s.g);
                assert!(s.cta_bytes() <= if bwd { CONV_BWD_SMEM_BUDGET } else { CONV_FWD_SMEM_BUDGET });
            }
        }
        // 16.5 KiB forward CTAs: 12 fit an SM's 228 KiB with their 1 KiB driver reserve.
        assert_eq!(CONV_FWD_SMEM_BUDGET, 4 * 2 * 132 * 16);
        assert!(CONV_BWD_SMEM_BUDGET <= 48 * 1024);
        assert_eq!(conv_segments(4096, 2, CONV_FWD_VECS), 1);
        assert_eq!(conv_segments(4097, 2, CONV_FWD_VECS), 2);
        assert_eq!(conv_segments(1, 4, CONV_FWD_VECS), 1);
        assert_eq!(conv_row_vecs(9, 2), 2);
        // Shifted rows: 10 bf16 from element 7 of a vector touch 3 vectors, 9 touch 2.
        assert_eq!(conv_row_vecs_shifted(10, 2), 3);
        assert_eq!(conv_row_vecs_shifted(9, 2), 2);
        assert_eq!(conv_row_vecs_shifted(16, 2), 2);
        assert_eq!(conv_row_vecs_shifted(6, 4), 3);
        assert_eq!(conv_row_vecs_shifted(5, 4), 2);
        assert_eq!(conv_fwd_segments(4096, 2), 1);
        assert_eq!(conv_fwd_segments(4095, 2), 2);
        assert_eq!(conv_fwd_segments(4089, 2), 1);
    }
}
