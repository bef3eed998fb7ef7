//! The CPU path: per row, the kernel's two passes in f32 (sum, then squared deviations
//! from the mean), then normalise, scale, shift and round to the element type.

use super::{Dims, NormOutput};
use crate::{Element, Tensor};
use ndarray::{ArrayD, IxDyn};

pub(super) fn norm<T: Element, W: Element>(
    x: &Tensor<T>,
    weight: &Tensor<W>,
    bias: Option<&Tensor<W>>,
    eps: f32,
    rms: bool,
    d: &Dims,
) -> NormOutput<T> {
    let x = x.as_cpu().expect("device checked");
    let w: Vec<f32> = weight.as_cpu().expect("device checked").iter().map(|v| v.to_f32()).collect();
    let b: Option<Vec<f32>> = bias.map(|b| b.as_cpu().expect("device checked").iter().map(|v| v.to_f32()).collect());
    let xs: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let mut y = Vec::with_capacity(xs.len());
    let (mut means, mut rstds) = (Vec::with_capacity(d.rows), Vec::with_capacity(d.rows));
    for row in xs.chunks(d.cols) {
        let n = d.cols as f32;
        let (mean, rstd) = if rms {
            (0.0, 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / n + eps).sqrt())
        } else {
            let mean = row.iter().sum::<f32>() / n;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            (mean, 1.0 / (var + eps).sqrt())
        };
        for (j, v) in row.iter().enumerate() {
            let shift = b.as_ref().map_or(0.0, |b| b[j]);
            y.push(T::from_f32((v - mean) * rstd * w[j] + shift));
        }
        means.push(mean);
        rstds.push(rstd);
    }
    let arr = |v: Vec<f32>| ArrayD::from_shape_vec(IxDyn(&d.stat_shape), v).expect("rows match the stat shape");
    NormOutput {
        y: Tensor::Cpu(ArrayD::from_shape_vec(IxDyn(x.shape()), y).expect("same length as x")),
        mean: if rms { None } else { Some(Tensor::Cpu(arr(means))) },
        rstd: Tensor::Cpu(arr(rstds)),
    }
}
