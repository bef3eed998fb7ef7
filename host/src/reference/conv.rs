//! Causal depthwise conv1d reference in f64: the forward straight from the definition and
//! its gradient by reverse-mode differentiation of it. The oracle of the conv tests.
//!
//! Layouts are the library's (`flashscan::mamba::causal_conv1d`): x `[batch, dim,
//! seqlen]`, weight `[dim, width]`, bias `[dim]`, states `[batch, dim, width - 1]`.
//! `y[b,c,t] = act(bias[c] + sum_k weight[c,k] xpad[b,c,t+k])` with
//! `xpad = concat(initial_state, x)` along time.
//!
//! [`causal_conv1d_magnitudes`] and [`causal_conv1d_backward_magnitudes`] run the same
//! computation on the absolute value of every factor (silu'(p) becomes |silu'(p)| at the
//! true p), giving for each result the sum of the absolute values of its terms: the
//! scale of its rounding error.

use ndarray::{Array1, Array2, Array3, ArrayD, Ix1, Ix2, Ix3};

/// The forward's results.
#[derive(Clone, Debug)]
pub struct ConvRef {
    /// `[batch, dim, seqlen]`
    pub y: ArrayD<f64>,
    /// `[batch, dim, width - 1]`
    pub final_state: ArrayD<f64>,
}

