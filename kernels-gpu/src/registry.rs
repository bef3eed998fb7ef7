//! Every kernel entry point in the PTX, with the most dynamic SRAM it is ever launched
//! with. The PTX test runs `ptxas -v` over all of them and fails on spills, stack frames
//! or SRAM over these budgets; the host checks the budget against the device's limit.

use crate::norm::NORM_SMEM_BUDGET;
use crate::selftest::SELFTEST_SMEM_BUDGET;

#[derive(Clone, Copy, Debug)]
pub struct KernelInfo {
    pub name: &'static str,
    /// Most dynamic shared memory (bytes) any launch of this kernel requests.
    pub smem_budget: u32,
    /// Whether the kernel must contain tensor-core instructions (`mma`).
    pub uses_mma: bool,
}

const fn k(name: &'static str, smem_budget: u32, uses_mma: bool) -> KernelInfo {
    KernelInfo { name, smem_budget, uses_mma }
}

pub const KERNELS: &[KernelInfo] = &[
    k("layernorm_fwd_f32", NORM_SMEM_BUDGET, false),
    k("layernorm_fwd_bf16", NORM_SMEM_BUDGET, false),
    k("layernorm_fwd_f16", NORM_SMEM_BUDGET, false),
    k("rmsnorm_fwd_f32", NORM_SMEM_BUDGET, false),
    k("rmsnorm_fwd_bf16", NORM_SMEM_BUDGET, false),
    k("rmsnorm_fwd_f16", NORM_SMEM_BUDGET, false),
    k("selftest_ldmatrix", SELFTEST_SMEM_BUDGET, false),
    k("selftest_mma_bf16", SELFTEST_SMEM_BUDGET, true),
    k("selftest_mma_f16", SELFTEST_SMEM_BUDGET, true),
    k("selftest_cp_async", SELFTEST_SMEM_BUDGET, false),
    k("selftest_warp", SELFTEST_SMEM_BUDGET, false),
];

/// The budget of `name`, if it is a kernel of this crate.
pub fn kernel_info(name: &str) -> Option<&'static KernelInfo> {
    KERNELS.iter().find(|k| k.name == name)
}
