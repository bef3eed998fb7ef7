//! A GPT-style model on flashscan: pre-LayerNorm blocks (LayerNorm, q/k/v projections,
//! learned or rotary positions, FlashAttention, output projection, GELU MLP, residuals),
//! projections through cuBLAS on the GPU (`flashscan::ops::linear`), the CPU path
//! otherwise. A batched prefill, then generation with a KV cache (Flash-Decoding of each
//! new token against the cache); tokens/s of each phase in a final table.
//!
//! With `--checkpoint` it loads GPT-2 weights (safetensors, HuggingFace layout) and a
//! tokenizer and prints the text it generates from the prompt; without, it runs seeded
//! random weights. A self-check on a small model runs first (`--no-check` skips it):
//! generation steps must reproduce the prefill's logits and KV cache and, on a GPU, the
//! GPU must match the CPU path.
//!
//!     cargo run --release --example gpt_block -- --help

// Under `cargo test` (test = true in Cargo.toml) main is not the entry point.
#![cfg_attr(test, allow(dead_code))]

mod common;
mod gpt;

use common::args::{Args, Flag, UsageError};
use common::files::AnyError;
use common::run::{self, RUN_FLAGS, Setup};
use common::setup::Dtype;
use flashscan::models::{Gpt2Config, Gpt2Weights};
use flashscan::{Device, Element, bf16, f16};
use gpt::GptModel;
use std::process::ExitCode;

const ABOUT: &str = "gpt_block: a GPT-2-style block stack on flashscan: prefill, then generation with a KV cache.
Without --checkpoint it runs seeded random weights (--size); on the GPU if there is one, else on the CPU.";

const MODEL_FLAGS: &[Flag] = &[
    Flag {
        name: "checkpoint",
        value: Some("PATH"),
        default: "",
        help: "GPT-2 safetensors file, or a folder with model.safetensors",
    },
    Flag {
        name: "size",
        value: Some("NAME"),
        default: "124m on a GPU, small on the CPU",
        help: "random weights: tiny, small, 124m or 355m",
    },
    Flag { name: "layers", value: Some("N"), default: "", help: "random weights: override the layer count" },
    Flag { name: "d-model", value: Some("N"), default: "", help: "random weights: override the width" },
    Flag { name: "vocab", value: Some("N"), default: "", help: "random weights: override the vocabulary size" },
    Flag {
        name: "heads",
        value: Some("N"),
        default: "d_model / 64",
        help: "attention heads (checkpoints do not record them)",
    },
    Flag { name: "rotary", value: None, default: "", help: "random weights: rotary positions instead of learned ones" },
    Flag { name: "dtype", value: Some("T"), default: "bf16", help: "bf16 or f16" },
];

fn main() -> ExitCode {
    let flags = [MODEL_FLAGS, RUN_FLAGS].concat();
    run::main("gpt_block", ABOUT, &flags, |args, device| {
        match Dtype::parse(args.text("dtype").unwrap_or("bf16"), false)? {
            Dtype::F16 => run::<f16>(args, device),
            _ => run::<bf16>(args, device),
        }
    })
}

/// The random-weights configuration of the flags.
fn random_config(args: &Args, device: Device) -> Result<Gpt2Config, AnyError> {
    let size = args.text("size").unwrap_or(if device == Device::Cpu { "small" } else { "124m" });
    let mut c =
        gpt::preset(size).ok_or_else(|| UsageError(format!("`--size {size}`: expected tiny, small, 124m or 355m")))?;
    c.n_layer = args.get_or("layers", c.n_layer)?;
    c.d_model = args.get_or("d-model", c.d_model)?;
    c.vocab_size = args.get_or("vocab", c.vocab_size)?;
    c.n_head = args.get_or("heads", (c.d_model / 64).max(1))?;
    c.validate()?;
    Ok(c)
}

fn run<T: Element>(args: &Args, device: Device) -> Result<(), AnyError> {
    let seed: u64 = args.get_or("seed", 0)?;
    let dtype = T::DTYPE.to_string();
    let c = gpt::check::config();
    let title = format!("self-check on a small random GPT ({} layers, d {}, {dtype}):", c.n_layer, c.d_model);
    if !run::self_check(args, &title, || gpt::check::run::<T>(device, seed))? {
        return Ok(());
    }

    let heads: Option<usize> = args.get("heads")?;
    let setup = Setup::from_args(
        args,
        |file| Gpt2Weights::load(file, heads),
        || Ok(Gpt2Weights::random(random_config(args, device)?, seed)?),
    )?;
    let c = setup.weights.config.clone();
    let mut plan = setup.plan(args, c.vocab_size, device)?;
    let rotary = (!setup.from_checkpoint && args.switch("rotary")).then_some(plan.capacity());
    let model = GptModel::<T>::new(&setup.weights, rotary, device)?;
    let positions = if rotary.is_some() { "rotary" } else { "learned" };
    let shapes = format!(
        "{} layers, d_model {}, {} heads of {}, vocabulary {}, {positions} positions",
        c.n_layer,
        c.d_model,
        c.n_head,
        c.head_dim(),
        c.vocab_size
    );
    setup.announce(&shapes, &plan);
    let title = format!("gpt_block: {} layers, d {}, batch {}, {dtype}", c.n_layer, c.d_model, plan.batch);
    run::generate(&model, &mut plan, &setup.tokenizer, device, &title, &dtype)?;
    Ok(())
}
