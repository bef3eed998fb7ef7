//! Flash-Decoding: attention of a few new query tokens against a long KV cache, split
//! along the cache so that every SM has work even at batch 1. Launch parameters and
//! tile shapes of the two kernels (one definition for host and device):
//!
//! - `kv_append_*`: writes the new tokens' K (rotary applied when asked) and V into the
//!   cache, contiguous or paged, and rotates q to its positions.
//! - `attn_split_*`: one CTA per (split, 16-row block of query rows, batch x kv head).
//!   The query rows of a CTA are the `group` query heads of its kv head times the
//!   `seqlen_q` new tokens, so the cache is read once per kv head (MQA/GQA). K and V
//!   stream through SRAM in key blocks; each warp takes 16 keys of every block and keeps
//!   its own softmax state; the warps merge in SRAM at the end. With one split it writes
//!   o and lse; else an f32 partial o and its lse per split, and the last CTA of the
//!   row block to finish (an atomic count) merges the splits: per query row,
//!   lse = log sum_s exp(lse_s) and o = sum_s exp(lse_s - lse) o_s.

/// Cache layout in [`AttnSplitParams`] and [`KvAppendParams`]: the rows of sequence b's
/// position `pos` and kv head h start at element
///   contiguous (block_table = 0): `b * kv_seq_stride + pos * k_row_stride + h * head_dim`
///   paged: `page * kv_seq_stride + (pos % page_size) * k_row_stride + h * head_dim`,
///          `page = block_table[b * pages_per_seq + pos / page_size]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnSplitParams {
    /// q `[batch, seqlen_q, heads_q, head_dim]`.
    pub q: u64,
    pub k: u64,
    pub v: u64,
    /// u32 `[batch, pages_per_seq]`, or 0 for the contiguous layout.
    pub block_table: u64,
    /// u32 `[batch]`: cached keys before this call's new tokens (read for sequences
    /// from INLINE_SEQLENS on; the first ones come from `seqlens_inline`).
    pub seqlens: u64,
    /// Final o (like q) and lse f32 `[batch, heads_q, seqlen_q]`, written when splits == 1.
    pub o: u64,
    pub lse: u64,
    /// f32 `[splits, batch, heads_q, seqlen_q, head_dim]` and `[splits, batch, heads_q,
    /// seqlen_q]`, written when splits > 1 (lse_part = -inf where a split saw no key).
    pub o_part: u64,
    pub lse_part: u64,
    /// u32 `[batch x heads_kv, row blocks]`, zero at launch and left zero (used when
    /// splits > 1): CTAs of each row block done so far.
    pub counters: u64,
    pub q_batch_stride: u64,
    /// Elements between sequences (contiguous) or pages (paged).
    pub kv_seq_stride: u64,
    pub batch: u32,
    /// heads_q x head_dim and heads_kv x head_dim.
    pub q_row_stride: u32,
    pub k_row_stride: u32,
    pub seqlen_q: u32,
    /// Keys of sequence b: seqlens[b] + seqlen_new.
    pub seqlen_new: u32,
    pub heads_q: u32,
    /// heads_q / heads_kv.
    pub group: u32,
    pub head_dim: u32,
    /// A multiple of the tile's block_n (paged only).
    pub page_size: u32,
    pub pages_per_seq: u32,
    pub splits: u32,
    /// As in `AttnFwdParams`: query t of a sequence with L keys sees keys
    /// [t + L - seqlen_q - left, t + L - seqlen_q + right]; -1 = unbounded.
    pub window_left: i32,
    pub window_right: i32,
    pub softcap: u32,
    pub score_pre: f32,
    pub score_log2: f32,
    /// `seqlens[b]` for b < INLINE_SEQLENS (0 past the batch), so that a CTA of those
    /// sequences starts its first K / V copies without a trip to HBM for its length
    /// (the cache stream has evicted `seqlens` from L2 by the next call).
    pub seqlens_inline: [u32; INLINE_SEQLENS],
}

/// Sequences whose lengths [`AttnSplitParams`] carries by value.
pub const INLINE_SEQLENS: usize = 16;

/// Launch parameters of `kv_append_*`: one thread per element of k_new, v_new and (when
/// q_out != 0) q. New token i of sequence b goes to position `seqlens[b] + i`; query t
/// has position `seqlens[b] + seqlen_new - seqlen_q + t` (bottom-right aligned, as the
/// mask). Cache addressing as in [`AttnSplitParams`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KvAppendParams {
    /// `[batch, seqlen_new, heads_kv, head_dim]`.
    pub k_new: u64,
    pub v_new: u64,
    pub k_cache: u64,
    pub v_cache: u64,
    pub block_table: u64,
    pub seqlens: u64,
    /// q `[batch, seqlen_q, heads_q, head_dim]` and its rotated copy (q_out = 0: none).
    pub q: u64,
    pub q_out: u64,
    /// f32 `[positions, rot_dim / 2]` (rot_dim = 0: no rotary).
    pub cos: u64,
    pub sin: u64,
    pub kv_seq_stride: u64,
    pub batch: u32,
    pub seqlen_new: u32,
    pub seqlen_q: u32,
    pub heads_q: u32,
    pub heads_kv: u32,
    pub head_dim: u32,
    pub rot_dim: u32,
    pub interleaved: u32,
    pub page_size: u32,
    pub pages_per_seq: u32,
}

