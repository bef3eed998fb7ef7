//! One key block's work for one warp, shared by the forward and the split-KV decode
//! kernels: S = Q K^T on tensor cores, the mask and soft-cap, the online softmax in
//! registers, and O += P V. The warp holds MT m16 row tiles; lane `l` holds rows
//! `l / 4` and `l / 4 + 8` of each, columns `2 (l % 4) + {0, 1}` of each n8 tile.

use crate::device::ldmatrix::{ldmatrix_x4, ldmatrix_x4_trans};
use crate::device::math::{exp2, fma, log2, max, rcp};
use crate::device::thread::lane;
use crate::device::warp::{any_sync, shfl_xor};
use crate::device::{FragA, FragB, FragC, Sram, TensorElem, unroll};

const LOG2E: f32 = core::f32::consts::LOG2_E;
const LN2: f32 = core::f32::consts::LN_2;

/// tanh(x) = 1 - 2 / (2^(2x log2 e) + 1): ex2 + rcp, ~1e-7 absolute error (the
/// `tanh.approx` instruction is only good to ~5e-4, too coarse under a softcap of 30).
#[inline(always)]
pub fn tanh_precise(x: f32) -> f32 {
    1.0 - 2.0 * rcp(exp2(2.0 * LOG2E * x) + 1.0)
}

/// Which keys a query sees (all i32: positions fit, and the window math is signed).
/// Query `row` sees key `key` when `key < seqlen_k` and
/// `row + shift - left <= key <= row + shift + right` (a negative bound = unbounded).
#[derive(Clone, Copy)]
pub struct Mask {
    pub seqlen_k: i32,
    pub shift: i32,
    pub left: i32,
    pub right: i32,
}

impl Mask {
    #[inline(always)]
    pub fn visible(self, row: i32, key: i32) -> bool {
        key < self.seqlen_k
            && (self.right < 0 || key <= row + self.shift + self.right)
            && (self.left < 0 || key >= row + self.shift - self.left)
    }

    /// Keys [lo, hi) that any query in rows [row_lo, row_hi] may see (before seqlen_k).
    #[inline(always)]
    pub fn key_range(self, row_lo: i32, row_hi: i32) -> (i32, i32) {
        let mut lo = 0i32;
        let mut hi = self.seqlen_k;
        if self.left >= 0 && row_lo + self.shift - self.left > 0 {
            lo = row_lo + self.shift - self.left;
        }
        if self.right >= 0 && row_hi + 1 + self.shift + self.right < hi {
            hi = row_hi + 1 + self.shift + self.right;
        }
        (lo, if hi > lo { hi } else { lo })
    }

    /// The queries [lo, hi] (within [0, seqlen_q)) that see `key`, an empty range (lo > hi)
    /// for a key past seqlen_k: query i sees key j when j - shift - right <= i <= j -
    /// shift + left (i64: a window may be up to i32::MAX).
    #[inline(always)]
    pub fn queries_seeing(self, key: i32) -> (i32, i32) {
        let (j, shift) = (key as i64, self.shift as i64);
        let last = (self.seqlen_k - self.shift) as i64 - 1;
        let lo = if self.right >= 0 && j - shift - (self.right as i64) > 0 { j - shift - self.right as i64 } else { 0 };
        let hi =
            if self.left >= 0 && j - shift + (self.left as i64) < last { j - shift + self.left as i64 } else { last };
        if key >= self.seqlen_k || lo > hi { (1, 0) } else { (lo as i32, hi as i32) }
    }

    /// Query `row` sees exactly one key (i64: a window may be up to i32::MAX).
    #[inline(always)]
    pub fn sees_one_key(self, row: i32) -> bool {
        let diag = row as i64 + self.shift as i64;
        let lo = if self.left >= 0 && diag - (self.left as i64) > 0 { diag - self.left as i64 } else { 0 };
        let last = self.seqlen_k as i64 - 1;
        let hi = if self.right >= 0 && diag + (self.right as i64) < last { diag + self.right as i64 } else { last };
        hi == lo
    }

