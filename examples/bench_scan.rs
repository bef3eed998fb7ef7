//! Selective-scan benchmark, forward and backward: b = 8, dim = 2048..5120, L =
//! 512..8192, d_state 16 and 64, bf16 and f32, delta_softplus with delta_bias, D and z
//! (the Mamba block's call); the backward in both modes (atomic dB / dC sums and
//! deterministic). Median of CUDA-event timings; the inputs are far larger than L2, so
//! no rotation is needed. Also measures the device-to-device copy bandwidth in the same
//! run, for the HBM floor. One JSON object per line on stdout; a table on stderr.
//!
//!     cargo run --release --example bench_scan [-- --quick] [--fwd-only | --bwd-only]

use flashscan::mamba::{ScanInputs, ScanOptions, selective_scan, selective_scan_backward};
use flashscan::runtime::timing::{copy_bandwidth_gbs, median, time_ms};
use flashscan::{Device, Element, Tensor, bf16};
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

/// Bytes a scan must move at the least: forward, u, delta, z, B, C read and out written
/// once; backward, u, delta, z, dout, B, C read and du, ddelta, dz, dB, dC written once.
fn min_bytes(bwd: bool, b: usize, dim: usize, l: usize, n: usize, elem: usize) -> usize {
    let (seq, bc) = if bwd { (7, 4) } else { (4, 2) };
    (seq * b * dim * l + bc * b * n * l) * elem
}

/// One JSON line and one table line for a timed pass.
#[allow(clippy::too_many_arguments)]
fn report<T: Element>(pass: &str, b: usize, dim: usize, l: usize, n: usize, ms: f64, copy_gbs: f64) {
    let bytes = min_bytes(pass != "fwd", b, dim, l, n, T::DTYPE.size_bytes() as usize);
    let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
    let dt = T::DTYPE.suffix();
    println!(
        "{{\"impl\":\"flashscan\",\"pass\":\"{pass}\",\"dtype\":\"{dt}\",\"batch\":{b},\"dim\":{dim},\"seqlen\":{l},\"d_state\":{n},\"ms\":{ms:.5},\"min_bytes\":{bytes},\"gbs\":{gbs:.1},\"copy_gbs\":{copy_gbs:.1}}}"
    );
    eprintln!(
        "scan {pass:7} {dt:4} b={b} dim={dim:4} L={l:4} n={n:2}  {ms:8.4} ms  {gbs:7.1} GB/s ({:5.1}% of copy)",
        100.0 * gbs / copy_gbs
    );
}

fn bench<T: Element>(
    b: usize,
    dim: usize,
    l: usize,
    n: usize,
    copy_gbs: f64,
    iters: usize,
    (fwd_too, bwd_too): (bool, bool),
) -> flashscan::Result<()> {
    let dev = Device::Cuda(0);
    let gpu = dev.gpu()?;
    let seq = [b, dim, l];
    let t = |a: ArrayD<T>| Tensor::from_array(a, dev);
    let u = t(random(&seq, 1, -1.0, 1.0))?;
    // delta + bias around -4..0: softplus gives 0.02..0.7, Mamba's range.
    let delta = t(random(&seq, 2, -3.0, 0.0))?;
    let z = t(random(&seq, 3, -2.0, 2.0))?;
    let bm = t(random(&[b, 1, n, l], 4, -1.0, 1.0))?;
    let cm = t(random(&[b, 1, n, l], 5, -1.0, 1.0))?;
    let a = Tensor::from_array(random::<f32>(&[dim, n], 6, -4.0, -0.5), dev)?;
    let d = Tensor::from_array(random::<f32>(&[dim], 7, 0.5, 1.5), dev)?;
    let bias = Tensor::from_array(random::<f32>(&[dim], 8, -1.0, 0.0), dev)?;
    let x = ScanInputs {
        u: &u,
        delta: &delta,
        a: &a,
        b: &bm,
        c: &cm,
        d: Some(&d),
        z: Some(&z),
        delta_bias: Some(&bias),
        initial_state: None,
    };
    let opts = ScanOptions { delta_softplus: true, ..Default::default() };
    if fwd_too {
        let mut times = time_ms(&gpu, 2, iters, |_| selective_scan(&x, &opts).map(|_| ()))?;
        report::<T>("fwd", b, dim, l, n, median(&mut times) as f64, copy_gbs);
    }
    if !bwd_too {
        return Ok(());
    }
    let saved = selective_scan(&x, &opts)?;
    let dout = t(random(&seq, 9, -1.0, 1.0))?;
    for (pass, det) in [("bwd", false), ("bwd_det", true)] {
        let mut times =
            time_ms(&gpu, 1, iters, |_| selective_scan_backward(&x, &opts, &saved, &dout, None, det).map(|_| ()))?;
        report::<T>(pass, b, dim, l, n, median(&mut times) as f64, copy_gbs);
    }
    Ok(())
}

fn main() {
    let gpu = match Device::Cuda(0).gpu() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("bench_scan needs a GPU: {e}");
            std::process::exit(2);
        }
    };
    let quick = std::env::args().any(|a| a == "--quick");
    let fwd_too = !std::env::args().any(|a| a == "--bwd-only");
    let bwd_too = !std::env::args().any(|a| a == "--fwd-only");
    eprintln!("{}", Device::Cuda(0).describe());
    let copy_gbs = match copy_bandwidth_gbs(&gpu, 1 << 30, 20) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("bench_scan: copy bandwidth failed: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("device-to-device copy {copy_gbs:.1} GB/s (read + write)");
    let dims: &[usize] = if quick { &[4096] } else { &[2048, 4096, 5120] };
    let lens: &[usize] = if quick { &[4096] } else { &[512, 2048, 4096, 8192] };
    for &n in &[16, 64] {
        for &dim in dims {
            for &l in lens {
                let iters = if quick { 5 } else { 10 };
                let r = bench::<bf16>(8, dim, l, n, copy_gbs, iters, (fwd_too, bwd_too))
                    .and_then(|_| bench::<f32>(8, dim, l, n, copy_gbs, iters, (fwd_too, bwd_too)));
                if let Err(e) = r {
                    eprintln!("bench_scan failed at dim={dim} L={l} n={n}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
