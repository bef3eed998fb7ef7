//! Every kernel entry point in the PTX, with the most dynamic SRAM it is ever launched
//! with. The PTX test runs `ptxas -v` over all of them and fails on spills, stack frames
//! or SRAM over these budgets; the host checks the budget against the device's limit.

use crate::attention::backward::{
    BWD_D32, BWD_D64, BWD_D96, BWD_D128, BWD_D128_SM90, BWD_D192, BWD_D256, WG_BWD_D64, WG_BWD_D128,
};
use crate::attention::decode::{SPLIT_D64, SPLIT_D128, SPLIT_D256};
use crate::attention::{FWD_D32, FWD_D64, FWD_D96, FWD_D128, FWD_D192, FWD_D256, WG_D64, WG_D128};
use crate::conv::{CONV_BWD_SMEM_BUDGET, CONV_FWD_SMEM_BUDGET};
use crate::mamba::{SCAN_BWD_SMEM_BUDGET, SCAN_BWD_THREADS, SCAN_FWD_SMEM_BUDGET, SCAN_THREADS};
use crate::norm::{NORM_SHORT_SMEM_BUDGET, NORM_SMEM_BUDGET};
use crate::selftest::SELFTEST_SMEM_BUDGET;

#[derive(Clone, Copy, Debug)]
pub struct KernelInfo {
    pub name: &'static str,
    /// Most dynamic shared memory (bytes) any launch of this kernel requests.
    pub smem_budget: u32,
    /// Instructions the kernel's PTX must contain (the PTX test checks them), e.g. the
    /// tensor-core `mma.sync` a kernel would silently lose if a wrapper stopped inlining.
    pub must_contain: &'static [&'static str],
    /// Only in the sm_90a PTX (Hopper-only instructions such as `wgmma`).
    pub sm90a_only: bool,
}

