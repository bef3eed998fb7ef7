//! GPU path of the attention forward (placeholder until the kernel lands).

use super::Problem;
use crate::runtime::GpuTensor;
use crate::{Element, Error, Result};

/// Runs the forward kernel: returns (o like q, lse `[batch, heads_q, seqlen_q]`).
pub(crate) fn forward<T: Element>(
    _q: &GpuTensor<T>,
    _k: &GpuTensor<T>,
    _v: &GpuTensor<T>,
    _p: &Problem,
) -> Result<(GpuTensor<T>, GpuTensor<f32>)> {
    Err(Error::Value { arg: "device", got: "cuda".into(), expected: "cpu (the GPU attention kernel is not built yet)".into() })
}
