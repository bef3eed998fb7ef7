//! LayerNorm and RMSNorm references in f64.

use ndarray::{ArrayD, Axis};

/// LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * w + b, biased variance.
/// Returns (y, mean, rstd).
pub fn layer_norm(x: &ArrayD<f64>, w: &[f64], b: Option<&[f64]>, eps: f64) -> (ArrayD<f64>, Vec<f64>, Vec<f64>) {
    norm(x, w, b, eps, false)
}

/// RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * w. Returns (y, rstd).
pub fn rms_norm(x: &ArrayD<f64>, w: &[f64], eps: f64) -> (ArrayD<f64>, Vec<f64>) {
    let (y, _, rstd) = norm(x, w, None, eps, true);
    (y, rstd)
}

fn norm(x: &ArrayD<f64>, w: &[f64], b: Option<&[f64]>, eps: f64, rms: bool) -> (ArrayD<f64>, Vec<f64>, Vec<f64>) {
    let last = Axis(x.ndim() - 1);
    let mut y = x.clone();
    let (mut means, mut rstds) = (vec![], vec![]);
    for mut row in y.lanes_mut(last) {
        let n = row.len() as f64;
        let mean = if rms { 0.0 } else { row.sum() / n };
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for (j, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * rstd * w[j] + b.map_or(0.0, |b| b[j]);
        }
        means.push(mean);
        rstds.push(rstd);
    }
    (y, means, rstds)
}
