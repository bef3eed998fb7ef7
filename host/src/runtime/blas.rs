//! One cuBLAS handle per device, created on first use and bound to the device's stream
//! (so GEMMs run in order with flashscan's kernels), behind a lock: cuBLAS does not allow
//! two threads to use one handle at once. libcublas is loaded at run time, like libcuda:
//! a machine without it gets an error, not a failed build.

use super::Gpu;
use crate::error::driver;
use crate::{Error, Result};
use cudarc::cublas::result::CublasError;
use cudarc::cublas::{CudaBlas, sys};
use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::{Arc, Mutex, OnceLock};

/// cuBLAS's name and description of a failed call's status.
pub(crate) fn status_message(e: CublasError) -> String {
    // The library is loaded: it returned this status.
    let text = unsafe { sys::cublasGetStatusString(e.0) };
    if text.is_null() {
        format!("{:?}", e.0)
    } else {
        format!("{:?} ({})", e.0, unsafe { CStr::from_ptr(text) }.to_string_lossy())
    }
}

/// Maps a cuBLAS status to [`Error::Cublas`] naming `op`.
pub(crate) fn cublas(op: impl Into<String>) -> impl FnOnce(CublasError) -> Error {
    let op = op.into();
    move |e| Error::Cublas { op, status: status_message(e) }
}

/// Runs `f` with the cuBLAS handle of `gpu` (created on first use), the device's context
/// bound to this thread and the handle locked for the duration.
pub(crate) fn with_handle<R>(gpu: &Arc<Gpu>, f: impl FnOnce(sys::cublasHandle_t) -> Result<R>) -> Result<R> {
    static HANDLES: OnceLock<Mutex<HashMap<usize, Arc<Mutex<CudaBlas>>>>> = OnceLock::new();
    let handle = {
        let mut map = HANDLES.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&gpu.ordinal()) {
            Some(h) => h.clone(),
            None => {
                let h = Arc::new(Mutex::new(create(gpu)?));
                map.insert(gpu.ordinal(), h.clone());
                h
            }
        }
    };
    gpu.context().bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
    let blas = handle.lock().unwrap_or_else(|p| p.into_inner());
    f(*blas.handle())
}

fn create(gpu: &Arc<Gpu>) -> Result<CudaBlas> {
    // cudarc panics when a function of a library it cannot find is called: look first.
    if !unsafe { sys::is_culib_present() } {
        return Err(Error::Cublas {
            op: "loading libcublas".into(),
            status: "libcublas.so was not found on the library path (it ships with the CUDA toolkit and \
                     with the nvidia-cublas-cu12 wheel)"
                .into(),
        });
    }
    gpu.context().bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
    let blas = CudaBlas::new(gpu.stream().clone()).map_err(cublas("cublasCreate"))?;
    // By default cuBLAS may sum split-K partials in the output type (bf16 / f16), which
    // on an H200 put bf16 results 1.5 ulp off; keep every reduction in f32.
    let mode = sys::cublasMath_t::CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    unsafe { sys::cublasSetMathMode(*blas.handle(), mode) }.result().map_err(cublas("cublasSetMathMode"))?;
    Ok(blas)
}
