//! The `mma.sync` attention backward's fast mode at d=64 and d=128 on any GPU, a Hopper
//! included: `FLASHSCAN_WGMMA_BWD=0` (read once per process) keeps the Hopper off its
//! `wgmma` backward, so this binary sets it before its one test makes any launch (the
//! deterministic mode and the other head dims run `mma.sync` everywhere and are covered
//! by `gpu_attention_bwd.rs`). Run with
//! `cargo test --release --test gpu_attention_bwd_mma -- --ignored`.

mod attention_common;

use attention_common::{Case, Saved, check_backward};
use flashscan::attention::{AttentionOptions, BackwardOptions};
use flashscan::{Device, bf16, f16};

/// One test, so that setting the variable races no other thread of this binary.
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_mma_backward_fast_mode_matches_reference() {
    // SAFETY: the only test of this binary, before its first launch (no other thread
    // reads the environment meanwhile).
    unsafe { std::env::set_var("FLASHSCAN_WGMMA_BWD", "0") };
    let (gpu, fast) = (Device::Cuda(0), BackwardOptions { deterministic: false });
    let causal = AttentionOptions { causal: true, ..Default::default() };
    let window =
        AttentionOptions { window_left: Some(40), window_right: Some(3), softcap: Some(15.0), ..Default::default() };
    // Lengths off the 128-key x 64-query blocks, GQA, a window with softcap, padded head
    // dims, length 1, a long causal sequence.
    for case in [
        Case::new(1, 65, 129, 2, 1, 128).with(causal),
        Case::new(2, 130, 70, 4, 2, 104).with(window),
        Case::new(1, 65, 129, 2, 1, 64).with(causal),
        Case::new(2, 130, 70, 4, 2, 48).with(window),
        Case::new(1, 130, 200, 2, 1, 128),
        Case::new(1, 130, 200, 2, 1, 64),
        Case::new(1, 1, 300, 2, 2, 64),
        Case::new(1, 300, 1, 2, 2, 128),
        Case::new(1, 2048, 2048, 2, 1, 64).with(causal),
    ] {
        check_backward::<bf16>(&case, gpu, Saved::Forward, &fast).unwrap();
        check_backward::<f16>(&case, gpu, Saved::Forward, &fast).unwrap();
    }
}
