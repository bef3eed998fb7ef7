//! A tensor in device memory (HBM): a cudarc allocation plus a row-major shape.

use super::Gpu;
use crate::error::driver;
use crate::{Element, Error, Result};
use cudarc::driver::{CudaSlice, DevicePtr};
use ndarray::{ArrayD, IxDyn};
use std::sync::Arc;

pub struct GpuTensor<T: Element> {
    buf: CudaSlice<T>,
    shape: Vec<usize>,
    gpu: Arc<Gpu>,
}

impl<T: Element> GpuTensor<T> {
    /// Copies `a` (any layout) to the device.
    pub fn from_array(gpu: &Arc<Gpu>, a: &ArrayD<T>) -> Result<Self> {
        let data: Vec<T> = a.iter().copied().collect();
        Self::from_vec(gpu, data, a.shape())
    }

    /// Copies a row-major buffer of shape `shape` to the device.
    pub fn from_vec(gpu: &Arc<Gpu>, mut data: Vec<T>, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::Shape {
                arg: "data",
                got: vec![data.len()],
                expected: format!("{n} elements for shape {shape:?}"),
            });
        }
        // The driver cannot allocate 0 bytes; a zero-sized tensor keeps one spare element.
        if data.is_empty() {
            data.push(T::default());
        }
        let buf = gpu.stream().clone_htod(&data).map_err(driver("copying a tensor to the device"))?;
        Ok(GpuTensor { buf, shape: shape.to_vec(), gpu: gpu.clone() })
    }

    /// A tensor whose contents are undefined (every kernel that returns one writes all
    /// of it; the tests poison outputs to check that).
    pub fn uninit(gpu: &Arc<Gpu>, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product::<usize>().max(1);
        let buf = unsafe { gpu.stream().alloc::<T>(n) }.map_err(driver(format!("allocating {n} elements")))?;
        let t = GpuTensor { buf, shape: shape.to_vec(), gpu: gpu.clone() };
        if gpu.poison_outputs() {
            t.fill_bytes(0xFF)?;
        }
        Ok(t)
    }

    /// Sets every byte of the buffer to `byte` (asynchronously, on the device's stream).
    pub fn fill_bytes(&self, byte: u8) -> Result<()> {
        let bytes = self.buf.len() * std::mem::size_of::<T>();
        unsafe { cudarc::driver::sys::cuMemsetD8Async(self.device_addr(), byte, bytes, self.gpu.stream().cu_stream()) }
            .result()
            .map_err(driver("cuMemsetD8Async"))
    }

    /// A tensor filled with `value`.
    pub fn full(gpu: &Arc<Gpu>, shape: &[usize], value: T) -> Result<Self> {
        let n: usize = shape.iter().product();
        Self::from_vec(gpu, vec![value; n], shape)
    }

    /// Copies the tensor back into an ndarray.
    pub fn to_array(&self) -> Result<ArrayD<T>> {
        let mut v = self.gpu.stream().clone_dtoh(&self.buf).map_err(driver("copying a tensor to the host"))?;
        v.truncate(self.len());
        ArrayD::from_shape_vec(IxDyn(&self.shape), v).map_err(|e| Error::Shape {
            arg: "tensor",
            got: self.shape.clone(),
            expected: format!("a valid shape ({e})"),
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The same data seen with another shape of the same element count.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(Error::Shape {
                arg: "shape",
                got: shape.to_vec(),
                expected: format!("{} elements like {:?}", self.len(), self.shape),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// The device address of the first element (256-byte aligned), for launch params.
    pub fn device_addr(&self) -> u64 {
        let (ptr, _sync) = self.buf.device_ptr(self.gpu.stream());
        ptr
    }

    pub fn buffer(&self) -> &CudaSlice<T> {
        &self.buf
    }
}
