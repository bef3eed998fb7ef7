//! Unit-test kernels for the device primitives, each checked against a CPU model by the
//! GPU tests in `tests/gpu_primitives.rs`.

#[cfg(target_arch = "nvptx64")]
mod kernel;
#[cfg(all(target_arch = "nvptx64", target_feature = "sm_90a"))]
mod wgmma;

/// Launch parameters shared by every self-test kernel; the meaning of each address is
/// given on the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SelftestParams {
    pub a: u64,
    pub b: u64,
    pub c: u64,
    pub d: u64,
    pub n: u32,
    pub _pad: u32,
}

/// selftest_cp_async: bytes copied (two groups of half each), 256 threads x 16 bytes x 2.
pub const CP_ASYNC_BYTES: u32 = 8192;
/// selftest_warp: threads in the block (8 warps) and f32 outputs per thread.
pub const WARP_TEST_THREADS: u32 = 256;
pub const WARP_TEST_OUTPUTS: u32 = 10;
/// SRAM each self-test asks for (the largest of them).
pub const SELFTEST_SMEM_BUDGET: u32 = if CP_ASYNC_BYTES > WGMMA_TEST_SMEM { CP_ASYNC_BYTES } else { WGMMA_TEST_SMEM };
/// selftest_wgmma_bf16: 128 threads; S = A[64 x 16] Bt[128 x 16]^T and O = A V[16 x 64].
pub const WGMMA_TEST_THREADS: u32 = 128;
pub const WGMMA_S_N: usize = 128;
pub const WGMMA_O_N: usize = 64;
/// selftest_wgmma_bf16's SRAM: A, Bt and V in the core-matrix layout.
pub const WGMMA_TEST_SMEM: u32 = crate::layout::core_tile_bytes(64, 2)
    + crate::layout::core_tile_bytes(128, 2)
    + crate::layout::core_tile_bytes(16, 8);
