//! Device code both scan kernels share: the staging copy of one 16-byte input vector, and
//! the conversion of the staged B and C rows into the f32 tile the recurrence reads.

use super::scan_bc_at;
use crate::device::cp_async::cp_async_16;
use crate::device::{Elem, Hbm, Sram, unroll};

pub(super) const LOG2E: f32 = core::f32::consts::LOG2_E;

/// One 16-byte vector of a [rows, seqlen] tensor at (row, t) into SRAM at `dst`: cp.async
/// when rows are 16-byte aligned, else element by element (synchronous); zeros where the
/// row is absent (`ok` false) or past the end.
#[inline(always)]
pub(super) unsafe fn copy_vec<T: Elem>(dst: u32, addr: u64, row: usize, t: u32, ok: bool, seqlen: u32, aligned: bool) {
    let src = Hbm::<T>::from_addr(addr);
    let at = row * seqlen as usize + t as usize;
    if aligned {
        let ok = ok && t < seqlen;
        // A zero-byte copy still needs a valid address: the tensor base.
        let from = if ok { src.offset(at).ptr() } else { src.ptr() };
        unsafe { cp_async_16(dst, from as *const u8, if ok { 16 } else { 0 }) };
    } else {
        unroll::<8, _>(|e| {
            if e < T::LANES {
                let te = t + e as u32;
                let v = if ok && te < seqlen { unsafe { src.load(at + e) } } else { T::from_f32(0.0) };
                unsafe { T::st_sram(Sram { addr: dst }, e as u32 * T::BYTES, v) };
            }
        });
    }
}

/// Where the staged B and C rows go: the f32 tile `[step][2 states + 4]` (ScanSmem's
/// `bc`, rows skewed by scan_bc_at). A row holds quarter 0 (states 0..4) of every slice
/// as (B x4, C x4) pairs, then quarter 1, ...: a thread's B and C quarter are 32
/// contiguous bytes.
#[derive(Clone, Copy)]
pub(super) struct BcTile {
    /// Staged rows: B of states 0..states, then C, `row_bytes` apart.
    pub raw: u32,
    pub row_bytes: u32,
    /// The f32 tile and its row pitch in bytes.
    pub tile: u32,
    pub tile_row: u32,
    pub states: u32,
    pub slices: u32,
    pub threads: u32,
    /// The rows' skew (scan_bc_at).
    pub pair: u32,
}

/// B, C -> f32, transposed into the tile, one staged 16-byte vector per item (B only
/// when `with_c` is false: C was not staged). `NS`: states per thread.
#[inline(always)]
pub(super) unsafe fn bc_to_f32<T: Elem, const NS: usize>(bc: BcTile, t_id: u32, with_c: bool) {
    let lanes = T::LANES as u32;
    let vecs = bc.row_bytes / 16;
    let rows = if with_c { 2 * bc.states } else { bc.states };
    let mut i = t_id;
    while i < rows * vecs {
        let (r, vec) = (i / vecs, i % vecs);
        let (n, is_c) = if r < bc.states { (r, 0) } else { (r - bc.states, 1) };
        let (s_of, q) = (n / NS as u32, n % NS as u32);
        let col = (q / 4) * bc.slices * 8 + s_of * 8 + is_c * 4 + q % 4;
        let f = T::unpack_v4(unsafe { Sram { addr: bc.raw + r * bc.row_bytes }.ld_v4(vec * 16) });
        unroll::<8, _>(|e| {
            if e < T::LANES {
                let t = vec * lanes + e as u32;
                unsafe { Sram { addr: bc.tile }.st_f32(scan_bc_at(t, bc.tile_row, T::BYTES, bc.pair) + col * 4, f[e]) };
            }
        });
        i += bc.threads;
    }
}

/// `a[m]` by selects (a dynamic index would put `a` on the stack).
#[inline(always)]
pub(super) fn pick(a: &[f32; 4], m: u32) -> f32 {
    match m {
        0 => a[0],
        1 => a[1],
        2 => a[2],
        _ => a[3],
    }
}

/// Four f32 as the b32 words of a 16-byte vector.
#[inline(always)]
pub(super) fn bits4(v: &[f32; 8], from: usize) -> [u32; 4] {
    [v[from].to_bits(), v[from + 1].to_bits(), v[from + 2].to_bits(), v[from + 3].to_bits()]
}
