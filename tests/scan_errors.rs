//! `mamba::selective_scan` and `selective_scan_backward` validate their arguments first:
//! every bad argument gives the matching typed error naming the argument (never a panic).

use flashscan::mamba::{SCAN_CHECKPOINT, ScanInputs, ScanOptions, ScanOutput, selective_scan, selective_scan_backward};
use flashscan::{Device, Error, Result, Tensor, bf16};
mod common;

use common::{assert_shape_error, error_of as error, zeros};
use ndarray::{ArrayD, IxDyn};

const BATCH: usize = 2;
const DIM: usize = 6;
const GROUPS: usize = 3;
const STATE: usize = 4;
const SEQ: usize = 600; // several checkpoint segments
const N_CKPT: usize = SEQ.div_ceil(SCAN_CHECKPOINT as usize);

/// The shapes of one call; each test breaks one of them.
#[derive(Clone)]
struct Shapes {
    u: Vec<usize>,
    delta: Vec<usize>,
    a: Vec<usize>,
    b: Vec<usize>,
    c: Vec<usize>,
    d: Option<Vec<usize>>,
    z: Option<Vec<usize>>,
    bias: Option<Vec<usize>>,
    init: Option<Vec<usize>>,
}

fn good() -> Shapes {
    Shapes {
        u: vec![BATCH, DIM, SEQ],
        delta: vec![BATCH, DIM, SEQ],
        a: vec![DIM, STATE],
        b: vec![BATCH, GROUPS, STATE, SEQ],
        c: vec![BATCH, GROUPS, STATE, SEQ],
        d: Some(vec![DIM]),
        z: Some(vec![BATCH, DIM, SEQ]),
        bias: Some(vec![DIM]),
        init: Some(vec![BATCH, DIM, STATE]),
    }
}

/// Tensors of the given shapes (bf16 inputs, f32 parameters).
struct Owned {
    u: Tensor<bf16>,
    delta: Tensor<bf16>,
    a: Tensor<f32>,
    b: Tensor<bf16>,
    c: Tensor<bf16>,
    d: Option<Tensor<f32>>,
    z: Option<Tensor<bf16>>,
    bias: Option<Tensor<f32>>,
    init: Option<Tensor<f32>>,
}

impl Owned {
    fn new(s: &Shapes) -> Owned {
        Owned {
            u: zeros(&s.u),
            delta: zeros(&s.delta),
            a: zeros(&s.a),
            b: zeros(&s.b),
            c: zeros(&s.c),
            d: s.d.as_deref().map(zeros),
            z: s.z.as_deref().map(zeros),
            bias: s.bias.as_deref().map(zeros),
            init: s.init.as_deref().map(zeros),
        }
    }

    fn inputs(&self) -> ScanInputs<'_, bf16> {
        ScanInputs {
            u: &self.u,
            delta: &self.delta,
            a: &self.a,
            b: &self.b,
            c: &self.c,
            d: self.d.as_ref(),
            z: self.z.as_ref(),
            delta_bias: self.bias.as_ref(),
            initial_state: self.init.as_ref(),
        }
    }

    fn forward(&self) -> Result<ScanOutput<bf16>> {
        selective_scan(&self.inputs(), &ScanOptions { delta_softplus: true, ..Default::default() })
    }
}

/// The forward's error for `good()` changed by `f`.
fn forward_error(f: impl FnOnce(&mut Shapes)) -> Error {
    let mut s = good();
    f(&mut s);
    error(Owned::new(&s).forward())
}

#[test]
fn valid_arguments_pass() {
    let all = Owned::new(&good());
    let out = all.forward().expect("valid");
    assert_eq!(out.out.shape(), &[BATCH, DIM, SEQ]);
    assert_eq!(out.final_state.shape(), &[BATCH, DIM, STATE]);
    assert_eq!(out.checkpoints.shape(), &[BATCH, DIM, N_CKPT, STATE]);
    let opts = ScanOptions { delta_softplus: true, ..Default::default() };
    let dout = zeros::<bf16>(&[BATCH, DIM, SEQ]);
    assert!(selective_scan_backward(&all.inputs(), &opts, &out, &dout, None, false).is_ok());
    // No optional inputs; the extremes d_state 1 and 256, one group, one step.
    let bare = Shapes { d: None, z: None, bias: None, init: None, ..good() };
    assert!(Owned::new(&bare).forward().is_ok());
    for n in [1, 256] {
        let s = Shapes {
            u: vec![1, 2, 1],
            delta: vec![1, 2, 1],
            a: vec![2, n],
            b: vec![1, 1, n, 1],
            c: vec![1, 1, n, 1],
            d: Some(vec![2]),
            z: None,
            bias: None,
            init: Some(vec![1, 2, n]),
        };
        assert!(Owned::new(&s).forward().is_ok(), "d_state {n}");
    }
}

