//! Safetensors checkpoints: a reader that gives tensors out as f32 ndarrays by name (bf16
//! and f16 converted) and checks shapes, and a small writer.
//!
//! The format: an 8-byte little-endian header length `n`, `n` bytes of JSON mapping each
//! tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets into the
//! data that follows the header) plus an optional `"__metadata__"` string map, then the
//! tensors' bytes, little-endian, row-major.
//!
//! ```no_run
//! use flashscan::checkpoint::Checkpoint;
//! let ckpt = Checkpoint::open("model.safetensors")?;
//! let wte = ckpt.expect_shape("wte.weight", &[50257, 768])?; // ArrayD<f32>
//! # Ok::<(), flashscan::Error>(())
//! ```
//!
//! Every problem is an [`Error::Checkpoint`](crate::Error::Checkpoint) (or
//! [`Error::TensorShape`](crate::Error::TensorShape)) naming the file and, where there is
//! one, the tensor.

mod convert;
mod header;
mod reader;
mod writer;

pub use header::{StoredDType, TensorInfo};
pub use reader::Checkpoint;
pub use writer::CheckpointWriter;
