//! Selective-scan (Mamba-1) reference in f64: the recurrence run one step at a time with
//! every state kept, and its gradient by plain reverse-mode differentiation of those
//! steps. The oracle of the scan tests, written for clarity and independently of the
//! checkpointed CPU path (no segments, no recomputation, no partial sums).
//!
//! Layouts are the library's (`flashscan::mamba`): u, delta, z `[batch, dim, seqlen]`,
//! A `[dim, d_state]`, B, C `[batch, groups, d_state, seqlen]`, D and delta_bias `[dim]`,
//! states `[batch, dim, d_state]`.
//!
//! Each function has a `*_magnitudes` twin that runs the same computation on the absolute
//! value of every factor (the decay exp(delta' A) keeps its value; silu'(z) = s (1 + z (1 -
//! s)) becomes s (1 + |z| (1 - s))), so every result becomes the sum of the absolute
//! values of the terms that make it up. A
//! low-precision result's rounding error is bounded by a multiple of that, not of the
//! result itself: where terms cancel (a sum of a few random-signed terms, say) the result
//! can be tiny while the rounding error is not. Tests scale their tolerances by it.

use ndarray::{
    Array1, Array2, Array3, Array4, ArrayD, ArrayView1, ArrayView2, ArrayView3, ArrayView4, Ix1, Ix2, Ix3, Ix4,
};

/// The inputs of [`selective_scan`] in f64. Optional inputs are left out of the math.
#[derive(Clone, Debug)]
pub struct ScanRefInputs {
    pub u: ArrayD<f64>,
    pub delta: ArrayD<f64>,
    pub a: ArrayD<f64>,
    pub b: ArrayD<f64>,
    pub c: ArrayD<f64>,
    pub d: Option<ArrayD<f64>>,
    pub z: Option<ArrayD<f64>>,
    pub delta_bias: Option<ArrayD<f64>>,
    pub initial_state: Option<ArrayD<f64>>,
    /// delta' = softplus(delta + delta_bias) instead of delta + delta_bias.
    pub delta_softplus: bool,
}

/// The forward's results.
#[derive(Clone, Debug)]
pub struct ScanRef {
    /// `[batch, dim, seqlen]`
    pub out: ArrayD<f64>,
    /// `[batch, dim, d_state]`: h_{seqlen-1}
    pub final_state: ArrayD<f64>,
    /// `[batch, dim, seqlen + 1, d_state]`: entry s is the state before step s (entry 0 the
    /// initial state, entry t + 1 the state h_t after step t), so the library's
    /// checkpoint i is entry `i * SCAN_CHECKPOINT`.
    pub states: ArrayD<f64>,
}

/// Gradients with respect to each input, shaped like it; the optional ones are `Some`
/// exactly when the input was given.
#[derive(Clone, Debug)]
pub struct ScanRefGrads {
    pub du: ArrayD<f64>,
    pub ddelta: ArrayD<f64>,
    pub da: ArrayD<f64>,
    pub db: ArrayD<f64>,
    pub dc: ArrayD<f64>,
    pub dd: Option<ArrayD<f64>>,
    pub dz: Option<ArrayD<f64>>,
    pub ddelta_bias: Option<ArrayD<f64>>,
    pub dinitial_state: Option<ArrayD<f64>>,
}

/// The inputs as fixed-rank views, with the sizes.
struct Views<'a> {
    u: ArrayView3<'a, f64>,
    delta: ArrayView3<'a, f64>,
    a: ArrayView2<'a, f64>,
    b: ArrayView4<'a, f64>,
    c: ArrayView4<'a, f64>,
    d: Option<ArrayView1<'a, f64>>,
    z: Option<ArrayView3<'a, f64>>,
    bias: Option<ArrayView1<'a, f64>>,
    init: Option<ArrayView3<'a, f64>>,
    batch: usize,
    dim: usize,
    seqlen: usize,
    d_state: usize,
    /// channels per group of B and C
    per_group: usize,
    softplus: bool,
    /// Take absolute values (the `*_magnitudes` functions).
    magnitude: bool,
}

