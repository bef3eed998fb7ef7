//! Causal conv1d and decode-step benchmark: achieved HBM bandwidth (the minimum bytes over
//! the median kernel time, CUDA events) against the device-to-device copy bandwidth
//! measured in the same run. One JSON object per line on stdout, a table on stderr.
//!
//! - conv1d forward (Mamba's call: bias, SiLU) at b=8, dim=4096, L=4096, width 4 (the
//!   headline; target >= 70% of the HBM floor) and other sizes; bytes = x read + y
//!   written + weights and bias.
//! - conv1d backward: x and dy read, dx written (+ weights; the dweight partials are
//!   dim x batch x segments x 36 bytes, counted).
//! - decode steps at batch 1 and 64, dim 4096: conv1d_update (width 4) and
//!   selective_state_update (d_state 16, D, z, delta_bias, softplus), bytes = state read
//!   and written + every input and output once. At batch 1 these are launch-bound.
//!
//!     cargo run --release --example bench_conv

use flashscan::kernels::conv::{CONV_BWD_VECS, conv_segments};
use flashscan::mamba::{Conv1dOptions, causal_conv1d, causal_conv1d_backward, conv1d_update, selective_state_update};
use flashscan::runtime::timing::{copy_bandwidth_gbs, median, time_ms};
use flashscan::{Device, Element, Result, Tensor, bf16};
use ndarray::{ArrayD, IxDyn};

/// xorshift values in [lo, hi).
fn random<T: Element>(shape: &[usize], seed: u64, lo: f32, hi: f32) -> ArrayD<T> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        T::from_f32(lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32))
    })
}

fn on<T: Element>(shape: &[usize], seed: u64, lo: f32, hi: f32) -> Result<Tensor<T>> {
    Tensor::from_array(random(shape, seed, lo, hi), Device::Cuda(0))
}

/// Prints one result: JSON on stdout, a table row on stderr.
fn report(kind: &str, dtype: &str, shape: &str, ms: f64, bytes: f64, copy_gbs: f64) {
    let gbs = bytes / (ms * 1e-3) / 1e9;
    println!(
        "{{\"kernel\":\"{kind}\",\"dtype\":\"{dtype}\",{shape},\"ms\":{ms:.5},\"min_bytes\":{bytes},\"gbs\":{gbs:.1},\"copy_gbs\":{copy_gbs:.1},\"fraction_of_copy\":{:.3}}}",
        gbs / copy_gbs
    );
    let shape = shape.replace('"', "").replace(':', "=").replace(',', " ");
    eprintln!("{kind:14} {dtype:4} {shape:42} {ms:9.4} ms {gbs:8.1} GB/s {:6.1}% of copy", 100.0 * gbs / copy_gbs);
}

fn conv<T: Element>(b: usize, dim: usize, l: usize, width: usize, copy_gbs: f64, iters: usize) -> Result<()> {
    let gpu = Device::Cuda(0).gpu()?;
    let x = on::<T>(&[b, dim, l], 1, -1.0, 1.0)?;
    let w = on::<T>(&[dim, width], 2, -0.5, 0.5)?;
    let bias = on::<T>(&[dim], 3, -0.5, 0.5)?;
    let dy = on::<T>(&[b, dim, l], 4, -1.0, 1.0)?;
    let opts = Conv1dOptions { silu: true };
    let e = T::DTYPE.size_bytes() as f64;
    let (bdl, weights) = ((b * dim * l) as f64, (dim * (width + 1)) as f64 * e);
    let shape = format!("\"batch\":{b},\"dim\":{dim},\"seqlen\":{l},\"width\":{width}");
    let dt = T::DTYPE.suffix();
    let mut t = time_ms(&gpu, 3, iters, |_| causal_conv1d(&x, &w, Some(&bias), None, &opts).map(|_| ()))?;
    report("conv1d_fwd", dt, &shape, median(&mut t) as f64, 2.0 * bdl * e + weights, copy_gbs);
    let mut t =
        time_ms(&gpu, 2, iters, |_| causal_conv1d_backward(&x, &w, Some(&bias), None, &dy, None, &opts).map(|_| ()))?;
    let segs = conv_segments(l as u32, T::DTYPE.size_bytes(), CONV_BWD_VECS) as f64;
    let partials = 2.0 * (dim * b) as f64 * segs * 36.0;
    report("conv1d_bwd", dt, &shape, median(&mut t) as f64, 3.0 * bdl * e + 2.0 * weights + partials, copy_gbs);
    Ok(())
}