#[test]
fn wrong_rank() {
    assert_shape_error(forward_error(|s| s.u = vec![BATCH, DIM]), "u", "3 dimensions");
    assert_shape_error(forward_error(|s| s.u = vec![1, BATCH, DIM, SEQ]), "u", "3 dimensions");
    assert_shape_error(forward_error(|s| s.a = vec![DIM]), "a", "2 dimensions");
    assert_shape_error(forward_error(|s| s.a = vec![1, DIM, STATE]), "a", "2 dimensions");
    assert_shape_error(forward_error(|s| s.b = vec![BATCH, STATE, SEQ]), "b", "4 dimensions");
    assert_shape_error(forward_error(|s| s.d = Some(vec![DIM, 1])), "d", &format!("[{DIM}]"));
}

#[test]
fn zero_dimensions() {
    for axis in 0..3 {
        assert_shape_error(forward_error(|s| s.u[axis] = 0), "u", ">= 1");
    }
    // d_state 0 is reported on a, groups 0 on b.
    assert_shape_error(forward_error(|s| s.a[1] = 0), "a", ">= 1");
    assert_shape_error(forward_error(|s| s.b[1] = 0), "b", ">= 1");
}

#[test]
fn each_argument_must_match_u() {
    let seq = format!("[{BATCH}, {DIM}, {SEQ}]");
    assert_shape_error(forward_error(|s| s.delta = vec![BATCH, DIM, SEQ - 1]), "delta", &seq);
    assert_shape_error(forward_error(|s| s.delta = vec![BATCH, DIM + 1, SEQ]), "delta", &seq);
    assert_shape_error(forward_error(|s| s.a = vec![DIM + 1, STATE]), "a", "u's dim");
    assert_shape_error(forward_error(|s| s.b[0] = 1), "b", "u's batch");
    assert_shape_error(forward_error(|s| s.b[3] = SEQ + 1), "b", "seqlen");
    assert_shape_error(forward_error(|s| s.b[2] = STATE + 1), "b", "d_state");
    let bc = format!("[{BATCH}, {GROUPS}, {STATE}, {SEQ}]");
    assert_shape_error(forward_error(|s| s.c[1] = 1), "c", &bc);
    assert_shape_error(forward_error(|s| s.c[3] = 1), "c", &bc);
    assert_shape_error(forward_error(|s| s.d = Some(vec![DIM - 1])), "d", &format!("[{DIM}]"));
    assert_shape_error(forward_error(|s| s.z = Some(vec![BATCH, DIM, 1])), "z", &seq);
    assert_shape_error(forward_error(|s| s.bias = Some(vec![DIM + 1])), "delta_bias", &format!("[{DIM}]"));
    let state = format!("[{BATCH}, {DIM}, {STATE}]");
    assert_shape_error(forward_error(|s| s.init = Some(vec![BATCH, DIM, STATE + 1])), "initial_state", &state);
    assert_shape_error(forward_error(|s| s.init = Some(vec![DIM, STATE])), "initial_state", &state);
}

#[test]
fn d_state_over_256_is_an_error_on_a() {
    let e = forward_error(|s| {
        s.a[1] = 257;
        s.b[2] = 257;
        s.c[2] = 257;
        s.init = Some(vec![BATCH, DIM, 257]);
    });
    assert_shape_error(e, "a", "at most 256");
}

#[test]
fn groups_must_divide_dim() {
    for groups in [4, 5, 7, 12] {
        let e = forward_error(|s| {
            s.b[1] = groups;
            s.c[1] = groups;
        });
        assert_shape_error(e, "b", &format!("dividing dim = {DIM}"));
    }
    // A group per channel is fine.
    let mut s = good();
    (s.b[1], s.c[1]) = (DIM, DIM);
    assert!(Owned::new(&s).forward().is_ok());
}

#[test]
fn the_first_bad_argument_is_reported() {
    let e = forward_error(|s| {
        s.delta[2] = 1;
        s.b[1] = 4;
        s.init = Some(vec![1]);
    });
    assert_shape_error(e, "delta", "");
}