impl ScanRefInputs {
    /// # Panics
    /// If the shapes do not fit together (this is a test oracle; `mamba::selective_scan`
    /// validates and returns errors instead).
    fn views(&self, magnitude: bool) -> Views<'_> {
        let u = self.u.view().into_dimensionality::<Ix3>().expect("u is [batch, dim, seqlen]");
        let (batch, dim, seqlen) = u.dim();
        let a = self.a.view().into_dimensionality::<Ix2>().expect("a is [dim, d_state]");
        let b = self.b.view().into_dimensionality::<Ix4>().expect("b is [batch, groups, d_state, seqlen]");
        let d_state = a.dim().1;
        let groups = b.dim().1;
        assert_eq!(a.dim().0, dim, "a has u's dim");
        assert_eq!(b.dim(), (batch, groups, d_state, seqlen), "b fits u and a");
        assert!(groups > 0 && dim % groups == 0, "groups divides dim");
        fn seq3(x: &ArrayD<f64>) -> ArrayView3<'_, f64> {
            x.view().into_dimensionality::<Ix3>().expect("3 dimensions")
        }
        fn vec1(x: &ArrayD<f64>) -> ArrayView1<'_, f64> {
            x.view().into_dimensionality::<Ix1>().expect("1 dimension")
        }
        let v = Views {
            u,
            delta: seq3(&self.delta),
            a,
            b,
            c: self.c.view().into_dimensionality::<Ix4>().expect("c is like b"),
            d: self.d.as_ref().map(vec1),
            z: self.z.as_ref().map(seq3),
            bias: self.delta_bias.as_ref().map(vec1),
            init: self.initial_state.as_ref().map(seq3),
            batch,
            dim,
            seqlen,
            d_state,
            per_group: dim / groups,
            softplus: self.delta_softplus,
            magnitude,
        };
        assert_eq!(v.delta.dim(), u.dim(), "delta is like u");
        assert_eq!(v.c.dim(), b.dim(), "c is like b");
        assert!(v.d.is_none_or(|d| d.len() == dim) && v.bias.is_none_or(|d| d.len() == dim), "d, delta_bias are [dim]");
        assert!(v.z.is_none_or(|z| z.dim() == u.dim()), "z is like u");
        assert!(v.init.is_none_or(|h| h.dim() == (batch, dim, d_state)), "initial_state is [batch, dim, d_state]");
        v
    }
}

impl Views<'_> {
    /// |v| when computing magnitudes, else v.
    fn m(&self, v: f64) -> f64 {
        if self.magnitude { v.abs() } else { v }
    }

    /// x = delta + delta_bias at (b, c, t): the argument of the softplus (never made absolute).
    fn x(&self, b: usize, c: usize, t: usize) -> f64 {
        self.delta[[b, c, t]] + self.bias.map_or(0.0, |bias| bias[c])
    }

    fn u(&self, b: usize, c: usize, t: usize) -> f64 {
        self.m(self.u[[b, c, t]])
    }

    /// B and C at (batch b, channel c's group, state n, step t).
    fn bc(&self, b: usize, c: usize, n: usize, t: usize) -> (f64, f64) {
        let g = c / self.per_group;
        (self.m(self.b[[b, g, n, t]]), self.m(self.c[[b, g, n, t]]))
    }

    fn d(&self, c: usize) -> Option<f64> {
        self.d.map(|d| self.m(d[c]))
    }

    /// silu(z) and silu'(z) at (b, c, t), when there is a gate.
    fn gate(&self, b: usize, c: usize, t: usize) -> Option<(f64, f64)> {
        self.z.map(|z| {
            let z = z[[b, c, t]];
            let s = sigmoid(z);
            // silu'(z) = s (1 + z (1 - s)) cancels near z = -1.28: its magnitude is that of
            // its terms.
            (self.m(z * s), s * (1.0 + self.m(z) * (1.0 - s)))
        })
    }

    fn init(&self, b: usize, c: usize, n: usize) -> f64 {
        self.init.map_or(0.0, |h| self.m(h[[b, c, n]]))
    }
}

