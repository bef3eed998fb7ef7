//! Exact attention (FlashAttention-2 algorithm) forward, on the GPU
//! (`kernels-gpu/src/attention`) or the CPU (`cpu.rs`, the same tiled algorithm).
//!
//! Layouts (DESIGN.md): q `[batch, seqlen_q, heads_q, head_dim]`, k and v
//! `[batch, seqlen_k, heads_kv, head_dim]`, heads_q a multiple of heads_kv (MQA/GQA);
//! o like q, lse `[batch, heads_q, seqlen_q]` f32.
//!
//! Masking: query i sees key j when
//! `i + (seqlen_k - seqlen_q) - window_left <= j <= i + (seqlen_k - seqlen_q) + window_right`
//! (bottom-right alignment; `causal` sets window_right = 0). A row that sees no key gets
//! o = 0 and lse = +inf (so that exp(s - lse) = 0 for it in a backward pass).

mod cpu;
mod gpu;

/// Options of [`forward`]. `Default` is plain softmax(q k^T / sqrt(head_dim)) v.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionOptions {
    /// Mask keys after the query (bottom-right aligned when seqlen_q != seqlen_k).
    pub causal: bool,
    /// Sliding window: how many keys before (left) and after (right) the query's diagonal
    /// it may see; `None` = unlimited on that side.
    pub window_left: Option<usize>,
    pub window_right: Option<usize>,
    /// Soft-capping of the scaled scores: s = softcap * tanh(s / softcap); `None` = off.
    pub softcap: Option<f32>,
    /// Softmax scale; `None` = 1/sqrt(head_dim).
    pub softmax_scale: Option<f32>,
}

/// The resolved problem that both backends receive after validation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Problem {
    pub batch: usize,
    pub seqlen_q: usize,
    pub seqlen_k: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    /// Softmax scale (already resolved from the option).
    pub scale: f32,
    /// 0.0 = off.
    pub softcap: f32,
    /// Visible keys of query i: [i + shift - left, i + shift + right] with
    /// shift = seqlen_k - seqlen_q; `None` = unbounded. Causal is folded into right = Some(0).
    pub window_left: Option<usize>,
    pub window_right: Option<usize>,
}
