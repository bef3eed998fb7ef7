//! Mamba's forward in f64, straight from its definition and one token at a time (the
//! recurrent form: conv window, then the state update), for one sequence: the oracle of
//! the example's tests. Weights are read through `round` so that the test can give them
//! T's rounding (A, D and Δ's bias stay f32, as the model keeps them).

use flashscan::models::MambaWeights;
use ndarray::{Array1, Array2, s};

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn softplus(x: f64) -> f64 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

fn rms_norm(x: &Array1<f64>, w: &Array1<f64>, eps: f64) -> Array1<f64> {
    let rstd = 1.0 / (x.mapv(|v| v * v).mean().unwrap_or(0.0) + eps).sqrt();
    x * rstd * w
}

/// The logits `[n, vocab]` of every position of `tokens`.
pub fn logits(w: &MambaWeights, tokens: &[u32], round: &dyn Fn(f32) -> f64) -> Array2<f64> {
    let c = &w.config;
    let (di, r, n, k) = (c.d_inner, c.dt_rank, c.d_state, c.d_conv);
    let eps = c.norm_eps as f64;
    let emb = w.embedding.mapv(round);
    // Per layer: the last d_conv inputs of the conv (oldest first) and the scan state.
    let mut windows = vec![Array2::<f64>::zeros((di, k)); c.n_layer];
    let mut states = vec![Array2::<f64>::zeros((di, n)); c.n_layer];
    let mut out = Array2::zeros((tokens.len(), c.vocab_size));
    for (t, &tok) in tokens.iter().enumerate() {
        let mut x = emb.row(tok as usize).to_owned();
        for (l, b) in w.blocks.iter().enumerate() {
            let m = &b.mixer;
            let h = rms_norm(&x, &b.norm_weight.mapv(round), eps);
            let xz = m.in_proj_weight.mapv(round).dot(&h);
            let (xi, z) = (xz.slice(s![..di]), xz.slice(s![di..]));
            let win = &mut windows[l];
            for ch in 0..di {
                for j in 0..k - 1 {
                    win[[ch, j]] = win[[ch, j + 1]];
                }
                win[[ch, k - 1]] = xi[ch];
            }
            let conv_w = m.conv1d_weight.slice(s![.., 0, ..]).mapv(round);
            let u = Array1::from_shape_fn(di, |ch| {
                silu(round(m.conv1d_bias[ch]) + (0..k).map(|j| conv_w[[ch, j]] * win[[ch, j]]).sum::<f64>())
            });
            let x_dbl = m.x_proj_weight.mapv(round).dot(&u);
            let (dt_low, bm, cm) = (x_dbl.slice(s![..r]), x_dbl.slice(s![r..r + n]), x_dbl.slice(s![r + n..]));
            let dt = m.dt_proj_weight.mapv(round).dot(&dt_low);
            let st = &mut states[l];
            let y = Array1::from_shape_fn(di, |ch| {
                let delta = softplus(dt[ch] + m.dt_proj_bias[ch] as f64);
                let mut acc = 0.0;
                for s in 0..n {
                    let a = -(m.a_log[[ch, s]] as f64).exp();
                    st[[ch, s]] = (delta * a).exp() * st[[ch, s]] + delta * bm[s] * u[ch];
                    acc += st[[ch, s]] * cm[s];
                }
                (acc + m.d[ch] as f64 * u[ch]) * silu(z[ch])
            });
            x = x + m.out_proj_weight.mapv(round).dot(&y);
        }
        let h = rms_norm(&x, &w.norm_f_weight.mapv(round), eps);
        out.row_mut(t).assign(&emb.dot(&h));
    }
    out
}
