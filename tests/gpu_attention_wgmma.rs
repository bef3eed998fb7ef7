//! The Hopper (`wgmma`, sm_90a) attention forward against the f64 reference: the d=64
//! and d=128 kernels, whose Q / K / V tiles the tensor memory accelerator copies (the
//! default on a Hopper GPU; on any other GPU the same checks run the `mma.sync`
//! kernels). Run with `cargo test --release --test gpu_attention_wgmma -- --ignored`.

mod attention_common;

use attention_common::check_forward_tile_edges;
use flashscan::Device;
use flashscan::runtime::Gpu;
use flashscan::runtime::ptx::Arch;

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_wgmma_forward_matches_reference() {
    let g = Gpu::get(0).expect("these tests need a CUDA GPU");
    if g.arch() != Arch::Sm90a {
        eprintln!("not a Hopper GPU ({} PTX): these checks run the mma.sync kernels", g.arch().name());
    }
    g.set_poison_outputs(true);
    check_forward_tile_edges(Device::Cuda(0));
}
