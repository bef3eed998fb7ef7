//! The backward's dB / dC sums over a warp's channels (lane = channel << log2(slices) |
//! slice; a lane holds NS states of dB and of dC for one step), into the warp's part of
//! the `red` tile, in a fixed order (bitwise reproducible). Two ways, by states per thread:
//!   4 (d_state <= 16): a shuffle reduce-scatter, no SRAM. At d_state 16 (8 values, 8
//!     channels per warp: 3 rounds of 2 selects, a shuffle and an add per pair) it took
//!     the backward from 5.56 to 4.88 ms (H100, b = 8, dim = 4096, L = 4096, bf16).
//!   8 (d_state > 16): the exchange tile (stores, then each lane sums its outputs'
//!     entries). Shuffles would need 24 selects and 12 shuffles per step at d_state 64
//!     (16 values, 4 channels per warp): 42.2 ms there against the exchange's 34.7.

use super::ScanBwdSmem;
use crate::device::thread::{sync_warp, tid};
use crate::device::warp::shfl_xor;
use crate::device::{Sram, unroll};

/// The plan of the kernel's way (by NS, a constant: the match folds).
#[derive(Clone, Copy)]
pub(super) enum RedPlan {
    Shuffle(ShufflePlan),
    Exchange(ExchangePlan),
}

#[inline(always)]
pub(super) fn red_plan<const NS: usize>(lay: ScanBwdSmem) -> RedPlan {
    if NS >= 8 { RedPlan::Exchange(exchange_plan::<NS>(lay)) } else { RedPlan::Shuffle(shuffle_plan::<NS>(lay)) }
}

/// Sums `db` and `dc` (this lane's NS states of one step) over the warp's channels into
/// slot `slot` of the warp's `red` ([warps][2][states][red_pitch]).
#[inline(always)]
pub(super) fn reduce_bc<const NS: usize>(db: &[f32; NS], dc: &[f32; NS], plan: RedPlan, lay: ScanBwdSmem, slot: u32) {
    match plan {
        RedPlan::Shuffle(plan) => reduce_shuffle::<NS>(db, dc, plan, lay, slot),
        RedPlan::Exchange(plan) => reduce_exchange::<NS>(db, dc, plan, lay, slot),
    }
}

// The shuffle reduce-scatter (4 states per thread).

/// This lane's part of its warp's dB / dC sums. Lane = channel << slices_log2 | slice, so
/// the warp's `2^cpw_log2` channels differ in lane bits slices_log2.. . Computed once per
/// thread.
#[derive(Clone, Copy)]
pub(super) struct ShufflePlan {
    slices_log2: u32,
    /// log2 of the warp's channels.
    cpw_log2: u32,
    /// Reduce-scatter rounds: min(cpw_log2, log2(2 NS)).
    rounds: u32,
    /// Index (0..2 NS: dB of the lane's NS states, then dC) of the first value this lane
    /// holds after the rounds; it holds 2 NS >> rounds consecutive ones.
    first: u32,
    /// Whether this lane stores its sums (with more channels than values, one lane of
    /// each group of 2^(cpw_log2 - rounds)).
    stores: bool,
    /// `red` of this warp, slot 0.
    red: u32,
}

#[inline(always)]
fn shuffle_plan<const NS: usize>(lay: ScanBwdSmem) -> ShufflePlan {
    let (lane, warp) = (tid() % 32, tid() / 32);
    let slices_log2 = lay.slices.trailing_zeros();
    let cpw_log2 = 5 - slices_log2;
    let all = (2 * NS as u32).trailing_zeros();
    let rounds = if cpw_log2 < all { cpw_log2 } else { all };
    // Round r keeps the upper half of the values held (2 NS >> (r + 1) of them) in the
    // lanes whose channel bit r is set.
    let mut first = 0;
    let mut r = 0;
    while r < rounds {
        if lane & (1 << (slices_log2 + r)) != 0 {
            first += (2 * NS as u32) >> (r + 1);
        }
        r += 1;
    }
    let rest = (lane >> (slices_log2 + rounds)) & ((1 << (cpw_log2 - rounds)) - 1);
    ShufflePlan { slices_log2, cpw_log2, rounds, first, stores: rest == 0, red: lay.red + lay.red_at(warp, 0, 0, 0) }
}

/// Sums `db` and `dc` (this lane's NS states of one step) over the warp's channels into
/// slot `slot` of the warp's `red` ([warps][2][states][red_pitch]), in a fixed order,
/// by shuffles (a reduce-scatter): each round pairs the lanes whose channels differ in
/// one bit; each sends its partner the half of its values the partner keeps and adds the
/// partner's half to its own, so the values a lane holds halve (2 NS -> NS -> ...). With
/// more channels than values, the rounds past one value are plain sums.
#[inline(always)]
fn reduce_shuffle<const NS: usize>(db: &[f32; NS], dc: &[f32; NS], plan: ShufflePlan, lay: ScanBwdSmem, slot: u32) {
    let lane = tid() % 32;
    let mut v = [0.0f32; 16];
    unroll::<NS, _>(|k| {
        v[k] = db[k];
        v[NS + k] = dc[k];
    });
    // Round r (unrolled: its halves are compile-time) runs while r < rounds.
    unroll::<4, _>(|r| {
        let half = (2 * NS) >> (r + 1);
        if half >= 1 && (r as u32) < plan.rounds {
            let bit = 1u32 << (plan.slices_log2 + r as u32);
            let upper = lane & bit != 0;
            unroll::<8, _>(|k| {
                if k < half {
                    let (keep, send) = if upper { (v[k + half], v[k]) } else { (v[k], v[k + half]) };
                    v[k] = keep + shfl_xor(send, bit);
                }
            });
        }
    });
    let mut e = plan.rounds;
    while e < plan.cpw_log2 {
        v[0] += shfl_xor(v[0], 1 << (plan.slices_log2 + e));
        e += 1;
    }
    if plan.stores {
        // Value o of slice s is state s NS + o % NS of dB (o < NS) or dC.
        let s = lane & (lay.slices - 1);
        let held = (2 * NS as u32) >> plan.rounds;
        unroll::<16, _>(|k| {
            if k < 2 * NS && (k as u32) < held {
                let o = plan.first + k as u32;
                let (which, n) = (o / NS as u32, s * NS as u32 + o % NS as u32);
                let at = plan.red + lay.red_at(0, which, n, slot);
                unsafe { Sram::at(at).st_f32(0, v[k]) };
            }
        });
    }
}