/// softplus(x) = ln(1 + e^x), taken as x itself above 20 (as the library does).
fn softplus(x: f64) -> f64 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// delta' and d delta'/dx at x = delta + delta_bias.
fn delta_eff(x: f64, softplus_on: bool) -> (f64, f64) {
    match softplus_on {
        true if x <= 20.0 => (softplus(x), sigmoid(x)),
        _ => (x, 1.0),
    }
}

/// The forward, one step at a time, keeping every state.
pub fn selective_scan(x: &ScanRefInputs) -> ScanRef {
    forward(&x.views(false))
}

/// [`selective_scan`] on the absolute values of every factor: the scale of each result's
/// rounding error (see the module documentation).
pub fn selective_scan_magnitudes(x: &ScanRefInputs) -> ScanRef {
    forward(&x.views(true))
}

fn forward(v: &Views) -> ScanRef {
    let (nb, nd, nl, nn) = (v.batch, v.dim, v.seqlen, v.d_state);
    let mut out = Array3::<f64>::zeros((nb, nd, nl));
    let mut states = Array4::<f64>::zeros((nb, nd, nl + 1, nn));
    for b in 0..nb {
        for c in 0..nd {
            let mut h: Vec<f64> = (0..nn).map(|n| v.init(b, c, n)).collect();
            for (n, &hn) in h.iter().enumerate() {
                states[[b, c, 0, n]] = hn;
            }
            for t in 0..nl {
                let dt = delta_eff(v.x(b, c, t), v.softplus).0;
                let u = v.u(b, c, t);
                let mut y = 0.0;
                for n in 0..nn {
                    let (bn, cn) = v.bc(b, c, n, t);
                    h[n] = (dt * v.a[[c, n]]).exp() * h[n] + v.m(dt) * bn * u;
                    y += h[n] * cn;
                    states[[b, c, t + 1, n]] = h[n];
                }
                if let Some(d) = v.d(c) {
                    y += d * u;
                }
                if let Some((silu, _)) = v.gate(b, c, t) {
                    y *= silu;
                }
                out[[b, c, t]] = y;
            }
        }
    }
    let final_state = states.slice(ndarray::s![.., .., nl, ..]).to_owned();
    ScanRef { out: out.into_dyn(), final_state: final_state.into_dyn(), states: states.into_dyn() }
}

/// The gradient of `L = sum(dout * out) + sum(dfinal_state * final_state)` with respect to
/// every input: the forward's steps differentiated in reverse order, one statement at a
/// time.
pub fn selective_scan_backward(
    x: &ScanRefInputs,
    dout: &ArrayD<f64>,
    dfinal_state: Option<&ArrayD<f64>>,
) -> ScanRefGrads {
    backward(&x.views(false), x, dout, dfinal_state)
}

/// [`selective_scan_backward`] on the absolute values of every factor (and of `dout` and
/// `dfinal_state`): the scale of each gradient's rounding error.
pub fn selective_scan_backward_magnitudes(
    x: &ScanRefInputs,
    dout: &ArrayD<f64>,
    dfinal_state: Option<&ArrayD<f64>>,
) -> ScanRefGrads {
    backward(&x.views(true), x, dout, dfinal_state)
}

