//! GPU path: written separately (kernels-gpu/src/mamba). Placeholder until then.

use super::{Problem, ScanGrads, ScanInputs, ScanOutput};
use crate::{Element, Error, Result, Tensor};

pub(crate) fn forward<T: Element>(p: &Problem, x: &ScanInputs<T>) -> Result<ScanOutput<T>> {
    let _ = (p, x);
    Err(Error::NoGpu { reason: "the GPU selective scan is not built yet".into() })
}

pub(crate) fn backward<T: Element>(
    p: &Problem,
    x: &ScanInputs<T>,
    saved: &ScanOutput<T>,
    dout: &Tensor<T>,
    dfinal_state: Option<&Tensor<f32>>,
    deterministic: bool,
) -> Result<ScanGrads<T>> {
    let _ = (p, x, saved, dout, dfinal_state, deterministic);
    Err(Error::NoGpu { reason: "the GPU selective scan backward is not built yet".into() })
}
