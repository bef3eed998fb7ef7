//! GPT forward passes ([`LanguageModel`]). `prefill` runs the whole prompt through each
//! block with causal FlashAttention (`attention::forward`) and writes every layer's K and
//! V into its KV cache; `step` runs one new token per sequence, attending over the cache
//! with Flash-Decoding (`attention::decode`, which appends the token's K and V, rotated
//! there when positions are rotary). Both return the hidden states after `ln_f`.

use super::weights::{GptModel, Layer, Positions};
use crate::common::lm::{self, LanguageModel, host_f32};
use flashscan::attention::{self, AttentionOptions, DecodeOptions, KvCache, Rotary};
use flashscan::ops::{self, Activation, RotaryStyle, WeightLayout};
use flashscan::{Element, Error, Result, Tensor, norm};
use ndarray::ArrayD;

const CAUSAL: AttentionOptions =
    AttentionOptions { causal: true, window_left: None, window_right: None, softcap: None, softmax_scale: None };

impl<T: Element> GptModel<T> {
    /// One KV cache per layer for `batch` sequences of up to `max_seqlen` tokens.
    fn new_caches(&self, batch: usize, max_seqlen: usize) -> Result<Vec<KvCache<T>>> {
        let c = &self.config;
        (0..c.n_layer).map(|_| KvCache::contiguous(batch, max_seqlen, c.n_head, c.head_dim(), self.device)).collect()
    }

    /// `[batch, seqlen, d]` on the device: token embeddings plus (learned positions) the
    /// embeddings of positions `start..start + seqlen`.
    fn embed(&self, tokens: &[Vec<u32>], start: usize) -> Result<Tensor<T>> {
        let positions = match &self.positions {
            Positions::Learned(wpe) => Some(wpe),
            Positions::Rotary(_) => None,
        };
        lm::embed(&self.wte_host, positions, tokens, start, self.device)
    }

    fn rotary(&self) -> Option<Rotary<'_>> {
        match &self.positions {
            Positions::Rotary(tables) => Some(Rotary { tables, style: RotaryStyle::NeoX }),
            Positions::Learned(_) => None,
        }
    }

    /// One block over x `[batch, n, d]`; `attend(q, k, v)` (each `[batch, n, heads,
    /// head_dim]`) is the attention of this pass, returning o like q.
    fn block(
        &self,
        l: &Layer<T>,
        x: Tensor<T>,
        attend: impl FnOnce(Tensor<T>, Tensor<T>, Tensor<T>) -> Result<Tensor<T>>,
    ) -> Result<Tensor<T>> {
        let c = &self.config;
        let (batch, n) = (x.shape()[0], x.shape()[1]);
        let eps = c.layer_norm_eps;
        let lin = WeightLayout::InOut;
        let h = norm::layer_norm(&x, &l.ln_1.w, Some(&l.ln_1.b), eps)?.y;
        let heads = |t: Tensor<T>| t.reshape(&[batch, n, c.n_head, c.head_dim()]);
        let q = heads(ops::linear(&h, &l.q.w, Some(&l.q.b), lin)?)?;
        let k = heads(ops::linear(&h, &l.k.w, Some(&l.k.b), lin)?)?;
        let v = heads(ops::linear(&h, &l.v.w, Some(&l.v.b), lin)?)?;
        let o = attend(q, k, v)?.reshape(&[batch, n, c.d_model])?;
        let x = ops::add(&x, &ops::linear(&o, &l.out.w, Some(&l.out.b), lin)?)?;
        let h = norm::layer_norm(&x, &l.ln_2.w, Some(&l.ln_2.b), eps)?.y;
        // The bias rides with the GELU in one elementwise pass.
        let f = ops::activation(&ops::linear(&h, &l.fc_1.w, None, lin)?, Some(&l.fc_1.b), Activation::GeluTanh)?;
        ops::add(&x, &ops::linear(&f, &l.fc_2.w, Some(&l.fc_2.b), lin)?)
    }

    /// The prompt pass over `tokens` (`batch` sequences of one length) into fresh
    /// `caches`: the hidden states `[batch, seqlen, d]` after `ln_f`; every layer's K and V
    /// (rotated, with rotary positions) left in its cache.
    fn prefill_into(&self, tokens: &[Vec<u32>], caches: &mut [KvCache<T>]) -> Result<Tensor<T>> {
        let mut x = self.embed(tokens, 0)?;
        for (l, cache) in self.layers.iter().zip(caches.iter_mut()) {
            x = self.block(l, x, |q, k, v| {
                let (q, k) = match self.rotary() {
                    Some(r) => (ops::rotary(&q, r.tables, 0, r.style)?, ops::rotary(&k, r.tables, 0, r.style)?),
                    None => (q, k),
                };
                cache.append(&k, &v, None)?;
                Ok(attention::forward(&q, &k, &v, &CAUSAL)?.o)
            })?;
        }
        self.final_norm(&x)
    }

    fn final_norm(&self, x: &Tensor<T>) -> Result<Tensor<T>> {
        Ok(norm::layer_norm(x, &self.ln_f.w, Some(&self.ln_f.b), self.config.layer_norm_eps)?.y)
    }
}

impl<T: Element> LanguageModel<T> for GptModel<T> {
    /// One KV cache per layer.
    type State = Vec<KvCache<T>>;

    fn prefill(&self, tokens: &[Vec<u32>], capacity: usize) -> Result<(Tensor<T>, Self::State)> {
        if capacity > self.max_positions {
            return Err(Error::Value {
                arg: "capacity",
                got: format!("{capacity} tokens per sequence"),
                expected: format!("at most the model's {} positions", self.max_positions),
            });
        }
        let mut caches = self.new_caches(tokens.len(), capacity)?;
        let hidden = self.prefill_into(tokens, &mut caches)?;
        Ok((hidden, caches))
    }

    /// Attends over each layer's cache (appending the token's K and V).
    fn step(&self, tokens: &[u32], caches: &mut Self::State) -> Result<Tensor<T>> {
        let start = caches.first().and_then(|c| c.seqlens().first().copied()).unwrap_or(0);
        let column: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
        let mut x = self.embed(&column, start)?;
        let opts = DecodeOptions { attention: CAUSAL, num_splits: None };
        for (l, cache) in self.layers.iter().zip(caches.iter_mut()) {
            x =
                self.block(l, x, |q, k, v| Ok(attention::decode(&q, cache, Some((&k, &v)), self.rotary(), &opts)?.o))?;
        }
        self.final_norm(&x)
    }

    fn lm_head(&self) -> &Tensor<T> {
        &self.lm_head
    }

    /// Every layer's cached K and V `[batch, capacity, heads, head_dim]`.
    fn state_tensors(&self, caches: &Self::State) -> Result<Vec<(String, ArrayD<f32>)>> {
        let mut out = Vec::new();
        for (i, c) in caches.iter().enumerate() {
            out.push((format!("layer {i} k"), host_f32(c.k())?));
            out.push((format!("layer {i} v"), host_f32(c.v())?));
        }
        Ok(out)
    }
}