/// Threads per CTA of `kv_append_*`.
pub const APPEND_THREADS: u32 = 256;

/// Tile shape of one split-KV kernel instantiation: 16 query rows per CTA; `warps`
/// warps take 16 keys each of every `block_n`-key block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitTile {
    pub d: u32,
    pub warps: u32,
    pub block_n: u32,
    /// K/V pipeline depth (block i + stages - 1 loads while block i is computed).
    pub stages: u32,
    /// CTAs per SM that the default split count fills (at most as many as fit).
    pub fill_per_sm: u32,
}

/// Query rows per split-KV CTA (one m16 tile shared by the warps).
pub const SPLIT_ROWS: u32 = 16;

impl SplitTile {
    pub const fn threads(self) -> u32 {
        self.warps * 32
    }
    /// SRAM row pitch of the Q tile: the row plus 16 bytes (ldmatrix rows in distinct
    /// bank groups).
    pub const fn pitch(self) -> u32 {
        self.d * 2 + 16
    }
    /// SRAM bytes of a K or V row: 2d, no padding; the 16-byte chunks swizzled
    /// (`layout::swizzle_chunk`), so that each 128-byte line of HBM lands on one SRAM line.
    pub const fn kv_row_bytes(self) -> u32 {
        self.d * 2
    }
    /// [Q: 16 rows x pitch][K: stages x block_n rows][V: stages x block_n rows].
    pub const fn smem_bytes(self) -> u32 {
        SPLIT_ROWS * self.pitch() + 2 * self.stages * self.block_n * self.kv_row_bytes()
    }
    /// f32 row pitch of the warps' O exchange (padded against bank conflicts).
    pub const fn merge_pitch(self) -> u32 {
        self.d * 4 + 16
    }
    /// The end-of-kernel merge (per warp: 16 row maxima, 16 row sums, 16 x d of O),
    /// laid over the K/V stages once they are drained.
    pub const fn merge_bytes(self) -> u32 {
        self.warps * SPLIT_ROWS * (8 + self.merge_pitch()) + SPLIT_ROWS * 8
    }
}

const fn s(d: u32, warps: u32, block_n: u32, stages: u32, fill_per_sm: u32) -> SplitTile {
    let t = SplitTile { d, warps, block_n, stages, fill_per_sm };
    // K / V stages start on a 128-byte line (the swizzle permutes chunks within lines).
    assert!(block_n == 16 * warps && (SPLIT_ROWS * t.pitch()).is_multiple_of(128));
    assert!(t.merge_bytes() <= t.smem_bytes() - SPLIT_ROWS * t.pitch());
    t
}

// Tile shapes and SRAM budgets: Q 16 rows x (2d + 16) B, then K and V: 2 x stages x 64
// rows x 2d B. The kernel is bound by reading K and V from HBM; the stages keep enough
// bytes in flight per SM (H100: ~3 TB/s x ~1.5 us / 132 SMs ~ 34 KB):
//   d=64:  4 warps x 16 keys, 3 stages: 2304 + 384 x 128 B =  50 KiB (3 CTAs / SM)
//   d=128: 4 warps x 16 keys, 3 stages: 4352 + 384 x 256 B = 100 KiB (2 CTAs / SM)
//   d=256: 4 warps x 16 keys, 2 stages: 8448 + 256 x 512 B = 136 KiB (1 CTA / SM)
// The default split count fills one CTA per SM at d=128: one CTA (64 KiB in flight)
// streams as fast as two, and half the splits halve the merge (H100, 2026-11-22:
// GQA 8 kv heads, L=32k: 16 splits 57.7 us, 32 splits 60.8 us, 12 and 24 splits 63.3
// and 62.9 us). d=64 fills its 3 resident CTAs (not measured again); d=256 holds one.
pub const SPLIT_D64: SplitTile = s(64, 4, 64, 3, 3);
pub const SPLIT_D128: SplitTile = s(128, 4, 64, 3, 1);
pub const SPLIT_D256: SplitTile = s(256, 4, 64, 2, 1);
pub const SPLIT_TILES: [SplitTile; 3] = [SPLIT_D64, SPLIT_D128, SPLIT_D256];

/// Keys per block of every split tile: a paged cache's page size must be a multiple.
pub const SPLIT_BLOCK_N: u32 = 64;

/// The tile a head dim runs on (None above 256): the smallest whose d is at least it.
pub fn split_tile_for(head_dim: u32) -> Option<SplitTile> {
    SPLIT_TILES.iter().copied().find(|t| t.d >= head_dim)
}

