//! FlashAttention backward with recomputation: launch parameters and tile shapes of its
//! three kernels (one definition for host and device).
//!
//! - `attn_bwd_pre_*`: one warp per query row: `D = rowsum(dO * O)` in f32 (the softmax
//!   backward's row term) and zeros of the row's f32 dQ accumulator(s).
//! - `attn_bwd_*`: one CTA per (key block, batch x kv head). The CTA keeps its K and V
//!   tiles in SRAM and dK, dV in f32 registers, and walks the query blocks of every query
//!   head of its group that see one of its keys: it recomputes S = Q K^T and
//!   P = exp(S - lse), then dP = dO V^T, dS = P (dP - D), dV += P^T dO, dK += dS^T Q and
//!   dQ += dS K into the f32 accumulator in HBM. No N x N matrix exists anywhere.
//! - `attn_bwd_dq_*`: one warp per query row: dq = scale * (sum of the accumulators),
//!   rounded.
//!
//! dQ: in the fast mode the key blocks add into one f32 accumulator with `red.add`
//! (atomics, so the order of the sums varies). In the deterministic mode the grid has
//! `splits` CTAs per (batch, kv head); CTA `s` takes key blocks s, s + splits, ... and
//! adds into its own accumulator `s` with plain loads and stores (one writer per
//! element: each thread always owns the same element of the query block), and the dq
//! kernel sums the accumulators in split order.

/// Parameters of `attn_bwd_*`. Strides in elements; q, o, dout and dq share their layout,
/// k, v, dk and dv theirs (DESIGN.md: `[batch, seq, heads, head_dim]`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnBwdParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub dout: u64,
    /// f32 `[batch, heads_q, seqlen_q]`: the forward's lse (natural log) and D.
    pub lse: u64,
    pub delta: u64,
    /// f32 `[splits, batch, heads_q, seqlen_q, head_dim]` (splits = 1 in the fast mode).
    pub dq_acc: u64,
    pub dk: u64,
    pub dv: u64,
    pub q_batch_stride: u64,
    pub k_batch_stride: u64,
    /// Elements of one split's dQ accumulator: batch x heads_q x seqlen_q x head_dim.
    pub dq_split_stride: u64,
    pub q_row_stride: u32,
    pub k_row_stride: u32,
    pub seqlen_q: u32,
    pub seqlen_k: u32,
    pub heads_q: u32,
    pub heads_kv: u32,
    /// heads_q / heads_kv: kv head g serves query heads g * group .. (g + 1) * group.
    pub group: u32,
    pub head_dim: u32,
    /// As in `AttnFwdParams`.
    pub window_left: i32,
    pub window_right: i32,
    pub softcap: u32,
    pub score_pre: f32,
    pub score_log2: f32,
    /// The softmax scale (dK = scale x sum dS^T Q; the dq kernel applies it to dQ).
    pub scale: f32,
    /// 1: the deterministic mode (plain read-add-write into accumulator `block_x`).
    pub deterministic: u32,
}

/// Parameters of `attn_bwd_pre_*` and `attn_bwd_dq_*` (one warp per query row).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnBwdRowParams {
    /// pre: o and dout (like q) in, delta out. dq: dq (like q) out.
    pub o: u64,
    pub dout: u64,
    pub delta: u64,
    pub dq: u64,
    /// f32 `[splits, batch, heads_q, seqlen_q, head_dim]`: zeroed by pre, summed by dq.
    pub dq_acc: u64,
    pub q_batch_stride: u64,
    pub dq_split_stride: u64,
    pub q_row_stride: u32,
    pub seqlen_q: u32,
    pub heads_q: u32,
    pub head_dim: u32,
    /// batch x heads_q x seqlen_q.
    pub rows: u32,
    pub splits: u32,
    pub scale: f32,
}

/// Threads per CTA of the row kernels (8 rows per CTA).
pub const BWD_ROW_THREADS: u32 = 256;

