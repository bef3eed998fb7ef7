//! The self-check of `gpt_block` on a small random model, with learned and with rotary
//! positions: generation steps against the KV cache must reproduce a full prefill's
//! logits and cache, and on a GPU the GPU must match the CPU path
//! (`common::check::measure`).

use super::{GptModel, preset};
use crate::common::check::{Measured, measure, tokens};
use flashscan::models::{Gpt2Config, Gpt2Weights};
use flashscan::{DType, Device, Element, Result};

/// The check's model: 2 layers, d 128, 2 heads of 64, vocabulary 512.
pub fn config() -> Gpt2Config {
    preset("tiny").expect("the tiny preset exists")
}

/// The relative error allowed between two paths that round differently in T (the decode
/// split kernel vs the forward kernel, cuBLAS vs matrixmultiply). Each path is within
/// ~5e-3 (bf16) / ~7e-4 (f16) of an f64 GPT-2 on this model (`tests.rs`), so two differ
/// by at most about twice that; a wrong position, scale or cache row gives 0.1 or more.
pub fn bound<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F16 => 3e-3,
        _ => 2e-2,
    }
}

/// The measurements for element type T on `device`.
pub fn run<T: Element>(device: Device, seed: u64) -> Result<Vec<Measured>> {
    let weights = Gpt2Weights::random(config(), seed)?;
    let toks = tokens(2, 40, config().vocab_size, seed);
    let mut out = Vec::new();
    for (label, rotary) in [("learned positions", None), ("rotary positions", Some(64))] {
        let model = GptModel::<T>::new(&weights, rotary, device)?;
        let cpu = if device == Device::Cpu { None } else { Some(GptModel::<T>::new(&weights, rotary, Device::Cpu)?) };
        out.extend(measure(label, &model, device, cpu.as_ref(), &toks, 30, bound::<T>())?);
    }
    Ok(out)
}