/// Most splits one launch may use (the merge holds a row's split lse values in lanes).
pub const MAX_SPLITS: u32 = 128;

/// The default number of splits: enough CTAs for one full wave of the GPU, no more.
/// `ctas` = batch x heads_kv x row blocks; `slots` = SMs x the tile's `fill_per_sm`
/// (at most the CTAs resident per SM);
/// `key_blocks` = the longest sequence's key blocks. Each split keeps at least 4 key
/// blocks (256 keys) so that its fixed costs (Q load, the warps' merge, the splits'
/// merge) stay small. One wave exactly, not more: a second, partial wave would cost as
/// much as the first. The kernel gives each split ceil(key_blocks / splits) blocks, so
/// the count is then trimmed to the splits that get any (512 blocks over 33 splits
/// would leave the 33rd empty).
pub const fn default_splits(ctas: u32, slots: u32, key_blocks: u32) -> u32 {
    if ctas == 0 || ctas >= slots / 2 {
        return 1;
    }
    let mut n = slots / ctas;
    let by_len = key_blocks / 4;
    if n > by_len {
        n = by_len;
    }
    if n > MAX_SPLITS {
        n = MAX_SPLITS;
    }
    if n <= 1 {
        return 1;
    }
    // n <= key_blocks / 4 here, so per >= 1.
    let per = key_blocks.div_ceil(n);
    key_blocks.div_ceil(per)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_fit_and_are_chosen_by_head_dim() {
        for t in SPLIT_TILES {
            assert!(t.smem_bytes() <= 227 * 1024, "{t:?}");
        }
        assert_eq!(split_tile_for(8), Some(SPLIT_D64));
        assert_eq!(split_tile_for(64), Some(SPLIT_D64));
        assert_eq!(split_tile_for(72), Some(SPLIT_D128));
        assert_eq!(split_tile_for(256), Some(SPLIT_D256));
        assert_eq!(split_tile_for(264), None);
    }

    #[test]
    fn kv_rows_land_line_by_line_and_ldmatrix_is_conflict_free() {
        use crate::layout::swizzle_chunk;
        for t in SPLIT_TILES {
            let (row, chunks) = (t.kv_row_bytes(), t.d / 8);
            // The kernel's K / V layout (stages start on a 128-byte line: see `s`).
            let at = |r: u32, ch: u32| r * row + swizzle_chunk(r, ch, chunks) * 16;
            for r in 0..t.block_n {
                // cp.async: a quarter warp copies chunks 8i .. 8i+7 of a row, one
                // 128-byte line of HBM; they fill one SRAM line, one chunk each.
                for i in 0..chunks / 8 {
                    let mut seen = [false; 8];
                    for ch in 8 * i..8 * i + 8 {
                        assert_eq!(at(r, ch) / 128, (r * row) / 128 + i, "{t:?} row {r} chunk {ch}");
                        seen[((at(r, ch) % 128) / 16) as usize] = true;
                    }
                    assert!(seen.iter().all(|&s| s), "{t:?} row {r} line {i}");
                }
            }
            // ldmatrix: 8 rows from a multiple of 8 at one logical chunk, 8 bank groups.
            for r0 in (0..t.block_n).step_by(8) {
                for ch in 0..chunks {
                    let mut groups = [false; 8];
                    for r in r0..r0 + 8 {
                        groups[((at(r, ch) / 16) % 8) as usize] = true;
                    }
                    assert!(groups.iter().all(|&g| g), "{t:?} rows {r0}.. chunk {ch}");
                }
            }
        }
    }

    #[test]
    fn default_splits_fill_one_wave() {
        // d=128 on 132 SMs fills 132 slots: b=1, 32 kv heads, 32k keys: 4 splits; 8 kv
        // heads: 16; b=8 with 8 kv heads: 2; b=3 with 32 kv heads: 1.
        assert_eq!(default_splits(32, 132, 512), 4);
        assert_eq!(default_splits(8, 132, 512), 16);
        assert_eq!(default_splits(64, 132, 128), 2);
        assert_eq!(default_splits(96, 132, 512), 1);
        // b=1, 32 kv heads, 32k keys, 264 slots: 8 splits = 256 CTAs.
        assert_eq!(default_splits(32, 264, 512), 8);
        // GQA 8 kv heads: 33 slots per CTA, but 16 blocks each fill only 32 splits.
        assert_eq!(default_splits(8, 264, 512), 32);
        // 2048 blocks over 33 splits: 63 each need 33 (the last gets 32).
        assert_eq!(default_splits(8, 264, 2048), 33);
        // Short caches keep 4 key blocks per split.
        assert_eq!(default_splits(8, 264, 16), 4);
        assert_eq!(default_splits(8, 264, 3), 1);
        // Enough CTAs already.
        assert_eq!(default_splits(512, 264, 512), 1);
        assert_eq!(default_splits(1, 100_000, 100_000), MAX_SPLITS);
    }
}