/// Tile shape of one main-kernel instantiation. Each warp owns 16 x `m_tiles` keys and a
/// `d / d_split` slice of their dK, dV columns. Without `exchange`, the `d_split` warps
/// that share keys each recompute their S and dP over the whole query block (so that dK,
/// dV of large head dims fit in registers), and P^T, dS^T stay in registers as the A
/// operands of dV and dK. With `exchange` (FlashAttention-2's layout), those warps split
/// the query block instead (each computes S, dP for its keys x block_m / d_split
/// queries), and P^T and dS^T go through SRAM to the warps that need them: every Q / dO
/// fragment then feeds 2 m_tiles mma without S and dP of the whole block in registers.
/// With `exchange` and `d_split` 1 (d=64), each warp reads back only its own keys' P^T
/// and dS^T: the SRAM round trip lets S and dP run in sub-steps while dV, dK and dQ
/// take the whole query block at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BwdTile {
    pub d: u32,
    pub warps: u32,
    /// m16 key tiles per warp: each Q / dO fragment read from SRAM feeds this many mma.
    pub m_tiles: u32,
    /// Query rows per step of the query loop.
    pub block_m: u32,
    pub d_split: u32,
    pub exchange: bool,
    /// With `exchange`: sub-steps of a warp's S / dP (each block_m / d_split / s_sub
    /// queries), which bounds their registers; 1 without.
    pub s_sub: u32,
    /// dO pipeline depth: 2 (loaded with Q, a step ahead) or 1 (one tile, reloaded
    /// after a barrier once every warp has finished dV, while dK and dQ run).
    pub do_stages: u32,
}

impl BwdTile {
    /// Keys per CTA.
    pub const fn block_n(self) -> u32 {
        16 * self.m_tiles * self.warps / self.d_split
    }
    pub const fn threads(self) -> u32 {
        self.warps * 32
    }
    /// Queries of one warp's S and dP (of one sub-step).
    pub const fn s_queries(self) -> u32 {
        if self.exchange { self.block_m / self.d_split / self.s_sub } else { self.block_m }
    }
    /// m16 query tiles per warp in the dQ step.
    pub const fn dq_m_tiles(self) -> u32 {
        if self.exchange { 2 } else { 1 }
    }
    /// Q / K / V / dO row pitch in SRAM: the row plus 16 bytes (as the forward's).
    pub const fn pitch(self) -> u32 {
        self.d * 2 + 16
    }
    /// dS^T (and P^T) row pitch ([key][query]): the row plus 16 bytes, an odd number of
    /// 16-byte groups for ldmatrix without bank conflicts.
    pub const fn ds_pitch(self) -> u32 {
        self.block_m * 2 + 16
    }
    /// Warps of the dQ step: block_m / (16 dq_m_tiles) row groups x `dq_col_split`
    /// column chunks.
    pub const fn dq_col_split(self) -> u32 {
        self.warps / (self.block_m / (16 * self.dq_m_tiles()))
    }
    /// SRAM layout (bytes): [K: block_n rows][V: block_n][Q: 2 stages x block_m]
    /// [dO: do_stages x block_m][dS^T: block_n rows x ds_pitch][P^T: the same, with
    /// `exchange`][lse: 2 x block_m f32][D: 2 x block_m f32].
    pub const fn k_offset(self) -> u32 {
        0
    }
    pub const fn v_offset(self) -> u32 {
        self.block_n() * self.pitch()
    }
    pub const fn q_offset(self, stage: u32) -> u32 {
        (2 * self.block_n() + stage * self.block_m) * self.pitch()
    }
    pub const fn do_offset(self, stage: u32) -> u32 {
        (2 * self.block_n() + (2 + stage % self.do_stages) * self.block_m) * self.pitch()
    }
    pub const fn ds_offset(self) -> u32 {
        (2 * self.block_n() + (2 + self.do_stages) * self.block_m) * self.pitch()
    }
    pub const fn p_offset(self) -> u32 {
        self.ds_offset() + self.block_n() * self.ds_pitch()
    }
    pub const fn lse_offset(self, stage: u32) -> u32 {
        self.p_offset() + if self.exchange { self.block_n() * self.ds_pitch() } else { 0 } + stage * self.block_m * 4
    }
    pub const fn delta_offset(self, stage: u32) -> u32 {
        self.lse_offset(2) + stage * self.block_m * 4
    }
    pub const fn smem_bytes(self) -> u32 {
        self.delta_offset(2)
    }
    /// Shape rules the kernel relies on.
    pub const fn valid(self) -> bool {
        let rows = 16 * self.dq_m_tiles();
        let cs = if self.block_m.is_multiple_of(rows) { self.dq_col_split() } else { 0 };
        self.d.is_multiple_of(16)
            && self.block_m.is_multiple_of(16)
            && self.s_queries().is_multiple_of(16)
            && (self.do_stages == 1 || self.do_stages == 2)
            && (self.exchange || (self.do_stages == 2 && self.s_sub == 1))
            && self.s_sub >= 1
            && self.s_queries() * self.s_sub * if self.exchange { self.d_split } else { 1 } == self.block_m
            && self.warps.is_multiple_of(self.d_split)
            && (self.d / self.d_split).is_multiple_of(16)
            && cs >= 1
            && cs * (self.block_m / rows) == self.warps
            && (self.d / cs).is_multiple_of(16)
    }
}

