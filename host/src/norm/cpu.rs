//! The CPU path: per row, the kernel's two passes (sum, then squared deviations from
//! the mean; accumulated in f64 here), then normalise, scale and shift in f32 and round
//! to the element type.

use super::{Dims, NormOutput};
use crate::{Element, Result, Tensor};
use ndarray::{ArrayD, IxDyn};

pub(super) fn norm<T: Element, W: Element>(
    x: &Tensor<T>,
    weight: &Tensor<W>,
    bias: Option<&Tensor<W>>,
    eps: f32,
    rms: bool,
    d: &Dims,
) -> Result<NormOutput<T>> {
    let x = x.cpu_data("x")?;
    let w: Vec<f32> = weight.cpu_data("weight")?.iter().map(|v| v.to_f32()).collect();
    let b: Option<Vec<f32>> = match bias {
        Some(b) => Some(b.cpu_data("bias")?.iter().map(|v| v.to_f32()).collect()),
        None => None,
    };
    let xs: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let mut y = Vec::with_capacity(xs.len());
    let (mut means, mut rstds) = (Vec::with_capacity(d.rows), Vec::with_capacity(d.rows));
    for row in xs.chunks(d.cols) {
        // Sums in f64: a sequential f32 sum of thousands of terms loses more than the
        // kernel's short per-thread sums merged in a tree do.
        let n = d.cols as f64;
        let (mean, rstd) = if rms {
            (0.0, (1.0 / (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n + eps as f64).sqrt()) as f32)
        } else {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = row.iter().map(|&v| (v as f64 - mean) * (v as f64 - mean)).sum::<f64>() / n;
            (mean as f32, (1.0 / (var + eps as f64).sqrt()) as f32)
        };
        for (j, v) in row.iter().enumerate() {
            let shift = b.as_ref().map_or(0.0, |b| b[j]);
            y.push(T::from_f32((v - mean) * rstd * w[j] + shift));
        }
        means.push(mean);
        rstds.push(rstd);
    }
    let arr = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&d.stat_shape), v).expect("rows match the stat shape");
    Ok(NormOutput {
        y: Tensor::Cpu(ArrayD::from_shape_vec(IxDyn(x.shape()), y).expect("same length as x")),
        mean: if rms { None } else { Some(Tensor::Cpu(arr(means))) },
        rstd: Tensor::Cpu(arr(rstds)),
    })
}
