//! The Hopper (`wgmma`, sm_90a) attention forward against the f64 reference. The kernels
//! are opt-in (`FLASHSCAN_WGMMA_FWD=1`, read once per process: they are slower than the
//! `mma.sync` ones today, docs/PERF.md), so this binary sets the switch before its one
//! test makes any launch; on a GPU that is not a Hopper the same checks run the
//! `mma.sync` kernels. Run with `cargo test --release --test gpu_attention_wgmma -- --ignored`.

mod attention_common;

use attention_common::{Case, check, check_large_logits, check_nan_row, tol};
use flashscan::attention::AttentionOptions;
use flashscan::runtime::Gpu;
use flashscan::runtime::ptx::Arch;
use flashscan::{Device, bf16, f16};

/// One test, so that setting the variable races no other thread of this binary.
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_wgmma_forward_matches_reference() {
    // SAFETY: the only test of this binary, before its first launch (no other thread
    // reads the environment meanwhile).
    unsafe { std::env::set_var("FLASHSCAN_WGMMA_FWD", "1") };
    let g = Gpu::get(0).expect("these tests need a CUDA GPU");
    if g.arch() != Arch::Sm90a {
        eprintln!("not a Hopper GPU ({} PTX): these checks run the mma.sync kernels", g.arch().name());
    }
    g.set_poison_outputs(true);
    let d = Device::Cuda(0);
    let causal = AttentionOptions { causal: true, ..Default::default() };
    let window = AttentionOptions { window_left: Some(70), window_right: Some(3), ..Default::default() };

    // Tile edges (128 query rows in two 64-row warpgroups, 128-key blocks): lengths
    // around the block edges, bottom-right causal with seqlen_q != seqlen_k (a warpgroup
    // may see fewer key blocks than its CTA, or none), windows ending inside a block, at
    // head dims 64, 128 and the padded 48, 112.
    for &hd in &[64, 128, 48, 112] {
        for opts in [AttentionOptions::default(), causal, window] {
            for (sq, sk) in [(64, 64), (65, 200), (128, 128), (129, 127), (255, 257), (300, 64), (40, 520)] {
                let case = Case::new(1, sq, sk, 4, 2, hd).with(opts);
                check::<bf16>(&case, d, tol::<bf16>()).unwrap();
                check::<f16>(&case, d, tol::<f16>()).unwrap();
            }
        }
    }
    // Soft-capping, scales and one-sided windows; GQA / MQA.
    let options = [
        AttentionOptions { window_left: Some(0), window_right: Some(0), ..Default::default() },
        AttentionOptions { window_right: Some(5), ..Default::default() },
        AttentionOptions { softcap: Some(30.0), ..Default::default() },
        AttentionOptions { softcap: Some(2.0), softmax_scale: Some(0.7), causal: true, ..Default::default() },
        AttentionOptions { softmax_scale: Some(0.02), ..Default::default() },
    ];
    for &hd in &[64, 128] {
        for opts in options {
            let mut case = Case::new(1, 700, 300, 4, 2, hd).with(opts);
            case.magnitude = 3.0;
            check::<bf16>(&case, d, tol::<bf16>()).unwrap();
        }
        for heads_kv in [1, 8] {
            check::<f16>(&Case::new(2, 300, 517, 8, heads_kv, hd).with(causal), d, tol::<f16>()).unwrap();
        }
        check_large_logits::<bf16>(&Case::new(1, 517, 700, 4, 2, hd).with(causal), d).unwrap();
        check_nan_row::<bf16>(&Case::new(1, 300, 200, 4, 2, hd), 37, 1, d).unwrap();
    }
    // Long sequences, a long sliding window, more queries than keys (rows seeing nothing).
    check::<bf16>(&Case::new(1, 4096, 4096, 2, 1, 128), d, tol::<bf16>()).unwrap();
    check::<f16>(&Case::new(1, 4096, 4096, 2, 2, 64).with(causal), d, tol::<f16>()).unwrap();
    let long_window = AttentionOptions { window_left: Some(256), window_right: Some(0), ..Default::default() };
    check::<bf16>(&Case::new(1, 3001, 4096, 2, 1, 128).with(long_window), d, tol::<bf16>()).unwrap();
    check::<f16>(&Case::new(1, 4096, 1000, 2, 1, 64).with(causal), d, tol::<f16>()).unwrap();
}
