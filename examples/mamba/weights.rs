//! Mamba's weights placed on a device: the projections as stored (`[out, in]`,
//! `WeightLayout::OutIn` / a left operand of `matmul`), in_proj split into its x and z
//! halves and x_proj into its Δ, B and C rows (so each product lands in the layout the
//! next op takes, without a copy); conv1d as `[d_inner, d_conv]`; the scan's A =
//! -exp(A_log), D and Δ's bias in f32. The embedding stays on the host in f32 for the
//! lookup; the tied LM head is on the device.

use flashscan::models::{MambaConfig, MambaWeights};
use flashscan::{Device, Element, Error, Result, Tensor};
use ndarray::{Array2, ArrayView, Dimension, s};

pub struct MixerLayer<T: Element> {
    /// `[d_model]`: the RMSNorm scale in front of the mixer.
    pub norm: Tensor<T>,
    /// `[d_inner, d_model]` each: in_proj's x and z halves.
    pub in_x: Tensor<T>,
    pub in_z: Tensor<T>,
    /// `[d_inner, d_conv]`, `[d_inner]`.
    pub conv_w: Tensor<T>,
    pub conv_b: Tensor<T>,
    /// x_proj's rows: `[dt_rank, d_inner]`, `[d_state, d_inner]`, `[d_state, d_inner]`.
    pub x_dt: Tensor<T>,
    pub x_b: Tensor<T>,
    pub x_c: Tensor<T>,
    /// `[d_inner, dt_rank]`.
    pub dt_w: Tensor<T>,
    /// `[d_inner]` f32: the scan's delta_bias.
    pub dt_bias: Tensor<f32>,
    /// `[d_inner, d_state]` f32: -exp(A_log).
    pub a: Tensor<f32>,
    /// `[d_inner]` f32.
    pub d: Tensor<f32>,
    /// `[d_model, d_inner]`, bias `[d_model]` when the checkpoint has one.
    pub out_w: Tensor<T>,
    pub out_b: Option<Tensor<T>>,
}

pub struct MambaModel<T: Element> {
    pub config: MambaConfig,
    pub device: Device,
    /// `[vocab, d_model]` f32 on the host: the embedding lookup.
    pub embedding_host: Array2<f32>,
    pub layers: Vec<MixerLayer<T>>,
    pub norm_f: Tensor<T>,
    /// `[vocab, d_model]` on the device (`lm_head`, or the embedding when tied).
    pub lm_head: Tensor<T>,
}

fn upload<E: Element, D: Dimension>(a: ArrayView<'_, f32, D>, device: Device) -> Result<Tensor<E>> {
    Tensor::from_array(a.mapv(E::from_f32).into_dyn(), device)
}

impl<T: Element> MambaModel<T> {
    /// The model of `w` on `device`. A checkpoint with in_proj biases is refused: the x
    /// half's bias would sit between the projection and the conv, which no op here adds
    /// along channels (the published Mamba checkpoints have none).
    pub fn new(w: &MambaWeights, device: Device) -> Result<Self> {
        let c = &w.config;
        let (di, r, n) = (c.d_inner, c.dt_rank, c.d_state);
        let layers = w
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let m = &b.mixer;
                if m.in_proj_bias.is_some() {
                    return Err(Error::Unsupported {
                        what: format!("layer {i}'s in_proj.bias"),
                        reason: "this example's prefill has no channel-wise bias add; the published Mamba checkpoints \
                                 have no in_proj bias"
                            .into(),
                    });
                }
                Ok(MixerLayer {
                    norm: upload(b.norm_weight.view(), device)?,
                    in_x: upload(m.in_proj_weight.slice(s![..di, ..]), device)?,
                    in_z: upload(m.in_proj_weight.slice(s![di.., ..]), device)?,
                    conv_w: upload(m.conv1d_weight.slice(s![.., 0, ..]), device)?,
                    conv_b: upload(m.conv1d_bias.view(), device)?,
                    x_dt: upload(m.x_proj_weight.slice(s![..r, ..]), device)?,
                    x_b: upload(m.x_proj_weight.slice(s![r..r + n, ..]), device)?,
                    x_c: upload(m.x_proj_weight.slice(s![r + n.., ..]), device)?,
                    dt_w: upload(m.dt_proj_weight.view(), device)?,
                    dt_bias: upload(m.dt_proj_bias.view(), device)?,
                    a: upload(m.a_log.mapv(|v| -v.exp()).view(), device)?,
                    d: upload(m.d.view(), device)?,
                    out_w: upload(m.out_proj_weight.view(), device)?,
                    out_b: m.out_proj_bias.as_ref().map(|b| upload(b.view(), device)).transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MambaModel {
            config: c.clone(),
            device,
            embedding_host: w.embedding.clone(),
            layers,
            norm_f: upload(w.norm_f_weight.view(), device)?,
            lm_head: upload(w.lm_head().view(), device)?,
        })
    }
}
