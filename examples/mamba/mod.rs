//! The Mamba block stack of `mamba_block`: mamba-130m's weights on a device
//! (`weights.rs`) and its forward passes (`forward.rs`): a prefill with the causal conv1d
//! and the selective scan over the whole prompt, and generation steps with the one-token
//! conv and state updates.
//!
//! Each layer: `x += mixer(rms_norm(x))`, the mixer being in_proj to (x, z), causal
//! conv1d + SiLU on x, x_proj to (Δ low-rank, B, C), dt_proj to Δ, the selective scan
//! (Δ bias + softplus, D skip, silu(z) gate), out_proj. Then `norm_f` and the LM head tied
//! to the embedding.

pub mod check;
mod forward;
#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
mod weights;

pub use weights::MambaModel;

use flashscan::models::MambaConfig;

/// A random-weights configuration by name: `tiny`, `small`, `130m` (mamba-130m's shapes)
/// or `370m` (mamba-370m's).
pub fn preset(name: &str) -> Option<MambaConfig> {
    let c = MambaConfig::mamba_130m();
    match name {
        "tiny" => Some(MambaConfig { vocab_size: 512, d_model: 64, n_layer: 2, d_inner: 128, dt_rank: 4, ..c }),
        "small" => Some(MambaConfig { d_model: 256, n_layer: 4, d_inner: 512, dt_rank: 16, ..c }),
        "130m" => Some(c),
        "370m" => Some(MambaConfig { d_model: 1024, n_layer: 48, d_inner: 2048, dt_rank: 64, ..c }),
        _ => None,
    }
}