    /// Every query in rows [row_lo, row_hi] sees every key in [c0, c1).
    #[inline(always)]
    pub fn covers(self, row_lo: i32, row_hi: i32, c0: i32, c1: i32) -> bool {
        c1 <= self.seqlen_k
            && (self.right < 0 || c1 - 1 <= row_lo + self.shift + self.right)
            && (self.left < 0 || c0 >= row_hi + self.shift - self.left)
    }
}

/// S = Q K^T for MT row tiles against keys [key0, key0 + 16 KK) of a K tile in SRAM
/// (row-major [key][d], PITCH bytes a row). `q_at(mt, kk)` gives Q's A fragment for
/// row tile mt and d columns 16kk .. 16kk+15 (from registers or SRAM).
#[inline(always)]
pub fn scores<T: TensorElem, const MT: usize, const DK: usize, const KN: usize, const KK: usize, const PITCH: u32>(
    q_at: impl Fn(usize, usize) -> FragA,
    k_tile: Sram,
    key0: u32,
) -> [[FragC; KN]; MT] {
    scores_at::<T, MT, DK, KN, KK>(q_at, |key, chunk| k_tile.byte(key * PITCH + chunk * 16), key0)
}

/// [`scores`] over any K tile layout: `k_at(key, chunk)` is the shared address of 16-byte
/// chunk `chunk` (d columns 8 chunk .. 8 chunk + 7) of key `key`.
#[inline(always)]
pub fn scores_at<T: TensorElem, const MT: usize, const DK: usize, const KN: usize, const KK: usize>(
    q_at: impl Fn(usize, usize) -> FragA,
    k_at: impl Fn(u32, u32) -> u32,
    key0: u32,
) -> [[FragC; KN]; MT] {
    const { assert!(KK * 2 == KN) };
    let l = lane();
    let mut s = [[FragC::zero(); KN]; MT];
    unroll::<DK, _>(|kk| {
        let mut qa = [FragA([0; 4]); MT];
        unroll::<MT, _>(|mt| qa[mt] = q_at(mt, kk));
        unroll::<KK, _>(|jj| {
            // Keys 16jj .. 16jj+15 (n-tiles 2jj, 2jj+1), d columns 16kk .. 16kk+15.
            let key = key0 + jj as u32 * 16 + l % 8 + (l / 16) * 8;
            let r = unsafe { ldmatrix_x4(k_at(key, kk as u32 * 2 + (l / 8) % 2)) };
            let (b0, b1) = (FragB([r[0], r[1]]), FragB([r[2], r[3]]));
            unroll::<MT, _>(|mt| {
                T::mma(&mut s[mt][2 * jj], &qa[mt], &b0);
                T::mma(&mut s[mt][2 * jj + 1], &qa[mt], &b1);
            });
        });
    });
    s
}

/// s = tanh(s * pre) (the caller's score_log2 carries the softcap itself).
#[inline(always)]
pub fn softcap<const MT: usize, const KN: usize>(s: &mut [[FragC; KN]; MT], pre: f32) {
    unroll::<MT, _>(|mt| unroll::<KN, _>(|j| unroll::<4, _>(|e| s[mt][j].0[e] = tanh_precise(s[mt][j].0[e] * pre))));
}

/// Sets the scores of keys a row does not see to -inf. `row_of(mt, half)` is the query
/// index (in the mask's terms) of this lane's row `l / 4 + 8 half` of row tile mt; the
/// scores' n-tile j covers keys `key0 + 8j ..`.
#[inline(always)]
pub fn mask_scores<const MT: usize, const KN: usize>(
    s: &mut [[FragC; KN]; MT],
    mask: Mask,
    row_of: impl Fn(usize, usize) -> i32,
    key0: i32,
) {
    let l = lane();
    unroll::<MT, _>(|mt| {
        unroll::<2, _>(|hf| {
            let row = row_of(mt, hf);
            unroll::<KN, _>(|j| {
                unroll::<2, _>(|i| {
                    let key = key0 + (j as u32 * 8 + (l % 4) * 2) as i32 + i as i32;
                    if !mask.visible(row, key) {
                        s[mt][j].0[2 * hf + i] = f32::NEG_INFINITY;
                    }
                })
            })
        })
    });
}

