//! `attention::backward` validates its arguments first: q, k, v and the options as the
//! forward does, then o, lse and dout; every bad argument gives the matching typed error
//! naming the argument (and never a panic), on the CPU and on the GPU.

use flashscan::attention::{AttentionOptions, BackwardOptions, backward, forward};
use flashscan::{DType, Device, Element, Error, Tensor, bf16, f16};
mod common;

use common::{assert_shape_error, zeros};
use ndarray::{ArrayD, IxDyn};

const Q: [usize; 4] = [2, 10, 4, 64];
const KV: [usize; 4] = [2, 12, 2, 64];
const LSE: [usize; 3] = [2, 4, 10];
const BWD: BackwardOptions = BackwardOptions { deterministic: false };

/// Shapes of q, k, v, o, lse, dout.
#[derive(Clone, Copy)]
struct Shapes<'a> {
    q: &'a [usize],
    k: &'a [usize],
    v: &'a [usize],
    o: &'a [usize],
    lse: &'a [usize],
    dout: &'a [usize],
}

const GOOD: Shapes<'static> = Shapes { q: &Q, k: &KV, v: &KV, o: &Q, lse: &LSE, dout: &Q };

fn call<T: Element>(s: Shapes, opts: AttentionOptions) -> flashscan::Result<()> {
    backward(
        &zeros::<T>(s.q),
        &zeros::<T>(s.k),
        &zeros::<T>(s.v),
        &zeros::<T>(s.o),
        &zeros::<f32>(s.lse),
        &zeros::<T>(s.dout),
        &opts,
        &BWD,
    )
    .map(|_| ())
}

/// The error of a call that must fail.
fn error<T: Element>(s: Shapes, opts: AttentionOptions) -> Error {
    match call::<T>(s, opts) {
        Ok(_) => panic!(
            "q {:?} k {:?} v {:?} o {:?} lse {:?} dout {:?} {opts:?} was accepted",
            s.q, s.k, s.v, s.o, s.lse, s.dout
        ),
        Err(e) => e,
    }
}

#[test]
fn valid_arguments_pass() {
    call::<bf16>(GOOD, AttentionOptions::default()).unwrap();
    call::<f16>(GOOD, AttentionOptions { causal: true, softcap: Some(3.0), ..Default::default() }).unwrap();
    let det = BackwardOptions { deterministic: true };
    assert_ne!(det, BackwardOptions::default());
    // The forward's outputs are exactly what the backward takes.
    let (q, k, v) = (zeros::<bf16>(&Q), zeros::<bf16>(&KV), zeros::<bf16>(&KV));
    let out = forward(&q, &k, &v, &AttentionOptions::default()).unwrap();
    let g = backward(&q, &k, &v, &out.o, &out.lse, &zeros::<bf16>(&Q), &AttentionOptions::default(), &det).unwrap();
    assert_eq!((g.dq.shape(), g.dk.shape(), g.dv.shape()), (&Q[..], &KV[..], &KV[..]));
    assert_eq!((g.dq.device(), g.dk.device(), g.dv.device()), (Device::Cpu, Device::Cpu, Device::Cpu));
}

#[test]
fn q_k_v_and_options_are_checked_as_in_the_forward() {
    match error::<f32>(GOOD, AttentionOptions::default()) {
        Error::DType { arg: "q", got: DType::F32, expected } => assert!(expected.contains("bf16")),
        e => panic!("{e:?}"),
    }
    let odd = [2, 10, 4, 12];
    assert_shape_error(
        error::<bf16>(Shapes { q: &odd, o: &odd, dout: &odd, ..GOOD }, Default::default()),
        "q",
        "multiple of 8",
    );
    let k3 = [2, 12, 3, 64];
    assert_shape_error(error::<bf16>(Shapes { k: &k3, v: &k3, ..GOOD }, Default::default()), "k", "divides");
    assert_shape_error(error::<bf16>(Shapes { v: &[2, 11, 2, 64], ..GOOD }, Default::default()), "v", "[2, 12, 2, 64]");
    let bad_cap = AttentionOptions { softcap: Some(0.0), ..Default::default() };
    match error::<bf16>(GOOD, bad_cap) {
        Error::Value { arg: "softcap", .. } => {}
        e => panic!("{e:?}"),
    }
    let bad_scale = AttentionOptions { softmax_scale: Some(f32::NAN), ..Default::default() };
    match error::<f16>(GOOD, bad_scale) {
        Error::Value { arg: "softmax_scale", .. } => {}
        e => panic!("{e:?}"),
    }
}

#[test]
fn o_must_have_q_shape() {
    for o in [&[2, 10, 4][..], &[2, 10, 4, 32], &[2, 12, 4, 64], &[2, 10, 2, 64], &[1, 10, 4, 64], &[2, 10, 4, 64, 1]] {
        assert_shape_error(error::<bf16>(Shapes { o, ..GOOD }, Default::default()), "o", "[2, 10, 4, 64] (q's shape)");
    }
}

