//! Kernel timing with CUDA events, for the benchmarks: the median of many runs, and the
//! device-to-device copy bandwidth measured the same way (the HBM ceiling of a run).

use super::{Gpu, GpuTensor};
use crate::Result;
use crate::error::driver;
use cudarc::driver::sys;
use std::sync::Arc;

/// Milliseconds of each of `iters` runs of `f` (after `warmup` untimed runs), each run
/// bracketed by its own pair of events on the device's stream.
pub fn time_ms(gpu: &Gpu, warmup: usize, iters: usize, mut f: impl FnMut(usize) -> Result<()>) -> Result<Vec<f32>> {
    let ctx = gpu.context();
    for i in 0..warmup {
        f(i)?;
    }
    gpu.synchronize()?;
    let timing = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
    let mut events = Vec::with_capacity(iters);
    for i in 0..iters {
        let start = ctx.new_event(timing).map_err(driver("cuEventCreate"))?;
        let end = ctx.new_event(timing).map_err(driver("cuEventCreate"))?;
        start.record(gpu.stream()).map_err(driver("cuEventRecord"))?;
        f(warmup + i)?;
        end.record(gpu.stream()).map_err(driver("cuEventRecord"))?;
        events.push((start, end));
    }
    gpu.synchronize()?;
    events.iter().map(|(s, e)| s.elapsed_ms(e).map_err(driver("cuEventElapsedTime"))).collect()
}

/// The median of `v` (which it sorts).
pub fn median(v: &mut [f32]) -> f32 {
    v.sort_by(f32::total_cmp);
    if v.is_empty() { f32::NAN } else { v[v.len() / 2] }
}

/// Device-to-device copy bandwidth over a `bytes`-byte buffer, GB/s counting bytes read
/// plus bytes written (2 x bytes per copy), median of `iters` copies.
pub fn copy_bandwidth_gbs(gpu: &Arc<Gpu>, bytes: usize, iters: usize) -> Result<f64> {
    let words = bytes.div_ceil(4);
    let bytes = words * 4;
    let src = GpuTensor::<f32>::uninit(gpu, &[words])?;
    let dst = GpuTensor::<f32>::uninit(gpu, &[words])?;
    src.fill_bytes(1)?;
    let mut t = time_ms(gpu, 3, iters, |_| {
        unsafe { sys::cuMemcpyDtoDAsync_v2(dst.device_addr(), src.device_addr(), bytes, gpu.stream().cu_stream()) }
            .result()
            .map_err(driver("cuMemcpyDtoDAsync"))
    })?;
    Ok(2.0 * bytes as f64 / (median(&mut t) as f64 * 1e-3) / 1e9)
}
