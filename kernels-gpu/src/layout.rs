//! Pure index math shared by the kernels and the CPU tests: where each element of an
//! `mma.sync.m16n8k16` operand lives (lane, register, half), and the SRAM swizzle.
//! The GPU self-tests check `ldmatrix` and `mma` against these maps.

/// Row and column of element `e` (0..8) of lane `lane` in the m16 x k16 A fragment
/// (four b32 registers, two 16-bit values each; register = e / 2, half = e % 2).
pub const fn frag_a_coord(lane: u32, e: u32) -> (u32, u32) {
    let group = lane / 4;
    let pair = (lane % 4) * 2;
    let reg = e / 2;
    let row = group + 8 * (reg % 2);
    let col = pair + (e % 2) + 8 * (reg / 2);
    (row, col)
}

/// (k, n) of element `e` (0..4) of lane `lane` in the k16 x n8 B fragment
/// (two b32 registers, two 16-bit values each, consecutive in k).
pub const fn frag_b_coord(lane: u32, e: u32) -> (u32, u32) {
    let k = (lane % 4) * 2 + (e % 2) + 8 * (e / 2);
    (k, lane / 4)
}

/// (row, col) of element `e` (0..4) of lane `lane` in the m16 x n8 f32 C/D fragment.
pub const fn frag_c_coord(lane: u32, e: u32) -> (u32, u32) {
    (lane / 4 + 8 * (e / 2), (lane % 4) * 2 + (e % 2))
}

/// (row, col) of element `e` (0..8) of lane `lane` after `ldmatrix.x4` of a 16 x 16 tile
/// of 16-bit values whose four 8 x 8 quadrants are addressed in the order top-left,
/// bottom-left, top-right, bottom-right (lanes 0-7, 8-15, 16-23, 24-31 give the row
/// addresses). That order makes the four registers exactly an A fragment.
pub const fn ldmatrix_x4_coord(lane: u32, e: u32) -> (u32, u32) {
    frag_a_coord(lane, e)
}

/// The same with `.trans`: each 8 x 8 quadrant is transposed on the way into registers.
pub const fn ldmatrix_x4_trans_coord(lane: u32, e: u32) -> (u32, u32) {
    let (r, c) = frag_a_coord(lane, e);
    // Quadrant origin stays; the offset inside the quadrant is transposed.
    ((r / 8) * 8 + c % 8, (c / 8) * 8 + r % 8)
}

/// XOR swizzle for a tile whose rows are `row_chunks` 16-byte chunks wide (a power of
/// two, 8 = 128-byte rows): chunk `c` of row `r` is stored at chunk `c ^ (r % 8)`, so the
/// eight rows an `ldmatrix` phase reads hit eight different 16-byte bank groups.
pub const fn swizzle_chunk(row: u32, chunk: u32, row_chunks: u32) -> u32 {
    let mask = if row_chunks < 8 { row_chunks - 1 } else { 7 };
    chunk ^ (row & mask)
}

/// Bytes between consecutive `wgmma` core matrices (8 rows x 16 bytes = 128 bytes each)
/// in the tiles of the Hopper forward: 16 bytes of padding after each, so that the 8
/// chunks of one row (consecutive core matrices, one 128-byte line of HBM) start in 8
/// different 16-byte bank groups: 144 = 9 x 16 and 9 = 1 mod 8.
pub const CORE_STRIDE: u32 = 144;

/// Byte offset of 16-byte chunk `chunk` of row `row` in a tile of `row_chunks` chunks a
/// row stored as `wgmma` core matrices (no swizzle): row r of a core matrix at 16 r, the
/// `row_chunks` core matrices of one 8-row group side by side `CORE_STRIDE` apart, the
/// 8-row groups `row_chunks x CORE_STRIDE` apart. A descriptor of such a tile has
/// LBO = CORE_STRIDE along the chunks and SBO = row_chunks x CORE_STRIDE along the rows.
pub const fn core_offset(row: u32, chunk: u32, row_chunks: u32) -> u32 {
    ((row / 8) * row_chunks + chunk) * CORE_STRIDE + (row % 8) * 16
}

