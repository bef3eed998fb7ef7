//! Tensor maps for the Hopper kernels' bulk copies (`cuTensorMapEncodeTiled`): the
//! driver encodes a tensor's base, extents and strides, the box a copy moves and its
//! SRAM swizzle into 128 opaque bytes that travel in the kernel's parameter struct.

use crate::error::driver_message;
use crate::kernels::tensor_map::TensorMap;
use crate::{DType, Error, Result};
use cudarc::driver::DriverError;
use cudarc::driver::sys;

/// A 4-d tensor of a 16-bit type at device address `addr` (16-byte aligned): `dims`
/// innermost first, `strides` (bytes, multiples of 16) of dims 1..3, boxes of `boxes`
/// elements, 128-byte swizzle (the box's inner extent is 128 bytes), zeros outside the
/// tensor, L2 promotion of 256 bytes. `what` names the tensor in an error.
pub(crate) fn tiled_4d(
    what: &'static str,
    dtype: DType,
    addr: u64,
    dims: [u64; 4],
    strides: [u64; 3],
    boxes: [u32; 4],
) -> Result<TensorMap> {
    use sys::{
        CUtensorMapDataType as Ty, CUtensorMapFloatOOBfill as Fill, CUtensorMapInterleave as Il,
        CUtensorMapL2promotion as L2, CUtensorMapSwizzle as Sw,
    };
    let ty = match dtype {
        DType::BF16 => Ty::CU_TENSOR_MAP_DATA_TYPE_BFLOAT16,
        DType::F16 => Ty::CU_TENSOR_MAP_DATA_TYPE_FLOAT16,
        other => {
            return Err(Error::Value { arg: what, got: format!("{other:?}"), expected: "bf16 or f16".into() });
        }
    };
    let mut map = std::mem::MaybeUninit::<sys::CUtensorMap>::zeroed();
    let element_strides = [1u32; 4];
    let status = unsafe {
        sys::cuTensorMapEncodeTiled(
            map.as_mut_ptr(),
            ty,
            4,
            addr as *mut std::ffi::c_void,
            dims.as_ptr(),
            strides.as_ptr(),
            boxes.as_ptr(),
            element_strides.as_ptr(),
            Il::CU_TENSOR_MAP_INTERLEAVE_NONE,
            Sw::CU_TENSOR_MAP_SWIZZLE_128B,
            L2::CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            Fill::CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE,
        )
    };
    status.result().map_err(|e: DriverError| Error::Driver {
        op: format!("cuTensorMapEncodeTiled({what}: dims {dims:?}, strides {strides:?} B, box {boxes:?})"),
        message: driver_message(&e),
    })?;
    let map = unsafe { map.assume_init() };
    Ok(TensorMap(map.opaque))
}
