//! `Tensor<T>`: data on the CPU (an ndarray) or on a GPU (a [`GpuTensor`]), so that one
//! call works on either device.

use crate::runtime::GpuTensor;
use crate::{Device, Element, Error, Result};
use ndarray::ArrayD;

pub enum Tensor<T: Element> {
    Cpu(ArrayD<T>),
    Cuda(GpuTensor<T>),
}

impl<T: Element> Tensor<T> {
    /// Places `a` on `device` (a copy to HBM for `Device::Cuda`).
    pub fn from_array(a: ArrayD<T>, device: Device) -> Result<Self> {
        match device {
            Device::Cpu => Ok(Tensor::Cpu(a)),
            Device::Cuda(_) => Ok(Tensor::Cuda(GpuTensor::from_array(&device.gpu()?, &a)?)),
        }
    }

    /// The data as an ndarray (a copy from HBM for a GPU tensor).
    pub fn to_array(&self) -> Result<ArrayD<T>> {
        match self {
            Tensor::Cpu(a) => Ok(a.clone()),
            Tensor::Cuda(g) => g.to_array(),
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::Cpu(a) => a.shape(),
            Tensor::Cuda(g) => g.shape(),
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Tensor::Cpu(_) => Device::Cpu,
            Tensor::Cuda(g) => Device::Cuda(g.gpu().ordinal()),
        }
    }

    pub fn dtype(&self) -> crate::DType {
        T::DTYPE
    }

    /// The same elements (in row-major order) seen with `shape`, which must have the same
    /// element count. No copy on the GPU; on the CPU a copy only when the array is not in
    /// standard (row-major) layout.
    ///
    /// Errors: [`Error::Shape`] naming `shape` when the element counts differ.
    pub fn reshape(self, shape: &[usize]) -> Result<Self> {
        let count = |s: &[usize]| s.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if count(shape) != count(self.shape()) {
            return Err(Error::Shape {
                arg: "shape",
                got: shape.to_vec(),
                expected: format!("as many elements as the tensor's {:?}", self.shape()),
            });
        }
        match self {
            Tensor::Cuda(g) => g.reshape(shape).map(Tensor::Cuda),
            Tensor::Cpu(a) => {
                let a = if a.is_standard_layout() { a } else { a.as_standard_layout().into_owned() };
                a.into_shape_with_order(ndarray::IxDyn(shape)).map(Tensor::Cpu).map_err(|e| Error::Shape {
                    arg: "shape",
                    got: shape.to_vec(),
                    expected: format!("a shape of the same element count ({e})"),
                })
            }
        }
    }

    pub(crate) fn as_cpu(&self) -> Option<&ArrayD<T>> {
        match self {
            Tensor::Cpu(a) => Some(a),
            Tensor::Cuda(_) => None,
        }
    }

    pub(crate) fn as_gpu(&self) -> Option<&GpuTensor<T>> {
        match self {
            Tensor::Cuda(g) => Some(g),
            Tensor::Cpu(_) => None,
        }
    }

    /// The host array of `arg`, which validation found on the CPU (an error, not a
    /// panic, if it is not).
    pub(crate) fn cpu_data(&self, arg: &'static str) -> Result<&ArrayD<T>> {
        self.as_cpu().ok_or_else(|| Error::DeviceMismatch {
            arg,
            got: self.device().to_string(),
            expected: Device::Cpu.to_string(),
        })
    }

    /// The host array of `arg`, mutable (for operations that update a state in place).
    pub(crate) fn cpu_data_mut(&mut self, arg: &'static str) -> Result<&mut ArrayD<T>> {
        match self {
            Tensor::Cpu(a) => Ok(a),
            Tensor::Cuda(g) => Err(Error::DeviceMismatch {
                arg,
                got: Device::Cuda(g.gpu().ordinal()).to_string(),
                expected: Device::Cpu.to_string(),
            }),
        }
    }

    /// The device buffer of `arg`, which validation found on a GPU.
    pub(crate) fn gpu_data(&self, arg: &'static str) -> Result<&GpuTensor<T>> {
        self.as_gpu().ok_or_else(|| Error::DeviceMismatch {
            arg,
            got: self.device().to_string(),
            expected: "a CUDA device".into(),
        })
    }
}

/// The device address of an optional GPU tensor `arg` for a kernel's launch parameters:
/// 0 when absent (the kernels' "no such input").
pub(crate) fn device_addr_or_0<T: Element>(t: Option<&Tensor<T>>, arg: &'static str) -> Result<u64> {
    Ok(match t {
        Some(t) => t.gpu_data(arg)?.device_addr(),
        None => 0,
    })
}

/// Argument checks shared by the operations.
pub(crate) mod check {
    use super::*;

    /// `arg` is on `device`.
    pub fn same_device(arg: &'static str, got: Device, device: Device) -> Result<()> {
        if got != device {
            return Err(Error::DeviceMismatch { arg, got: got.to_string(), expected: device.to_string() });
        }
        Ok(())
    }

    /// `arg` has element type `expected`.
    pub fn dtype<W: Element>(arg: &'static str, expected: crate::DType) -> Result<()> {
        if W::DTYPE != expected {
            return Err(Error::DType { arg, got: W::DTYPE, expected: expected.to_string() });
        }
        Ok(())
    }

    /// Every dimension of `arg` is at least 1 and it has at least `min_rank` of them.
    pub fn nonempty(arg: &'static str, shape: &[usize], min_rank: usize) -> Result<()> {
        if shape.len() < min_rank || shape.contains(&0) {
            return Err(Error::Shape {
                arg,
                got: shape.to_vec(),
                expected: format!("at least {min_rank} dimension(s), each of size >= 1"),
            });
        }
        Ok(())
    }

    /// `arg` has exactly shape `expected`.
    pub fn shape(arg: &'static str, shape: &[usize], expected: &[usize]) -> Result<()> {
        if shape != expected {
            return Err(Error::Shape { arg, got: shape.to_vec(), expected: format!("{expected:?}") });
        }
        Ok(())
    }
}