/// Bytes of a `rows`-row tile (a multiple of 8) in the layout of [`core_offset`].
pub const fn core_tile_bytes(rows: u32, row_chunks: u32) -> u32 {
    (rows / 8) * row_chunks * CORE_STRIDE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragment_maps_cover_each_element_once() {
        let mut seen_a = [[0u8; 16]; 16];
        let mut seen_t = [[0u8; 16]; 16];
        let mut seen_b = [[0u8; 8]; 16];
        let mut seen_c = [[0u8; 8]; 16];
        for lane in 0..32 {
            for e in 0..8 {
                let (r, c) = frag_a_coord(lane, e);
                seen_a[r as usize][c as usize] += 1;
                let (r, c) = ldmatrix_x4_trans_coord(lane, e);
                seen_t[r as usize][c as usize] += 1;
            }
            for e in 0..4 {
                let (k, n) = frag_b_coord(lane, e);
                seen_b[k as usize][n as usize] += 1;
                let (r, c) = frag_c_coord(lane, e);
                seen_c[r as usize][c as usize] += 1;
            }
        }
        assert!(seen_a.iter().flatten().all(|&n| n == 1));
        assert!(seen_t.iter().flatten().all(|&n| n == 1));
        assert!(seen_b.iter().flatten().all(|&n| n == 1));
        assert!(seen_c.iter().flatten().all(|&n| n == 1));
    }

    #[test]
    fn a_fragment_matches_ptx_isa_table() {
        // PTX ISA, "Matrix Fragments for mma.m16n8k16" (16-bit A): lane 5 holds
        // a0,a1 at row 1 cols 2,3; a2,a3 at row 9; a4..a7 eight columns on.
        assert_eq!(frag_a_coord(5, 0), (1, 2));
        assert_eq!(frag_a_coord(5, 1), (1, 3));
        assert_eq!(frag_a_coord(5, 2), (9, 2));
        assert_eq!(frag_a_coord(5, 4), (1, 10));
        assert_eq!(frag_a_coord(5, 7), (9, 11));
        assert_eq!(frag_b_coord(5, 0), (2, 1));
        assert_eq!(frag_b_coord(5, 3), (11, 1));
        assert_eq!(frag_c_coord(5, 3), (9, 3));
    }

    #[test]
    fn swizzle_is_a_permutation_per_row() {
        for row_chunks in [2u32, 4, 8, 16] {
            for row in 0..16 {
                let mut hit = [false; 16];
                for c in 0..row_chunks {
                    let s = swizzle_chunk(row, c, row_chunks);
                    assert!(s < row_chunks);
                    assert!(!hit[s as usize]);
                    hit[s as usize] = true;
                }
            }
        }
    }

    #[test]
    fn core_layout_is_injective_and_a_row_spans_every_bank_group() {
        for row_chunks in [2u32, 8, 16] {
            let rows = 64;
            let mut seen = std::vec::Vec::new();
            for r in 0..rows {
                for ch in 0..row_chunks {
                    let o = core_offset(r, ch, row_chunks);
                    assert!(o.is_multiple_of(16) && o + 16 <= core_tile_bytes(rows, row_chunks));
                    seen.push(o);
                }
                // The loader's 8 threads on chunks 8i .. 8i+7 of row r: 8 bank groups.
                for i in 0..row_chunks.div_ceil(8) {
                    let mut groups = [false; 8];
                    for ch in 8 * i..(8 * i + 8).min(row_chunks) {
                        groups[((core_offset(r, ch, row_chunks) / 16) % 8) as usize] = true;
                    }
                    assert_eq!(groups.iter().filter(|&&g| g).count() as u32, (row_chunks - 8 * i).min(8));
                }
            }
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len() as u32, rows * row_chunks);
        }
        // Row 9, chunk 1 of a 16-chunk (d = 128) tile: second 8-row group, its second
        // core matrix, row 1 of that.
        assert_eq!(core_offset(9, 1, 16), (16 + 1) * 144 + 16);
    }
}
