//! `mamba::causal_conv1d`, `causal_conv1d_backward`, `conv1d_update` and
//! `selective_state_update` validate their arguments first: every bad argument gives the
//! matching typed error naming the argument (never a panic), and a failed decode step
//! leaves its state untouched. (Element types are fixed by the signatures, so a dtype
//! mismatch does not compile; device mismatches need a GPU and are not covered here.)

use flashscan::mamba::{Conv1dOptions, causal_conv1d, causal_conv1d_backward, conv1d_update, selective_state_update};
use flashscan::{Error, Result, bf16};
mod common;

use common::{ones, zeros};

/// The error names `arg` and is a Shape error (`value == false`) or a Value error.
fn expect_err<R>(r: Result<R>, arg: &str, value: bool) {
    match r {
        Err(Error::Shape { arg: a, .. }) if !value => assert_eq!(a, arg),
        Err(Error::Value { arg: a, .. }) if value => assert_eq!(a, arg),
        Err(e) => panic!("expected a {} error on {arg}, got {e:?}", if value { "Value" } else { "Shape" }),
        Ok(_) => panic!("expected an error on {arg}, got Ok"),
    }
}

const B: usize = 2;
const D: usize = 4;
const L: usize = 5;
const W: usize = 3;

fn conv(x: &[usize], w: &[usize], bias: Option<&[usize]>, init: Option<&[usize]>) -> Result<()> {
    let (bias, init) = (bias.map(zeros::<bf16>), init.map(zeros::<bf16>));
    causal_conv1d(&zeros::<bf16>(x), &zeros(w), bias.as_ref(), init.as_ref(), &Conv1dOptions::default()).map(|_| ())
}

#[test]
fn causal_conv1d_names_the_bad_argument() {
    let (x, w, bias, init) = ([B, D, L], [D, W], [D], [B, D, W - 1]);
    conv(&x, &w, Some(&bias), Some(&init)).expect("good shapes");
    expect_err(conv(&[B, D], &w, None, None), "x", false);
    expect_err(conv(&[B, D, 0], &w, None, None), "x", false);
    expect_err(conv(&[B, D, L, 1], &w, None, None), "x", false);
    expect_err(conv(&x, &[D + 1, W], None, None), "weight", false);
    expect_err(conv(&x, &[D], None, None), "weight", false);
    expect_err(conv(&x, &[D, 0], None, None), "weight", true);
    expect_err(conv(&x, &[D, 9], None, None), "weight", true);
    conv(&x, &[D, 8], None, None).expect("width 8");
    conv(&x, &[D, 1], None, Some(&[B, D, 0])).expect("width 1, empty state");
    expect_err(conv(&x, &w, Some(&[D + 1]), None), "bias", false);
    expect_err(conv(&x, &w, None, Some(&[B, D, W])), "initial_state", false);
    expect_err(conv(&x, &w, None, Some(&[B + 1, D, W - 1])), "initial_state", false);
}

#[test]
fn causal_conv1d_backward_names_the_bad_argument() {
    let run = |dy: &[usize], df: Option<&[usize]>, w: &[usize]| {
        let df = df.map(zeros::<f32>);
        causal_conv1d_backward(
            &zeros::<f32>(&[B, D, L]),
            &zeros(w),
            None,
            None,
            &zeros(dy),
            df.as_ref(),
            &Conv1dOptions { silu: true },
        )
        .map(|_| ())
    };
    run(&[B, D, L], Some(&[B, D, W - 1]), &[D, W]).expect("good shapes");
    expect_err(run(&[B, D, L + 1], None, &[D, W]), "dy", false);
    expect_err(run(&[B, D, L], Some(&[B, D, W]), &[D, W]), "dfinal_state", false);
    expect_err(run(&[B, D, L], None, &[D, 9]), "weight", true);
}

