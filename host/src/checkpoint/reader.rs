//! `Checkpoint`: a safetensors file read into memory, its tensors given out by name as
//! f32 arrays.

use super::convert;
use super::header::{self, TensorInfo};
use crate::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use std::collections::BTreeMap;
use std::path::Path;

/// A safetensors file, read whole and validated: every tensor's bytes lie inside the
/// file and match its dtype and shape.
pub struct Checkpoint {
    path: String,
    bytes: Vec<u8>,
    data_start: usize,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Reads and validates the file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let label = path.as_ref().display().to_string();
        let bytes = std::fs::read(path.as_ref()).map_err(|e| Error::Checkpoint {
            path: label.clone(),
            tensor: None,
            what: format!("cannot be read: {e}"),
        })?;
        Self::from_bytes(bytes, label)
    }

    /// Validates safetensors `bytes` already in memory; `label` names them in errors.
    pub fn from_bytes(bytes: Vec<u8>, label: impl Into<String>) -> Result<Self> {
        let path = label.into();
        let h = header::parse(&path, &bytes)?;
        Ok(Checkpoint { path, bytes, data_start: h.data_start, tensors: h.tensors, metadata: h.metadata })
    }

    /// The file's path (or the label given to `from_bytes`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The header entry of `name`, if the file has it.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    /// The `__metadata__` map (empty when the file has none).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The shape of `name`; an error naming it if the file lacks it.
    pub fn shape(&self, name: &str) -> Result<&[usize]> {
        Ok(&self.entry(name)?.shape)
    }

    /// The tensor `name` as f32 (bf16 and f16 converted exactly).
    pub fn get(&self, name: &str) -> Result<ArrayD<f32>> {
        let info = self.entry(name)?;
        let (begin, end) = info.data_offsets;
        // The header check kept every range inside the data section.
        let bytes = self.bytes.get(self.data_start + begin..self.data_start + end).ok_or_else(|| {
            self.error(Some(name), format!("occupies bytes {begin}..{end} past the end of the data section"))
        })?;
        let values = convert::to_f32(bytes, &info.dtype).ok_or_else(|| {
            self.error(Some(name), format!("has dtype {}, which is not supported (F32, F16 and BF16 are)", info.dtype))
        })?;
        ArrayD::from_shape_vec(IxDyn(&info.shape), values).map_err(|e| {
            self.error(Some(name), format!("holds {} bytes that do not make shape {:?}: {e}", end - begin, info.shape))
        })
    }

    /// The tensor `name` as f32, which must have shape `expected`: otherwise an
    /// [`Error::TensorShape`] naming the tensor, the shape found and the one expected.
    pub fn expect_shape(&self, name: &str, expected: &[usize]) -> Result<ArrayD<f32>> {
        let got = self.shape(name)?;
        if got != expected {
            return Err(Error::TensorShape {
                path: self.path.clone(),
                tensor: name.to_string(),
                got: got.to_vec(),
                expected: format!("{expected:?}"),
            });
        }
        self.get(name)
    }

    fn entry(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| {
            self.error(Some(name), format!("is not in the file (it holds {} tensors)", self.tensors.len()))
        })
    }

    fn error(&self, tensor: Option<&str>, what: String) -> Error {
        Error::Checkpoint { path: self.path.clone(), tensor: tensor.map(str::to_string), what }
    }
}
