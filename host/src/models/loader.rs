//! Reading a model's tensors from a checkpoint under a name prefix, each checked against
//! the shape the model needs.

use crate::checkpoint::Checkpoint;
use crate::{Error, Result};
use ndarray::{Array, Dimension};

pub(crate) struct Loader<'a> {
    pub ckpt: &'a Checkpoint,
    /// Prepended to every name (`"transformer."`, `"backbone."`, or empty).
    pub prefix: &'a str,
}

impl Loader<'_> {
    pub fn name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.ckpt.contains(&self.name(name))
    }

    /// The dimensions of `name`, which must have rank `R`; `pattern` (e.g.
    /// `"[vocab_size, d_model]"`) describes the expected shape in the error.
    pub fn dims<const R: usize>(&self, name: &str, pattern: &str) -> Result<[usize; R]> {
        let full = self.name(name);
        let shape = self.ckpt.shape(&full)?;
        <[usize; R]>::try_from(shape).map_err(|_| Error::TensorShape {
            path: self.ckpt.path().to_string(),
            tensor: full,
            got: shape.to_vec(),
            expected: pattern.to_string(),
        })
    }

    /// The tensor `name`, of exactly `shape`, with the fixed rank `D`.
    pub fn array<D: Dimension>(&self, name: &str, shape: &[usize]) -> Result<Array<f32, D>> {
        let full = self.name(name);
        self.ckpt.expect_shape(&full, shape)?.into_dimensionality::<D>().map_err(|e| Error::Checkpoint {
            path: self.ckpt.path().to_string(),
            tensor: Some(full),
            what: format!("does not have rank {}: {e}", shape.len()),
        })
    }

    /// Like [`array`](Self::array) for a tensor the file may omit.
    pub fn optional<D: Dimension>(&self, name: &str, shape: &[usize]) -> Result<Option<Array<f32, D>>> {
        if self.contains(name) { self.array(name, shape).map(Some) } else { Ok(None) }
    }

    /// One more than the largest `i` among names `{prefix}{stem}{i}.…` (0 if none).
    pub fn layer_count(&self, stem: &str) -> usize {
        let head = self.name(stem);
        self.ckpt
            .names()
            .filter_map(|n| n.strip_prefix(&head)?.split_once('.')?.0.parse::<usize>().ok())
            .map(|i| i.saturating_add(1))
            .max()
            .unwrap_or(0)
    }
}
