//! The GPU runtime: device discovery, one context and stream per device, the embedded
//! PTX module, kernel launches, device-resident tensors, and the cuBLAS handle of the
//! projections.

pub(crate) mod blas;
mod gpu;
mod gpu_tensor;
pub mod ptx;
pub(crate) mod tensor_map;
pub mod timing;

pub use gpu::{Gpu, LaunchGrid};
pub use gpu_tensor::GpuTensor;
