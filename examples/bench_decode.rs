//! Flash-Decoding benchmark: one query token per sequence against a KV cache, bf16,
//! head dim 128, 32 query heads, GQA 8:1 and MHA, batch 1 / 8 / 64, cache 1k..128k keys,
//! contiguous and paged (256-key pages in shuffled order). Reports the median time (CUDA
//! events, the cache already resident: no append) and the fraction of the device-to-device
//! copy bandwidth, measured in the same run, spent reading K and V. One JSON object per
//! line on stdout, a table on stderr; `gpu/bench_decode.py` runs it beside torch.
//! `--splits N,M,..` also times each case with those split counts (the default is
//! reported as splits 0), for tuning the heuristic. `--cases B:KV:L[:1],..` runs only
//! those cases (batch, kv heads, cache length; `:1` paged). `--host` also reports the
//! host time per call: 2000 calls queued without waiting, wall clock over the count.
//!
//! `--floor` instead reports the per-call costs around the kernel: an empty pair of
//! events, a pair of output allocations, a 4-byte memset, a one-block decode, and the
//! GQA 32k decode with and without an extra allocation pair.
//!
//!     cargo run --release --example bench_decode [-- --quick] [--splits 4,16] [--cases 1:8:32768] [--host] [--floor]

use flashscan::attention::{DecodeOptions, KvCache, decode};
use flashscan::runtime::GpuTensor;
use flashscan::runtime::timing::{copy_bandwidth_gbs, median, time_ms};
use flashscan::{Device, Result, Tensor, bf16};
use ndarray::{ArrayD, IxDyn};

const D: usize = 128;
const HEADS: usize = 32;
const PAGE: usize = 256;

fn random(shape: &[usize], seed: u64) -> ArrayD<bf16> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    ArrayD::from_shape_simple_fn(IxDyn(shape), || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        bf16::from_f32((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
    })
}

/// A device tensor of `shape` with random bf16 (filled on the device by repeating a 1M-element block).
fn device_random(shape: &[usize], seed: u64) -> Result<Tensor<bf16>> {
    let gpu = Device::Cuda(0).gpu()?;
    let n: usize = shape.iter().product();
    let block = random(&[n.min(1 << 20)], seed);
    let data: Vec<bf16> = block.iter().copied().cycle().take(n).collect();
    Ok(Tensor::Cuda(GpuTensor::from_vec(&gpu, data, shape)?))
}

fn case(batch: usize, heads_kv: usize, len: usize, paged: bool, copy: f64, splits: &[usize], host: bool) -> Result<()> {
    let gpu = Device::Cuda(0).gpu()?;
    let shape = if paged { [batch * len.div_ceil(PAGE), PAGE, heads_kv, D] } else { [batch, len, heads_kv, D] };
    let (k, v) = (device_random(&shape, 1)?, device_random(&shape, 2)?);
    let lens = vec![len; batch];
    let mut cache = if paged {
        // Pages dealt in a fixed shuffled order (a stride coprime with the page count).
        let per = len.div_ceil(PAGE);
        let total = batch * per;
        let stride = (1..).map(|s| 7919 * s + 1).find(|s| gcd(*s, total) == 1).unwrap_or(1);
        let table: Vec<Vec<usize>> =
            (0..batch).map(|b| (0..per).map(|i| ((b * per + i) * stride) % total).collect()).collect();
        KvCache::from_pages(k, v, &table, &lens)?
    } else {
        KvCache::from_contiguous(k, v, &lens)?
    };
    let q = device_random(&[batch, 1, HEADS, D], 3)?;
    let iters = if len * batch >= 1 << 20 { 50 } else { 200 };
    for n in std::iter::once(0).chain(splits.iter().copied()) {
        let opts = DecodeOptions { num_splits: (n > 0).then_some(n), ..Default::default() };
        let mut t = time_ms(&gpu, 5, iters, |_| decode(&q, &mut cache, None, None, &opts).map(|_| ()))?;
        report(batch, heads_kv, len, paged, n, median(&mut t) as f64, copy);
        if host {
            let calls = 2000;
            gpu.synchronize()?;
            let t0 = std::time::Instant::now();
            for _ in 0..calls {
                decode(&q, &mut cache, None, None, &opts)?;
            }
            let us = t0.elapsed().as_secs_f64() * 1e6 / calls as f64;
            gpu.synchronize()?;
            println!(
                "{{\"splits\":{n},\"batch\":{batch},\"heads_kv\":{heads_kv},\"seqlen_k\":{len},\"paged\":{paged},\"host_us_per_call\":{us:.2}}}"
            );
            eprintln!(
                "b={batch:<3} h={HEADS} kv={heads_kv:<2} L={len:<7} {:10} splits {n:<3} host {us:.2} us per call",
                if paged { "paged" } else { "contiguous" }
            );
        }
    }
    Ok(())
}