#[test]
fn lse_must_be_batch_heads_seqlen_q() {
    // [batch, seqlen_q, heads_q] (the q layout's order), a missing or an extra dimension.
    for lse in [&[2, 10, 4][..], &[2, 4, 12], &[2, 2, 10], &[2, 4], &[2, 4, 10, 1], &[1, 4, 10]] {
        assert_shape_error(
            error::<bf16>(Shapes { lse, ..GOOD }, Default::default()),
            "lse",
            "[2, 4, 10] ([batch, heads_q, seqlen_q] of q)",
        );
    }
}

#[test]
fn dout_must_have_q_shape() {
    for dout in [&[2, 10, 4, 32][..], &[2, 12, 2, 64], &[2, 10, 4], &[2, 11, 4, 64]] {
        assert_shape_error(
            error::<f16>(Shapes { dout, ..GOOD }, Default::default()),
            "dout",
            "[2, 10, 4, 64] (q's shape)",
        );
    }
}

#[test]
fn arguments_are_checked_in_order() {
    // q, k, v and the options first, then o, lse, dout.
    let bad_cap = AttentionOptions { softcap: Some(-1.0), ..Default::default() };
    let all_bad = Shapes { o: &[1, 1, 1, 8], lse: &[1], dout: &[3], ..GOOD };
    assert!(matches!(error::<bf16>(all_bad, bad_cap), Error::Value { arg: "softcap", .. }));
    assert_shape_error(error::<bf16>(Shapes { v: &[1, 1, 1, 64], ..all_bad }, Default::default()), "v", "");
    assert_shape_error(error::<bf16>(all_bad, Default::default()), "o", "");
    assert_shape_error(error::<bf16>(Shapes { o: &Q, ..all_bad }, Default::default()), "lse", "");
    assert_shape_error(error::<bf16>(Shapes { o: &Q, lse: &LSE, ..all_bad }, Default::default()), "dout", "");
}

/// A tensor of `shape` (zeros) on `device`.
fn on<T: Element>(shape: &[usize], device: Device) -> Tensor<T> {
    Tensor::from_array(ArrayD::from_elem(IxDyn(shape), T::from_f32(0.0)), device).expect("upload")
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_backward_validates_before_launching() {
    let gpu = Device::Cuda(0);
    let (q, k, v) = (on::<bf16>(&Q, gpu), on::<bf16>(&KV, gpu), on::<bf16>(&KV, gpu));
    let out = forward(&q, &k, &v, &AttentionOptions::default()).expect("the GPU forward");
    // Zero inputs and a zero dout: every gradient is exactly 0, in both modes.
    for det in [false, true] {
        let bwd = BackwardOptions { deterministic: det };
        let g = backward(&q, &k, &v, &out.o, &out.lse, &on::<bf16>(&Q, gpu), &AttentionOptions::default(), &bwd)
            .expect("the GPU backward");
        for (name, t) in [("dq", &g.dq), ("dk", &g.dk), ("dv", &g.dv)] {
            let a = t.to_array().expect("download");
            assert!(a.iter().all(|x| x.to_f32() == 0.0), "{name} is not 0 (deterministic = {det})");
        }
    }
    // Arguments are validated first on the GPU too.
    let bad = backward(&q, &k, &v, &out.o, &out.lse, &on::<bf16>(&KV, gpu), &AttentionOptions::default(), &BWD);
    assert_shape_error(bad.err().expect("a bad dout is an error"), "dout", "q's shape");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn saved_tensors_on_another_device() {
    // q, k, v on the CPU with o, lse or dout on the GPU (and the other way round): a
    // device mismatch naming the argument.
    let (cpu, gpu) = (Device::Cpu, Device::Cuda(0));
    let opts = AttentionOptions::default();
    for (device, other) in [(cpu, gpu), (gpu, cpu)] {
        let (q, k, v) = (on::<f16>(&Q, device), on::<f16>(&KV, device), on::<f16>(&KV, device));
        let (o, lse, dout) = (on::<f16>(&Q, device), on::<f32>(&LSE, device), on::<f16>(&Q, device));
        let (o2, lse2, dout2) = (on::<f16>(&Q, other), on::<f32>(&LSE, other), on::<f16>(&Q, other));
        for (arg, result) in [
            ("o", backward(&q, &k, &v, &o2, &lse, &dout, &opts, &BWD)),
            ("lse", backward(&q, &k, &v, &o, &lse2, &dout, &opts, &BWD)),
            ("dout", backward(&q, &k, &v, &o, &lse, &dout2, &opts, &BWD)),
        ] {
            match result {
                Err(Error::DeviceMismatch { arg: a, got, expected }) => {
                    assert_eq!(a, arg);
                    assert_eq!((got, expected), (other.to_string(), device.to_string()));
                }
                Ok(_) => panic!("{arg} on {other} with q on {device} was accepted"),
                Err(e) => panic!("{arg}: {e:?}"),
            }
        }
    }
}
