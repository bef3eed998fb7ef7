//! One GPU test per device primitive (kernels in `kernels-gpu/src/selftest`), each
//! checked against a CPU model built from the index maps in `kernels::layout`.

mod common;

use common::Rng;
use flashscan::kernels::layout::{frag_c_coord, ldmatrix_x4_coord, ldmatrix_x4_trans_coord};
use flashscan::kernels::selftest::{
    CP_ASYNC_BYTES, SELFTEST_SMEM_BUDGET, SelftestParams, WARP_TEST_OUTPUTS, WARP_TEST_THREADS, WGMMA_O_N, WGMMA_S_N,
    WGMMA_TEST_THREADS,
};
use flashscan::runtime::ptx::Arch;
use flashscan::runtime::{Gpu, LaunchGrid};
use flashscan::{Element, GpuTensor, bf16, f16};
use std::sync::Arc;

fn gpu() -> Arc<Gpu> {
    Gpu::get(0).expect("these tests need a CUDA GPU")
}

fn upload<T: Element>(g: &Arc<Gpu>, v: Vec<T>) -> GpuTensor<T> {
    let n = v.len();
    GpuTensor::from_vec(g, v, &[n]).expect("upload")
}

/// An output buffer of `n` elements filled with 0xFF bytes.
fn poisoned<T: Element>(g: &Arc<Gpu>, n: usize) -> GpuTensor<T> {
    let t = GpuTensor::<T>::uninit(g, &[n]).expect("alloc");
    t.fill_bytes(0xFF).expect("memset");
    t
}

fn launch(g: &Gpu, kernel: &str, block: u32, smem: u32, p: SelftestParams) {
    g.launch(kernel, LaunchGrid { grid: (1, 1, 1), block, smem }, &p).expect("launch");
    g.synchronize().expect("kernel ran");
}