/// The gradients; the optional ones are `Some` exactly when the input was given.
#[derive(Clone, Debug)]
pub struct ConvRefGrads {
    pub dx: ArrayD<f64>,
    pub dweight: ArrayD<f64>,
    pub dbias: Option<ArrayD<f64>>,
    pub dinitial_state: Option<ArrayD<f64>>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The padded input `[batch, dim, width - 1 + seqlen]`.
fn pad(x: &Array3<f64>, init: Option<&Array3<f64>>, w1: usize) -> Array3<f64> {
    let (nb, nd, l) = x.dim();
    Array3::from_shape_fn((nb, nd, w1 + l), |(b, c, i)| {
        if i >= w1 { x[[b, c, i - w1]] } else { init.map_or(0.0, |h| h[[b, c, i]]) }
    })
}

struct Args {
    x: Array3<f64>,
    w: Array2<f64>,
    bias: Option<Array1<f64>>,
    init: Option<Array3<f64>>,
}

fn args(x: &ArrayD<f64>, w: &ArrayD<f64>, bias: Option<&ArrayD<f64>>, init: Option<&ArrayD<f64>>) -> Args {
    Args {
        x: x.clone().into_dimensionality::<Ix3>().expect("x is [batch, dim, seqlen]"),
        w: w.clone().into_dimensionality::<Ix2>().expect("weight is [dim, width]"),
        bias: bias.map(|b| b.clone().into_dimensionality::<Ix1>().expect("bias is [dim]")),
        init: init.map(|h| h.clone().into_dimensionality::<Ix3>().expect("initial_state is [batch, dim, width - 1]")),
    }
}

/// pre-activations `[batch, dim, seqlen]`, on absolute values when `abs`.
fn pre(a: &Args, abs: bool) -> Array3<f64> {
    let f = |v: f64| if abs { v.abs() } else { v };
    let (nb, nd, l) = a.x.dim();
    let width = a.w.dim().1;
    let xpad = pad(&a.x, a.init.as_ref(), width - 1);
    Array3::from_shape_fn((nb, nd, l), |(b, c, t)| {
        let mut s = a.bias.as_ref().map_or(0.0, |v| f(v[c]));
        for k in 0..width {
            s += f(a.w[[c, k]]) * f(xpad[[b, c, t + k]]);
        }
        s
    })
}

/// The forward: y (with SiLU when `silu`) and the final state.
pub fn causal_conv1d(
    x: &ArrayD<f64>,
    weight: &ArrayD<f64>,
    bias: Option<&ArrayD<f64>>,
    initial_state: Option<&ArrayD<f64>>,
    silu: bool,
) -> ConvRef {
    let a = args(x, weight, bias, initial_state);
    let p = pre(&a, false);
    let y = if silu { p.mapv(|v| v * sigmoid(v)) } else { p };
    let w1 = a.w.dim().1 - 1;
    let xpad = pad(&a.x, a.init.as_ref(), w1);
    let l = a.x.dim().2;
    let final_state = xpad.slice(ndarray::s![.., .., l..]).to_owned();
    ConvRef { y: y.into_dyn(), final_state: final_state.into_dyn() }
}

/// The sum of the absolute values of the terms of y (the pre-activation's; |silu(p)| <=
/// |p|); the final state's magnitudes are its absolute values.
pub fn causal_conv1d_magnitudes(
    x: &ArrayD<f64>,
    weight: &ArrayD<f64>,
    bias: Option<&ArrayD<f64>>,
    initial_state: Option<&ArrayD<f64>>,
) -> ConvRef {
    let r = causal_conv1d(x, weight, bias, initial_state, false);
    let a = args(x, weight, bias, initial_state);
    ConvRef { y: pre(&a, true).into_dyn(), final_state: r.final_state.mapv(f64::abs) }
}

fn backward(a: &Args, dy: &ArrayD<f64>, dfinal: Option<&ArrayD<f64>>, silu: bool, abs: bool) -> ConvRefGrads {
    let f = |v: f64| if abs { v.abs() } else { v };
    let dy = dy.clone().into_dimensionality::<Ix3>().expect("dy is [batch, dim, seqlen]");
    let (nb, nd, l) = a.x.dim();
    let width = a.w.dim().1;
    let w1 = width - 1;
    let p = pre(a, false);
    // dL/dpre = dL/dy * silu'(pre), silu'(p) = s (1 + p (1 - s)).
    let dpre = Array3::from_shape_fn((nb, nd, l), |(b, c, t)| {
        let g = f(dy[[b, c, t]]);
        if silu {
            let s = sigmoid(p[[b, c, t]]);
            g * f(s * (1.0 + p[[b, c, t]] * (1.0 - s)))
        } else {
            g
        }
    });
    let xpad = pad(&a.x, a.init.as_ref(), w1);
    let mut dxpad = Array3::<f64>::zeros((nb, nd, w1 + l));
    if let Some(df) = dfinal {
        let df = df.clone().into_dimensionality::<Ix3>().expect("dfinal_state is [batch, dim, width - 1]");
        for ((b, c, i), &g) in df.indexed_iter() {
            dxpad[[b, c, l + i]] += f(g);
        }
    }
    let mut dw = Array2::<f64>::zeros((nd, width));
    let mut dbias = Array1::<f64>::zeros(nd);
    for ((b, c, t), &g) in dpre.indexed_iter() {
        for k in 0..width {
            dxpad[[b, c, t + k]] += f(a.w[[c, k]]) * g;
            dw[[c, k]] += g * f(xpad[[b, c, t + k]]);
        }
        dbias[c] += g;
    }
    ConvRefGrads {
        dx: dxpad.slice(ndarray::s![.., .., w1..]).to_owned().into_dyn(),
        dweight: dw.into_dyn(),
        dbias: a.bias.as_ref().map(|_| dbias.into_dyn()),
        dinitial_state: a.init.as_ref().map(|_| dxpad.slice(ndarray::s![.., .., ..w1]).to_owned().into_dyn()),
    }
}

/// The gradients of L given dL/dy = `dy` and dL/dfinal_state = `dfinal_state`.
pub fn causal_conv1d_backward(
    x: &ArrayD<f64>,
    weight: &ArrayD<f64>,
    bias: Option<&ArrayD<f64>>,
    initial_state: Option<&ArrayD<f64>>,
    dy: &ArrayD<f64>,
    dfinal_state: Option<&ArrayD<f64>>,
    silu: bool,
) -> ConvRefGrads {
    backward(&args(x, weight, bias, initial_state), dy, dfinal_state, silu, false)
}

/// The sums of the absolute values of the terms of each gradient.
pub fn causal_conv1d_backward_magnitudes(
    x: &ArrayD<f64>,
    weight: &ArrayD<f64>,
    bias: Option<&ArrayD<f64>>,
    initial_state: Option<&ArrayD<f64>>,
    dy: &ArrayD<f64>,
    dfinal_state: Option<&ArrayD<f64>>,
    silu: bool,
) -> ConvRefGrads {
    backward(&args(x, weight, bias, initial_state), dy, dfinal_state, silu, true)
}
