//! The one error type of the library. Every variant names what went wrong in terms a
//! caller can act on: the argument, the value given, the value expected.

use crate::DType;
use std::fmt;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A tensor argument has the wrong shape.
    Shape { arg: &'static str, got: Vec<usize>, expected: String },
    /// A tensor argument has the wrong element type.
    DType { arg: &'static str, got: DType, expected: String },
    /// A scalar argument or option is out of range.
    Value { arg: &'static str, got: String, expected: String },
    /// Tensors of one call live on different devices.
    DeviceMismatch { arg: &'static str, got: String, expected: String },
    /// No usable CUDA device or driver.
    NoGpu { reason: String },
    /// The GPU is too old for the kernels (compute capability < 8.0).
    UnsupportedGpu { name: String, compute_capability: (i32, i32) },
    /// A launch needs more shared memory than the device allows a block.
    SharedMemory { kernel: String, requested: u32, limit: u32 },
    /// The driver rejected the PTX; `log` is the JIT compiler's error log.
    PtxJit { message: String, log: String },
    /// A driver call or kernel launch failed; `message` is the driver's error string.
    Driver { op: String, message: String },
    /// A cuBLAS call failed (or libcublas could not be loaded); `status` is cuBLAS's
    /// status name and description.
    Cublas { op: String, status: String },
    /// The operation `what` exists but not for these arguments (for example not yet on
    /// this device); `reason` says what is missing and what works instead.
    Unsupported { what: String, reason: String },
    /// A checkpoint file cannot be read, is malformed, or lacks what a model needs.
    /// `tensor` names the tensor concerned, when there is one.
    Checkpoint { path: String, tensor: Option<String>, what: String },
    /// A checkpoint tensor has another shape than the model (or the caller) expects.
    TensorShape { path: String, tensor: String, got: Vec<usize>, expected: String },
    /// A tokenizer file cannot be read or is malformed.
    Tokenizer { path: String, what: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape { arg, got, expected } => write!(f, "`{arg}` has shape {got:?}, expected {expected}"),
            Error::DType { arg, got, expected } => write!(f, "`{arg}` has dtype {got}, expected {expected}"),
            Error::Value { arg, got, expected } => write!(f, "`{arg}` is {got}, expected {expected}"),
            Error::DeviceMismatch { arg, got, expected } => {
                write!(f, "`{arg}` is on {got}, expected it on {expected} like the other inputs")
            }
            Error::NoGpu { reason } => write!(f, "no usable CUDA GPU: {reason}"),
            Error::UnsupportedGpu { name, compute_capability: (ma, mi) } => write!(
                f,
                "GPU {name} has compute capability {ma}.{mi}; flashscan's kernels need 8.0 or newer (Ampere, Ada, Hopper)"
            ),
            Error::SharedMemory { kernel, requested, limit } => {
                write!(f, "kernel {kernel} needs {requested} bytes of shared memory per block; this GPU allows {limit}")
            }
            Error::PtxJit { message, log } => write!(f, "the driver could not load flashscan's PTX: {message}\n{log}"),
            Error::Driver { op, message } => write!(f, "CUDA driver error in {op}: {message}"),
            Error::Cublas { op, status } => write!(f, "cuBLAS error in {op}: {status}"),
            Error::Unsupported { what, reason } => write!(f, "{what} is not supported: {reason}"),
            Error::Checkpoint { path, tensor: Some(t), what } => write!(f, "checkpoint {path}: tensor `{t}` {what}"),
            Error::Checkpoint { path, tensor: None, what } => write!(f, "checkpoint {path}: {what}"),
            Error::TensorShape { path, tensor, got, expected } => {
                write!(f, "checkpoint {path}: tensor `{tensor}` has shape {got:?}, expected {expected}")
            }
            Error::Tokenizer { path, what } => write!(f, "tokenizer file {path}: {what}"),
        }
    }
}

impl std::error::Error for Error {}

/// The driver's name and description of an error code.
pub(crate) fn driver_message(e: &cudarc::driver::DriverError) -> String {
    match e.error_string() {
        Ok(s) => format!("{:?} ({})", e.0, s.to_string_lossy()),
        Err(_) => format!("{:?}", e.0),
    }
}

pub(crate) fn driver(op: impl Into<String>) -> impl FnOnce(cudarc::driver::DriverError) -> Error {
    let op = op.into();
    move |e| Error::Driver { op, message: driver_message(&e) }
}