/// The online softmax step, base 2, the scale folded into one FMA per score: updates
/// the running row max and (per-lane partial) row sum, rescales O, and returns P as the
/// A operand of P V (the C layout of n-tiles 2kk, 2kk+1 is exactly the A layout of
/// k-step kk, so P never leaves registers). Each row lives in the 4 lanes of a quad.
#[inline(always)]
pub fn online_softmax<T: TensorElem, const MT: usize, const KN: usize, const KK: usize, const DN: usize>(
    s: &mut [[FragC; KN]; MT],
    row_max: &mut [[f32; 2]; MT],
    row_sum: &mut [[f32; 2]; MT],
    o_acc: &mut [[FragC; DN]; MT],
    score_log2: f32,
) -> [[FragA; KK]; MT] {
    let mut p_frag = [[FragA([0; 4]); KK]; MT];
    unroll::<MT, _>(|mt| {
        unroll::<2, _>(|hf| {
            let mx = running_max(&s[mt], hf, row_max[mt][hf]);
            let m_use = move_max(&mut row_max[mt][hf], mx, &mut row_sum[mt][hf], &mut o_acc[mt], hf, score_log2);
            exponentiate(&mut s[mt], hf, m_use, &mut row_sum[mt][hf], score_log2);
        });
        p_frag[mt] = to_a_frags::<T, KN, KK>(&s[mt]);
    });
    p_frag
}

/// [`online_softmax`] with lazy rescaling: the running maxima of the warp's rows move
/// (and O and the row sums are rescaled) only in a step where some row's max would grow
/// by more than `slack` in the exp2 domain (one warp vote, so the branch is uniform).
/// Between moves P = exp2((s - m_stale) score_log2) <= 2^slack; O, the row sum and the
/// lse all use the same stale max, so O / l and the lse are exact up to rounding.
#[inline(always)]
pub fn online_softmax_lazy<T: TensorElem, const MT: usize, const KN: usize, const KK: usize, const DN: usize>(
    s: &mut [[FragC; KN]; MT],
    row_max: &mut [[f32; 2]; MT],
    row_sum: &mut [[f32; 2]; MT],
    o_acc: &mut [[FragC; DN]; MT],
    score_log2: f32,
    slack: f32,
) -> [[FragA; KK]; MT] {
    let (step_max, grow) = step_maxima(s, row_max, score_log2, slack);
    if any_sync(grow) {
        unroll::<MT, _>(|mt| {
            unroll::<2, _>(|hf| {
                move_max(&mut row_max[mt][hf], step_max[mt][hf], &mut row_sum[mt][hf], &mut o_acc[mt], hf, score_log2);
            })
        });
    }
    exponentiate_rows::<T, MT, KN, KK>(s, row_max, row_sum, score_log2)
}

/// This step's row maxima (with the running ones), and whether some row's would grow by
/// more than `slack` in the exp2 domain (this lane's rows; the caller votes).
#[inline(always)]
fn step_maxima<const MT: usize, const KN: usize>(
    s: &[[FragC; KN]; MT],
    row_max: &[[f32; 2]; MT],
    score_log2: f32,
    slack: f32,
) -> ([[f32; 2]; MT], bool) {
    let mut step_max = [[f32::NEG_INFINITY; 2]; MT];
    let mut grow = false;
    unroll::<MT, _>(|mt| {
        unroll::<2, _>(|hf| {
            step_max[mt][hf] = running_max(&s[mt], hf, row_max[mt][hf]);
            // -inf -> finite gives +inf > slack; -inf -> -inf gives NaN, not > slack.
            grow |= (step_max[mt][hf] - row_max[mt][hf]) * score_log2 > slack;
        })
    });
    (step_max, grow)
}