fn download<T: Element>(t: &GpuTensor<T>) -> Vec<T> {
    t.to_array().expect("download").into_raw_vec_and_offset().0
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn ldmatrix_x4_and_trans_match_the_fragment_maps() {
    let g = gpu();
    let tile: Vec<u16> = (0..256u32).map(|i| (i * 7 + 3) as u16).collect();
    let a = upload(&g, tile.iter().map(|&v| f16::from_bits(v)).collect());
    let c = poisoned::<f32>(&g, 32 * 8);
    launch(
        &g,
        "selftest_ldmatrix",
        32,
        512,
        SelftestParams { a: a.device_addr(), c: c.device_addr(), ..Default::default() },
    );
    let out: Vec<u32> = download(&c).iter().map(|v| v.to_bits()).collect();
    for lane in 0..32u32 {
        for e in 0..8u32 {
            let half_of = |reg: u32| (out[(lane * 8 + reg) as usize] >> (16 * (e % 2))) as u16;
            let (r, col) = ldmatrix_x4_coord(lane, e);
            assert_eq!(half_of(e / 2), tile[(r * 16 + col) as usize], "ldmatrix.x4 lane {lane} element {e}");
            let (r, col) = ldmatrix_x4_trans_coord(lane, e);
            assert_eq!(half_of(4 + e / 2), tile[(r * 16 + col) as usize], "ldmatrix.x4.trans lane {lane} element {e}");
        }
    }
}

/// A[16x16] B[16x8] of small integers (exact in bf16 and f16, exact f32 sums).
fn mma_case<T: Element>(seed: u64) {
    let g = gpu();
    let mut rng = Rng::new(seed);
    let mut int = || (rng.next_u64() % 17) as f32 - 8.0;
    let a: Vec<f32> = (0..256).map(|_| int()).collect();
    let b: Vec<f32> = (0..128).map(|_| int()).collect();
    let bt: Vec<f32> = (0..128).map(|i| b[(i % 16) * 8 + i / 16]).collect();
    let to_t = |v: &[f32]| v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>();
    let (ad, bd, btd) = (upload(&g, to_t(&a)), upload(&g, to_t(&b)), upload(&g, to_t(&bt)));
    let d = poisoned::<f32>(&g, 256);
    let kernel = format!("selftest_mma_{}", T::DTYPE.suffix());
    let p = SelftestParams {
        a: ad.device_addr(),
        b: bd.device_addr(),
        c: btd.device_addr(),
        d: d.device_addr(),
        ..Default::default()
    };
    launch(&g, &kernel, 32, 1024, p);
    let out = download(&d);
    for r in 0..16 {
        for c in 0..8 {
            let want: f32 = (0..16).map(|k| a[r * 16 + k] * b[k * 8 + c]).sum();
            assert_eq!(out[r * 8 + c], want, "{kernel} A·B [{r},{c}]");
            assert_eq!(out[128 + r * 8 + c], want, "{kernel} A·Btᵀ [{r},{c}]");
        }
    }
    // Every lane wrote its four accumulator slots exactly once (the map is a bijection).
    let mut seen = [false; 128];
    for lane in 0..32 {
        for e in 0..4 {
            let (r, c) = frag_c_coord(lane, e);
            seen[(r * 8 + c) as usize] = true;
        }
    }
    assert!(seen.iter().all(|&s| s));
}

/// Hopper's wgmma (the sm_90a PTX only): S = A Bt^T with both operands in SRAM in the
/// core-matrix layout (K-major descriptors), and O = A V with A in registers (the
/// mma.sync A fragment per warp) and V MN-major (transposed), on small integers (exact).
#[test]
#[ignore = "needs an NVIDIA GPU"]
fn wgmma_m64_descriptors_and_fragments_match_cpu() {
    let g = gpu();
    if g.arch() != Arch::Sm90a {
        eprintln!("skipped: wgmma needs a Hopper GPU (this one runs the {} PTX)", g.arch().name());
        return;
    }
    const M: usize = 64;
    const K: usize = 16;
    let mut rng = Rng::new(7);
    let mut int = || (rng.next_u64() % 17) as f32 - 8.0;
    let a: Vec<f32> = (0..M * K).map(|_| int()).collect();
    let bt: Vec<f32> = (0..WGMMA_S_N * K).map(|_| int()).collect();
    let v: Vec<f32> = (0..K * WGMMA_O_N).map(|_| int()).collect();
    let to_bf16 = |x: &[f32]| x.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<bf16>>();
    let (ad, btd, vd) = (upload(&g, to_bf16(&a)), upload(&g, to_bf16(&bt)), upload(&g, to_bf16(&v)));
    let d = poisoned::<f32>(&g, M * (WGMMA_S_N + WGMMA_O_N));
    let p = SelftestParams {
        a: ad.device_addr(),
        b: btd.device_addr(),
        c: vd.device_addr(),
        d: d.device_addr(),
        ..Default::default()
    };
    launch(&g, "selftest_wgmma_bf16", WGMMA_TEST_THREADS, SELFTEST_SMEM_BUDGET, p);
    let out = download(&d);
    // Every mismatch is listed (a layout error shows as a pattern), then the test fails.
    let mut wrong = vec![];
    for r in 0..M {
        for c in 0..WGMMA_S_N {
            let want: f32 = (0..K).map(|k| a[r * K + k] * bt[c * K + k]).sum();
            if out[r * WGMMA_S_N + c] != want {
                wrong.push(format!("SS A·Btᵀ [{r},{c}]: {} != {want}", out[r * WGMMA_S_N + c]));
            }
        }
        for c in 0..WGMMA_O_N {
            let want: f32 = (0..K).map(|k| a[r * K + k] * v[k * WGMMA_O_N + c]).sum();
            let got = out[M * WGMMA_S_N + r * WGMMA_O_N + c];
            if got != want {
                wrong.push(format!("RS A·V [{r},{c}]: {got} != {want}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong of {}:\n{}",
        wrong.len(),
        M * (WGMMA_S_N + WGMMA_O_N),
        wrong[..wrong.len().min(40)].join("\n")
    );
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn mma_m16n8k16_bf16_matches_cpu() {
    for seed in 0..4 {
        mma_case::<bf16>(seed);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn mma_m16n8k16_f16_matches_cpu() {
    for seed in 10..14 {
        mma_case::<f16>(seed);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn cp_async_copies_in_two_groups_and_zero_fills() {
    let g = gpu();
    let total = CP_ASYNC_BYTES as usize;
    for &n in &[total, total - 1, 5000, 4097, 4096, 13, 1, 0] {
        let mut rng = Rng::new(n as u64);
        // Bytes 1..=255 so a zero in the output can only come from the zero-fill.
        let src: Vec<u8> = (0..total).map(|_| 1 + (rng.next_u64() % 255) as u8).collect();
        let words: Vec<f32> =
            src.chunks(4).map(|c| f32::from_bits(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))).collect();
        let a = upload(&g, words);
        let c = poisoned::<f32>(&g, total / 4);
        let p = SelftestParams { a: a.device_addr(), c: c.device_addr(), n: n as u32, ..Default::default() };
        launch(&g, "selftest_cp_async", 256, CP_ASYNC_BYTES, p);
        let out: Vec<u8> = download(&c).iter().flat_map(|v| v.to_bits().to_le_bytes()).collect();
        for i in 0..total {
            let want = if i < n { src[i] } else { 0 };
            assert_eq!(out[i], want, "n={n} byte {i}");
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn warp_shuffles_reductions_and_fast_math_match_cpu() {
    let g = gpu();
    let threads = WARP_TEST_THREADS as usize;
    let k = WARP_TEST_OUTPUTS as usize;
    for seed in 0..3u64 {
        let mut rng = Rng::new(seed);
        let x: Vec<f32> = (0..threads)
            .map(|_| {
                let v = rng.uniform(-6.0, 6.0);
                if v.abs() < 1e-3 { 0.5 } else { v }
            })
            .collect();
        let a = upload(&g, x.clone());
        let c = poisoned::<f32>(&g, threads * k);
        launch(
            &g,
            "selftest_warp",
            WARP_TEST_THREADS,
            256,
            SelftestParams { a: a.device_addr(), c: c.device_addr(), ..Default::default() },
        );
        let out = download(&c);
        let total: f64 = x.iter().map(|&v| v as f64).sum();
        let abs_total: f64 = x.iter().map(|&v| v.abs() as f64).sum();
        for t in 0..threads {
            let w = &x[t / 32 * 32..t / 32 * 32 + 32];
            let o = &out[t * k..t * k + k];
            let wsum: f64 = w.iter().map(|&v| v as f64).sum();
            let wabs: f64 = w.iter().map(|&v| v.abs() as f64).sum();
            let close = |got: f32, want: f64, scale: f64, what: &str| {
                assert!((got as f64 - want).abs() <= 1e-6 * scale.max(1.0), "thread {t} {what}: {got} vs {want}");
            };
            close(o[0], wsum, wabs, "warp_sum");
            assert_eq!(o[1], w.iter().copied().fold(f32::MIN, f32::max), "thread {t} warp_max");
            assert_eq!(o[2], x[t ^ 1], "thread {t} shfl_xor 1");
            assert_eq!(o[3], x[t / 32 * 32 + 3], "thread {t} shfl_idx 3");
            close(o[4], total, abs_total, "block_sum");
            let e = (x[t] as f64).exp2();
            close(o[5], e, e / 1e-6 * 4e-7, "exp2");
            let r = 1.0 / x[t] as f64;
            close(o[6], r, r.abs() / 1e-6 * 2e-7, "rcp");
            assert_eq!(o[7], bf16::from_f32(x[t]).to_f32(), "thread {t} bf16 round trip");
            assert_eq!(o[8], f16::from_f32(x[t]).to_f32(), "thread {t} f16 round trip");
            assert_eq!(o[9], 496.0, "thread {t} warp_sum of lane ids");
        }
    }
}