/// One JSON line on stdout and a table row on stderr (`splits` 0: the default count).
fn report(batch: usize, heads_kv: usize, len: usize, paged: bool, splits: usize, ms: f64, copy: f64) {
    let kv_bytes = (2 * batch * len * heads_kv * D * 2) as f64;
    let gbs = kv_bytes / (ms * 1e-3) / 1e9;
    println!(
        "{{\"splits\":{splits},\"batch\":{batch},\"heads_q\":{HEADS},\"heads_kv\":{heads_kv},\"seqlen_k\":{len},\"d\":{D},\"paged\":{paged},\"ms\":{ms:.5},\"kv_bytes\":{kv_bytes},\"gbs\":{gbs:.1},\"copy_gbs\":{copy:.1},\"fraction_of_copy\":{:.3}}}",
        gbs / copy
    );
    eprintln!(
        "b={batch:<3} h={HEADS} kv={heads_kv:<2} L={len:<7} {:10} splits {splits:<3} {ms:9.4} ms {gbs:8.1} GB/s {:6.1}% of copy",
        if paged { "paged" } else { "contiguous" },
        100.0 * gbs / copy
    );
}

/// The per-call costs around the decode kernel (`--floor`), medians of 200 calls.
fn floor() -> Result<()> {
    let gpu = Device::Cuda(0).gpu()?;
    let ms = |mut t: Vec<f32>| median(&mut t) as f64 * 1e3;
    let events = ms(time_ms(&gpu, 5, 200, |_| Ok(()))?);
    let alloc_pair = || -> Result<()> {
        let o = GpuTensor::<bf16>::uninit(&gpu, &[1, 1, HEADS, D])?;
        let lse = GpuTensor::<f32>::uninit(&gpu, &[1, HEADS, 1])?;
        drop((o, lse));
        Ok(())
    };
    let allocs = ms(time_ms(&gpu, 5, 200, |_| alloc_pair())?);
    let word = GpuTensor::<f32>::uninit(&gpu, &[1])?;
    let memset = ms(time_ms(&gpu, 5, 200, |_| word.fill_bytes(0))?);
    let q = device_random(&[1, 1, HEADS, D], 3)?;
    let one = DecodeOptions { num_splits: Some(1), ..Default::default() };
    let mut tiny =
        KvCache::from_contiguous(device_random(&[1, 64, 8, D], 1)?, device_random(&[1, 64, 8, D], 2)?, &[64])?;
    let tiny_us = ms(time_ms(&gpu, 5, 200, |_| decode(&q, &mut tiny, None, None, &one).map(|_| ()))?);
    let len = 32768;
    let shape = [1, len, 8, D];
    let mut cache = KvCache::from_contiguous(device_random(&shape, 1)?, device_random(&shape, 2)?, &[len])?;
    let opts = DecodeOptions::default();
    let gqa = ms(time_ms(&gpu, 5, 200, |_| decode(&q, &mut cache, None, None, &opts).map(|_| ()))?);
    let gqa_alloc = ms(time_ms(&gpu, 5, 200, |_| {
        decode(&q, &mut cache, None, None, &opts)?;
        alloc_pair()
    })?);
    println!(
        "{{\"floor\":true,\"events_us\":{events:.2},\"alloc_pair_us\":{allocs:.2},\"memset_4b_us\":{memset:.2},\"one_block_decode_us\":{tiny_us:.2},\"gqa32k_us\":{gqa:.2},\"gqa32k_plus_alloc_pair_us\":{gqa_alloc:.2}}}"
    );
    eprintln!(
        "events {events:.2} us, alloc pair {allocs:.2} us, 4-byte memset {memset:.2} us, one-block decode {tiny_us:.2} us, GQA 32k {gqa:.2} us, with an extra alloc pair {gqa_alloc:.2} us"
    );
    Ok(())
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn main() {
    let gpu = match Device::Cuda(0).gpu() {
        Ok(g) => g,
        Err(e) => {
            eprintln!("bench_decode needs a GPU: {e}");
            std::process::exit(2);
        }
    };
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let host = args.iter().any(|a| a == "--host");
    let only: Option<Vec<(usize, usize, usize, bool)>> = match args.iter().position(|a| a == "--cases") {
        Some(i) => {
            let parse = |c: &str| -> Option<(usize, usize, usize, bool)> {
                let v: Vec<usize> = c.split(':').map(str::parse).collect::<std::result::Result<_, _>>().ok()?;
                match v[..] {
                    [b, kv, l] => Some((b, kv, l, false)),
                    [b, kv, l, p] if p <= 1 => Some((b, kv, l, p == 1)),
                    _ => None,
                }
            };
            match args.get(i + 1).map(|s| s.split(',').map(parse).collect::<Option<Vec<_>>>()) {
                Some(Some(v))
                    if v.iter().all(|&(b, kv, l, _)| b > 0 && kv > 0 && HEADS.is_multiple_of(kv) && l > 0) =>
                {
                    Some(v)
                }
                _ => {
                    eprintln!("--cases takes B:KV:L[:1],.. (kv heads dividing {HEADS}; :1 paged)");
                    std::process::exit(2);
                }
            }
        }
        None => None,
    };
    let splits: Vec<usize> = match args.iter().position(|a| a == "--splits") {
        Some(i) => {
            match args.get(i + 1).map(|s| s.split(',').map(str::parse).collect::<std::result::Result<Vec<usize>, _>>())
            {
                Some(Ok(v)) => v,
                _ => {
                    eprintln!("--splits takes a comma-separated list of split counts (1..=128)");
                    std::process::exit(2);
                }
            }
        }
        None => Vec::new(),
    };
    if args.iter().any(|a| a == "--floor") {
        if let Err(e) = floor() {
            eprintln!("bench_decode --floor: {e}");
            std::process::exit(1);
        }
        return;
    }
    let run = || -> Result<()> {
        let copy = copy_bandwidth_gbs(&gpu, 1 << 30, 20)?;
        eprintln!("{} — device-to-device copy {copy:.1} GB/s (read + write)", Device::Cuda(0).describe());
        if let Some(cases) = &only {
            for &(b, kv, l, paged) in cases {
                case(b, kv, l, paged, copy, &splits, host)?;
            }
            return Ok(());
        }
        // The acceptance cases first, contiguous then paged.
        let headline = [(1, 32, 32768), (1, 8, 32768), (8, 8, 8192), (1, 32, 131072), (1, 8, 131072)];
        for paged in [false, true] {
            for &(b, kv, l) in &headline {
                case(b, kv, l, paged, copy, &splits, host)?;
            }
        }
        if quick {
            return Ok(());
        }
        for b in [1, 8, 64] {
            for kv in [8, 32] {
                for l in [1024, 4096, 16384, 32768, 131072] {
                    // At most 8 GiB of cache.
                    if 2 * b * l * kv * D * 2 <= 8 << 30 {
                        case(b, kv, l, false, copy, &splits, host)?;
                    }
                }
            }
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("bench_decode failed: {e}");
        std::process::exit(1);
    }
}