/// P = exp2((s - m) score_log2) against the running maxima (0 for -inf), added to the
/// row sums, as A operands.
#[inline(always)]
fn exponentiate_rows<T: TensorElem, const MT: usize, const KN: usize, const KK: usize>(
    s: &mut [[FragC; KN]; MT],
    row_max: &[[f32; 2]; MT],
    row_sum: &mut [[f32; 2]; MT],
    score_log2: f32,
) -> [[FragA; KK]; MT] {
    let mut p_frag = [[FragA([0; 4]); KK]; MT];
    unroll::<MT, _>(|mt| {
        unroll::<2, _>(|hf| {
            let m_use = if row_max[mt][hf] == f32::NEG_INFINITY { 0.0 } else { row_max[mt][hf] };
            exponentiate(&mut s[mt], hf, m_use, &mut row_sum[mt][hf], score_log2)
        });
        p_frag[mt] = to_a_frags::<T, KN, KK>(&s[mt]);
    });
    p_frag
}

/// [`online_softmax_lazy`] for a pipeline in which O += P V of the previous step is still
/// running: the running maxima move (and the row sums are rescaled) as there, but O is
/// left alone. Returns P, the factors alpha that each row half's O must be multiplied by
/// once the products writing it are done ([`rescale_o`]), and whether any row of the warp
/// moved (else every alpha is 1).
#[cfg_attr(not(target_feature = "sm_90a"), allow(dead_code))]
#[inline(always)]
pub fn online_softmax_lazy_deferred<T: TensorElem, const MT: usize, const KN: usize, const KK: usize>(
    s: &mut [[FragC; KN]; MT],
    row_max: &mut [[f32; 2]; MT],
    row_sum: &mut [[f32; 2]; MT],
    score_log2: f32,
    slack: f32,
) -> ([[FragA; KK]; MT], [[f32; 2]; MT], bool) {
    let (step_max, grow) = step_maxima(s, row_max, score_log2, slack);
    let mut alpha = [[1.0f32; 2]; MT];
    let moved = any_sync(grow);
    if moved {
        unroll::<MT, _>(|mt| {
            unroll::<2, _>(|hf| {
                let mx = step_max[mt][hf];
                let m_use = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
                alpha[mt][hf] = exp2((row_max[mt][hf] - m_use) * score_log2);
                row_max[mt][hf] = mx;
                row_sum[mt][hf] *= alpha[mt][hf];
            })
        });
    }
    (exponentiate_rows::<T, MT, KN, KK>(s, row_max, row_sum, score_log2), alpha, moved)
}

/// O *= alpha per row half (the deferred half of [`online_softmax_lazy_deferred`]).
#[cfg_attr(not(target_feature = "sm_90a"), allow(dead_code))]
#[inline(always)]
pub fn rescale_o<const MT: usize, const DN: usize>(o: &mut [[FragC; DN]; MT], alpha: &[[f32; 2]; MT]) {
    unroll::<MT, _>(|mt| {
        unroll::<DN, _>(|dn| unroll::<4, _>(|e| o[mt][dn].0[e] *= alpha[mt][e / 2]));
    });
}

/// The max of `m` and this step's scores of the lane's row half `hf` of one row tile,
/// over the row's quad.
#[inline(always)]
fn running_max<const KN: usize>(s: &[FragC; KN], hf: usize, m: f32) -> f32 {
    let mut mx = m;
    unroll::<KN, _>(|j| mx = max(mx, max(s[j].0[2 * hf], s[j].0[2 * hf + 1])));
    mx = max(mx, shfl_xor(mx, 1));
    max(mx, shfl_xor(mx, 2))
}

/// A row's running max moves to `mx`: its sum and its O accumulators (half `hf` of one
/// row tile) are rescaled by alpha = exp2((m_old - mx) score_log2). Returns the max to
/// subtract from the row's scores (0 for -inf).
#[inline(always)]
fn move_max<const DN: usize>(
    m: &mut f32,
    mx: f32,
    sum: &mut f32,
    o: &mut [FragC; DN],
    hf: usize,
    score_log2: f32,
) -> f32 {
    // A row that has seen no key yet keeps max -inf; subtract 0 instead so that
    // -inf - -inf never makes a NaN.
    let m_use = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
    let alpha = exp2((*m - m_use) * score_log2);
    *m = mx;
    *sum *= alpha;
    unroll::<DN, _>(|dn| {
        o[dn].0[2 * hf] *= alpha;
        o[dn].0[2 * hf + 1] *= alpha;
    });
    m_use
}

