//! Tests of the GPT example's CPU path (run by `cargo test`; the GPU twins are ignored
//! without a GPU): the prefill against an f64 GPT-2, the self-check, and a run from a
//! checkpoint folder written here in GPT-2's layout with a GPT-2-style tokenizer.

use super::{GptModel, check, reference};
use crate::common::lm::{LanguageModel, host_f32, logits};
use crate::common::run::{self, Plan, RUN_FLAGS};
use crate::common::testing::{TEST_BPE_VOCAB, TempDir, args, copy_test_bpe};
use crate::common::{check as common_check, files};
use flashscan::models::{Gpt2Config, Gpt2Weights};
use flashscan::{DType, Device, Element, bf16, f16};
use ndarray::{Array2, Ix3, s};

/// The largest relative error, over the sequences of a batch, of the logits of a prefill
/// on `device` against the f64 reference with T-rounded weights.
fn prefill_error<T: Element>(device: Device, seed: u64) -> f64 {
    let w = Gpt2Weights::random(check::config(), seed).unwrap();
    let toks = common_check::tokens(2, 37, w.config.vocab_size, seed);
    let model = GptModel::<T>::new(&w, None, device).unwrap();
    let (hidden, _) = model.prefill(&toks, 37).unwrap();
    let got = host_f32(&logits(&hidden, model.lm_head()).unwrap()).unwrap().into_dimensionality::<Ix3>().unwrap();
    let round = |v: f32| T::from_f32(v).to_f64();
    (0..toks.len())
        .map(|b| {
            let want = reference::logits(&w, &toks[b], &round);
            let g: Array2<f64> = got.slice(s![b, .., ..]).mapv(f64::from);
            reference::rel(&g, &want)
        })
        .fold(0.0, f64::max)
}

/// Bounds of the prefill against the f64 reference: T's rounding of every activation
/// (bf16 2^-9, f16 2^-12 relative), a dozen per layer over 2 layers. Measured on the
/// CPU (2026-11-22): bf16 5.2e-3, f16 6.5e-4.
fn reference_bound<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F16 => 3e-3,
        _ => 2e-2,
    }
}

#[test]
fn cpu_prefill_matches_an_f64_gpt2() {
    for seed in [1, 2] {
        let (eb, eh) = (prefill_error::<bf16>(Device::Cpu, seed), prefill_error::<f16>(Device::Cpu, seed));
        println!("seed {seed}: relative logit error bf16 {eb:.2e}, f16 {eh:.2e}");
        assert!(eb <= reference_bound::<bf16>(), "bf16: {eb:e}");
        assert!(eh <= reference_bound::<f16>(), "f16: {eh:e}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_prefill_matches_an_f64_gpt2() {
    let (eb, eh) = (prefill_error::<bf16>(Device::Cuda(0), 1), prefill_error::<f16>(Device::Cuda(0), 1));
    println!("relative logit error bf16 {eb:.2e}, f16 {eh:.2e}");
    assert!(eb <= reference_bound::<bf16>(), "bf16: {eb:e}");
    assert!(eh <= reference_bound::<f16>(), "f16: {eh:e}");
}

fn assert_self_check(device: Device) {
    let mut measured = check::run::<bf16>(device, 5).unwrap();
    measured.extend(check::run::<f16>(device, 6).unwrap());
    for m in &measured {
        println!("{}: {:.2e} (bound {:.0e})", m.what, m.error, m.bound);
    }
    common_check::report("self-check", &measured).unwrap();
}

#[test]
fn cpu_self_check_passes() {
    assert_self_check(Device::Cpu);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_self_check_passes() {
    assert_self_check(Device::Cuda(0));
}

/// A model of the test tokenizer's vocabulary.
fn small_weights(seed: u64) -> Gpt2Weights {
    Gpt2Weights::random(Gpt2Config { vocab_size: TEST_BPE_VOCAB, ..check::config() }, seed).unwrap()
}

#[test]
fn runs_from_a_gpt2_checkpoint_folder() {
    let dir = TempDir::new("gpt2");
    let w = small_weights(3);
    w.save(dir.join("model.safetensors"), DType::BF16).unwrap();
    copy_test_bpe(&dir, &["vocab.json", "merges.txt"]);

    let file = files::checkpoint_file(dir.path()).unwrap();
    assert_eq!(file, dir.join("model.safetensors"));
    let loaded = Gpt2Weights::load(&file, None).unwrap();
    assert_eq!(loaded.config, w.config);
    let (tokenizer, name) = files::tokenizer(None, Some(dir.path())).unwrap();
    assert!(name.contains("vocab.json") && name.contains("merges.txt"), "{name}");

    let a = args(RUN_FLAGS, &["--prompt", "Hello world, the scan", "--generate", "6", "--batch", "2"]);
    let mut plan = Plan::from_args(&a, &tokenizer, None, TEST_BPE_VOCAB, Device::Cpu).unwrap();
    assert_eq!(plan.prompt, tokenizer.encode("Hello world, the scan"));
    let model = GptModel::<bf16>::new(&loaded, None, Device::Cpu).unwrap();
    let out = run::generate(&model, &mut plan, &tokenizer, Device::Cpu, "test", "bf16").unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|s| s.len() == 6 && s.iter().all(|&t| (t as usize) < TEST_BPE_VOCAB)));
    assert_eq!(out[0], out[1], "greedy decoding of one prompt gives one continuation");

    // The file holds the weights rounded to bf16, which is what the model rounds them to:
    // the random weights themselves generate the same tokens.
    let mut plan = Plan::from_args(&a, &tokenizer, None, TEST_BPE_VOCAB, Device::Cpu).unwrap();
    let direct = GptModel::<bf16>::new(&w, None, Device::Cpu).unwrap();
    assert_eq!(run::generate(&direct, &mut plan, &tokenizer, Device::Cpu, "test", "bf16").unwrap(), out);
}

#[test]
fn a_truncated_or_misshapen_checkpoint_names_the_tensor() {
    let dir = TempDir::new("gpt2-bad");
    let mut w = small_weights(4);
    let path = dir.join("model.safetensors");
    w.save(&path, DType::F32).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).unwrap();
    let e = Gpt2Weights::load(files::checkpoint_file(dir.path()).unwrap(), None).unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("tensor `"), "{e}");

    let d = w.config.d_model;
    w.blocks[1].mlp_c_fc.weight = Array2::zeros((d, 3 * d));
    w.save(&path, DType::F32).unwrap();
    let e = Gpt2Weights::load(&path, None).unwrap_err().to_string();
    assert!(e.contains("`h.1.mlp.c_fc.weight`") && e.contains(&format!("[{d}, {}]", 3 * d)), "{e}");
}
