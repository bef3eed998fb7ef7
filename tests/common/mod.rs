//! Helpers shared by the integration tests: a seeded generator and the norm check run by
//! both the CPU and the GPU suites.
#![allow(dead_code)]

use flashscan::reference::{self, rel_error};
use flashscan::{Device, Element, Tensor, norm};
use ndarray::{ArrayD, IxDyn};

/// SplitMix64: small, seeded, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn array<T: Element>(&mut self, shape: &[usize], lo: f32, hi: f32) -> ArrayD<T> {
        let n = shape.iter().product();
        let v = (0..n).map(|_| T::from_f32(self.uniform(lo, hi))).collect();
        ArrayD::from_shape_vec(IxDyn(shape), v).expect("shape matches")
    }
}

pub fn to_f64<T: Element>(a: &ArrayD<T>) -> ArrayD<f64> {
    a.mapv(|v| v.to_f64())
}

/// Relative tolerance of a normalised output rounded to `T`. For f32 the bound is the
/// f32 accumulation of up to 16384 terms (~sqrt(n) * 2^-24 each for sum and variance).
fn norm_tolerance<T: Element>() -> f64 {
    match T::DTYPE {
        flashscan::DType::F32 => 2e-5,
        flashscan::DType::BF16 => 6e-3,
        flashscan::DType::F16 => 8e-4,
    }
}

/// Runs LayerNorm (or RMSNorm) of a random `[rows, cols]` input on `device` and compares
/// y and the statistics with the f64 reference computed from the same rounded inputs.
pub fn check_norm<T: Element>(device: Device, rows: usize, cols: usize, rms: bool, with_bias: bool, seed: u64) {
    check_norm_offset::<T>(device, rows, cols, rms, with_bias, seed, None)
}

/// The same with the inputs centred on `offset` (random in [-3, 3) when None): a large
/// offset against a spread of 2 is where a one-pass E[x^2] - E[x]^2 variance loses
/// every digit; the kernels' two-pass-accurate variance must not.
pub fn check_norm_offset<T: Element>(
    device: Device,
    rows: usize,
    cols: usize,
    rms: bool,
    with_bias: bool,
    seed: u64,
    offset: Option<f32>,
) {
    let mut rng = Rng::new(seed);
    let offset = offset.unwrap_or_else(|| rng.uniform(-3.0, 3.0));
    let x: ArrayD<T> = rng.array(&[rows, cols], offset - 2.0, offset + 2.0);
    let w: ArrayD<T> = rng.array(&[cols], 0.5, 1.5);
    let b: ArrayD<T> = rng.array(&[cols], -1.0, 1.0);
    let eps = 1e-5f32;

    let xt = Tensor::from_array(x.clone(), device).expect("upload x");
    let wt = Tensor::from_array(w.clone(), device).expect("upload w");
    let bt = Tensor::from_array(b.clone(), device).expect("upload b");
    let out = if rms {
        norm::rms_norm(&xt, &wt, eps).expect("rms_norm")
    } else {
        norm::layer_norm(&xt, &wt, with_bias.then_some(&bt), eps).expect("layer_norm")
    };
    let y = to_f64(&out.y.to_array().expect("download y"));
    let rstd = to_f64(&out.rstd.to_array().expect("download rstd"));

    let (xf, wf, bf) = (to_f64(&x), to_f64(&w).into_raw_vec_and_offset().0, to_f64(&b).into_raw_vec_and_offset().0);
    let (ry, rmean, rrstd) = if rms {
        let (ry, rrstd) = reference::rms_norm(&xf, &wf, eps as f64);
        (ry, None, rrstd)
    } else {
        let (ry, rmean, rrstd) = reference::layer_norm(&xf, &wf, with_bias.then_some(&bf[..]), eps as f64);
        (ry, Some(rmean), rrstd)
    };
    let what = format!(
        "{} {:?} rows={rows} cols={cols} bias={with_bias} seed={seed}",
        if rms { "rms" } else { "layer" },
        T::DTYPE
    );
    assert_eq!(y.shape(), &[rows, cols], "{what}");
    assert_eq!(rstd.shape(), &[rows], "{what}");
    assert!(y.iter().all(|v| v.is_finite()), "{what}: non-finite y (unwritten output?)");
    let tol = norm_tolerance::<T>();
    let ey = rel_error(y.as_slice().expect("contiguous"), ry.as_slice().expect("contiguous"));
    assert!(ey <= tol, "{what}: y rel error {ey:e} > {tol:e}");
    let er = rel_error(rstd.as_slice().expect("contiguous"), &rrstd);
    assert!(er <= 2e-5, "{what}: rstd rel error {er:e}");
    match (out.mean, rmean) {
        (Some(m), Some(rm)) => {
            let m = m.to_array().expect("download mean");
            for (i, (a, b)) in m.iter().zip(&rm).enumerate() {
                assert!(((*a as f64) - b).abs() <= 1e-5 * (1.0 + b.abs()), "{what}: mean[{i}] {a} vs {b}");
            }
        }
        (None, None) => {}
        _ => panic!("{what}: mean returned for RMSNorm or missing for LayerNorm"),
    }
}

/// GPU 0 with every output buffer poisoned (NaN) before its kernel runs, so that a test
/// sees any element a kernel left unwritten. Panics without a GPU (the GPU tests are
/// ignored there).
pub fn poisoned_gpu() -> Device {
    let g = flashscan::runtime::Gpu::get(0).expect("these tests need a CUDA GPU");
    g.set_poison_outputs(true);
    Device::Cuda(0)
}

/// A CPU tensor of `shape` filled with zeros (the argument-validation tests' input).
pub fn zeros<E: Element>(shape: &[usize]) -> Tensor<E> {
    Tensor::Cpu(ArrayD::from_elem(IxDyn(shape), E::from_f32(0.0)))
}

/// A CPU tensor of `shape` filled with ones.
pub fn ones<E: Element>(shape: &[usize]) -> Tensor<E> {
    Tensor::Cpu(ArrayD::from_elem(IxDyn(shape), E::from_f32(1.0)))
}

/// The error of a call that must fail.
pub fn error_of<T>(r: flashscan::Result<T>) -> flashscan::Error {
    match r {
        Ok(_) => panic!("bad arguments were accepted"),
        Err(e) => e,
    }
}

/// Asserts a shape error naming `arg` whose message mentions `mentions`.
pub fn assert_shape_error(e: flashscan::Error, arg: &str, mentions: &str) {
    match &e {
        flashscan::Error::Shape { arg: a, .. } if *a == arg => {}
        _ => panic!("expected a shape error for `{arg}`, got {e:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&format!("`{arg}`")) && msg.contains(mentions), "message: {msg}");
}
