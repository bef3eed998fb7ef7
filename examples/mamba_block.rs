//! A Mamba model on flashscan: per layer RMSNorm, in_proj to (x, z), causal conv1d +
//! SiLU, x_proj to (Δ, B, C), dt_proj, the selective scan with the silu(z) gate,
//! out_proj and the residual; projections through cuBLAS on the GPU
//! (`flashscan::ops::{matmul, linear}`), the CPU path otherwise. A prefill with the scan
//! over the prompt, then generation one token at a time with the one-step conv and state
//! updates; tokens/s of each phase in a final table.
//!
//! With `--checkpoint` it loads mamba-130m-style weights (safetensors, state-spaces or
//! HuggingFace names) and a tokenizer (mamba-130m uses GPT-NeoX's `tokenizer.json`) and
//! prints the text it generates from the prompt; without, it runs seeded random weights.
//! A self-check on a small model runs first (`--no-check` skips it): decoding step by
//! step must reproduce the prefill's logits and states and, on a GPU, the GPU must match
//! the CPU path.
//!
//!     cargo run --release --example mamba_block -- --help

// Under `cargo test` (test = true in Cargo.toml) main is not the entry point.
#![cfg_attr(test, allow(dead_code))]

mod common;
mod mamba;

use common::args::{Args, Flag, UsageError};
use common::files::AnyError;
use common::run::{self, RUN_FLAGS, Setup};
use common::setup::Dtype;
use flashscan::models::{MambaConfig, MambaWeights};
use flashscan::{Device, Element, bf16, f16};
use mamba::MambaModel;
use std::process::ExitCode;

const ABOUT: &str = "mamba_block: a Mamba block stack on flashscan: prefill with the selective scan, then generation
with the one-step conv and state updates. Without --checkpoint it runs seeded random weights (--size);
on the GPU if there is one, else on the CPU.";

const MODEL_FLAGS: &[Flag] = &[
    Flag {
        name: "checkpoint",
        value: Some("PATH"),
        default: "",
        help: "Mamba safetensors file, or a folder with model.safetensors",
    },
    Flag {
        name: "size",
        value: Some("NAME"),
        default: "130m on a GPU, small on the CPU",
        help: "random weights: tiny, small, 130m or 370m",
    },
    Flag { name: "layers", value: Some("N"), default: "", help: "random weights: override the layer count" },
    Flag {
        name: "d-model",
        value: Some("N"),
        default: "",
        help: "random weights: override the width (d_inner = 2 d_model)",
    },
    Flag { name: "vocab", value: Some("N"), default: "", help: "random weights: override the vocabulary size" },
    Flag { name: "dtype", value: Some("T"), default: "bf16", help: "bf16, f16 or f32" },
];

fn main() -> ExitCode {
    let flags = [MODEL_FLAGS, RUN_FLAGS].concat();
    run::main("mamba_block", ABOUT, &flags, |args, device| {
        match Dtype::parse(args.text("dtype").unwrap_or("bf16"), true)? {
            Dtype::F16 => run::<f16>(args, device),
            Dtype::F32 => run::<f32>(args, device),
            Dtype::Bf16 => run::<bf16>(args, device),
        }
    })
}

/// The random-weights configuration of the flags.
fn random_config(args: &Args, device: Device) -> Result<MambaConfig, AnyError> {
    let size = args.text("size").unwrap_or(if device == Device::Cpu { "small" } else { "130m" });
    let mut c = mamba::preset(size)
        .ok_or_else(|| UsageError(format!("`--size {size}`: expected tiny, small, 130m or 370m")))?;
    c.n_layer = args.get_or("layers", c.n_layer)?;
    if let Some(d) = args.get::<usize>("d-model")? {
        (c.d_model, c.d_inner, c.dt_rank) = (d, 2 * d, d.div_ceil(16));
    }
    c.vocab_size = args.get_or("vocab", c.vocab_size)?;
    c.validate()?;
    Ok(c)
}

fn run<T: Element>(args: &Args, device: Device) -> Result<(), AnyError> {
    let seed: u64 = args.get_or("seed", 0)?;
    let dtype = T::DTYPE.to_string();
    let c = mamba::check::config();
    let title = format!("self-check on a small random Mamba ({} layers, d {}, {dtype}):", c.n_layer, c.d_model);
    if !run::self_check(args, &title, || mamba::check::run::<T>(device, seed))? {
        return Ok(());
    }

    let setup = Setup::from_args(
        args,
        |file| MambaWeights::load(file),
        || Ok(MambaWeights::random(random_config(args, device)?, seed)?),
    )?;
    let c = setup.weights.config.clone();
    let mut plan = setup.plan(args, c.vocab_size, device)?;
    let model = MambaModel::<T>::new(&setup.weights, device)?;
    let shapes = format!(
        "{} layers, d_model {}, d_inner {}, d_state {}, d_conv {}, dt_rank {}, vocabulary {}",
        c.n_layer, c.d_model, c.d_inner, c.d_state, c.d_conv, c.dt_rank, c.vocab_size
    );
    setup.announce(&shapes, &plan);
    let title = format!("mamba_block: {} layers, d {}, batch {}, {dtype}", c.n_layer, c.d_model, plan.batch);
    run::generate(&model, &mut plan, &setup.tokenizer, device, &title, &dtype)?;
    Ok(())
}
