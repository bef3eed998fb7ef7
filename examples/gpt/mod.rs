//! The GPT block stack of `gpt_block`: GPT-2's weights on a device (`weights.rs`) and its
//! forward passes (`forward.rs`): a batched prefill with FlashAttention, and generation
//! steps with Flash-Decoding against a KV cache.
//!
//! Each block, pre-LayerNorm: `x += out_proj(attention(qkv(ln_1(x))))`,
//! `x += fc_2(gelu_tanh(fc_1(ln_2(x))))`; then `ln_f` and the LM head tied to the token
//! embedding. Positions are GPT-2's learned embedding, or (random weights only) rotary
//! embedding on q and k. Projections go through `flashscan::ops::linear` (cuBLAS on the
//! GPU); every activation is of the run's element type T (bf16 or f16).

pub mod check;
mod forward;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
mod weights;

pub use weights::GptModel;

use flashscan::models::Gpt2Config;

/// A random-weights configuration by name: `tiny`, `small`, `124m` (GPT-2 small's shapes)
/// or `355m` (GPT-2 medium's).
pub fn preset(name: &str) -> Option<Gpt2Config> {
    let c = Gpt2Config::gpt2_124m();
    match name {
        "tiny" => Some(Gpt2Config { vocab_size: 512, n_ctx: 256, d_model: 128, n_layer: 2, n_head: 2, ..c }),
        "small" => Some(Gpt2Config { d_model: 256, n_layer: 4, n_head: 4, ..c }),
        "124m" => Some(c),
        "355m" => Some(Gpt2Config { d_model: 1024, n_layer: 24, n_head: 16, ..c }),
        _ => None,
    }
}
