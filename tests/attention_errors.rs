//! `attention::forward` validates its arguments first: every bad argument gives the
//! matching typed error naming the argument (and never a panic).

use flashscan::attention::{AttentionOptions, forward};
use flashscan::{DType, Device, Element, Error, Tensor, bf16, f16};
mod common;

use common::{assert_shape_error, zeros};
use ndarray::{ArrayD, IxDyn};

/// The error of a call that must fail.
fn error<T: Element>(q: &[usize], k: &[usize], v: &[usize], opts: AttentionOptions) -> Error {
    match forward(&zeros::<T>(q), &zeros::<T>(k), &zeros::<T>(v), &opts) {
        Ok(_) => panic!("q {q:?} k {k:?} v {v:?} {opts:?} was accepted"),
        Err(e) => e,
    }
}

fn assert_value_error(e: Error, arg: &str) {
    match &e {
        Error::Value { arg: a, expected, .. } if *a == arg => assert!(expected.contains("> 0"), "{e}"),
        _ => panic!("expected a value error for `{arg}`, got {e:?}"),
    }
    assert!(e.to_string().contains(&format!("`{arg}`")), "{e}");
}

const Q: [usize; 4] = [2, 10, 4, 64];
const KV: [usize; 4] = [2, 12, 2, 64];
const NONE: AttentionOptions =
    AttentionOptions { causal: false, window_left: None, window_right: None, softcap: None, softmax_scale: None };

#[test]
fn valid_arguments_pass() {
    assert!(forward(&zeros::<bf16>(&Q), &zeros::<bf16>(&KV), &zeros::<bf16>(&KV), &NONE).is_ok());
    assert!(forward(&zeros::<f16>(&Q), &zeros::<f16>(&KV), &zeros::<f16>(&KV), &NONE).is_ok());
    // The extremes of head_dim.
    for d in [8, 256] {
        assert!(
            forward(&zeros::<bf16>(&[1, 3, 1, d]), &zeros::<bf16>(&[1, 5, 1, d]), &zeros::<bf16>(&[1, 5, 1, d]), &NONE)
                .is_ok()
        );
    }
}

#[test]
fn f32_inputs_are_rejected() {
    match error::<f32>(&Q, &KV, &KV, NONE) {
        Error::DType { arg: "q", got: DType::F32, expected } => {
            assert!(expected.contains("bf16") && expected.contains("f16"))
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn wrong_rank() {
    assert_shape_error(error::<bf16>(&[2, 10, 64], &KV, &KV, NONE), "q", "4 dimensions");
    assert_shape_error(error::<bf16>(&[1, 2, 10, 4, 64], &KV, &KV, NONE), "q", "4 dimensions");
    assert_shape_error(error::<bf16>(&Q, &[2, 12, 64], &[2, 12, 64], NONE), "k", "4 dimensions");
    assert_shape_error(error::<bf16>(&Q, &KV, &[2, 12, 2, 64, 1], NONE), "v", "[2, 12, 2, 64]");
}

#[test]
fn zero_dimensions() {
    for axis in 0..4 {
        let mut q = Q;
        q[axis] = 0;
        assert_shape_error(error::<bf16>(&q, &KV, &KV, NONE), "q", ">= 1");
        let mut kv = KV;
        kv[axis] = 0;
        assert_shape_error(error::<bf16>(&Q, &kv, &kv, NONE), "k", ">= 1");
    }
    // An empty v next to a good k.
    assert_shape_error(error::<bf16>(&Q, &KV, &[2, 0, 2, 64], NONE), "v", "");
}

#[test]
fn head_dim_limits() {
    for d in [4, 12, 60, 100, 264, 512] {
        let e = error::<bf16>(&[1, 3, 1, d], &[1, 5, 1, d], &[1, 5, 1, d], NONE);
        assert_shape_error(e, "q", "multiple of 8 and at most 256");
    }
}

#[test]
fn k_must_match_q() {
    // Head dims differ.
    assert_shape_error(error::<bf16>(&Q, &[2, 12, 2, 32], &[2, 12, 2, 32], NONE), "k", "head_dim");
    // Batches differ.
    assert_shape_error(error::<bf16>(&Q, &[3, 12, 2, 64], &[3, 12, 2, 64], NONE), "k", "batch");
}

#[test]
fn heads_q_must_be_a_multiple_of_heads_kv() {
    assert_shape_error(error::<bf16>(&Q, &[2, 12, 3, 64], &[2, 12, 3, 64], NONE), "k", "divides");
    assert_shape_error(error::<f16>(&[1, 5, 3, 64], &[1, 5, 2, 64], &[1, 5, 2, 64], NONE), "k", "heads_q = 3");
}

#[test]
fn v_must_match_k() {
    assert_shape_error(error::<bf16>(&Q, &KV, &[2, 11, 2, 64], NONE), "v", "[2, 12, 2, 64]");
    assert_shape_error(error::<bf16>(&Q, &KV, &[2, 12, 1, 64], NONE), "v", "[2, 12, 2, 64]");
}

#[test]
fn bad_softmax_scale() {
    for s in [0.0, -0.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let opts = AttentionOptions { softmax_scale: Some(s), ..NONE };
        assert_value_error(error::<bf16>(&Q, &KV, &KV, opts), "softmax_scale");
    }
}

#[test]
fn bad_softcap() {
    for c in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let opts = AttentionOptions { softcap: Some(c), ..NONE };
        assert_value_error(error::<bf16>(&Q, &KV, &KV, opts), "softcap");
    }
}

#[test]
fn shapes_are_checked_before_options() {
    // A call with several problems reports the first in argument order.
    let opts = AttentionOptions { softcap: Some(-1.0), ..NONE };
    assert_shape_error(error::<bf16>(&[2, 10, 4, 12], &KV, &KV, opts), "q", "multiple of 8");
}

#[test]
fn cuda_tensor_without_gpu_is_no_gpu_error() {
    // On a machine without a usable GPU, placing a tensor on Cuda(0) is NoGpu (never a
    // panic); on a GPU machine it succeeds. Either way the test checks something real.
    let a = ArrayD::from_elem(IxDyn(&[2, 3]), bf16::from_f32(1.0));
    let placed = Tensor::from_array(a, Device::Cuda(0));
    match Device::cuda_if_available() {
        (Device::Cuda(0), None) => {
            let t = placed.expect("a GPU is present, so the copy to it works");
            assert_eq!(t.device(), Device::Cuda(0));
            assert_eq!(t.to_array().expect("copy back").shape(), &[2, 3]);
        }
        (_, Some(reason)) => match (placed, reason) {
            (Err(Error::NoGpu { reason }), Error::NoGpu { .. }) => assert!(!reason.is_empty()),
            // A GPU too old for the kernels: the same error as the runtime reports.
            (Err(e), reason) => assert_eq!(e, reason),
            (Ok(_), reason) => panic!("placing a tensor on cuda:0 succeeded, but the runtime said {reason}"),
        },
        other => panic!("unexpected {other:?}"),
    }
}
