//! FlashAttention forward (FlashAttention-2 algorithm) on tensor cores.
//!
//! One CTA per (query block, batch x head). The Q tile is copied HBM -> SRAM once (and,
//! for small head dims, into registers); K and V tiles stream through two or three SRAM
//! stages with `cp.async`; S = Q K^T and O += P V run on `mma.sync` m16n8k16 with f32
//! accumulators; the online softmax lives in registers, P never leaves them, and O and
//! the log-sum-exp are written to HBM once. HBM sees Q, K, V read and O written: no
//! N x N matrix anywhere.

pub mod backward;
#[cfg(target_arch = "nvptx64")]
mod block;
#[cfg(target_arch = "nvptx64")]
mod bwd;
#[cfg(target_arch = "nvptx64")]
mod bwd_exchange;
#[cfg(target_arch = "nvptx64")]
mod bwd_rows;
#[cfg(all(target_arch = "nvptx64", target_feature = "sm_90a"))]
mod bwd_wgmma;
#[cfg(target_arch = "nvptx64")]
mod combine;
pub mod decode;
#[cfg(target_arch = "nvptx64")]
mod fwd;
#[cfg(all(target_arch = "nvptx64", target_feature = "sm_90a"))]
mod fwd_wgmma;
#[cfg(target_arch = "nvptx64")]
mod kv_append;
#[cfg(target_arch = "nvptx64")]
mod split_kv;
#[cfg(target_arch = "nvptx64")]
pub(crate) mod tile;

use crate::tensor_map::TensorMap;

/// Launch parameters of the forward kernels (one definition for host and device).
/// Strides are in elements; q and o share their layout, and k and v theirs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnFwdParams {
    pub q: u64,
    pub k: u64,
    pub v: u64,
    pub o: u64,
    /// f32 `[batch, heads_q, seqlen_q]`.
    pub lse: u64,
    pub q_batch_stride: u64,
    pub k_batch_stride: u64,
    /// Elements between consecutive positions: heads x head_dim for the packed layout.
    pub q_row_stride: u32,
    pub k_row_stride: u32,
    pub seqlen_q: u32,
    pub seqlen_k: u32,
    pub heads_q: u32,
    /// heads_q / heads_kv: query head h reads key/value head h / group.
    pub group: u32,
    /// The real head dim (a multiple of 8, at most the kernel's tile dim).
    pub head_dim: u32,
    /// Visible keys of query i: [i + shift - left, i + shift + right], shift =
    /// seqlen_k - seqlen_q; -1 = unbounded on that side.
    pub window_left: i32,
    pub window_right: i32,
    /// 1 when soft-capping: s = softcap * tanh(score_pre * q.k).
    pub softcap: u32,
    /// scale / softcap (used only with softcap).
    pub score_pre: f32,
    /// Multiplier taking a (capped) score into the base-2 softmax domain: scale x log2(e),
    /// or softcap x log2(e) with softcap.
    pub score_log2: f32,
}

/// Tile shape of one forward kernel instantiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwdTile {
    /// Head dim the kernel is compiled for (inputs with a smaller head dim are
    /// zero-padded on the way into SRAM).
    pub d: u32,
    pub warps: u32,
    /// m16 row tiles per warp: each warp owns 16 x m_tiles query rows.
    pub m_tiles: u32,
    /// Keys per K/V tile (one barrier and one pipeline stage each).
    pub block_n: u32,
    /// Keys per softmax step (a divisor of block_n): each K/V tile is walked in steps of
    /// S = Q K^T, online softmax and O += P V, which bounds the S registers (16 x m_tiles
    /// x step_n / 32 f32 per lane) independently of the tile.
    pub step_n: u32,
    /// Q fragments kept in registers for the whole kernel (else re-read from SRAM with
    /// `ldmatrix` for each key block, which frees registers for large head dims).
    pub q_in_regs: bool,
    /// K/V pipeline depth (2 or 3 SRAM stages per tensor): block i + stages - 1 loads
    /// while block i is computed, and one barrier per key block suffices (the stage being
    /// refilled was last read by the previous block, which every warp has finished).
    pub stages: u32,
    /// Rescale O only when some row's running max grows by more than 2^8 (see
    /// `block::online_softmax_lazy`), else at every max change.
    pub lazy_rescale: bool,
    /// K / V rows stored unpadded with their 16-byte chunks swizzled
    /// (`layout::swizzle_chunk`; rows of whole 8-chunk groups only, see `kv_row_bytes`).
    pub kv_swizzle: bool,
}

