//! Where an operation runs.

use crate::runtime::Gpu;
use crate::{Error, Result};
use std::fmt;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU path: the kernels' tiled algorithms written for the CPU.
    Cpu,
    /// CUDA device by ordinal.
    Cuda(usize),
}

impl Device {
    /// `Cuda(0)` when a usable GPU and driver are present, else `Cpu`, with the reason the
    /// GPU could not be used (for a "running on the CPU because ..." message).
    pub fn cuda_if_available() -> (Device, Option<Error>) {
        match Gpu::get(0) {
            Ok(_) => (Device::Cuda(0), None),
            Err(e) => (Device::Cpu, Some(e)),
        }
    }

    /// The runtime of a CUDA device (initialised on first use).
    pub fn gpu(&self) -> Result<Arc<Gpu>> {
        match self {
            Device::Cuda(n) => Gpu::get(*n),
            Device::Cpu => Err(Error::Value { arg: "device", got: "cpu".into(), expected: "a CUDA device".into() }),
        }
    }

    /// A one-line description: "cpu" or "cuda:0 (NVIDIA H100 80GB HBM3, sm_90)".
    pub fn describe(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(n) => match Gpu::get(*n) {
                Ok(g) => format!(
                    "cuda:{n} ({}, compute {}.{})",
                    g.name(),
                    g.compute_capability().0,
                    g.compute_capability().1
                ),
                Err(_) => format!("cuda:{n}"),
            },
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}