/// P = exp2(s score_log2 - m_use score_log2) in place for row half `hf` of one row
/// tile, added to the row's sum.
#[inline(always)]
fn exponentiate<const KN: usize>(s: &mut [FragC; KN], hf: usize, m_use: f32, sum: &mut f32, score_log2: f32) {
    let neg = -m_use * score_log2;
    unroll::<KN, _>(|j| {
        unroll::<2, _>(|i| {
            let pv = exp2(fma(s[j].0[2 * hf + i], score_log2, neg));
            *sum += pv;
            s[j].0[2 * hf + i] = pv;
        })
    });
}

/// An m16 row of f32 accumulator tiles as tensor-core A operands, rounded to T: the C
/// layout of n-tiles 2kk, 2kk+1 is exactly the A layout of k-step kk.
#[inline(always)]
pub fn to_a_frags<T: TensorElem, const KN: usize, const KK: usize>(c: &[FragC; KN]) -> [FragA; KK] {
    const { assert!(KK * 2 == KN) };
    let mut a = [FragA([0; 4]); KK];
    unroll::<KK, _>(|kk| {
        let (c0f, c1f) = (c[2 * kk].0, c[2 * kk + 1].0);
        a[kk] = FragA([
            T::pack2(c0f[0], c0f[1]),
            T::pack2(c0f[2], c0f[3]),
            T::pack2(c1f[0], c1f[1]),
            T::pack2(c1f[2], c1f[3]),
        ]);
    });
    a
}

/// O += P V for keys [key0, key0 + 16 KK) of a V tile in SRAM (row-major [key][d]: k-major
/// for this product, so `ldmatrix.trans`). `p_at(mt, kk)` gives P's A fragment for row
/// tile mt and keys 16kk .. 16kk+15 (from registers or SRAM). The backward runs the same
/// product as dV += P^T dO, dK += dS^T Q and dQ += dS K.
#[inline(always)]
pub fn accumulate_pv<T: TensorElem, const MT: usize, const KK: usize, const DN: usize, const PITCH: u32>(
    o_acc: &mut [[FragC; DN]; MT],
    p_at: impl Fn(usize, usize) -> FragA,
    v_tile: Sram,
    key0: u32,
) {
    accumulate_pv_at::<T, MT, KK, DN>(o_acc, p_at, |key, chunk| v_tile.byte(key * PITCH + chunk * 16), key0)
}

/// [`accumulate_pv`] over any V tile layout: `v_at(key, chunk)` is the shared address of
/// 16-byte chunk `chunk` (d columns 8 chunk .. 8 chunk + 7) of key `key`.
#[inline(always)]
pub fn accumulate_pv_at<T: TensorElem, const MT: usize, const KK: usize, const DN: usize>(
    o_acc: &mut [[FragC; DN]; MT],
    p_at: impl Fn(usize, usize) -> FragA,
    v_at: impl Fn(u32, u32) -> u32,
    key0: u32,
) {
    let l = lane();
    unroll::<KK, _>(|kk| {
        let mut pa = [FragA([0; 4]); MT];
        unroll::<MT, _>(|mt| pa[mt] = p_at(mt, kk));
        unroll::<DN, _>(|dn| {
            if dn % 2 == 0 {
                // Keys 16kk .. 16kk+15, d columns 8dn .. 8dn+15 (n-tiles dn, dn+1).
                let key = key0 + kk as u32 * 16 + l % 16;
                let r = unsafe { ldmatrix_x4_trans(v_at(key, dn as u32 + l / 16)) };
                let (b0, b1) = (FragB([r[0], r[1]]), FragB([r[2], r[3]]));
                unroll::<MT, _>(|mt| {
                    T::mma(&mut o_acc[mt][dn], &pa[mt], &b0);
                    T::mma(&mut o_acc[mt][dn + 1], &pa[mt], &b1);
                });
            }
        })
    });
}

