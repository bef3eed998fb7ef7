//! flashscan: FlashAttention and Mamba selective-scan kernels written in Rust, compiled
//! to PTX by rustc (see `kernels-gpu/`), launched from this library.
//!
//! - [`Device`] picks where an operation runs: `Device::Cuda(n)` launches the PTX
//!   kernels; `Device::Cpu` runs the same tiled algorithms on the CPU.
//! - [`Tensor`] holds data on either; [`GpuTensor`] is the device-resident form.
//! - Operations: [`norm`] (LayerNorm, RMSNorm), [`mamba`] (the Mamba-1 selective scan,
//!   forward and backward; the causal conv1d, forward and backward, and the one-token
//!   decode steps), [`ops`] (activations with a fused bias, residual add, the Mamba gate,
//!   rotary embedding; the projections' matmul / linear through cuBLAS; narrow).
//! - [`reference`]: naive f64 implementations, the oracles of the tests.
//! - Loading real models: [`checkpoint`] (safetensors read / write), [`tokenizer`]
//!   (byte-level BPE, GPT-2 and GPT-NeoX files), [`models`] (GPT-2 and Mamba weights).
//! - [`runtime`]: the GPU runtime (context, PTX module, launches), for advanced use.
//!
//! Every public operation validates its arguments first and returns a typed [`Error`]
//! naming the argument, what was given and what was expected.

pub mod attention;
pub mod checkpoint;
pub mod device;
pub mod element;
pub mod error;
pub mod mamba;
pub mod models;
pub mod norm;
pub mod ops;
mod parallel;
pub mod reference;
pub mod runtime;
pub mod tensor;
pub mod tokenizer;

pub use device::Device;
pub use element::Element;
pub use error::{Error, Result};
pub use flashscan_kernels as kernels;
pub use flashscan_kernels::dtype::DType;
pub use half::{bf16, f16};
pub use runtime::GpuTensor;
pub use tensor::Tensor;
