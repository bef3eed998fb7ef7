//! A tensor map as it travels in a kernel's parameter struct (host and device): the 128
//! opaque bytes the driver's `cuTensorMapEncodeTiled` writes. The copy engine needs it
//! 64-byte aligned; rustc's kernel ABI allows at most 16, so a struct of these sits at
//! offsets that are multiples of 128 and the build declares the kernel's parameter
//! `.align 64` (`registry::PARAM_ALIGN_64`). The device side reads it through
//! `device::tma`.

#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TensorMap(pub [u64; 16]);
