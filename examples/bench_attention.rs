//! FlashAttention forward (or, with `--bwd`, backward) benchmark: bf16, head dims 64 and
//! 128, N = 512..16384 with batch x N = 16384 tokens and heads x head_dim = 2048, causal
//! and not. Median of CUDA event timings over rotating inputs (three q/k/v sets, so L2
//! never holds the next call's data). One JSON object per line on stdout; a table on
//! stderr. FLOPs: 4 b h N^2 d for the forward, 2.5x that for the backward, halved for
//! causal. `--bwd` times both backward modes (fast, deterministic), given the forward's
//! o and lse.
//!
//!     cargo run --release --example bench_attention [-- --quick] [--bwd] [--ns 2048,4096] [--ds 128]
//!
//! `--ns 2048,4096` and `--ds 128` replace the lists of sequence lengths and head dims
//! (for A/B runs of a few shapes).

use flashscan::attention::{AttentionOptions, BackwardOptions, backward, forward};
use flashscan::runtime::timing::{median, time_ms};
use flashscan::{Device, Tensor, bf16};
use ndarray::{ArrayD, IxDyn};

fn random(shape: &[usize], seed: u64) -> ArrayD<bf16> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        bf16::from_f32((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0)
    })
}

fn bench(d: usize, n: usize, causal: bool, bwd: bool, iters: usize) -> flashscan::Result<()> {
    let dev = Device::Cuda(0);
    let gpu = dev.gpu()?;
    let (b, h) = (16384 / n, 2048 / d);
    let shape = [b, n, h, d];
    let sets = (0..3)
        .map(|i| -> flashscan::Result<_> {
            Ok((
                Tensor::from_array(random(&shape, 3 * i + 1), dev)?,
                Tensor::from_array(random(&shape, 3 * i + 2), dev)?,
                Tensor::from_array(random(&shape, 3 * i + 3), dev)?,
            ))
        })
        .collect::<flashscan::Result<Vec<_>>>()?;
    let opts = AttentionOptions { causal, ..Default::default() };
    let fwd_flops = 4.0 * (b * h) as f64 * (n * n) as f64 * d as f64 / if causal { 2.0 } else { 1.0 };
    let report = |pass: &str, det: bool, t: &mut Vec<f32>, flops: f64| {
        let ms = median(t) as f64;
        let tflops = flops / (ms * 1e-3) / 1e12;
        println!(
            "{{\"impl\":\"flashscan\",\"pass\":\"{pass}\",\"deterministic\":{det},\"d\":{d},\"n\":{n},\"batch\":{b},\"heads\":{h},\"causal\":{causal},\"ms\":{ms:.5},\"tflops\":{tflops:.1}}}"
        );
        eprintln!(
            "flashscan {pass}{} d={d:3} N={n:5} b={b:2} h={h:2} causal={causal:5}  {ms:8.4} ms  {tflops:6.1} TFLOP/s",
            if det { " (deterministic)" } else { "" }
        );
    };
    if !bwd {
        let mut t = time_ms(&gpu, 3, iters, |i| {
            let (q, k, v) = &sets[i % 3];
            forward(q, k, v, &opts).map(|_| ())
        })?;
        report("fwd", false, &mut t, fwd_flops);
        return Ok(());
    }
    // The backward's saved tensors: each set's o and lse, and a dout.
    let saved = sets
        .iter()
        .enumerate()
        .map(|(i, (q, k, v))| -> flashscan::Result<_> {
            let out = forward(q, k, v, &opts)?;
            Ok((out.o, out.lse, Tensor::from_array(random(&shape, 100 + i as u64), dev)?))
        })
        .collect::<flashscan::Result<Vec<_>>>()?;
    for deterministic in [false, true] {
        let mode = BackwardOptions { deterministic };
        let mut t = time_ms(&gpu, 3, iters, |i| {
            let ((q, k, v), (o, lse, dout)) = (&sets[i % 3], &saved[i % 3]);
            backward(q, k, v, o, lse, dout, &opts, &mode).map(|_| ())
        })?;
        report("bwd", deterministic, &mut t, 2.5 * fwd_flops);
    }
    Ok(())
}

fn main() {
    if let Err(e) = Device::Cuda(0).gpu() {
        eprintln!("bench_attention needs a GPU: {e}");
        std::process::exit(2);
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let bwd = std::env::args().any(|a| a == "--bwd");
    let args: Vec<String> = std::env::args().collect();
    // `--ns 2048,4096` / `--ds 128`: only these sequence lengths / head dims.
    let list = |flag: &str, ok: &dyn Fn(usize) -> bool| -> Option<Vec<usize>> {
        let i = args.iter().position(|a| a == flag)?;
        match args.get(i + 1).map(|v| v.split(',').map(str::parse).collect::<Result<Vec<usize>, _>>()) {
            Some(Ok(v)) if !v.is_empty() && v.iter().all(|&x| ok(x)) => Some(v),
            _ => {
                eprintln!("{flag} takes a comma-separated list (--ns: lengths dividing 16384; --ds: 64, 128)");
                std::process::exit(2);
            }
        }
    };
    let ns = list("--ns", &|n| n > 0 && 16384 % n == 0).unwrap_or(if quick {
        vec![1024, 4096]
    } else {
        vec![512, 1024, 2048, 4096, 8192, 16384]
    });
    let ds = list("--ds", &|d| d == 64 || d == 128).unwrap_or(vec![64, 128]);
    eprintln!("{}", Device::Cuda(0).describe());
    for &d in &ds {
        for causal in [false, true] {
            for &n in &ns {
                if let Err(e) = bench(d, n, causal, bwd, if quick { 10 } else { 30 }) {
                    eprintln!("bench_attention failed at d={d} N={n} causal={causal}: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}