/// 1 / l for the epilogue's o = O / l: 0 for a row that saw no key (l = 0, O = 0), and a
/// NaN l stays NaN.
#[inline(always)]
pub fn inv_row_sum(l: f32) -> f32 {
    if l > 0.0 {
        rcp(l)
    } else if l == 0.0 {
        0.0
    } else {
        l
    }
}

/// ln(sum exp(s)) of a row from its running max (`m_use`: the max, 0 for -inf) and sum l
/// of the base-2 softmax: (m_use score_log2 + log2 l) ln 2.
#[inline(always)]
pub fn row_lse(m_use: f32, l: f32, score_log2: f32) -> f32 {
    (m_use * score_log2 + log2(l)) * LN2
}

/// S = A B^T for MT m16 row tiles against 16 KK rows of a B tile in SRAM (row-major
/// [row][d], PITCH bytes a row), like [`scores`] but with the loop over the d k-steps
/// kept as a runtime loop of `k_steps` (an opaque count): `a_at(mt, kk)` loads A's
/// fragment for row tile mt and d columns 16kk .. 16kk+15 from SRAM. Each B fragment
/// feeds MT products. A rolled loop keeps ptxas from hoisting every k-step's loads ahead
/// at once, which the backward (whose dK, dV accumulators hold half the register file)
/// cannot afford.
#[inline(always)]
pub fn scores_rolled<T: TensorElem, const MT: usize, const KN: usize, const KK: usize, const PITCH: u32>(
    a_at: impl Fn(usize, u32) -> FragA,
    b_tile: Sram,
    k_steps: u32,
) -> [[FragC; KN]; MT] {
    const { assert!(KK * 2 == KN) };
    let l = lane();
    let mut s = [[FragC::zero(); KN]; MT];
    let mut kk = 0;
    while kk < k_steps {
        let mut a = [FragA([0; 4]); MT];
        unroll::<MT, _>(|mt| a[mt] = a_at(mt, kk));
        unroll::<KK, _>(|jj| {
            let row = jj as u32 * 16 + l % 8 + (l / 16) * 8;
            let r = unsafe { ldmatrix_x4(b_tile.byte(row * PITCH + (kk * 2 + (l / 8) % 2) * 16)) };
            unroll::<MT, _>(|mt| {
                T::mma(&mut s[mt][2 * jj], &a[mt], &FragB([r[0], r[1]]));
                T::mma(&mut s[mt][2 * jj + 1], &a[mt], &FragB([r[2], r[3]]));
            });
        });
        kk += 1;
    }
    s
}

/// C += A B for MT m16 row tiles, B = rows [0, 16 k_steps) of a tile in SRAM (row-major
/// [k][n], so `ldmatrix.trans`), DN n-tiles: [`accumulate_pv`] with the k loop rolled (see
/// [`scores_rolled`]); `a_at(mt, kk)` loads row tile mt's A fragment for k-step kk from
/// SRAM. Each B fragment feeds MT products.
#[inline(always)]
pub fn accumulate_rolled<T: TensorElem, const MT: usize, const DN: usize, const PITCH: u32>(
    c: &mut [[FragC; DN]; MT],
    a_at: impl Fn(usize, u32) -> FragA,
    b_tile: Sram,
    k_steps: u32,
) {
    let l = lane();
    let mut kk = 0;
    while kk < k_steps {
        let mut a = [FragA([0; 4]); MT];
        unroll::<MT, _>(|mt| a[mt] = a_at(mt, kk));
        unroll::<DN, _>(|dn| {
            if dn % 2 == 0 {
                let row = kk * 16 + l % 16;
                let r = unsafe { ldmatrix_x4_trans(b_tile.byte(row * PITCH + (dn as u32 + l / 16) * 16)) };
                unroll::<MT, _>(|mt| {
                    T::mma(&mut c[mt][dn], &a[mt], &FragB([r[0], r[1]]));
                    T::mma(&mut c[mt][dn + 1], &a[mt], &FragB([r[2], r[3]]));
                });
            }
        });
        kk += 1;
    }
}
