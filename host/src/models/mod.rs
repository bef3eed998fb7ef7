//! Weights of the example models, loaded from safetensors checkpoints (names mapped to
//! layers, every shape checked, the configuration inferred from the shapes) or made
//! randomly from a seed so that the examples run without files:
//!
//! - [`Gpt2Weights`]: GPT-2 (124M and larger), the OpenAI / HuggingFace layout.
//! - [`MambaWeights`]: Mamba-1 (mamba-130m and larger), the state-spaces layout.
//!
//! Tensors are f32 and kept in their checkpoint layouts; the forward passes live
//! elsewhere.
//!
//! ```no_run
//! use flashscan::models::{Gpt2Weights, MambaConfig, MambaWeights};
//! let gpt2 = Gpt2Weights::load("gpt2/model.safetensors", None)?; // n_head = d_model / 64
//! let mamba = MambaWeights::random(MambaConfig::mamba_130m(), 0)?;
//! # Ok::<(), flashscan::Error>(())
//! ```

mod check;
mod gpt2;
mod loader;
mod mamba;
mod rng;

pub use gpt2::{Gpt2Block, Gpt2Config, Gpt2Linear, Gpt2Weights, LayerNormParams};
pub use mamba::{MambaBlock, MambaConfig, MambaMixer, MambaWeights};