impl FwdTile {
    pub const fn block_m(self) -> u32 {
        self.warps * 16 * self.m_tiles
    }
    pub const fn threads(self) -> u32 {
        self.warps * 32
    }
    /// SRAM row pitch in bytes: the row plus 16 bytes of padding, so that the 8 rows one
    /// `ldmatrix` phase reads start in 8 different 16-byte bank groups (D/8 + 1 is odd
    /// for every tile dim here).
    pub const fn pitch(self) -> u32 {
        self.d * 2 + 16
    }
    /// SRAM bytes per K / V row: the padded pitch, or 2d with `kv_swizzle`. Swizzled,
    /// each 128-byte line of HBM lands on one line of SRAM; the padded rows split 7 in 8
    /// of them over two lines: 1.5x the L2 sectors and 2.6x the shared wavefronts per
    /// cp.async (docs/PERF.md). Q keeps the padded rows (loaded once per CTA).
    pub const fn kv_row_bytes(self) -> u32 {
        if self.kv_swizzle { self.d * 2 } else { self.pitch() }
    }
    /// SRAM layout: [Q: block_m rows][K: stages x block_n rows][V: stages x block_n].
    pub const fn k_offset(self, stage: u32) -> u32 {
        self.block_m() * self.pitch() + stage * self.block_n * self.kv_row_bytes()
    }
    pub const fn v_offset(self, stage: u32) -> u32 {
        self.k_offset(self.stages + stage)
    }
    pub const fn smem_bytes(self) -> u32 {
        self.k_offset(2 * self.stages)
    }
}

#[allow(clippy::too_many_arguments)]
const fn t(
    d: u32,
    warps: u32,
    m_tiles: u32,
    block_n: u32,
    step_n: u32,
    q_in_regs: bool,
    stages: u32,
    lazy_rescale: bool,
) -> FwdTile {
    FwdTile { d, warps, m_tiles, block_n, step_n, q_in_regs, stages, lazy_rescale, kv_swizzle: false }
}

// Tile shapes and SRAM budgets: (block_m + 2 x stages x block_n) rows x pitch (2d + 16 B),
// or 2d-byte K / V rows where swizzled;
// t(d, warps, m_tiles, block_n, step_n, q_in_regs, stages, lazy_rescale):
//   d=32:  128 x 64 keys, 4 warps x 32 rows, Q in regs, 3 stages: (128 + 384) x  80 B =  40 KiB
//   d=64:  128 x 64,      4 warps x 32 rows, Q in SRAM, 3 stages: 128 x 144 B + 384 x 128 B =  66 KiB
//          (K / V rows unpadded and swizzled, `kv_swizzle`: 128-byte lines of HBM land whole)
//   d=96:  128 x 32,      4 warps x 32 rows, Q in SRAM, 3 stages: (128 + 192) x 208 B =  65 KiB
//   d=128: 128 x 64,      4 warps x 32 rows, Q in SRAM, 2 stages: (128 + 256) x 272 B = 102 KiB
//          (softmax in steps of 32 keys, lazy rescaling; 255 registers x 128 threads and
//          102 KiB: two CTAs per SM on an H100, the shape of FlashAttention-2's tile;
//          with 2 stages K and V are separate cp.async groups: S starts before V lands)
//   d=192:  64 x 32,      4 warps x 16 rows, Q in SRAM, 3 stages: (64 + 192)  x 400 B = 100 KiB
//   d=256:  64 x 32,      4 warps x 16 rows, Q in SRAM, 3 stages: (64 + 192)  x 528 B = 132 KiB
// All fit the 163 KiB an A100 block may opt into (H100: 227 KiB). The warp and row
// counts keep every kernel under 255 registers without spills (tests/ptx.rs checks).
pub const FWD_D32: FwdTile = t(32, 4, 2, 64, 64, true, 3, false);
pub const FWD_D64: FwdTile = FwdTile { kv_swizzle: true, ..t(64, 4, 2, 64, 64, false, 3, false) };
pub const FWD_D96: FwdTile = t(96, 4, 2, 32, 32, false, 3, false);
pub const FWD_D128: FwdTile = t(128, 4, 2, 64, 32, false, 2, true);
pub const FWD_D192: FwdTile = t(192, 4, 1, 32, 32, false, 3, false);
pub const FWD_D256: FwdTile = t(256, 4, 1, 32, 32, false, 3, false);

/// Every forward tile, smallest head dim first: a head dim runs on the first tile whose
/// `d` is at least it.
pub const FWD_TILES: [FwdTile; 6] = [FWD_D32, FWD_D64, FWD_D96, FWD_D128, FWD_D192, FWD_D256];

// A swizzled row is whole 8-chunk groups (the XOR changes a chunk's low 3 bits only).
const _: () = {
    let mut i = 0;
    while i < FWD_TILES.len() {
        assert!(!FWD_TILES[i].kv_swizzle || (FWD_TILES[i].d / 8) % 8 == 0);
        i += 1;
    }
};

