//! The `mma.sync` attention forward at d=64 and d=128 on any GPU, a Hopper included:
//! `FLASHSCAN_WGMMA_FWD=0` (read once per process) keeps the Hopper off its `wgmma`
//! kernels, so this binary sets it before its one test makes any launch. Run with
//! `cargo test --release --test gpu_attention_mma -- --ignored`.

mod attention_common;

use attention_common::check_forward_tile_edges;
use flashscan::Device;
use flashscan::runtime::Gpu;

/// One test, so that setting the variable races no other thread of this binary.
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_mma_forward_matches_reference() {
    // SAFETY: the only test of this binary, before its first launch (no other thread
    // reads the environment meanwhile).
    unsafe { std::env::set_var("FLASHSCAN_WGMMA_FWD", "0") };
    let g = Gpu::get(0).expect("these tests need a CUDA GPU");
    g.set_poison_outputs(true);
    check_forward_tile_edges(Device::Cuda(0));
}
