//! Tests of the Mamba example's CPU path (run by `cargo test`; the GPU twins are ignored
//! without a GPU): the prefill against an f64 Mamba run token by token, the self-check
//! (step-by-step decoding reproduces the prefill), and a run from a checkpoint folder
//! written here in state-spaces' layout with a `tokenizer.json`.

use super::{MambaModel, check, reference};
use crate::common::lm::{LanguageModel, host_f32, logits};
use crate::common::run::{self, Plan, RUN_FLAGS};
use crate::common::testing::{TEST_BPE_VOCAB, TempDir, args, copy_test_bpe};
use crate::common::{check as common_check, files};
use flashscan::models::{MambaConfig, MambaWeights};
use flashscan::{DType, Device, Element, bf16, f16};
use ndarray::{Array2, Array3, Ix3, s};

/// The largest relative error, over the sequences of a batch, of the logits of a prefill
/// on `device` against the f64 reference with T-rounded weights.
fn prefill_error<T: Element>(device: Device, seed: u64) -> f64 {
    let w = MambaWeights::random(check::config(), seed).unwrap();
    let toks = common_check::tokens(2, 37, w.config.vocab_size, seed);
    let model = MambaModel::<T>::new(&w, device).unwrap();
    let (hidden, _) = model.prefill(&toks, 37).unwrap();
    let got: Array3<f32> =
        host_f32(&logits(&hidden, model.lm_head()).unwrap()).unwrap().into_dimensionality::<Ix3>().unwrap();
    let round = |v: f32| T::from_f32(v).to_f64();
    (0..toks.len())
        .map(|b| {
            let want = reference::logits(&w, &toks[b], &round);
            let g: Array2<f64> = got.slice(s![b, .., ..]).mapv(f64::from);
            let num: f64 = (&g - &want).iter().map(|v| v * v).sum();
            (num / want.iter().map(|v| v * v).sum::<f64>()).sqrt()
        })
        .fold(0.0, f64::max)
}

/// Bounds of the prefill against the f64 reference: T's rounding of the activations
/// (bf16 2^-9, f16 2^-12, f32 2^-24 relative, several per layer) over 2 layers. Measured
/// on the CPU (2026-11-22): f32 3.8e-7, bf16 6.0e-3, f16 7.4e-4.
fn reference_bound<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => 1e-5,
        DType::F16 => 3e-3,
        DType::BF16 => 2e-2,
    }
}

fn assert_prefill_matches_reference(device: Device) {
    for seed in [1, 2] {
        let e = [
            prefill_error::<f32>(device, seed),
            prefill_error::<bf16>(device, seed),
            prefill_error::<f16>(device, seed),
        ];
        println!("seed {seed}: relative logit error f32 {:.2e}, bf16 {:.2e}, f16 {:.2e}", e[0], e[1], e[2]);
        assert!(e[0] <= reference_bound::<f32>(), "f32: {:e}", e[0]);
        assert!(e[1] <= reference_bound::<bf16>(), "bf16: {:e}", e[1]);
        assert!(e[2] <= reference_bound::<f16>(), "f16: {:e}", e[2]);
    }
}

#[test]
fn cpu_prefill_matches_an_f64_mamba() {
    assert_prefill_matches_reference(Device::Cpu);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_prefill_matches_an_f64_mamba() {
    assert_prefill_matches_reference(Device::Cuda(0));
}

fn assert_self_check(device: Device) {
    let mut measured = check::run::<f32>(device, 5).unwrap();
    measured.extend(check::run::<bf16>(device, 6).unwrap());
    measured.extend(check::run::<f16>(device, 7).unwrap());
    common_check::report("self-check", &measured).unwrap();
}

#[test]
fn cpu_decoding_step_by_step_matches_the_prefill() {
    assert_self_check(Device::Cpu);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_decoding_step_by_step_matches_the_prefill() {
    assert_self_check(Device::Cuda(0));
}

/// A model of the test tokenizer's vocabulary.
fn small_weights(seed: u64) -> MambaWeights {
    MambaWeights::random(MambaConfig { vocab_size: TEST_BPE_VOCAB, ..check::config() }, seed).unwrap()
}

#[test]
fn runs_from_a_mamba_checkpoint_folder() {
    let dir = TempDir::new("mamba");
    let w = small_weights(3);
    w.save(dir.join("model.safetensors"), DType::F32).unwrap();
    copy_test_bpe(&dir, &["tokenizer.json"]);

    let loaded = MambaWeights::load(files::checkpoint_file(dir.path()).unwrap()).unwrap();
    assert_eq!(loaded, w);
    let (tokenizer, name) = files::tokenizer(None, Some(&dir.join("model.safetensors"))).unwrap();
    assert!(name.ends_with("tokenizer.json"), "{name}");

    let a = args(RUN_FLAGS, &["--prompt", "Hello world", "--generate", "5", "--batch", "3", "--temperature", "0.8"]);
    let mut plan = Plan::from_args(&a, &tokenizer, None, TEST_BPE_VOCAB, Device::Cpu).unwrap();
    let model = MambaModel::<f32>::new(&loaded, Device::Cpu).unwrap();
    let out = run::generate(&model, &mut plan, &tokenizer, Device::Cpu, "test", "f32").unwrap();
    assert!(out.iter().all(|s| s.len() == 5 && s.iter().all(|&t| (t as usize) < TEST_BPE_VOCAB)));
    // Seeded sampling: the same flags draw the same tokens.
    let mut again = Plan::from_args(&a, &tokenizer, None, TEST_BPE_VOCAB, Device::Cpu).unwrap();
    assert_eq!(run::generate(&model, &mut again, &tokenizer, Device::Cpu, "test", "f32").unwrap(), out);
}

#[test]
fn a_misshapen_checkpoint_names_the_tensor_and_in_proj_bias_is_refused() {
    let dir = TempDir::new("mamba-bad");
    let path = dir.join("model.safetensors");
    let mut w = small_weights(4);
    let di = w.config.d_inner;
    w.blocks[1].mixer.dt_proj_bias = ndarray::Array1::zeros(di + 1);
    w.save(&path, DType::F32).unwrap();
    let e = MambaWeights::load(&path).unwrap_err().to_string();
    assert!(e.contains("`backbone.layers.1.mixer.dt_proj.bias`") && e.contains(&format!("[{di}]")), "{e}");

    let mut w = small_weights(5);
    w.blocks[0].mixer.in_proj_bias = Some(ndarray::Array1::zeros(2 * di));
    let e = MambaModel::<f32>::new(&w, Device::Cpu).err().expect("refused").to_string();
    assert!(e.contains("layer 0's in_proj.bias"), "{e}");
}