#[test]
fn conv1d_update_names_the_bad_argument_and_keeps_the_state() {
    let run = |x: &[usize], st: &[usize], w: &[usize], bias: Option<&[usize]>| {
        let mut state = ones::<bf16>(st);
        let before = state.to_array().expect("cpu");
        let bias = bias.map(zeros::<bf16>);
        let r = conv1d_update(&zeros::<bf16>(x), &mut state, &zeros(w), bias.as_ref(), &Conv1dOptions::default());
        if r.is_err() {
            assert_eq!(state.to_array().expect("cpu"), before, "a failed update changed the state");
        }
        r.map(|_| ())
    };
    run(&[B, D], &[B, D, W - 1], &[D, W], Some(&[D])).expect("good shapes");
    expect_err(run(&[B, D, 1], &[B, D, W - 1], &[D, W], None), "x", false);
    expect_err(run(&[B, 0], &[B, 0, W - 1], &[0, W], None), "x", false);
    expect_err(run(&[B, D], &[B, D, W], &[D, W], None), "conv_state", false);
    expect_err(run(&[B, D], &[B, D], &[D, W], None), "conv_state", false);
    expect_err(run(&[B, D], &[B, D, W - 1], &[D + 1, W], None), "weight", false);
    expect_err(run(&[B, D], &[B, D, 0], &[D, 0], None), "weight", true);
    expect_err(run(&[B, D], &[B, D, 8], &[D, 9], None), "weight", true);
    expect_err(run(&[B, D], &[B, D, W - 1], &[D, W], Some(&[1])), "bias", false);
}

/// The shapes of one selective_state_update call; each test breaks one of them.
#[derive(Clone)]
struct Shapes {
    state: Vec<usize>,
    x: Vec<usize>,
    delta: Vec<usize>,
    a: Vec<usize>,
    b: Vec<usize>,
    c: Vec<usize>,
    d: Vec<usize>,
    z: Vec<usize>,
    bias: Vec<usize>,
}

const N: usize = 3;
const G: usize = 2;

fn good() -> Shapes {
    Shapes {
        state: vec![B, D, N],
        x: vec![B, D],
        delta: vec![B, D],
        a: vec![D, N],
        b: vec![B, G, N],
        c: vec![B, G, N],
        d: vec![D],
        z: vec![B, D],
        bias: vec![D],
    }
}

fn ssu(s: &Shapes) -> Result<()> {
    let mut state = ones::<f32>(&s.state);
    let before = state.to_array().expect("cpu");
    let (d, z, bias) = (zeros::<f32>(&s.d), zeros::<bf16>(&s.z), zeros::<f32>(&s.bias));
    let r = selective_state_update(
        &mut state,
        &zeros::<bf16>(&s.x),
        &zeros(&s.delta),
        &zeros(&s.a),
        &zeros(&s.b),
        &zeros(&s.c),
        Some(&d),
        Some(&z),
        Some(&bias),
        true,
    );
    if r.is_err() {
        assert_eq!(state.to_array().expect("cpu"), before, "a failed update changed the state");
    }
    r.map(|_| ())
}

/// An argument name and how to break its shape.
type Breaks = (&'static str, fn(&mut Shapes));

#[test]
fn selective_state_update_names_the_bad_argument_and_keeps_the_state() {
    ssu(&good()).expect("good shapes");
    let cases: Vec<Breaks> = vec![
        ("state", |s| s.state = vec![B, D]),
        ("state", |s| s.state = vec![B, D, 0]),
        ("state", |s| {
            s.state = vec![B, D, 257];
            s.a = vec![D, 257];
            s.b = vec![B, G, 257];
            s.c = vec![B, G, 257];
        }),
        ("x", |s| s.x = vec![B, D + 1]),
        ("x", |s| s.x = vec![B, D, 1]),
        ("delta", |s| s.delta = vec![B + 1, D]),
        ("a", |s| s.a = vec![D, N + 1]),
        ("b", |s| s.b = vec![B, 3, N]),
        ("b", |s| s.b = vec![B, 0, N]),
        ("b", |s| s.b = vec![B, G, N, 1]),
        ("c", |s| s.c = vec![B, G, N + 1]),
        ("c", |s| s.c = vec![B, 1, N]),
        ("d", |s| s.d = vec![D, 1]),
        ("z", |s| s.z = vec![B, 1]),
        ("delta_bias", |s| s.bias = vec![D + 2]),
    ];
    for (arg, breaks) in cases {
        let mut s = good();
        breaks(&mut s);
        expect_err(ssu(&s), arg, false);
    }
}
