//! The GPU causal conv1d (forward and backward) against the f64 reference: the property
//! checks of `cpu_conv.rs` on `Device::Cuda(0)` with outputs poisoned (NaN) before every
//! launch, longer rows (several steps and segments per row, both staging paths: rows that
//! are and are not whole 16-byte vectors), every width 1..=8 with every option, seqlen 1
//! and seqlen < width, state passing (two halves equal one run, bitwise), a bitwise
//! repeatable backward, and a grid larger than one launch holds. Run with
//! `cargo test --release --test gpu_conv -- --ignored` on a machine with an NVIDIA GPU.

mod conv_common;
mod scan_common;

use conv_common::{ConvCase, cases_with, check_on, host, tol};
use flashscan::mamba::{Conv1dOptions, causal_conv1d, causal_conv1d_backward};
use flashscan::{DType, Device, Element, Tensor, bf16, f16, runtime::Gpu};
use ndarray::{ArrayD, Axis, Slice};
use proptest::prelude::*;

fn gpu() -> Device {
    let g = Gpu::get(0).expect("these tests need a CUDA GPU");
    g.set_poison_outputs(true);
    Device::Cuda(0)
}

/// The CPU tolerances, f32 doubled: the GPU sums with FMAs (one rounding per tap instead
/// of two), its SiLU uses ex2.approx (2^-22) and rcp.approx, and its dweight / dbias add
/// per-lane partials, then the lanes, then the warps' records (a different order from the
/// CPU's sequential sum, same error bound).
fn gpu_tol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => 4e-6,
        _ => tol::<T>(),
    }
}

fn check<T: Element>(case: &ConvCase) -> Result<(), String> {
    check_on::<T>(case, gpu(), gpu_tol::<T>())
}

fn all_dtypes(case: &ConvCase) {
    for r in [check::<f32>(case), check::<bf16>(case), check::<f16>(case)] {
        if let Err(e) = r {
            panic!("{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_conv_matches_reference_f32(case in cases_with(1..=3, 1..=40, 9000)) {
        check::<f32>(&case).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_conv_matches_reference_bf16(case in cases_with(1..=3, 1..=40, 9000)) {
        check::<bf16>(&case).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_conv_matches_reference_f16(case in cases_with(1..=3, 1..=40, 9000)) {
        check::<f16>(&case).map_err(TestCaseError::fail)?;
    }
}

fn case(batch: usize, dim: usize, seqlen: usize, width: usize, all: bool, seed: u64) -> ConvCase {
    ConvCase { batch, dim, seqlen, width, bias: all, init: all, silu: all, dfinal: all, seed }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_conv_every_width_and_edge_length() {
    // Lengths around the vector (8 halves, 4 floats), the step (1024 / 512 elements in the
    // forward, 512 / 256 in the backward) and the segment (4 steps); seqlen 1 and seqlen <
    // width; odd lengths take the element path.
    let lengths = [1, 2, 3, 5, 7, 8, 9, 16, 17, 255, 256, 257, 1023, 1024, 1025, 2048, 4095, 4096, 4097, 8193];
    for width in 1..=8 {
        for (i, &l) in lengths.iter().enumerate() {
            for all in [false, true] {
                all_dtypes(&case(2, 3, l, width, all, (width * 100 + i) as u64));
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_conv_options_one_at_a_time() {
    for width in [2, 4, 8] {
        for (o, seed) in (0..4).zip(50..) {
            let mut c = case(2, 5, 1500, width, false, seed);
            match o {
                0 => c.bias = true,
                1 => c.init = true,
                2 => c.silu = true,
                _ => c.dfinal = true,
            }
            all_dtypes(&c);
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_conv_long_rows_many_segments() {
    // 20 forward segments, 40 backward ones per row; a row of 2^20 steps.
    all_dtypes(&case(2, 3, 81_920 + 3, 4, true, 7));
    check::<bf16>(&case(1, 1, 1 << 20, 4, true, 8)).unwrap();
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_conv_grid_stride() {
    // 4.2M rows of one step: more warp tasks than the grid's 2^20 CTAs x 4 warps.
    check::<bf16>(&case(2, 2_100_000, 1, 4, true, 9)).unwrap();
}

fn up<E: Element>(a: &ArrayD<E>) -> Tensor<E> {
    Tensor::from_array(a.clone(), gpu()).expect("upload")
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_conv_two_halves_equal_one_run() {
    // The second call starts from the first's final state: every output reads the same
    // inputs through the same FMAs, so y and the final state are bitwise equal.
    for (width, l, cut) in [(4, 3000, 1234), (8, 100, 3), (2, 4097, 4096), (4, 10, 1)] {
        let c = case(2, 6, l, width, true, width as u64 + l as u64);
        let x = c.inputs::<bf16>();
        let opts = c.opts();
        let (w, bias) = (up(&x.w), x.bias.as_ref().map(up));
        let run = |xs: ArrayD<bf16>, init: Option<&Tensor<bf16>>| {
            causal_conv1d(&up(&xs), &w, bias.as_ref(), init, &opts).expect("conv")
        };
        let init = x.init.as_ref().map(up);
        let whole = run(x.x.clone(), init.as_ref());
        let first = run(x.x.slice_axis(Axis(2), Slice::from(..cut)).to_owned(), init.as_ref());
        let second = run(x.x.slice_axis(Axis(2), Slice::from(cut..)).to_owned(), Some(&first.final_state));
        let y = ndarray::concatenate(Axis(2), &[host(&first.y).view(), host(&second.y).view()]).unwrap();
        assert_eq!(y, host(&whole.y), "width {width} L {l} cut {cut}");
        assert_eq!(host(&second.final_state), host(&whole.final_state), "width {width} L {l} cut {cut}");
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_conv_backward_is_deterministic() {
    let c = case(4, 7, 5000, 4, true, 11);
    let x = c.inputs::<f32>();
    let (xt, w, bias, init, dy, df) =
        (up(&x.x), up(&x.w), x.bias.as_ref().map(up), x.init.as_ref().map(up), up(&x.dy), x.dfinal.as_ref().map(up));
    let run = || {
        causal_conv1d_backward(&xt, &w, bias.as_ref(), init.as_ref(), &dy, df.as_ref(), &Conv1dOptions { silu: true })
            .expect("backward")
    };
    let (a, b) = (run(), run());
    assert_eq!(host(&a.dweight), host(&b.dweight));
    assert_eq!(host(a.dbias.as_ref().unwrap()), host(b.dbias.as_ref().unwrap()));
    assert_eq!(host(&a.dx), host(&b.dx));
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_conv_rejects_mixed_devices() {
    let d = gpu();
    let x = Tensor::from_array(ArrayD::<f32>::zeros(ndarray::IxDyn(&[1, 2, 5])), d).expect("upload");
    let w = Tensor::Cpu(ArrayD::<f32>::ones(ndarray::IxDyn(&[2, 4])));
    match causal_conv1d(&x, &w, None, None, &Conv1dOptions::default()) {
        Err(flashscan::Error::DeviceMismatch { arg: "weight", .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("mixed devices accepted"),
    }
}
