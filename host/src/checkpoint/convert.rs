//! Element bytes to f32 and back (little-endian, as safetensors stores them).

use super::header::StoredDType;
use crate::DType;
use half::{bf16, f16};

/// The f32 values of `bytes` holding elements of `dtype`; `None` for a dtype other than
/// F32 / F16 / BF16. The caller has checked that `bytes` holds a whole number of them.
pub(crate) fn to_f32(bytes: &[u8], dtype: &StoredDType) -> Option<Vec<f32>> {
    let v = match dtype {
        StoredDType::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        StoredDType::F16 => bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StoredDType::BF16 => bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        StoredDType::Other(_) => return None,
    };
    Some(v)
}

/// Appends `x` rounded (to nearest even) to `dtype`, as little-endian bytes.
pub(crate) fn push_as(out: &mut Vec<u8>, x: f32, dtype: DType) {
    match dtype {
        DType::F32 => out.extend_from_slice(&x.to_le_bytes()),
        DType::F16 => out.extend_from_slice(&f16::from_f32(x).to_le_bytes()),
        DType::BF16 => out.extend_from_slice(&bf16::from_f32(x).to_le_bytes()),
    }
}
