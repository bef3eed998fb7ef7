//! Bad input returns typed errors that name the argument (no panics, no GPU needed).

use flashscan::{Device, Error, Tensor, bf16, norm};
mod common;

use common::{error_of as expect_err, ones};
use ndarray::{ArrayD, IxDyn};

#[test]
fn norm_weight_of_wrong_length() {
    let e = expect_err(norm::layer_norm(&ones::<f32>(&[4, 16]), &ones::<f32>(&[15]), None, 1e-5));
    assert!(matches!(&e, Error::Shape { arg: "weight", got, .. } if got == &vec![15]), "{e:?}");
    assert!(e.to_string().contains("[16]"), "message names the expected shape: {e}");
}

#[test]
fn norm_bias_of_wrong_length() {
    let e =
        expect_err(norm::layer_norm(&ones::<f32>(&[4, 16]), &ones::<f32>(&[16]), Some(&ones::<f32>(&[16, 1])), 1e-5));
    assert!(matches!(e, Error::Shape { arg: "bias", .. }), "{e:?}");
}

#[test]
fn norm_zero_sized_dimensions() {
    for shape in [&[0, 16][..], &[4, 0], &[]] {
        let cols = shape.last().copied().unwrap_or(1);
        let e = expect_err(norm::rms_norm(&ones::<f32>(shape), &ones::<f32>(&[cols]), 1e-5));
        assert!(matches!(e, Error::Shape { arg: "x", .. }), "{shape:?}: {e:?}");
    }
}

#[test]
fn norm_row_too_long() {
    let e = expect_err(norm::rms_norm(&ones::<f32>(&[1, 16385]), &ones::<f32>(&[16385]), 1e-5));
    assert!(matches!(e, Error::Shape { arg: "x", .. }), "{e:?}");
}

#[test]
fn norm_weight_of_other_dtype() {
    let e = expect_err(norm::layer_norm(&ones::<bf16>(&[2, 8]), &ones::<f32>(&[8]), None, 1e-5));
    assert!(matches!(e, Error::DType { arg: "weight", got: flashscan::DType::F32, .. }), "{e:?}");
}

#[test]
fn norm_bad_eps() {
    for eps in [f32::NAN, -1.0, f32::INFINITY] {
        let e = expect_err(norm::rms_norm(&ones::<f32>(&[2, 8]), &ones::<f32>(&[8]), eps));
        assert!(matches!(e, Error::Value { arg: "eps", .. }), "{eps}: {e:?}");
    }
}

#[test]
fn missing_device_is_a_typed_error() {
    // No machine here has 64 GPUs: with or without a driver this must be NoGpu.
    let x = ArrayD::<f32>::zeros(IxDyn(&[2, 2]));
    let e = expect_err(Tensor::from_array(x, Device::Cuda(63)));
    assert!(matches!(e, Error::NoGpu { .. }), "{e:?}");
}

#[test]
fn cuda_if_available_explains_a_fallback() {
    let (device, why) = Device::cuda_if_available();
    match device {
        Device::Cpu => assert!(matches!(why, Some(Error::NoGpu { .. } | Error::UnsupportedGpu { .. })), "{why:?}"),
        Device::Cuda(0) => assert!(why.is_none()),
        other => panic!("unexpected device {other}"),
    }
}
