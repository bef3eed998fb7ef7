//! Element types as the launch parameters name them (host and device).

/// The element type of a kernel's input/output tensors. Statistics and accumulators are
/// always f32.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32 = 0,
    BF16 = 1,
    F16 = 2,
}

impl DType {
    pub const fn size_bytes(self) -> u32 {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// The suffix of the kernel entry points stamped out for this type.
    pub const fn suffix(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        }
    }
}

impl core::fmt::Display for DType {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.suffix())
    }
}
