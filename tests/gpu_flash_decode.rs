//! Flash-Decoding on the GPU (the append kernel; the split-KV kernel and its last CTA's
//! merge of the splits) against the f64 reference: the property checks of
//! `cpu_flash_decode.rs` on `Device::Cuda(0)` with outputs and split partials poisoned
//! with NaN before each launch, plus long caches, a generation loop on one cache, every
//! split count up to the maximum, and paged vs contiguous. Run with
//! `cargo test --release --test gpu_flash_decode -- --ignored`.

mod attention_common;
mod flash_decode_common;

use attention_common::tol;

use flash_decode_common::{DecodeCase, cases, check, check_generation, inputs, run};
use flashscan::attention::AttentionOptions;
use flashscan::ops::RotaryStyle;
use flashscan::{Device, bf16, f16, runtime::Gpu};
use proptest::prelude::*;

const HEAD_DIMS: &[usize] = &[8, 32, 40, 64, 80, 96, 128, 136, 192, 256];

fn gpu() -> Device {
    let g = Gpu::get(0).expect("these tests need a CUDA GPU");
    g.set_poison_outputs(true);
    Device::Cuda(0)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_decode_matches_reference_bf16(case in cases(1500, HEAD_DIMS)) {
        check::<bf16>(&case, gpu(), tol::<bf16>()).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_decode_matches_reference_f16(case in cases(1500, HEAD_DIMS)) {
        check::<f16>(&case, gpu(), tol::<f16>()).map_err(TestCaseError::fail)?;
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_long_caches_with_gqa_and_mha() {
    // 20k cached keys + 3 new, 4 causal queries, GQA 8:1 and MHA, heuristic and forced splits.
    for (heads_q, heads_kv, hd) in [(16, 2, 128), (4, 4, 64), (8, 1, 256)] {
        for splits in [None, Some(1), Some(128)] {
            let mut c = DecodeCase::new(1, 20_000, 4, heads_q, heads_kv, hd);
            c.new = 3;
            c.num_splits = splits;
            c.opts = AttentionOptions { causal: true, ..Default::default() };
            check::<bf16>(&c, gpu(), tol::<bf16>()).unwrap();
        }
    }
    // Paged, sliding window and softcap, rotary, differing lengths.
    let mut c = DecodeCase::new(3, 0, 2, 8, 2, 128);
    c.cached = vec![9000, 1, 4097];
    c.new = 2;
    c.page_size = Some(128);
    c.rotary = Some((RotaryStyle::Interleaved, 64));
    c.opts = AttentionOptions { window_left: Some(3000), softcap: Some(20.0), causal: true, ..Default::default() };
    check::<f16>(&c, gpu(), tol::<f16>()).unwrap();
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_generation_loop_on_one_cache() {
    check_generation::<bf16>(gpu(), 70, Some(64), true, None).unwrap();
    check_generation::<f16>(gpu(), 40, None, false, Some(3)).unwrap();
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_paged_equals_contiguous_and_matches_the_cpu_path() {
    let mut c = DecodeCase::new(2, 777, 3, 8, 2, 128);
    c.new = 2;
    c.num_splits = Some(6);
    c.opts = AttentionOptions { causal: true, ..Default::default() };
    let x = inputs::<bf16>(&c);
    let (oc, lc, _) = run(&c, &x, gpu()).unwrap();
    c.page_size = Some(192);
    let (op, lp, _) = run(&c, &x, gpu()).unwrap();
    // Paging moves rows, not arithmetic.
    assert_eq!(oc, op);
    assert_eq!(lc, lp);
    let (o_cpu, l_cpu, _) = run(&c, &x, Device::Cpu).unwrap();
    let d = oc.iter().zip(&o_cpu).map(|(a, b)| (a.to_f32() - b.to_f32()).abs()).fold(0f32, f32::max);
    let dl = lc.iter().zip(&l_cpu).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(d < 2e-2 && dl < 1e-3, "GPU vs CPU: o differs by {d}, lse by {dl}");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_empty_sequences_and_masked_rows() {
    let mut c = DecodeCase::new(3, 0, 3, 2, 1, 64);
    c.cached = vec![1, 0, 70];
    c.opts = AttentionOptions { causal: true, window_left: Some(0), ..Default::default() };
    for splits in [None, Some(1), Some(7)] {
        c.num_splits = splits;
        check::<f16>(&c, gpu(), tol::<f16>()).unwrap();
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_lengths_by_value_and_from_memory() {
    // The first 16 sequences' lengths come from the kernel's parameters, later ones
    // from the cache's device copy: batches on both sides of the line, lengths that
    // differ per sequence (empty ones too), one and several splits, a new token appended.
    for batch in [15, 16, 17, 40] {
        for splits in [None, Some(1), Some(3)] {
            let mut c = DecodeCase::new(batch, 0, 2, 8, 2, 64);
            c.cached = (0..batch).map(|b| (b * 97 + 13) % 331 * (b % 5).min(1)).collect();
            c.new = 1;
            c.num_splits = splits;
            c.opts = AttentionOptions { causal: true, ..Default::default() };
            check::<bf16>(&c, gpu(), tol::<bf16>()).unwrap();
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_very_long_caches() {
    // 300,001 keys (not a multiple of the 64-key block) in one sequence, GQA 8:1 at d=128:
    // the heuristic's split count (127), the most splits (128) and one split; then two
    // sequences of 250,000 and 77,777 keys, paged, 4 causal queries, f16.
    for splits in [None, Some(128), Some(1)] {
        let mut c = DecodeCase::new(1, 300_000, 1, 8, 1, 128);
        c.new = 1;
        c.num_splits = splits;
        check::<bf16>(&c, gpu(), tol::<bf16>()).unwrap();
    }
    let mut c = DecodeCase::new(2, 0, 4, 4, 2, 64);
    c.cached = vec![250_000, 77_777];
    c.page_size = Some(256);
    c.opts = AttentionOptions { causal: true, ..Default::default() };
    check::<f16>(&c, gpu(), tol::<f16>()).unwrap();
}
