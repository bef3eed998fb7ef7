//! LayerNorm / RMSNorm forward benchmark: achieved HBM bandwidth (bytes read + written
//! over the median kernel time, CUDA events) against the device-to-device copy bandwidth
//! measured in the same run. One JSON object per line on stdout, a table on stderr.
//!
//!     cargo run --release --example bench_norm

use flashscan::runtime::timing::{copy_bandwidth_gbs, median, time_ms};
use flashscan::{Device, Element, Tensor, bf16, f16, norm};
use ndarray::{ArrayD, IxDyn};

fn bench<T: Element>(rows: usize, cols: usize, rms: bool, copy_gbs: f64) -> flashscan::Result<()> {
    let d = Device::Cuda(0);
    let gpu = d.gpu()?;
    // Two inputs used alternately, each larger than L2 for the big shapes.
    let xs: Vec<Tensor<T>> = (0..2)
        .map(|s| {
            let a = ArrayD::from_shape_fn(IxDyn(&[rows, cols]), |i| {
                T::from_f32(((i[0] * 31 + i[1] * 7 + s) % 97) as f32 / 97.0 - 0.5)
            });
            Tensor::from_array(a, d)
        })
        .collect::<flashscan::Result<_>>()?;
    let w = Tensor::from_array(ArrayD::from_elem(IxDyn(&[cols]), T::from_f32(1.0)), d)?;
    let b = Tensor::from_array(ArrayD::from_elem(IxDyn(&[cols]), T::from_f32(0.0)), d)?;
    let mut t = time_ms(&gpu, 5, 50, |i| {
        let x = &xs[i % 2];
        let _out = if rms { norm::rms_norm(x, &w, 1e-5)? } else { norm::layer_norm(x, &w, Some(&b), 1e-5)? };
        Ok(())
    })?;
    let ms = median(&mut t) as f64;
    let elem = std::mem::size_of::<T>();
    let stats = if rms { 4 } else { 8 };
    let bytes = (rows * cols * elem * 2 + rows * stats) as f64;
    let gbs = bytes / (ms * 1e-3) / 1e9;
    let kind = if rms { "rmsnorm" } else { "layernorm" };
    println!(
        "{{\"kernel\":\"{kind}\",\"dtype\":\"{}\",\"rows\":{rows},\"cols\":{cols},\"ms\":{ms:.5},\"gbs\":{gbs:.1},\"copy_gbs\":{copy_gbs:.1},\"fraction_of_copy\":{:.3}}}",
        T::DTYPE,
        gbs / copy_gbs
    );
    eprintln!(
        "{kind:10} {:5} [{rows:6} x {cols:5}]  {ms:8.4} ms  {gbs:7.1} GB/s  {:5.1}% of copy",
        T::DTYPE.to_string(),
        100.0 * gbs / copy_gbs
    );
    Ok(())
}

fn main() {
    let gpu = match Device::Cuda(0).gpu() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("bench_norm needs a GPU: {e}");
            std::process::exit(2);
        }
    };
    let run = || -> flashscan::Result<()> {
        // The copy moves as many bytes as the headline case reads (16384 x 4096 bf16).
        let copy = copy_bandwidth_gbs(&gpu, 16384 * 4096 * 2, 50)?;
        eprintln!("{} — device-to-device copy {copy:.1} GB/s (read + write)", Device::Cuda(0).describe());
        println!("{{\"kernel\":\"copy\",\"bytes\":{},\"gbs\":{copy:.1}}}", 16384 * 4096 * 2);
        for rms in [false, true] {
            bench::<bf16>(16384, 4096, rms, copy)?;
            bench::<f16>(16384, 4096, rms, copy)?;
            bench::<f32>(16384, 4096, rms, copy)?;
            bench::<bf16>(16384, 1024, rms, copy)?;
            bench::<bf16>(8192, 8192, rms, copy)?;
            bench::<bf16>(4096, 16384, rms, copy)?;
            bench::<bf16>(65536, 768, rms, copy)?;
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("bench_norm failed: {e}");
        std::process::exit(1);
    }
}