fn decode<T: Element>(b: usize, dim: usize, n: usize, width: usize, copy_gbs: f64) -> Result<()> {
    let gpu = Device::Cuda(0).gpu()?;
    let e = T::DTYPE.size_bytes() as f64;
    let dt = T::DTYPE.suffix();
    let x = on::<T>(&[b, dim], 1, -1.0, 1.0)?;
    let w = on::<T>(&[dim, width], 2, -0.5, 0.5)?;
    let bias = on::<T>(&[dim], 3, -0.5, 0.5)?;
    let mut cstate = on::<T>(&[b, dim, width - 1], 4, -1.0, 1.0)?;
    let opts = Conv1dOptions { silu: true };
    let mut t = time_ms(&gpu, 10, 200, |_| conv1d_update(&x, &mut cstate, &w, Some(&bias), &opts).map(|_| ()))?;
    let bytes = (b * dim) as f64 * e * (2.0 + 2.0 * (width - 1) as f64) + (dim * (width + 1)) as f64 * e;
    let shape = format!("\"batch\":{b},\"dim\":{dim},\"width\":{width}");
    report("conv1d_update", dt, &shape, median(&mut t) as f64, bytes, copy_gbs);

    let mut state = on::<f32>(&[b, dim, n], 5, -1.0, 1.0)?;
    let delta = on::<T>(&[b, dim], 6, -3.0, 0.0)?;
    let z = on::<T>(&[b, dim], 7, -2.0, 2.0)?;
    let a = on::<f32>(&[dim, n], 8, -4.0, -0.5)?;
    let (bm, cm) = (on::<T>(&[b, 1, n], 9, -1.0, 1.0)?, on::<T>(&[b, 1, n], 10, -1.0, 1.0)?);
    let (dd, db) = (on::<f32>(&[dim], 11, 0.5, 1.5)?, on::<f32>(&[dim], 12, -1.0, 0.0)?);
    let mut t = time_ms(&gpu, 10, 200, |_| {
        selective_state_update(&mut state, &x, &delta, &a, &bm, &cm, Some(&dd), Some(&z), Some(&db), true).map(|_| ())
    })?;
    let bytes = (2 * b * dim * n * 4 + dim * n * 4 + 2 * dim * 4) as f64 + (4 * b * dim + 2 * b * n) as f64 * e;
    let shape = format!("\"batch\":{b},\"dim\":{dim},\"d_state\":{n}");
    report("ssm_update", dt, &shape, median(&mut t) as f64, bytes, copy_gbs);
    Ok(())
}

fn main() {
    let gpu = match Device::Cuda(0).gpu() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("bench_conv needs a GPU: {e}");
            std::process::exit(2);
        }
    };
    let run = || -> Result<()> {
        // The copy moves as many bytes as the headline forward reads (8 x 4096 x 4096 bf16).
        let bytes = 8 * 4096 * 4096 * 2;
        let copy = copy_bandwidth_gbs(&gpu, bytes, 30)?;
        eprintln!("{} — device-to-device copy {copy:.1} GB/s (read + write)", Device::Cuda(0).describe());
        println!("{{\"kernel\":\"copy\",\"bytes\":{bytes},\"gbs\":{copy:.1}}}");
        conv::<bf16>(8, 4096, 4096, 4, copy, 30)?;
        conv::<f32>(8, 4096, 4096, 4, copy, 20)?;
        conv::<bf16>(8, 4096, 4096, 2, copy, 30)?;
        conv::<bf16>(8, 4096, 4096, 8, copy, 30)?;
        conv::<bf16>(8, 2048, 2048, 4, copy, 30)?;
        conv::<bf16>(1, 5120, 16384, 4, copy, 30)?;
        conv::<bf16>(64, 4096, 256, 4, copy, 30)?;
        conv::<bf16>(8, 4096, 4095, 4, copy, 20)?;
        for b in [1, 64] {
            decode::<bf16>(b, 4096, 16, 4, copy)?;
            decode::<f32>(b, 4096, 16, 4, copy)?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("bench_conv failed: {e}");
        std::process::exit(1);
    }
}