// The exchange tile (8 states per thread).

/// Where a lane's dB / dC values meet the rest of its warp's: the warp's xch holds one
/// step as [2 NS values][slices][channels of the warp] f32, so the `32 / slices` entries
/// of one output (value v of slice s, summed over the warp's channels) are contiguous,
/// and lane l sums entries [2 NS l, 2 NS (l + 1)): the same 2 NS loads per lane at every
/// slice count, as two or four 16-byte vectors. Computed once per thread.
#[derive(Clone, Copy)]
pub(super) struct ExchangePlan {
    /// Where this lane writes its value 0 (value v at + 128 v bytes).
    put: Sram,
    /// The lane's 2 NS entries.
    get: Sram,
    slices_log2: u32,
    /// log2 of the warp's channels (entries per output).
    cpw_log2: u32,
    /// `red` of this warp, slot 0.
    red: u32,
}

#[inline(always)]
fn exchange_plan<const NS: usize>(lay: ScanBwdSmem) -> ExchangePlan {
    let (lane, warp) = (tid() % 32, tid() / 32);
    let slices_log2 = lay.slices.trailing_zeros();
    let cpw_log2 = 5 - slices_log2;
    let (ch, s) = (lane >> slices_log2, lane & (lay.slices - 1));
    let xch = lay.xch + warp * 2 * NS as u32 * 128;
    ExchangePlan {
        put: Sram::at(xch + ((s << cpw_log2) + ch) * 4),
        get: Sram::at(xch + lane * 2 * NS as u32 * 4),
        slices_log2,
        cpw_log2,
        red: lay.red + lay.red_at(warp, 0, 0, 0),
    }
}

/// Sums `db` and `dc` (this lane's NS states of one step) over the warp's channels into
/// slot `slot` of the warp's `red` ([warps][2][states][red_pitch]), in a fixed order.
#[inline(always)]
fn reduce_exchange<const NS: usize>(db: &[f32; NS], dc: &[f32; NS], plan: ExchangePlan, lay: ScanBwdSmem, slot: u32) {
    let lane = tid() % 32;
    // The previous step's entries have all been read.
    sync_warp();
    unroll::<NS, _>(|k| unsafe {
        plan.put.st_f32(k as u32 * 128, db[k]);
        plan.put.st_f32((NS + k) as u32 * 128, dc[k]);
    });
    sync_warp();
    let all = (2 * NS as u32).trailing_zeros();
    // Output o (value v of slice s) is state s NS + v % NS of dB (v < NS) or dC.
    let put = |o: u32, sum: f32| {
        let (val, s) = (o >> plan.slices_log2, o & (lay.slices - 1));
        let (which, n) = (val / NS as u32, s * NS as u32 + val % NS as u32);
        let at = plan.red + lay.red_at(0, which, n, slot);
        unsafe { Sram::at(at).st_f32(0, sum) };
    };
    if plan.cpw_log2 >= all {
        // At least 2 NS channels per warp: the lane's 2 NS entries are part of one output
        // (a pairwise sum), its 2^extra neighbours hold the rest.
        let mut v = [0.0f32; 16];
        unroll::<4, _>(|q| {
            if q * 4 < 2 * NS {
                let w = unsafe { plan.get.ld_v4(q as u32 * 16) };
                unroll::<4, _>(|e| v[q * 4 + e] = f32::from_bits(w[e]));
            }
        });
        let mut width = 2 * NS;
        unroll::<4, _>(|_| {
            if width > 1 {
                width /= 2;
                unroll::<8, _>(|i| {
                    if i < width {
                        v[i] = v[2 * i] + v[2 * i + 1];
                    }
                });
            }
        });
        let extra = plan.cpw_log2 - all;
        let mut e = 0;
        while e < extra {
            v[0] += shfl_xor(v[0], 1 << e);
            e += 1;
        }
        if lane & ((1 << extra) - 1) == 0 {
            put(lane >> extra, v[0]);
        }
    } else {
        // Fewer: the lane holds 2 NS / cpw whole outputs of cpw entries each.
        let cpw = 1 << plan.cpw_log2;
        let held = (2 * NS as u32) >> plan.cpw_log2;
        let mut k = 0;
        while k < held {
            let mut sum = 0.0;
            let mut j = 0;
            while j < cpw {
                sum += unsafe { plan.get.ld_f32((k * cpw + j) * 4) };
                j += 1;
            }
            put(lane * held + k, sum);
            k += 1;
        }
    }
}