fn backward(v: &Views, x: &ScanRefInputs, dout: &ArrayD<f64>, dfinal_state: Option<&ArrayD<f64>>) -> ScanRefGrads {
    let (nb, nd, nl, nn) = (v.batch, v.dim, v.seqlen, v.d_state);
    let fwd = forward(v);
    let states = fwd.states.view().into_dimensionality::<Ix4>().expect("4 dimensions");
    let dout = dout.view().into_dimensionality::<Ix3>().expect("dout is [batch, dim, seqlen]");
    let dfinal = dfinal_state.map(|d| d.view().into_dimensionality::<Ix3>().expect("[batch, dim, d_state]"));
    assert_eq!(dout.dim(), (nb, nd, nl), "dout is like out");

    let mut du = Array3::<f64>::zeros((nb, nd, nl));
    let mut ddelta = Array3::<f64>::zeros((nb, nd, nl));
    let mut dz = Array3::<f64>::zeros((nb, nd, nl));
    let mut da = Array2::<f64>::zeros((nd, nn));
    let mut db = Array4::<f64>::zeros(v.b.dim());
    let mut dc = Array4::<f64>::zeros(v.b.dim());
    let mut dd = Array1::<f64>::zeros(nd);
    let mut dbias = Array1::<f64>::zeros(nd);
    let mut dinit = Array3::<f64>::zeros((nb, nd, nn));

    for b in 0..nb {
        for c in 0..nd {
            let g = c / v.per_group;
            // grad_h[n] = dL/dh_t[n] for the step being processed; after the last step it is
            // the gradient flowing into the final state.
            let mut grad_h: Vec<f64> = (0..nn).map(|n| dfinal.map_or(0.0, |df| v.m(df[[b, c, n]]))).collect();
            for t in (0..nl).rev() {
                // Recompute the step's intermediate values (all states are stored).
                let (dt, ddt_dx) = delta_eff(v.x(b, c, t), v.softplus);
                let u = v.u(b, c, t);
                let h_prev = |n: usize| states[[b, c, t, n]];
                let h_t = |n: usize| states[[b, c, t + 1, n]];
                let mut y = (0..nn).map(|n| h_t(n) * v.bc(b, c, n, t).1).sum::<f64>();
                if let Some(d) = v.d(c) {
                    y += d * u;
                }

                // out = y * silu(z)
                let grad_out = v.m(dout[[b, c, t]]);
                let grad_y = match v.gate(b, c, t) {
                    Some((silu, dsilu)) => {
                        dz[[b, c, t]] = grad_out * y * dsilu;
                        grad_out * silu
                    }
                    None => grad_out,
                };

                // y = sum_n h_t[n] C[n] + D u
                let mut grad_u = 0.0;
                if let Some(d) = v.d(c) {
                    dd[c] += grad_y * u;
                    grad_u += grad_y * d;
                }
                for n in 0..nn {
                    dc[[b, g, n, t]] += grad_y * h_t(n);
                    grad_h[n] += grad_y * v.bc(b, c, n, t).1;
                }

                // h_t[n] = exp(dt A[n]) h_{t-1}[n] + dt B[n] u
                let mut grad_dt = 0.0;
                for n in 0..nn {
                    let a = v.a[[c, n]];
                    let decay = (dt * a).exp();
                    let bn = v.bc(b, c, n, t).0;
                    let dt_m = v.m(dt);
                    // d h_t / d dt = A decay h_{t-1} + B u
                    grad_dt += grad_h[n] * (v.m(a) * decay * h_prev(n) + bn * u);
                    da[[c, n]] += grad_h[n] * dt_m * decay * h_prev(n);
                    db[[b, g, n, t]] += grad_h[n] * dt_m * u;
                    grad_u += grad_h[n] * dt_m * bn;
                    // on to h_{t-1}
                    grad_h[n] *= decay;
                }
                du[[b, c, t]] = grad_u;

                // dt = softplus(delta + bias) (or the sum itself)
                let grad_x = grad_dt * ddt_dx;
                ddelta[[b, c, t]] = grad_x;
                dbias[c] += grad_x;
            }
            for n in 0..nn {
                dinit[[b, c, n]] = grad_h[n];
            }
        }
    }
    ScanRefGrads {
        du: du.into_dyn(),
        ddelta: ddelta.into_dyn(),
        da: da.into_dyn(),
        db: db.into_dyn(),
        dc: dc.into_dyn(),
        dd: x.d.as_ref().map(|_| dd.into_dyn()),
        dz: x.z.as_ref().map(|_| dz.into_dyn()),
        ddelta_bias: x.delta_bias.as_ref().map(|_| dbias.into_dyn()),
        dinitial_state: x.initial_state.as_ref().map(|_| dinit.into_dyn()),
    }
}
