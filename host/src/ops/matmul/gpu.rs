//! GPU path of the matrix products: one `cublasGemmStridedBatchedEx` with f32 compute
//! (tensor cores for bf16 / f16) on the device's stream.
//!
//! cuBLAS is column-major and our tensors are row-major. A row-major `[r, c]` matrix is
//! the column-major `[c, r]` matrix of the same bytes, its transpose; so the row-major
//! `c = op(a) op(b)` is the column-major `cᵀ = op(b)ᵀ op(a)ᵀ`, a GEMM with b as cuBLAS's
//! first operand, a as its second, and each transpose flag as given (a stored operand
//! that is already transposed is, column-major, the matrix itself).
//! A shared (unbatched) operand has a batch stride of 0.

use super::Gemm;
use crate::runtime::GpuTensor;
use crate::runtime::blas::{cublas, with_handle};
use crate::{DType, Element, Error, Result, Tensor};
use cudarc::cublas::result::gemm_strided_batched_ex;
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use std::ffi::c_void;

pub(super) fn matmul<T: Element>(
    a: &GpuTensor<T>,
    b: &GpuTensor<T>,
    g: &Gemm,
    out_shape: &[usize],
) -> Result<Tensor<T>> {
    let int = |v: usize| i32::try_from(v).ok();
    let (Some(m), Some(n), Some(k), Some(batch)) = (int(g.m), int(g.n), int(g.k), int(g.batch)) else {
        return Err(Error::Shape {
            arg: "a",
            got: vec![g.batch, g.m, g.k],
            expected: format!("batch, m, n (here {}) and k below 2^31 (cuBLAS's int dimensions)", g.n),
        });
    };
    let gpu = a.gpu().clone();
    let c = GpuTensor::<T>::uninit(&gpu, out_shape)?;
    let dtype = match T::DTYPE {
        DType::F32 => cudaDataType::CUDA_R_32F,
        DType::BF16 => cudaDataType::CUDA_R_16BF,
        DType::F16 => cudaDataType::CUDA_R_16F,
    };
    let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
    // Leading dimensions: the stored rows' lengths (row-major), i.e. the column-major lds.
    let ld_a = if g.transpose_a { m } else { k };
    let ld_b = if g.transpose_b { k } else { n };
    let stride = |batched: bool, len: usize| if batched { len as i64 } else { 0 };
    // Host scalars in the compute type (f32), read by cuBLAS before the call returns.
    let (alpha, beta) = (1f32, 0f32);
    with_handle(&gpu, |handle| {
        unsafe {
            gemm_strided_batched_ex(
                handle,
                op(g.transpose_b),
                op(g.transpose_a),
                n,
                m,
                k,
                &alpha as *const f32 as *const c_void,
                b.device_addr() as *const c_void,
                dtype,
                ld_b,
                stride(g.b_batched, g.k * g.n),
                a.device_addr() as *const c_void,
                dtype,
                ld_a,
                stride(g.a_batched, g.m * g.k),
                &beta as *const f32 as *const c_void,
                c.device_addr() as *mut c_void,
                dtype,
                n,
                stride(true, g.m * g.n),
                batch,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(cublas(format!(
            "cublasGemmStridedBatchedEx ({} x {} x {} {}, batch {}, transpose a {}, b {})",
            g.m,
            g.n,
            g.k,
            T::DTYPE,
            g.batch,
            g.transpose_a,
            g.transpose_b
        )))
    })?;
    Ok(Tensor::Cuda(c))
}