#[allow(clippy::too_many_arguments)]
const fn t(d: u32, warps: u32, m_tiles: u32, block_m: u32, d_split: u32, exchange: bool, do_stages: u32) -> BwdTile {
    let tile = BwdTile { d, warps, m_tiles, block_m, d_split, exchange, s_sub: 1, do_stages };
    assert!(tile.valid());
    tile
}

// Tile shapes, registers per lane (dK + dV: m_tiles d / d_split; S/P and dP/dS:
// m_tiles s_queries / 2 each) and SRAM ((2 block_n + (2 + do_stages) block_m) x pitch
// + (1 or 2) block_n x ds_pitch + 16 block_m):
//   d=32:   4 warps, 64 keys x  64 queries:  32 + 64 regs; (128+256) x  80 + 64 x 144 + 1 KiB =  40 KiB
//   d=64:   4 warps x 32 keys (exchange, no query split: S / dP in 4 sub-steps of 16
//           queries), 128 keys x 64 queries, two dO stages: 128 + 16;
//           (256+256) x 144 + 2 x 128 x 144 + 1 KiB = 109 KiB (two CTAs per H100 SM)
//   d=96:   4 warps, 64 keys x  32 queries:  96 + 32;      (128+128) x 208 + 64 x 80 + 0.5    =  57 KiB
//   d=128:  8 warps = 4 key groups of 32 x 2 query halves (exchange, S / dP in 2 sub-steps
//           of 16 queries), 128 keys x 64 queries, one dO stage: 128 + 32;
//           (256+192) x 272 + 2 x 128 x 144 + 1 KiB = 156 KiB
//   d=192:  8 warps (d split in 2), 64 keys x 32 queries:  96 + 32; (128+128) x 400 + 64 x 80 + 0.5 = 105 KiB
//   d=256:  8 warps (d split in 2), 64 keys x 16 queries: 128 + 16; (128+64) x 528 + 64 x 48 + 0.25 = 102 KiB
// All fit the 163 KiB an A100 block may opt into (H100: 227 KiB; the sm_90a PTX runs
// d=128 with two dO stages, 173 KiB: `BWD_D128_SM90`). d=256 takes small query blocks because dK and dV already
// hold 128 registers per lane. d=64's warps own 32 keys and all 64 columns of dK and dV
// (128 registers), so S and dP run in sub-steps of 16 queries, and P^T and dS^T go
// through SRAM so that a step covers 64 queries (two barriers and one dQ add per 64
// query rows): 1.17-1.23x its former tile (4 warps x 32 keys x 16 queries, P^T and dS^T
// in registers), deterministic mode 1.29-1.32x, measured in one run; 2 warps per key
// group (64 keys, query halves), 8-warp tiles and 3 CTAs per SM were slower (PERF.md
// v4). d=128 cannot hold 32 keys' dK and dV in one warp: 2 warps per key group split
// the query block (the exchange layout), 1.19-1.20x 8 warps x 16 keys x 32 queries,
// measured in one run (PERF.md v3; 32 keys with d split in 2 and both warps
// recomputing S and dP was 0.73x that). One sub-step of 32 queries (FA2's shape)
// spills at 255 registers.
pub const BWD_D32: BwdTile = t(32, 4, 1, 64, 1, false, 2);
pub const BWD_D64: BwdTile = BwdTile { s_sub: 4, ..t(64, 4, 2, 64, 1, true, 2) };
pub const BWD_D96: BwdTile = t(96, 4, 1, 32, 1, false, 2);
pub const BWD_D128: BwdTile = BwdTile { s_sub: 2, ..t(128, 8, 2, 64, 2, true, 1) };
pub const BWD_D192: BwdTile = t(192, 8, 1, 32, 2, false, 2);
pub const BWD_D256: BwdTile = t(256, 8, 1, 16, 2, false, 2);

/// d=128 in the sm_90a PTX only (kernels `attn_bwd_d128x2_*`): two dO stages, so the
/// next step's dO loads with its Q and a step takes two barriers instead of three;
/// (256 + 256) x 272 + 2 x 128 x 144 + 1 KiB = 173 KiB, over the A100's 163 KiB opt-in.
/// 1.04-1.05x BWD_D128 on the H100 (PERF.md, backward v5).
pub const BWD_D128_SM90: BwdTile = BwdTile { do_stages: 2, ..BWD_D128 };

pub const BWD_TILES: [BwdTile; 6] = [BWD_D32, BWD_D64, BWD_D96, BWD_D128, BWD_D192, BWD_D256];