#[test]
fn backward_checks_its_own_arguments() {
    let x = Owned::new(&good());
    let out = x.forward().expect("valid");
    let opts = ScanOptions { delta_softplus: true, ..Default::default() };
    let dout = zeros::<bf16>(&[BATCH, DIM, SEQ]);
    let bad_dout = zeros::<bf16>(&[BATCH, DIM, SEQ + 1]);
    let e = error(selective_scan_backward(&x.inputs(), &opts, &out, &bad_dout, None, false));
    assert_shape_error(e, "dout", &format!("[{BATCH}, {DIM}, {SEQ}]"));
    let bad_final = zeros::<f32>(&[BATCH, DIM, STATE + 1]);
    let e = error(selective_scan_backward(&x.inputs(), &opts, &out, &dout, Some(&bad_final), false));
    assert_shape_error(e, "dfinal_state", &format!("[{BATCH}, {DIM}, {STATE}]"));

    // `saved` from another problem: a shorter sequence (fewer checkpoints) or another d_state.
    let short = Owned::new(&Shapes {
        u: vec![BATCH, DIM, 100],
        delta: vec![BATCH, DIM, 100],
        b: vec![BATCH, GROUPS, STATE, 100],
        c: vec![BATCH, GROUPS, STATE, 100],
        z: Some(vec![BATCH, DIM, 100]),
        ..good()
    });
    let saved = short.forward().expect("valid");
    let e = error(selective_scan_backward(&x.inputs(), &opts, &saved, &dout, None, false));
    assert_shape_error(e, "saved.out", &format!("[{BATCH}, {DIM}, {SEQ}]"));
    let mixed = ScanOutput { out: zeros(&[BATCH, DIM, SEQ]), final_state: zeros(&[BATCH, DIM, STATE]), ..saved };
    let e = error(selective_scan_backward(&x.inputs(), &opts, &mixed, &dout, None, false));
    assert_shape_error(e, "saved.checkpoints", &format!("[{BATCH}, {DIM}, {N_CKPT}, {STATE}]"));
    let mixed = ScanOutput { final_state: zeros(&[BATCH, DIM, STATE + 1]), ..mixed };
    let e = error(selective_scan_backward(&x.inputs(), &opts, &mixed, &dout, None, false));
    assert_shape_error(e, "saved.final_state", &format!("[{BATCH}, {DIM}, {STATE}]"));

    // The inputs are checked first, in the backward too.
    let bad = Owned::new(&Shapes { bias: Some(vec![1]), ..good() });
    let e = error(selective_scan_backward(&bad.inputs(), &opts, &out, &bad_dout, None, false));
    assert_shape_error(e, "delta_bias", "");
}

#[test]
fn inputs_on_different_devices() {
    // With a GPU: an input on cuda:0 next to a CPU u is a DeviceMismatch naming that input,
    // and so is a CPU input next to a GPU u. Without one, a tensor cannot be placed on
    // cuda:0 at all (NoGpu), so there is no mixed call to make; check that instead.
    let on_gpu = |shape: &[usize]| Tensor::from_array(ArrayD::<f32>::zeros(IxDyn(shape)), Device::Cuda(0));
    match Device::cuda_if_available() {
        (Device::Cuda(0), None) => {
            let x = Owned::new(&good());
            let gpu_a = on_gpu(&[DIM, STATE]).expect("a GPU is present");
            let inputs = ScanInputs { a: &gpu_a, ..x.inputs() };
            match error(selective_scan(&inputs, &ScanOptions::default())) {
                Error::DeviceMismatch { arg: "a", got, expected } => {
                    assert_eq!((got.as_str(), expected.as_str()), ("cuda:0", "cpu"))
                }
                e => panic!("{e:?}"),
            }
            let gpu_init = on_gpu(&[BATCH, DIM, STATE]).expect("a GPU is present");
            let inputs = ScanInputs { initial_state: Some(&gpu_init), ..x.inputs() };
            assert!(matches!(
                error(selective_scan(&inputs, &ScanOptions::default())),
                Error::DeviceMismatch { arg: "initial_state", .. }
            ));
            let gpu_u = Tensor::from_array(ArrayD::from_elem(IxDyn(&[BATCH, DIM, SEQ]), bf16::ZERO), Device::Cuda(0))
                .expect("a GPU is present");
            let inputs = ScanInputs { u: &gpu_u, ..x.inputs() };
            assert!(matches!(
                error(selective_scan(&inputs, &ScanOptions::default())),
                Error::DeviceMismatch { arg: "delta", .. }
            ));
        }
        (_, Some(reason)) => match on_gpu(&[2]) {
            Err(e) => assert_eq!(e, reason),
            Ok(_) => panic!("placing a tensor on cuda:0 succeeded, but the runtime said {reason}"),
        },
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn gpu_states_per_thread_must_be_a_kernel_variant() {
    // good() has d_state 4; 256 needs at least 8 states per thread (32 slices).
    let all = Owned::new(&good());
    for bad in [0, 1, 5, 12, 32] {
        let opts = ScanOptions { delta_softplus: true, gpu_states_per_thread: Some(bad) };
        match error(selective_scan(&all.inputs(), &opts)) {
            Error::Value { arg: "gpu_states_per_thread", got, .. } => assert_eq!(got, bad.to_string()),
            e => panic!("expected a value error for gpu_states_per_thread = {bad}, got {e:?}"),
        }
    }
    for ok in [4, 8, 16] {
        let opts = ScanOptions { delta_softplus: true, gpu_states_per_thread: Some(ok) };
        assert!(selective_scan(&all.inputs(), &opts).is_ok(), "{ok} states per thread");
    }
    let wide =
        Shapes { a: vec![DIM, 256], b: vec![BATCH, 1, 256, SEQ], c: vec![BATCH, 1, 256, SEQ], init: None, ..good() };
    let wide = Owned::new(&wide);
    let opts = ScanOptions { delta_softplus: true, gpu_states_per_thread: Some(4) };
    assert!(matches!(error(selective_scan(&wide.inputs(), &opts)), Error::Value { arg: "gpu_states_per_thread", .. }));
    let opts = ScanOptions { delta_softplus: true, gpu_states_per_thread: Some(8) };
    assert!(selective_scan(&wide.inputs(), &opts).is_ok());
}