const fn k(name: &'static str, smem_budget: u32, must_contain: &'static [&'static str]) -> KernelInfo {
    KernelInfo { name, smem_budget, must_contain, sm90a_only: false }
}

/// A kernel of the sm_90a PTX alone.
const fn k90(name: &'static str, smem_budget: u32, must_contain: &'static [&'static str]) -> KernelInfo {
    KernelInfo { name, smem_budget, must_contain, sm90a_only: true }
}

const MMA: &str = "mma.sync.aligned.m16n8k16.row.col.f32";
const LDMATRIX: &str = "ldmatrix.sync.aligned";
const CP_ASYNC: &str = "cp.async.cg.shared.global";
/// The norms stream rows with 16-byte vector loads and stores.
const NORM: &[&str] = &["ld.global.nc.v4", "st.global.v4"];
/// The attention forward: tensor cores fed by ldmatrix (plain for Q, K; .trans for V),
/// cp.async K/V streaming, ex2 softmax.
const ATTN_FWD: &[&str] = &[MMA, LDMATRIX, "ldmatrix.sync.aligned.m8n8.x4.trans", CP_ASYNC, "ex2.approx"];
const WGMMA_SS: &str = "wgmma.mma_async.sync.aligned.m64n128k16.f32";
/// The Hopper forward: S = Q K^T with both operands in SRAM (m64 n128 k16), O += P V with
/// P from registers, Q/K/V boxes copied by the tensor memory accelerator into mbarriers.
const ATTN_FWD_WG: &[&str] = &[
    WGMMA_SS,
    "wgmma.fence",
    "wgmma.commit_group",
    "wgmma.wait_group",
    "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes",
    "mbarrier.try_wait.parity",
    "ex2.approx",
];
/// The split-KV decode kernel: the forward's tensor-core block step, a paged or
/// contiguous cp.async stream of K/V (with the L2 prefetch hint), the warps' merge
/// through SRAM (16-byte reads), and the last CTA's merge of the splits (an acq_rel
/// count, GPU-scope 16-byte reads).
const ATTN_SPLIT: &[&str] = &[
    MMA,
    LDMATRIX,
    "ldmatrix.sync.aligned.m8n8.x4.trans",
    "cp.async.cg.shared.global.L2::128B",
    "ex2.approx",
    "ld.shared.v4",
    "atom.acq_rel.gpu.global.add.u32",
    "ld.relaxed.gpu.global.v4",
];

/// The attention backward: the forward's tensor-core products (plain and transposed
/// ldmatrix), cp.async Q / dO / lse / D streaming, ex2 recomputation of P, f32 dQ atomics.
const ATTN_BWD: &[&str] = &[
    MMA,
    LDMATRIX,
    "ldmatrix.sync.aligned.m8n8.x4.trans",
    CP_ASYNC,
    "cp.async.ca.shared.global",
    "ex2.approx",
    "red.global.add.f32",
];
/// The exchange tiles (d=64, d=128): the same products and streams, P^T / dS^T stored
/// to SRAM, and dQ added as f32 pairs (`red.global.add.v2.f32` in the sm_90a PTX, two
/// `red.global.add.f32` in the sm_80 PTX: the prefix of both).
const ATTN_BWD_EXCHANGE: &[&str] = &[
    MMA,
    LDMATRIX,
    "ldmatrix.sync.aligned.m8n8.x4.trans",
    CP_ASYNC,
    "cp.async.ca.shared.global",
    "ex2.approx",
    "st.shared.b32",
    "red.global.add.",
];
/// The Hopper backward: wgmma products with both operands in SRAM (S^T, dP^T: m64 n64;
/// dQ: both transposed), with A from registers (dV, dK), tiles copied by the tensor
/// memory accelerator, lse / D by cp.async, dS^T stored to SRAM, dQ added as f32 pairs.
const ATTN_BWD_WG: &[&str] = &[
    "wgmma.mma_async.sync.aligned.m64n64k16.f32",
    "p, 1, 1, 1, 1;",
    "wgmma.wait_group",
    "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes",
    "mbarrier.try_wait.parity",
    "cp.async.ca.shared.global",
    "ex2.approx",
    "st.shared.b32",
    "fence.proxy.async.shared::cta",
    "red.global.add.v2.f32",
];
/// The backward's row passes: 16-byte loads and stores, a warp sum (pre).
const ATTN_BWD_PRE: &[&str] = &["ld.global.nc.v4", "st.global.v4", "shfl.sync.bfly"];
const ATTN_BWD_DQ: &[&str] = &["ld.global.nc.v4", "st.global.v4"];

/// The scan forward: cp.async-staged chunks, one ex2 per step and state.
const SCAN_FWD: &[&str] = &[CP_ASYNC, "ex2.approx", "ld.shared.v4"];
/// The scan backward: cp.async-staged segments, ex2 recomputation, dB / dC summed over
/// the warp through the exchange tile (warp-synchronised), atomic or stored partials.
const SCAN_BWD: &[&str] = &[CP_ASYNC, "ex2.approx", "bar.warp.sync", "red.global.add.f32"];
/// At 4 states per thread the warp's dB / dC sums are shuffles (no exchange tile, no
/// bar.warp.sync).
const SCAN_BWD_S4: &[&str] = &[CP_ASYNC, "ex2.approx", "shfl.sync.bfly", "red.global.add.f32"];

/// The conv1d forward / backward: cp.async-staged steps per warp, 16-byte stores.
const CONV_FWD: &[&str] = &[CP_ASYNC, "bar.warp.sync", "ld.shared.v4", "st.global.v4"];
const CONV_BWD: &[&str] = &[CP_ASYNC, "bar.warp.sync", "ld.shared.v4", "st.global.v4", "shfl.sync.bfly"];
/// The backward's fixed-order reduction of the per-warp partials.
const CONV_REDUCE: &[&str] = &["shfl.sync.bfly"];
/// The decode steps: the state as 16-byte vectors (ssm), the slices' butterfly.
const SSM_UPDATE: &[&str] = &["ld.global.v4", "st.global.v4", "ex2.approx", "shfl.sync.bfly"];
/// The elementwise stream: 16-byte vectors in and out.
const EW: &[&str] = &["ld.global.nc.v4", "st.global.v4"];

pub const KERNELS: &[KernelInfo] = &[
    k("layernorm_fwd_f32_t128", NORM_SHORT_SMEM_BUDGET, NORM),
    k("layernorm_fwd_f32_t256", NORM_SMEM_BUDGET, NORM),
    k("layernorm_fwd_bf16_t128", NORM_SHORT_SMEM_BUDGET, NORM),
    k("layernorm_fwd_bf16_t256", NORM_SMEM_BUDGET, NORM),
    k("layernorm_fwd_f16_t128", NORM_SHORT_SMEM_BUDGET, NORM),
    k("layernorm_fwd_f16_t256", NORM_SMEM_BUDGET, NORM),
    k("rmsnorm_fwd_f32_t128", NORM_SHORT_SMEM_BUDGET, NORM),
    k("rmsnorm_fwd_f32_t256", NORM_SMEM_BUDGET, NORM),
    k("rmsnorm_fwd_bf16_t128", NORM_SHORT_SMEM_BUDGET, NORM),
    k("rmsnorm_fwd_bf16_t256", NORM_SMEM_BUDGET, NORM),
    k("rmsnorm_fwd_f16_t128", NORM_SHORT_SMEM_BUDGET, NORM),
    k("rmsnorm_fwd_f16_t256", NORM_SMEM_BUDGET, NORM),
    k("attn_fwd_d32_bf16", FWD_D32.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d32_f16", FWD_D32.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d64_bf16", FWD_D64.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d64_f16", FWD_D64.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d96_bf16", FWD_D96.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d96_f16", FWD_D96.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d128_bf16", FWD_D128.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d128_f16", FWD_D128.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d192_bf16", FWD_D192.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d192_f16", FWD_D192.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d256_bf16", FWD_D256.smem_bytes(), ATTN_FWD),
    k("attn_fwd_d256_f16", FWD_D256.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d32_bf16", FWD_D32.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d32_f16", FWD_D32.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d64_bf16", FWD_D64.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d64_f16", FWD_D64.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d96_bf16", FWD_D96.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d96_f16", FWD_D96.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d128_bf16", FWD_D128.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d128_f16", FWD_D128.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d192_bf16", FWD_D192.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d192_f16", FWD_D192.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d256_bf16", FWD_D256.smem_bytes(), ATTN_FWD),
    k("attn_fwd_causal_d256_f16", FWD_D256.smem_bytes(), ATTN_FWD),
    k90("attn_fwd_wg_d64_bf16", WG_D64.smem_bytes(), ATTN_FWD_WG),
    k90("attn_fwd_wg_d64_f16", WG_D64.smem_bytes(), ATTN_FWD_WG),
    k90("attn_fwd_wg_d128_bf16", WG_D128.smem_bytes(), ATTN_FWD_WG),
    k90("attn_fwd_wg_d128_f16", WG_D128.smem_bytes(), ATTN_FWD_WG),
    k("attn_split_d64_bf16", SPLIT_D64.smem_bytes(), ATTN_SPLIT),
    k("attn_split_d64_f16", SPLIT_D64.smem_bytes(), ATTN_SPLIT),
    k("attn_split_d128_bf16", SPLIT_D128.smem_bytes(), ATTN_SPLIT),
    k("attn_split_d128_f16", SPLIT_D128.smem_bytes(), ATTN_SPLIT),
    k("attn_split_d256_bf16", SPLIT_D256.smem_bytes(), ATTN_SPLIT),
    k("attn_split_d256_f16", SPLIT_D256.smem_bytes(), ATTN_SPLIT),
    k("attn_bwd_d32_bf16", BWD_D32.smem_bytes(), ATTN_BWD),
    k("attn_bwd_d32_f16", BWD_D32.smem_bytes(), ATTN_BWD),
    k("attn_bwd_d64_bf16", BWD_D64.smem_bytes(), ATTN_BWD_EXCHANGE),
    k("attn_bwd_d64_f16", BWD_D64.smem_bytes(), ATTN_BWD_EXCHANGE),
    k("attn_bwd_d96_bf16", BWD_D96.smem_bytes(), ATTN_BWD),
    k("attn_bwd_d96_f16", BWD_D96.smem_bytes(), ATTN_BWD),
    k("attn_bwd_d128_bf16", BWD_D128.smem_bytes(), ATTN_BWD_EXCHANGE),
    k("attn_bwd_d128_f16", BWD_D128.smem_bytes(), ATTN_BWD_EXCHANGE),
    k90("attn_bwd_d128x2_bf16", BWD_D128_SM90.smem_bytes(), ATTN_BWD_EXCHANGE),
    k90("attn_bwd_d128x2_f16", BWD_D128_SM90.smem_bytes(), ATTN_BWD_EXCHANGE),
    k90("attn_bwd_wg_d64_bf16", WG_BWD_D64.smem_bytes(), ATTN_BWD_WG),
    k90("attn_bwd_wg_d64_f16", WG_BWD_D64.smem_bytes(), ATTN_BWD_WG),
    k90("attn_bwd_wg_d128_bf16", WG_BWD_D128.smem_bytes(), ATTN_BWD_WG),
    k90("attn_bwd_wg_d128_f16", WG_BWD_D128.smem_bytes(), ATTN_BWD_WG),
    k("attn_bwd_d192_bf16", BWD_D192.smem_bytes(), ATTN_BWD),
    k("attn_bwd_d192_f16", BWD_D192.smem_bytes(), ATTN_BWD),
    k("attn_bwd_d256_bf16", BWD_D256.smem_bytes(), ATTN_BWD),
    k("attn_bwd_d256_f16", BWD_D256.smem_bytes(), ATTN_BWD),
    k("attn_bwd_pre_bf16", 0, ATTN_BWD_PRE),
    k("attn_bwd_pre_f16", 0, ATTN_BWD_PRE),
    k("attn_bwd_dq_bf16", 0, ATTN_BWD_DQ),
    k("attn_bwd_dq_f16", 0, ATTN_BWD_DQ),
    k("kv_append_bf16", 0, &[]),
    k("kv_append_f16", 0, &[]),
    k("scan_fwd_f32_s4", SCAN_FWD_SMEM_BUDGET, SCAN_FWD),
    k("scan_fwd_f32_s8", SCAN_FWD_SMEM_BUDGET, SCAN_FWD),
    k("scan_fwd_f32_s16", SCAN_FWD_SMEM_BUDGET, SCAN_FWD),
    k("scan_fwd_bf16_s4", SCAN_FWD_SMEM_BUDGET, SCAN_FWD),
    k("scan_fwd_bf16_s8", SCAN_FWD_SMEM_BUDGET, SCAN_FWD),
    k("scan_fwd_bf16_s16", SCAN_FWD_SMEM_BUDGET, SCAN_FWD),
    k("scan_fwd_f16_s4", SCAN_FWD_SMEM_BUDGET, SCAN_FWD),
    k("scan_fwd_f16_s8", SCAN_FWD_SMEM_BUDGET, SCAN_FWD),
    k("scan_fwd_f16_s16", SCAN_FWD_SMEM_BUDGET, SCAN_FWD),
    k("scan_bwd_f32_s4", SCAN_BWD_SMEM_BUDGET, SCAN_BWD_S4),
    k("scan_bwd_f32_s8", SCAN_BWD_SMEM_BUDGET, SCAN_BWD),
    k("scan_bwd_bf16_s4", SCAN_BWD_SMEM_BUDGET, SCAN_BWD_S4),
    k("scan_bwd_bf16_s8", SCAN_BWD_SMEM_BUDGET, SCAN_BWD),
    k("scan_bwd_f16_s4", SCAN_BWD_SMEM_BUDGET, SCAN_BWD_S4),
    k("scan_bwd_f16_s8", SCAN_BWD_SMEM_BUDGET, SCAN_BWD),
    k("scan_bwd_f32_s4_x4", SCAN_BWD_SMEM_BUDGET, SCAN_BWD_S4),
    k("scan_bwd_f32_s8_x8", SCAN_BWD_SMEM_BUDGET, SCAN_BWD),
    k("scan_bwd_bf16_s4_x4", SCAN_BWD_SMEM_BUDGET, SCAN_BWD_S4),
    k("scan_bwd_bf16_s8_x8", SCAN_BWD_SMEM_BUDGET, SCAN_BWD),
    k("scan_bwd_f16_s4_x4", SCAN_BWD_SMEM_BUDGET, SCAN_BWD_S4),
    k("scan_bwd_f16_s8_x8", SCAN_BWD_SMEM_BUDGET, SCAN_BWD),
    k("scan_bwd_sum_f32", 0, &[]),
    k("scan_bwd_sum_bf16", 0, &[]),
    k("scan_bwd_sum_f16", 0, &[]),
    k("conv1d_fwd_f32", CONV_FWD_SMEM_BUDGET, CONV_FWD),
    k("conv1d_fwd_bf16", CONV_FWD_SMEM_BUDGET, CONV_FWD),
    k("conv1d_fwd_f16", CONV_FWD_SMEM_BUDGET, CONV_FWD),
    k("conv1d_bwd_f32", CONV_BWD_SMEM_BUDGET, CONV_BWD),
    k("conv1d_bwd_bf16", CONV_BWD_SMEM_BUDGET, CONV_BWD),
    k("conv1d_bwd_f16", CONV_BWD_SMEM_BUDGET, CONV_BWD),
    k("conv1d_bwd_reduce_f32", 0, CONV_REDUCE),
    k("conv1d_bwd_reduce_bf16", 0, CONV_REDUCE),
    k("conv1d_bwd_reduce_f16", 0, CONV_REDUCE),
    k("conv1d_update_f32", 0, &[]),
    k("conv1d_update_bf16", 0, &[]),
    k("conv1d_update_f16", 0, &[]),
    k("ssm_update_f32", 0, SSM_UPDATE),
    k("ssm_update_bf16", 0, SSM_UPDATE),
    k("ssm_update_f16", 0, SSM_UPDATE),
    k("ew_f32", 0, EW),
    k("ew_bf16", 0, EW),
    k("ew_f16", 0, EW),
    k("rotary_f32", 0, &[]),
    k("rotary_bf16", 0, &[]),
    k("rotary_f16", 0, &[]),
    k("selftest_ldmatrix", SELFTEST_SMEM_BUDGET, &[LDMATRIX]),
    k("selftest_mma_bf16", SELFTEST_SMEM_BUDGET, &[MMA, LDMATRIX]),
    k("selftest_mma_f16", SELFTEST_SMEM_BUDGET, &[MMA, LDMATRIX]),
    k("selftest_cp_async", SELFTEST_SMEM_BUDGET, &[CP_ASYNC, "cp.async.wait_group"]),
    k("selftest_warp", SELFTEST_SMEM_BUDGET, &["shfl.sync.bfly", "ex2.approx"]),
    k90("selftest_wgmma_bf16", SELFTEST_SMEM_BUDGET, &[WGMMA_SS, "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16"]),
];

/// Launch bounds that the build writes into the PTX after a kernel's parameter list
/// (`.maxntid threads, 1, 1` and `.minnctapersm ctas`), as CUDA's `__launch_bounds__`
/// does: ptxas then keeps the kernel within 64K / (threads x ctas) registers. rustc has
/// no attribute for them. Every launch of these kernels uses at most `threads` threads.
/// Entries: (kernel, threads, CTAs per SM in the sm_90a PTX, in the sm_80 PTX): sm_80
/// (A100) has 164 KiB of SRAM per SM against the H100's 228, so a bound that SRAM cannot
/// reach there would only cost registers.
pub const LAUNCH_BOUNDS: &[(&str, u32, u32, u32)] = &[
    // The scan forward with 16-bit inputs: 8 states per thread at d_state 16 take 51.5
    // KiB of SRAM, 4 CTAs (16 warps) per SM on the H100 (3 on sm_80); 4 states take 31
    // KiB and fit 5 in <= 102 registers. Without the bound ptxas gave the 4-state kernel
    // 139 registers (3 CTAs) after an unrelated change.
    ("scan_fwd_bf16_s4", SCAN_THREADS, 5, 4),
    ("scan_fwd_f16_s4", SCAN_THREADS, 5, 4),
    ("scan_fwd_bf16_s8", SCAN_THREADS, 4, 3),
    ("scan_fwd_f16_s8", SCAN_THREADS, 4, 3),
    // 3 CTAs of 128 threads (12 warps) per SM: <= 168 registers, which 4 states per thread
    // fit without spills (4 CTAs, <= 128, spill 4-24 bytes since the checkpoint interval
    // is walked in segments); 8 states per thread: 2 CTAs.
    ("scan_bwd_f32_s4", SCAN_BWD_THREADS, 3, 3),
    ("scan_bwd_bf16_s4", SCAN_BWD_THREADS, 3, 3),
    ("scan_bwd_f16_s4", SCAN_BWD_THREADS, 3, 3),
    ("scan_bwd_f32_s8", SCAN_BWD_THREADS, 2, 2),
    ("scan_bwd_bf16_s8", SCAN_BWD_THREADS, 2, 2),
    ("scan_bwd_f16_s8", SCAN_BWD_THREADS, 2, 2),
    // The fixed-slice kernels: 16-bit inputs at d_state 16 take 48 KiB of SRAM, 4 CTAs
    // (16 warps) on the H100 in <= 128 registers without spills (3 on sm_80, whose SRAM
    // holds 3); f32 inputs take 58 KiB: 3 CTAs.
    ("scan_bwd_f32_s4_x4", SCAN_BWD_THREADS, 3, 3),
    ("scan_bwd_bf16_s4_x4", SCAN_BWD_THREADS, 4, 3),
    ("scan_bwd_f16_s4_x4", SCAN_BWD_THREADS, 4, 3),
    ("scan_bwd_f32_s8_x8", SCAN_BWD_THREADS, 2, 2),
    ("scan_bwd_bf16_s8_x8", SCAN_BWD_THREADS, 2, 2),
    ("scan_bwd_f16_s8_x8", SCAN_BWD_THREADS, 2, 2),
];

/// Register caps that the build writes into the PTX after a kernel's parameter list
/// (`.maxnreg n`). The attention backward holds dK and dV (half the register file) for
/// its whole query loop, and ptxas's allocation near 255 registers is erratic: for these
/// kernels its default spills a few words on one target or the other, while these caps
/// give no spills on sm_80 and sm_90a (tests/ptx.rs checks; the numbers come from
/// scanning caps with `ptxas -v`). d64's exchange tile (4 warps, two CTAs per H100 SM)
/// spilled 4 bytes on sm_90a at ptxas's default 255 once the three backward kernels
/// shared `bwd::BwdCta` (fewer instructions than before); 248 gives no spills on either
/// target.
pub const MAX_REGS: &[(&str, u32)] = &[
    ("attn_bwd_d64_bf16", 248),
    ("attn_bwd_d64_f16", 248),
    ("attn_bwd_d128_bf16", 255),
    ("attn_bwd_d128_f16", 255),
    ("attn_bwd_d128x2_bf16", 255),
    ("attn_bwd_d128x2_f16", 255),
    ("attn_bwd_d256_bf16", 240),
    ("attn_bwd_d256_f16", 240),
];

/// Kernels whose by-value parameter struct holds tensor maps (`tensor_map::TensorMap`):
/// the build declares their parameter `.align 64` (rustc's kernel ABI stops at 16).
pub const PARAM_ALIGN_64: &[&str] = &[
    "attn_fwd_wg_d64_bf16",
    "attn_fwd_wg_d64_f16",
    "attn_fwd_wg_d128_bf16",
    "attn_fwd_wg_d128_f16",
    "attn_bwd_wg_d64_bf16",
    "attn_bwd_wg_d64_f16",
    "attn_bwd_wg_d128_bf16",
    "attn_bwd_wg_d128_f16",
];

/// The budget of `name`, if it is a kernel of this crate.
pub fn kernel_info(name: &str) -> Option<&'static KernelInfo> {
    KERNELS.iter().find(|k| k.name == name)
}