/// The tile a head dim runs on (None above 256) and its kernel's name without the dtype
/// suffix; `sm90a`: for the sm_90a PTX (d=128 takes `BWD_D128_SM90` there).
pub fn bwd_tile_for(head_dim: u32, sm90a: bool) -> Option<(BwdTile, &'static str)> {
    const NAMES: [&str; 6] =
        ["attn_bwd_d32", "attn_bwd_d64", "attn_bwd_d96", "attn_bwd_d128", "attn_bwd_d192", "attn_bwd_d256"];
    let i = BWD_TILES.iter().position(|t| t.d >= head_dim)?;
    Some(if sm90a && BWD_TILES[i] == BWD_D128 { (BWD_D128_SM90, "attn_bwd_d128x2") } else { (BWD_TILES[i], NAMES[i]) })
}

/// Tile of the Hopper backward (`bwd_wgmma`, sm_90a, the fast mode): one CTA = 2
/// warpgroups x 64 keys (warpgroup g owns keys 64 g .. +63 and their dK, dV in
/// registers) walking query blocks of `block_m` rows; S^T, dP^T, dV, dK and dQ as
/// `wgmma` products; Q / dO per query block and K / V once, copied by the tensor memory
/// accelerator in its 128-byte-swizzled layout (d/64 slabs of rows x 128 B).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WgBwdTile {
    pub d: u32,
    pub block_m: u32,
}

impl WgBwdTile {
    pub const BLOCK_N: u32 = 128;
    pub const THREADS: u32 = 256;
    pub const ALIGN: u32 = 1024;
    /// SRAM bytes of a [rows x d] tile.
    pub const fn tile_bytes(self, rows: u32) -> u32 {
        rows * self.d * 2
    }
    /// SRAM layout after the 1024-byte alignment: [K][V][Q: 2 stages][dO: 2 stages]
    /// [dS^T: block_n keys x block_m queries][lse: 2 x block_m f32][D: 2 x block_m f32]
    /// [mbarriers: K / V, step 0 / 1].
    pub const fn v_offset(self) -> u32 {
        self.tile_bytes(Self::BLOCK_N)
    }
    pub const fn q_offset(self, stage: u32) -> u32 {
        self.tile_bytes(2 * Self::BLOCK_N + stage * self.block_m)
    }
    pub const fn do_offset(self, stage: u32) -> u32 {
        self.tile_bytes(2 * Self::BLOCK_N + (2 + stage) * self.block_m)
    }
    pub const fn ds_offset(self) -> u32 {
        self.tile_bytes(2 * Self::BLOCK_N + 4 * self.block_m)
    }
    pub const fn lse_offset(self, stage: u32) -> u32 {
        self.ds_offset() + Self::BLOCK_N * self.block_m * 2 + stage * self.block_m * 4
    }
    pub const fn delta_offset(self, stage: u32) -> u32 {
        self.lse_offset(2) + stage * self.block_m * 4
    }
    pub const fn barrier_offset(self) -> u32 {
        self.delta_offset(2)
    }
    pub const fn smem_bytes(self) -> u32 {
        Self::ALIGN + self.barrier_offset() + 3 * 8
    }
}

// Hopper backward tiles (128 keys per CTA, 2 stages of Q and dO):
//   d=64, 128-query blocks: (2 x 128 + 4 x 128) x 128 B + dS^T 32 KiB + lse / D 2 KiB = 130 KiB
//   d=128, 64-query blocks: (2 x 128 + 4 x 64) x 256 B + dS^T 16 KiB + lse / D 1 KiB = 145 KiB
//   (+1 KiB of alignment slack each)
// Registers per thread: dK and dV d/2 f32 each, S^T and dP^T BM/2 f32 each (64 keys x
// BM queries per warpgroup), then P^T as BM/4 bf16x2 and dQ 32 f32.
pub const WG_BWD_D64: WgBwdTile = WgBwdTile { d: 64, block_m: 128 };
pub const WG_BWD_D128: WgBwdTile = WgBwdTile { d: 128, block_m: 64 };

/// Launch parameters of the Hopper backward: the tensor maps of Q, K, V and dO (4-d
/// `[batch, seqlen, heads, head_dim]`, boxes of 64 x 1 x rows x 1, 128-byte swizzle) at
/// offsets 0, 128, 256, 384 of a parameter the build aligns to 64 bytes, then the
/// backward's parameters.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub struct WgBwdParams {
    pub q_map: crate::tensor_map::TensorMap,
    pub k_map: crate::tensor_map::TensorMap,
    pub v_map: crate::tensor_map::TensorMap,
    pub do_map: crate::tensor_map::TensorMap,
    pub base: AttnBwdParams,
}
