//! Flash-Decoding: attention of a few new tokens per sequence against a KV cache
//! ([`KvCache`]), split along the cache so that a small batch still fills the GPU.
//!
//! `decode(q, cache, new_kv, rotary, opts)`:
//! 1. appends the new tokens' K and V (k rotated to their positions with `rotary`) after
//!    each sequence's cached tokens;
//! 2. rotates q to its positions (with `rotary`): query t of sequence b sits at position
//!    `L_b - seqlen_q + t`, L_b = the sequence's length after the append (bottom-right
//!    alignment, as the masks);
//! 3. attends: query t sees the keys [0, L_b) that the options allow (causal = up to its
//!    own position; windows as [`AttentionOptions`]), and returns o like q and lse f32
//!    `[batch, heads_q, seqlen_q]` with the forward's conventions (a row that sees no key:
//!    o = 0, lse = +inf);
//! 4. counts the new tokens into the cache's lengths.
//!
//! On the GPU the cache's positions are divided into `num_splits` ranges; a CTA per
//! (range, kv head, sequence) computes a partial o and its lse for the `heads_q /
//! heads_kv` query heads that share the kv head (the cache is read once per kv head),
//! and the last of those CTAs to finish merges the partials. The default split count
//! fills one wave of the GPU: `SMs x CTAs per SM / (batch x heads_kv x row blocks)`
//! (one CTA per SM at head dim 128, as many as fit at 64), at most 128 and at most a
//! split per 256 keys of the longest sequence, and 1 when the batch already fills half
//! that wave ([`crate::kernels::attention::decode::default_splits`]).
//! `DecodeOptions::num_splits` overrides it. The CPU runs the same split algorithm
//! (with one split unless told otherwise).

use super::kv_cache::{KvCache, Rotary};
use super::{AttentionOptions, AttentionOutput, HEAD_DIM_MULTIPLE, positive_finite};
use crate::kernels::attention::decode::MAX_SPLITS;
use crate::tensor::check;
use crate::{DType, Device, Element, Error, Result, Tensor};

/// Options of [`decode`]: the attention options (causal, window, softcap, scale) and
/// the split count (`None` = the heuristic of the module documentation; 1..=128).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecodeOptions {
    pub attention: AttentionOptions,
    pub num_splits: Option<usize>,
}

/// The resolved problem both backends receive after validation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct DecodeProblem {
    pub batch: usize,
    pub seqlen_q: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    /// New tokens per sequence this call appends (0: none).
    pub seqlen_new: usize,
    pub scale: f32,
    /// 0.0 = off.
    pub softcap: f32,
    pub window_left: Option<usize>,
    pub window_right: Option<usize>,
    pub num_splits: Option<usize>,
}

/// Decoding attention against `cache`, appending `new_kv` = (k_new, v_new) `[batch,
/// seqlen_new, heads_kv, head_dim]` first when given. q `[batch, seqlen_q, heads_q,
/// head_dim]` (heads_q a multiple of the cache's heads_kv), bf16 or f16 like the cache
/// and on its device. See the module documentation for positions, masks and splits.
///
/// Errors: [`Error::Shape`] naming `q`, `k_new` or `v_new`; [`Error::Value`] naming an
/// option, `k_new` (a sequence would overflow its capacity), `q` (with rotary, more
/// queries than tokens) or `rotary.tables`; [`Error::DeviceMismatch`]; the GPU runtime's
/// errors. On an error the cache is unchanged.
pub fn decode<T: Element>(
    q: &Tensor<T>,
    cache: &mut KvCache<T>,
    new_kv: Option<(&Tensor<T>, &Tensor<T>)>,
    rotary: Option<Rotary<'_>>,
    opts: &DecodeOptions,
) -> Result<AttentionOutput<T>> {
    let p = validate(q, cache, new_kv, rotary, opts)?;
    let out = match cache.device() {
        Device::Cpu => super::decode_cpu::decode(q, cache, new_kv, rotary, &p)?,
        Device::Cuda(_) => super::decode_gpu::decode(q, cache, new_kv, rotary, &p)?,
    };
    cache.advance(p.seqlen_new);
    Ok(out)
}

fn validate<T: Element>(
    q: &Tensor<T>,
    cache: &KvCache<T>,
    new_kv: Option<(&Tensor<T>, &Tensor<T>)>,
    rotary: Option<Rotary<'_>>,
    opts: &DecodeOptions,
) -> Result<DecodeProblem> {
    if !matches!(T::DTYPE, DType::BF16 | DType::F16) {
        return Err(Error::DType { arg: "q", got: T::DTYPE, expected: "bf16 or f16".into() });
    }
    let qs = q.shape();
    let (batch, heads_kv, head_dim) = (cache.batch(), cache.heads_kv(), cache.head_dim());
    if qs.len() != 4 || qs[0] != batch || qs[1] == 0 || qs[2] == 0 || qs[2] % heads_kv != 0 || qs[3] != head_dim {
        return Err(Error::Shape {
            arg: "q",
            got: qs.to_vec(),
            expected: format!(
                "[{batch}, seqlen_q >= 1, heads_q (a multiple of {heads_kv}), {head_dim}] (the cache's batch, heads_kv, head_dim)"
            ),
        });
    }
    debug_assert!(head_dim % HEAD_DIM_MULTIPLE == 0);
    check::same_device("q", q.device(), cache.device())?;
    let seqlen_new = match new_kv {
        Some((k, v)) => cache.check_new(k, v)?,
        None => 0,
    };
    let seqlen_q = qs[1];
    if let Some(r) = rotary {
        let shortest = cache.seqlens().iter().min().copied().unwrap_or(0) + seqlen_new;
        if seqlen_q > shortest {
            return Err(Error::Value {
                arg: "q",
                got: format!("{seqlen_q} query tokens"),
                expected: format!(
                    "at most the shortest sequence's {shortest} tokens (rotary needs each query's position)"
                ),
            });
        }
        cache.check_rotary(r, cache.seqlens().iter().max().copied().unwrap_or(0) + seqlen_new)?;
    }
    let a = &opts.attention;
    let scale = match a.softmax_scale {
        None => 1.0 / (head_dim as f32).sqrt(),
        Some(s) => positive_finite("softmax_scale", s)?,
    };
    let softcap = match a.softcap {
        None => 0.0,
        Some(c) => positive_finite("softcap", c)?,
    };
    if let Some(n) = opts.num_splits {
        if n == 0 || n > MAX_SPLITS as usize {
            return Err(Error::Value {
                arg: "num_splits",
                got: n.to_string(),
                expected: format!("1..={MAX_SPLITS} (or None for the heuristic)"),
            });
        }
    }
    Ok(DecodeProblem {
        batch,
        seqlen_q,
        heads_q: qs[2],
        heads_kv,
        head_dim,
        seqlen_new,
        scale,
        softcap,
        window_left: a.window_left,
        window_right: if a.causal { Some(0) } else { a.window_right },
        num_splits: opts.num_splits,
    })
}
