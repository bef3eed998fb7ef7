//! The self-check of `mamba_block` on a small random model: decoding token by token
//! (conv1d_update + selective_state_update from the prefill's states) must reproduce a
//! full prefill's logits and final states, and on a GPU the GPU must match the CPU path
//! (`common::check::measure`).

use super::{MambaModel, preset};
use crate::common::check::{Measured, measure, tokens};
use flashscan::models::{MambaConfig, MambaWeights};
use flashscan::{DType, Device, Element, Result};

/// The check's model: 2 layers, d 64, d_inner 128, d_state 16, vocabulary 512.
pub fn config() -> MambaConfig {
    preset("tiny").expect("the tiny preset exists")
}

/// The relative error allowed between the prefill (channel-major products, the scan)
/// and the steps (row products, the one-step updates), or between GPU and CPU. Each path
/// is within ~6e-3 (bf16) / ~8e-4 (f16) / ~4e-7 (f32) of an f64 Mamba on this model
/// (`tests.rs`), so two differ by at most about twice that. The states are the sharper
/// test: with random weights the mixers add little to the logits (Δ is small, so D u
/// dominates the scan's output), while a state carried wrongly is off by 1 or more.
pub fn bound<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => 1e-4,
        DType::F16 => 3e-3,
        DType::BF16 => 2e-2,
    }
}

/// The measurements for element type T on `device`.
pub fn run<T: Element>(device: Device, seed: u64) -> Result<Vec<Measured>> {
    let weights = MambaWeights::random(config(), seed)?;
    let toks = tokens(2, 40, config().vocab_size, seed);
    let model = MambaModel::<T>::new(&weights, device)?;
    let cpu = if device == Device::Cpu { None } else { Some(MambaModel::<T>::new(&weights, Device::Cpu)?) };
    measure("mamba", &model, device, cpu.as_ref(), &toks, 30, bound::<T>())
}