/// The tile a head dim runs on (None above 256).
pub fn fwd_tile_for(head_dim: u32) -> Option<FwdTile> {
    FWD_TILES.iter().copied().find(|t| t.d >= head_dim)
}

/// Largest forward SRAM request.
pub const FWD_SMEM_BUDGET: u32 = {
    let mut m = 0;
    let mut i = 0;
    while i < FWD_TILES.len() {
        if FWD_TILES[i].smem_bytes() > m {
            m = FWD_TILES[i].smem_bytes();
        }
        i += 1;
    }
    m
};

/// Tile shape of a Hopper forward kernel (`fwd_wgmma`, sm_90a only): each warpgroup (4
/// warps) owns 64 query rows and runs S = Q K^T and O += P V as `wgmma` m64 products;
/// Q, K and V land in SRAM from the tensor memory accelerator in its 128-byte-swizzled
/// layout: a [rows x d] tile is d/64 column slabs of [rows x 128 B] (64 elements of a
/// row per 128-byte line), K/V in two stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WgTile {
    /// Head dim the kernel is compiled for (smaller head dims are zero-filled by the
    /// copy engine: the tensor map's inner extent is the real head dim).
    pub d: u32,
    pub warpgroups: u32,
    /// Keys per K/V block: the N of S = Q K^T's product, the K of P V's.
    pub block_n: u32,
}

impl WgTile {
    pub const STAGES: u32 = 2;
    /// Elements per row of a swizzle slab (128 bytes of a 16-bit type).
    pub const SLAB: u32 = 64;
    /// The arena is aligned up to this inside the request (the swizzle atoms start on
    /// 1024-byte boundaries).
    pub const ALIGN: u32 = 1024;
    pub const fn block_m(self) -> u32 {
        self.warpgroups * 64
    }
    pub const fn threads(self) -> u32 {
        self.warpgroups * 128
    }
    /// SRAM bytes of a [rows x d] tile (d/64 slabs of rows x 128 B).
    pub const fn tile_bytes(self, rows: u32) -> u32 {
        rows * self.d * 2
    }
    /// SRAM layout after the 1024-byte alignment: [Q: block_m rows][K: 2 x block_n
    /// rows][V: 2 x block_n rows][mbarriers: Q, K 0/1, V 0/1, 8 bytes each].
    pub const fn k_offset(self, stage: u32) -> u32 {
        self.tile_bytes(self.block_m() + stage * self.block_n)
    }
    pub const fn v_offset(self, stage: u32) -> u32 {
        self.tile_bytes(self.block_m() + (Self::STAGES + stage) * self.block_n)
    }
    pub const fn barrier_offset(self) -> u32 {
        self.tile_bytes(self.block_m() + 2 * Self::STAGES * self.block_n)
    }
    pub const fn smem_bytes(self) -> u32 {
        Self::ALIGN + self.barrier_offset() + 8 * (1 + 2 * Self::STAGES)
    }
}

// Hopper tiles: (block_m + 4 block_n) rows x 2 d bytes, one CTA per SM:
//   d=64:  2 warpgroups x 64 rows, 128-key blocks: (128 + 512) x 128 B =  80 KiB (+1 KiB)
//   d=128: 2 warpgroups x 64 rows, 128-key blocks: (128 + 512) x 256 B = 160 KiB (+1 KiB)
// Registers per thread: S 64 f32 (64 rows x 128 keys over 128 threads), O d/2 f32, P 32
// (two of them while P V overlaps the next block's softmax).
pub const WG_D64: WgTile = WgTile { d: 64, warpgroups: 2, block_n: 128 };
pub const WG_D128: WgTile = WgTile { d: 128, warpgroups: 2, block_n: 128 };

/// Launch parameters of the Hopper forward: the tensor maps of Q, K and V (bf16 / f16,
/// 4-d `[batch, seqlen, heads, head_dim]` with the row strides of `base`, boxes of
/// 64 x 1 x rows x 1 with the 128-byte swizzle), then the forward's parameters. The maps
/// sit at offsets 0, 128 and 256 of a parameter the build aligns to 64 bytes.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub struct WgFwdParams {
    pub q_map: TensorMap,
    pub k_map: TensorMap,
    pub v_map: TensorMap,
    pub base: AttnFwdParams,
}

/// The Hopper tile a head dim runs on: the head dims whose `fwd_tile_for` tile is d=64 or
/// d=128 (33..=64 and 97..=128); None for the rest, which stay on `mma.sync`.
pub fn wg_tile_for(head_dim: u32) -> Option<WgTile> {
    match fwd_tile_for(head_dim)?.d {
        64 => Some(WG_D64),
        128 => Some(WG_D128),
        _ => None,
    }
}
