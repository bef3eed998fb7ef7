//! Mamba forward passes. `prefill` runs each mixer over the whole prompt in the scan's
//! channel-major layout `[batch, channels, seqlen]`: the projections are batched
//! `matmul`s whose outputs land in that layout (weight `[out, in]` times the transposed
//! token-major activations), the causal conv1d and the selective scan run over the
//! sequence, and out_proj brings the result back to token-major `[batch, seqlen, d]`.
//! It returns the conv and scan states of every layer. `step` runs one token per
//! sequence from those states: `linear` projections of `[batch, features]` rows,
//! `conv1d_update` and `selective_state_update`, each updating its state in place.

use super::weights::{MambaModel, MixerLayer};
use crate::common::lm::{self, LanguageModel, host_f32};
use flashscan::mamba::{
    Conv1dOptions, ScanInputs, ScanOptions, causal_conv1d, conv1d_update, selective_scan, selective_state_update,
};
use flashscan::ops::{self, Activation, MatmulOptions, WeightLayout};
use flashscan::{Element, Result, Tensor, norm};
use ndarray::ArrayD;

/// The recurrent state of every layer after the tokens seen so far.
pub struct MambaState<T: Element> {
    /// `[batch, d_inner, d_conv - 1]` per layer: the conv's last inputs.
    pub conv: Vec<Tensor<T>>,
    /// `[batch, d_inner, d_state]` f32 per layer: the scan's h.
    pub ssm: Vec<Tensor<f32>>,
}

const SILU: Conv1dOptions = Conv1dOptions { silu: true };

impl<T: Element> MambaModel<T> {
    fn out_proj(&self, l: &MixerLayer<T>, y: Tensor<T>) -> Result<Tensor<T>> {
        match &l.out_b {
            Some(b) => ops::activation(&y, Some(b), Activation::Identity),
            None => Ok(y),
        }
    }
}

impl<T: Element> LanguageModel<T> for MambaModel<T> {
    type State = MambaState<T>;

    /// Every layer over the whole prompt; the state holds any number of tokens.
    fn prefill(&self, tokens: &[Vec<u32>], _capacity: usize) -> Result<(Tensor<T>, MambaState<T>)> {
        let c = &self.config;
        let mut x = lm::embed(&self.embedding_host, None, tokens, 0, self.device)?;
        let (batch, seqlen) = (tokens.len(), tokens[0].len());
        let mut state = MambaState { conv: Vec::new(), ssm: Vec::new() };
        // W [out, in] times the token-major h [batch, seqlen, in], transposed: [batch, out, seqlen].
        let from_tokens = MatmulOptions { transpose_a: false, transpose_b: true };
        let channels = MatmulOptions::default();
        for l in &self.layers {
            let h = norm::rms_norm(&x, &l.norm, c.norm_eps)?.y;
            let xi = ops::matmul(&l.in_x, &h, &from_tokens)?;
            let z = ops::matmul(&l.in_z, &h, &from_tokens)?;
            let conv = causal_conv1d(&xi, &l.conv_w, Some(&l.conv_b), None, &SILU)?;
            let u = conv.y;
            let dt_low = ops::matmul(&l.x_dt, &u, &channels)?;
            let b = ops::matmul(&l.x_b, &u, &channels)?.reshape(&[batch, 1, c.d_state, seqlen])?;
            let cm = ops::matmul(&l.x_c, &u, &channels)?.reshape(&[batch, 1, c.d_state, seqlen])?;
            let delta = ops::matmul(&l.dt_w, &dt_low, &channels)?;
            let inputs = ScanInputs {
                u: &u,
                delta: &delta,
                a: &l.a,
                b: &b,
                c: &cm,
                d: Some(&l.d),
                z: Some(&z),
                delta_bias: Some(&l.dt_bias),
                initial_state: None,
            };
            let scan = selective_scan(&inputs, &ScanOptions { delta_softplus: true, ..Default::default() })?;
            // out [batch, d_inner, seqlen] transposed, times out_proj [d, d_inner] transposed.
            let back = MatmulOptions { transpose_a: true, transpose_b: true };
            let y = self.out_proj(l, ops::matmul(&scan.out, &l.out_w, &back)?)?;
            x = ops::add(&x, &y)?;
            state.conv.push(conv.final_state);
            state.ssm.push(scan.final_state);
        }
        Ok((norm::rms_norm(&x, &self.norm_f, c.norm_eps)?.y, state))
    }

    /// The conv and scan states updated in place.
    fn step(&self, tokens: &[u32], state: &mut MambaState<T>) -> Result<Tensor<T>> {
        let c = &self.config;
        let batch = tokens.len();
        let column: Vec<Vec<u32>> = tokens.iter().map(|&t| vec![t]).collect();
        let mut x = lm::embed(&self.embedding_host, None, &column, 0, self.device)?.reshape(&[batch, c.d_model])?;
        let lin = |x: &Tensor<T>, w: &Tensor<T>| ops::linear(x, w, None, WeightLayout::OutIn);
        for (i, l) in self.layers.iter().enumerate() {
            let h = norm::rms_norm(&x, &l.norm, c.norm_eps)?.y;
            let (xi, z) = (lin(&h, &l.in_x)?, lin(&h, &l.in_z)?);
            let u = conv1d_update(&xi, &mut state.conv[i], &l.conv_w, Some(&l.conv_b), &SILU)?;
            let dt_low = lin(&u, &l.x_dt)?;
            let b = lin(&u, &l.x_b)?.reshape(&[batch, 1, c.d_state])?;
            let cm = lin(&u, &l.x_c)?.reshape(&[batch, 1, c.d_state])?;
            let delta = lin(&dt_low, &l.dt_w)?;
            let y = selective_state_update(
                &mut state.ssm[i],
                &u,
                &delta,
                &l.a,
                &b,
                &cm,
                Some(&l.d),
                Some(&z),
                Some(&l.dt_bias),
                true,
            )?;
            x = ops::add(&x, &self.out_proj(l, lin(&y, &l.out_w)?)?)?;
        }
        norm::rms_norm(&x, &self.norm_f, c.norm_eps)?.y.reshape(&[batch, 1, c.d_model])
    }

    fn lm_head(&self) -> &Tensor<T> {
        &self.lm_head
    }

    /// Every layer's conv state and scan state.
    fn state_tensors(&self, state: &MambaState<T>) -> Result<Vec<(String, ArrayD<f32>)>> {
        let mut out = Vec::new();
        for (i, (conv, ssm)) in state.conv.iter().zip(&state.ssm).enumerate() {
            out.push((format!("layer {i} conv state"), host_f32(conv)?));
            out.push((format!("layer {i} scan state"), host_f32(ssm)?));
        }
        Ok(out)
    }
}
