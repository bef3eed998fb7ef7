//! `narrow`: a copy of the range `start..start + len` of one axis (the last position of a
//! batch of sequences before the LM head, say), on the tensor's device. On the GPU it is
//! one strided device-to-device copy (`cuMemcpy2DAsync`: a row per index of the axes
//! before `axis`), no kernel.

use crate::error::driver;
use crate::runtime::GpuTensor;
use crate::{Device, Element, Error, Result, Tensor};
use cudarc::driver::sys;
use ndarray::{Axis, Slice};

/// The largest row pitch `cuMemcpy2D` takes on current GPUs (`CU_DEVICE_ATTRIBUTE_MAX_PITCH`).
const MAX_PITCH_BYTES: usize = i32::MAX as usize;

/// The indices `start..start + len` of `axis` of x, all of the other axes: a new tensor of
/// x's shape with `len` at `axis`, on x's device.
///
/// Errors: [`Error::Value`] naming `axis` (not below x's rank) or `len` (0, or past the
/// end of the axis); on the GPU, [`Error::Shape`] naming `x` when a row of the copy is
/// 2^31 bytes or more, and the driver's errors.
pub fn narrow<T: Element>(x: &Tensor<T>, axis: usize, start: usize, len: usize) -> Result<Tensor<T>> {
    let shape = x.shape();
    if axis >= shape.len() {
        return Err(Error::Value {
            arg: "axis",
            got: axis.to_string(),
            expected: format!("an axis of x, below its rank {}", shape.len()),
        });
    }
    if len == 0 || start.checked_add(len).is_none_or(|end| end > shape[axis]) {
        return Err(Error::Value {
            arg: "len",
            got: format!("{len} (from start {start})"),
            expected: format!("at least 1, with start + len <= {} (axis {axis} of x {shape:?})", shape[axis]),
        });
    }
    match x.device() {
        Device::Cpu => {
            let a = x.cpu_data("x")?;
            Ok(Tensor::Cpu(a.slice_axis(Axis(axis), Slice::from(start..start + len)).to_owned()))
        }
        Device::Cuda(_) => gpu_narrow(x.gpu_data("x")?, axis, start, len),
    }
}

fn gpu_narrow<T: Element>(x: &GpuTensor<T>, axis: usize, start: usize, len: usize) -> Result<Tensor<T>> {
    let shape = x.shape();
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let elem = std::mem::size_of::<T>();
    let (src_pitch, width) = (shape[axis] * inner * elem, len * inner * elem);
    let mut out_shape = shape.to_vec();
    out_shape[axis] = len;
    let gpu = x.gpu().clone();
    let y = GpuTensor::<T>::uninit(&gpu, &out_shape)?;
    let src = x.device_addr() + (start * inner * elem) as u64;
    let stream = gpu.stream().cu_stream();
    gpu.context().bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
    if outer == 1 {
        return unsafe { sys::cuMemcpyDtoDAsync_v2(y.device_addr(), src, width, stream) }
            .result()
            .map_err(driver("cuMemcpyDtoDAsync (narrow)"))
            .map(|()| Tensor::Cuda(y));
    }
    if src_pitch > MAX_PITCH_BYTES {
        return Err(Error::Shape {
            arg: "x",
            got: shape.to_vec(),
            expected: format!("rows (axis {axis} and after) below 2^31 bytes for the strided copy"),
        });
    }
    // Every field spelled out: the struct holds enums, so it has no all-zero value.
    let copy = sys::CUDA_MEMCPY2D {
        srcXInBytes: 0,
        srcY: 0,
        srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        srcHost: std::ptr::null(),
        srcDevice: src,
        srcArray: std::ptr::null_mut(),
        srcPitch: src_pitch,
        dstXInBytes: 0,
        dstY: 0,
        dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
        dstHost: std::ptr::null_mut(),
        dstDevice: y.device_addr(),
        dstArray: std::ptr::null_mut(),
        dstPitch: width,
        WidthInBytes: width,
        Height: outer,
    };
    unsafe { sys::cuMemcpy2DAsync_v2(&copy, stream) }
        .result()
        .map_err(driver(format!("cuMemcpy2DAsync (narrow of {shape:?} along axis {axis})")))?;
    Ok(Tensor::Cuda(y))
}
