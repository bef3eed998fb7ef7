//! Shared by the selective-scan tests: a case (shape, options, seed), its seeded inputs,
//! the proptest strategy that draws cases, and the comparison of the library's forward and
//! backward with the f64 reference (`flashscan::reference::scan`).

#![allow(dead_code)]

use flashscan::mamba::{
    SCAN_CHECKPOINT, ScanGrads, ScanInputs, ScanOptions, ScanOutput, selective_scan, selective_scan_backward,
};
use flashscan::reference::scan::{self, ScanRefInputs};
use flashscan::{DType, Device, Element, Tensor};
use ndarray::{ArrayD, IxDyn};
use proptest::prelude::*;

/// The seeded generator shared with the other suites (a failing case's inputs are
/// reproducible from its seed), plus Gaussian draws.
#[path = "../common/mod.rs"]
mod common;
pub use common::Rng;

impl Rng {
    /// Standard normal (Box-Muller).
    pub fn std_normal(&mut self) -> f64 {
        let unit = |r: &mut Rng| ((r.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        let (u1, u2) = (unit(self), unit(self));
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    /// An array of `f(rng)` values rounded to E.
    pub fn fill<E: Element>(&mut self, shape: &[usize], mut f: impl FnMut(&mut Rng) -> f64) -> ArrayD<E> {
        let n = shape.iter().product();
        let data = (0..n).map(|_| E::from_f32(f(self) as f32)).collect();
        ArrayD::from_shape_vec(IxDyn(shape), data).expect("n elements")
    }

    pub fn normal<E: Element>(&mut self, shape: &[usize]) -> ArrayD<E> {
        self.fill(shape, Rng::std_normal)
    }
}

/// One scan problem: shape, which optional inputs are present, options, inputs' seed.
#[derive(Clone, Debug)]
pub struct Case {
    pub batch: usize,
    pub groups: usize,
    /// dim = groups * per_group
    pub per_group: usize,
    pub d_state: usize,
    pub seqlen: usize,
    pub softplus: bool,
    pub has_d: bool,
    pub has_z: bool,
    pub has_bias: bool,
    pub has_init: bool,
    /// The backward gets a gradient for the final state.
    pub has_dfinal: bool,
    /// Scales delta' (1 = the usual 0.001..0.55 range).
    pub delta_scale: f64,
    pub seed: u64,
}

impl Case {
    /// A case with every optional input present and softplus on.
    pub fn new(batch: usize, dim: usize, groups: usize, d_state: usize, seqlen: usize) -> Case {
        assert_eq!(dim % groups, 0);
        Case {
            batch,
            groups,
            per_group: dim / groups,
            d_state,
            seqlen,
            softplus: true,
            has_d: true,
            has_z: true,
            has_bias: true,
            has_init: true,
            has_dfinal: true,
            delta_scale: 1.0,
            seed: 1,
        }
    }

    pub fn dim(&self) -> usize {
        self.groups * self.per_group
    }

    pub fn opts(&self) -> ScanOptions {
        ScanOptions { delta_softplus: self.softplus, ..Default::default() }
    }

    /// State steps of one forward: batch * dim * seqlen * d_state.
    pub fn work(&self) -> usize {
        self.batch * self.dim() * self.seqlen * self.d_state
    }

    /// Drops channels, then groups, then batch entries, until `work() <= budget`.
    pub fn fit(mut self, budget: usize) -> Case {
        while self.work() > budget {
            if self.per_group > 1 {
                self.per_group -= 1;
            } else if self.groups > 1 {
                self.groups -= 1;
            } else if self.batch > 1 {
                self.batch -= 1;
            } else {
                break;
            }
        }
        self
    }

    /// Seeded inputs rounded to T (A, D, delta_bias and the states are f32).
    ///
    /// A = -exp(N(0, 1)) (decay rates from ~0.05 to ~20 per unit of delta'); delta' is
    /// log-uniform in [0.001, 0.5] (times `delta_scale`), plus up to 0.05 from the bias when
    /// there is no softplus; u, B, C, z, D, the states and the output gradients N(0, 1).
    /// Under softplus delta = softplus^-1(target) - bias, so delta' lands on the target
    /// up to the rounding of delta to T.
    pub fn inputs<T: Element>(&self) -> Inputs<T> {
        let mut rng = Rng::new(self.seed);
        let (b, d, n, l, g) = (self.batch, self.dim(), self.d_state, self.seqlen, self.groups);
        let u = rng.normal::<T>(&[b, d, l]);
        let a = rng.fill::<f32>(&[d, n], |r| -r.std_normal().exp());
        let bias: ArrayD<f32> = if self.softplus {
            rng.fill(&[d], |r| r.std_normal() * 0.5)
        } else {
            rng.fill(&[d], |r| 0.05 * r.uniform(0.0, 1.0) as f64)
        };
        let scale = self.delta_scale;
        let delta = ArrayD::from_shape_fn(IxDyn(&[b, d, l]), |i| {
            let target = scale * 0.001 * 500f64.powf(rng.uniform(0.0, 1.0) as f64);
            let shift = if self.has_bias { bias[[i[1]]] as f64 } else { 0.0 };
            T::from_f32(if self.softplus { inverse_softplus(target) - shift } else { target } as f32)
        });
        let bm = rng.normal::<T>(&[b, g, n, l]);
        let cm = rng.normal::<T>(&[b, g, n, l]);
        let dm = rng.normal::<f32>(&[d]);
        let z = rng.normal::<T>(&[b, d, l]);
        let init = rng.normal::<f32>(&[b, d, n]);
        let dout = rng.normal::<T>(&[b, d, l]);
        let dfinal = rng.normal::<f32>(&[b, d, n]);
        Inputs {
            u,
            delta,
            a,
            b: bm,
            c: cm,
            d: self.has_d.then_some(dm),
            z: self.has_z.then_some(z),
            bias: self.has_bias.then_some(bias),
            init: self.has_init.then_some(init),
            dout,
            dfinal: self.has_dfinal.then_some(dfinal),
            softplus: self.softplus,
        }
    }
}

/// softplus^-1(s) = ln(e^s - 1), s > 0.
pub fn inverse_softplus(s: f64) -> f64 {
    s.exp_m1().ln()
}

/// The host arrays of one case.
#[derive(Clone, Debug)]
pub struct Inputs<T: Element> {
    pub u: ArrayD<T>,
    pub delta: ArrayD<T>,
    pub a: ArrayD<f32>,
    pub b: ArrayD<T>,
    pub c: ArrayD<T>,
    pub d: Option<ArrayD<f32>>,
    pub z: Option<ArrayD<T>>,
    pub bias: Option<ArrayD<f32>>,
    pub init: Option<ArrayD<f32>>,
    pub dout: ArrayD<T>,
    pub dfinal: Option<ArrayD<f32>>,
    pub softplus: bool,
}

/// The inputs placed on a device; [`Placed::inputs`] borrows them as `ScanInputs`.
pub struct Placed<T: Element> {
    pub u: Tensor<T>,
    pub delta: Tensor<T>,
    pub a: Tensor<f32>,
    pub b: Tensor<T>,
    pub c: Tensor<T>,
    pub d: Option<Tensor<f32>>,
    pub z: Option<Tensor<T>>,
    pub bias: Option<Tensor<f32>>,
    pub init: Option<Tensor<f32>>,
    pub dout: Tensor<T>,
    pub dfinal: Option<Tensor<f32>>,
}

impl<T: Element> Placed<T> {
    pub fn inputs(&self) -> ScanInputs<'_, T> {
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
}

fn put<E: Element>(a: &ArrayD<E>, device: Device) -> Result<Tensor<E>, String> {
    Tensor::from_array(a.clone(), device).map_err(|e| format!("upload: {e}"))
}

fn put_opt<E: Element>(a: &Option<ArrayD<E>>, device: Device) -> Result<Option<Tensor<E>>, String> {
    a.as_ref().map(|a| put(a, device)).transpose()
}

pub fn f64s<E: Element>(a: &ArrayD<E>) -> ArrayD<f64> {
    a.mapv(|v| v.to_f64())
}

impl<T: Element> Inputs<T> {
    pub fn place(&self, device: Device) -> Result<Placed<T>, String> {
        Ok(Placed {
            u: put(&self.u, device)?,
            delta: put(&self.delta, device)?,
            a: put(&self.a, device)?,
            b: put(&self.b, device)?,
            c: put(&self.c, device)?,
            d: put_opt(&self.d, device)?,
            z: put_opt(&self.z, device)?,
            bias: put_opt(&self.bias, device)?,
            init: put_opt(&self.init, device)?,
            dout: put(&self.dout, device)?,
            dfinal: put_opt(&self.dfinal, device)?,
        })
    }

    /// The same values in f64, for the reference.
    pub fn reference(&self) -> ScanRefInputs {
        ScanRefInputs {
            u: f64s(&self.u),
            delta: f64s(&self.delta),
            a: f64s(&self.a),
            b: f64s(&self.b),
            c: f64s(&self.c),
            d: self.d.as_ref().map(f64s),
            z: self.z.as_ref().map(f64s),
            delta_bias: self.bias.as_ref().map(f64s),
            initial_state: self.init.as_ref().map(f64s),
            delta_softplus: self.softplus,
        }
    }
}

/// Runs the forward and the backward (deterministic) on `device`.
pub fn run<T: Element>(x: &Inputs<T>, device: Device) -> Result<(ScanOutput<T>, ScanGrads<T>), String> {
    run_with(x, device, None, true)
}

/// The same with the GPU's states per thread forced and the backward's mode chosen.
pub fn run_with<T: Element>(
    x: &Inputs<T>,
    device: Device,
    states_per_thread: Option<u32>,
    deterministic: bool,
) -> Result<(ScanOutput<T>, ScanGrads<T>), String> {
    let placed = x.place(device)?;
    let opts = ScanOptions { delta_softplus: x.softplus, gpu_states_per_thread: states_per_thread };
    let fwd = selective_scan(&placed.inputs(), &opts).map_err(|e| format!("forward failed: {e}"))?;
    let grads =
        selective_scan_backward(&placed.inputs(), &opts, &fwd, &placed.dout, placed.dfinal.as_ref(), deterministic)
            .map_err(|e| format!("backward failed: {e}"))?;
    Ok((fwd, grads))
}

/// Tolerances on the error of each result (see [`errors`] for the measure), for the CPU
/// path.
///
/// - f32 results (every result when T = f32; the states, checkpoints, dA, dD,
///   ddelta_bias and dinitial_state always): 2e-6, about 30 f32 units of rounding
///   (2^-24 = 6e-8). Measured against the magnitude of the terms, the CPU's f32 error
///   stays within ten units: at most 2.3e-7 over 1 000 cases drawn like the property
///   tests' and 5.8e-7 over 20 000 tiny ones (one channel, seqlen <= 30, where single
///   elements decide). A wrong formula or index errs by O(1).
/// - results rounded to T (out, du, ddelta, dB, dC, dz): T's rounding bounds each element's
///   relative error by 2^-8 = 3.9e-3 for bf16 and 2^-11 = 4.9e-4 for f16, whatever the
///   inputs, measured against max(|term|, T's smallest normal) (f16 results under 2^-14
///   are subnormal, with a fixed spacing of 2^-24); add the f32 error above: 4e-3 and 6e-4.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub out: f64,
    pub state: f64,
    pub grad: f64,
    pub grad_f32: f64,
}

pub const F32_TOL: f64 = 2e-6;

pub fn tol<T: Element>() -> Tol {
    let rounded = match T::DTYPE {
        DType::F32 => F32_TOL,
        DType::BF16 => 4e-3,
        DType::F16 => 6e-4,
    };
    Tol { out: rounded, state: F32_TOL, grad: rounded, grad_f32: F32_TOL }
}

/// ||got - want|| / ||scale|| (the plain difference where the scale is 0).
pub fn scaled_error(got: &[f64], want: &[f64], scale: &[f64]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = scale.iter().map(|y| y * y).sum();
    if den == 0.0 { num.sqrt() } else { (num / den).sqrt() }
}

/// The error of every result against the reference, by name: ||got - ref|| / ||mag||
/// with `mag` the reference computed on absolute values (`*_magnitudes`), the sum of the
/// magnitudes of the terms that make up each value. Rounding errors scale with that, not
/// with the value: a sum whose terms cancel can be near 0 while its rounding error is not,
/// which makes the plain relative error of a small tensor meaningless (a seqlen-1,
/// one-channel out is a single dot product of random-signed terms). Where nothing cancels
/// mag = |ref| and this is the plain relative error; it is never smaller than that the
/// rounding of an output to T allows (|mag| >= |ref|).
pub fn errors<T: Element>(
    x: &Inputs<T>,
    fwd: &ScanOutput<T>,
    grads: &ScanGrads<T>,
) -> Result<Vec<(&'static str, f64)>, String> {
    compare(x, fwd, Some(grads))
}

/// The errors of the forward's results only (out, final_state, checkpoints).
pub fn forward_errors<T: Element>(x: &Inputs<T>, fwd: &ScanOutput<T>) -> Result<Vec<(&'static str, f64)>, String> {
    compare(x, fwd, None)
}

fn compare<T: Element>(
    x: &Inputs<T>,
    fwd: &ScanOutput<T>,
    grads: Option<&ScanGrads<T>>,
) -> Result<Vec<(&'static str, f64)>, String> {
    let refx = x.reference();
    let (want, want_mag) = (scan::selective_scan(&refx), scan::selective_scan_magnitudes(&refx));

    let mut errs = Vec::new();
    let mut cmp = |name: &'static str, got: ArrayD<f64>, want: &ArrayD<f64>, mag: &ArrayD<f64>| -> Result<(), String> {
        if got.shape() != want.shape() {
            return Err(format!("{name}: shape {:?}, expected {:?}", got.shape(), want.shape()));
        }
        let flat = |a: &ArrayD<f64>| a.iter().copied().collect::<Vec<f64>>();
        let g = flat(&got);
        if let Some(v) = g.iter().find(|v| !v.is_finite()) {
            return Err(format!("{name}: non-finite value {v}"));
        }
        errs.push((name, scaled_error(&g, &flat(want), &flat(mag))));
        Ok(())
    };
    // Results stored in T: below T's smallest normal its spacing is fixed (f16: 2^-24),
    // so T's relative rounding bound holds against max(|term|, smallest normal): the
    // magnitudes of those results are floored there (f16 gradients of tiny steps land in
    // that range).
    let min_normal = match T::DTYPE {
        DType::F16 => 2f64.powi(-14),
        _ => f64::from(f32::MIN_POSITIVE),
    };
    let floored = |m: &ArrayD<f64>| m.mapv(|v| v.max(min_normal));
    let host = |t: &Tensor<T>| t.to_array().map(|a| f64s(&a)).map_err(|e| e.to_string());
    let host32 = |t: &Tensor<f32>| t.to_array().map(|a| f64s(&a)).map_err(|e| e.to_string());

    cmp("out", host(&fwd.out)?, &want.out, &floored(&want_mag.out))?;
    cmp("final_state", host32(&fwd.final_state)?, &want.final_state, &want_mag.final_state)?;
    // Checkpoint i is the reference's state before step i * SCAN_CHECKPOINT.
    let n_ckpt = x.u.shape()[2].div_ceil(SCAN_CHECKPOINT as usize);
    let checkpoints = |states: &ArrayD<f64>| {
        let sh = states.shape();
        ArrayD::from_shape_fn(IxDyn(&[sh[0], sh[1], n_ckpt, sh[3]]), |i| {
            states[[i[0], i[1], i[2] * SCAN_CHECKPOINT as usize, i[3]]]
        })
    };
    cmp("checkpoints", host32(&fwd.checkpoints)?, &checkpoints(&want.states), &checkpoints(&want_mag.states))?;

    let Some(grads) = grads else { return Ok(errs) };
    let (dout, dfinal) = (f64s(&x.dout), x.dfinal.as_ref().map(f64s));
    let gref = scan::selective_scan_backward(&refx, &dout, dfinal.as_ref());
    let gmag = scan::selective_scan_backward_magnitudes(&refx, &dout, dfinal.as_ref());
    cmp("du", host(&grads.du)?, &gref.du, &floored(&gmag.du))?;
    cmp("ddelta", host(&grads.ddelta)?, &gref.ddelta, &floored(&gmag.ddelta))?;
    cmp("db", host(&grads.db)?, &gref.db, &floored(&gmag.db))?;
    cmp("dc", host(&grads.dc)?, &gref.dc, &floored(&gmag.dc))?;
    cmp("da", host32(&grads.da)?, &gref.da, &gmag.da)?;
    let optional32 = [
        ("dd", &grads.dd, &gref.dd, &gmag.dd),
        ("ddelta_bias", &grads.ddelta_bias, &gref.ddelta_bias, &gmag.ddelta_bias),
        ("dinitial_state", &grads.dinitial_state, &gref.dinitial_state, &gmag.dinitial_state),
    ];
    for (name, got, want, mag) in optional32 {
        match (got, want, mag) {
            (Some(g), Some(w), Some(m)) => cmp(name, host32(g)?, w, m)?,
            (None, None, _) => {}
            (g, w, _) => {
                return Err(format!("{name}: returned = {}, but the input was given = {}", g.is_some(), w.is_some()));
            }
        }
    }
    match (&grads.dz, &gref.dz, &gmag.dz) {
        (Some(g), Some(w), Some(m)) => cmp("dz", host(g)?, w, &floored(m))?,
        (None, None, _) => {}
        (g, w, _) => return Err(format!("dz: returned = {}, but z was given = {}", g.is_some(), w.is_some())),
    }
    Ok(errs)
}

/// The tolerance of a named result.
pub fn tol_of(t: &Tol, name: &str) -> f64 {
    match name {
        "out" => t.out,
        "final_state" | "checkpoints" => t.state,
        "du" | "ddelta" | "db" | "dc" | "dz" => t.grad,
        _ => t.grad_f32,
    }
}

/// Runs forward and backward on `device` and compares every result with the reference.
pub fn check<T: Element>(case: &Case, device: Device) -> Result<(), String> {
    check_with(case, &case.inputs::<T>(), device, tol::<T>())
}

pub fn check_with<T: Element>(case: &Case, x: &Inputs<T>, device: Device, tol: Tol) -> Result<(), String> {
    let (fwd, grads) = run(x, device)?;
    check_grads(case, x, &fwd, &grads, tol)
}

/// One measured error on stderr (seen with --nocapture: the figures for the notes).
pub fn print_error<T: Element>(case: &Case, name: &str, err: f64) {
    let (b, d, n, l) = (case.batch, case.dim(), case.d_state, case.seqlen);
    eprintln!("{} b={b} dim={d} n={n} L={l}: {name} error {err:.2e}", T::DTYPE);
}

/// Compares forward and backward results with the reference; returns the first error
/// over its tolerance. Prints every measured error to stderr (seen with --nocapture).
pub fn check_grads<T: Element>(
    case: &Case,
    x: &Inputs<T>,
    fwd: &ScanOutput<T>,
    grads: &ScanGrads<T>,
    tol: Tol,
) -> Result<(), String> {
    let errs = errors(x, fwd, grads).map_err(|e| format!("{e}\n  in {case:?} ({})", T::DTYPE))?;
    for (name, err) in errs {
        print_error::<T>(case, name, err);
        let limit = tol_of(&tol, name);
        if err.is_nan() || err > limit {
            return Err(format!("{name}: relative error {err:.3e} > {limit:.1e}\n  in {case:?} ({})", T::DTYPE));
        }
    }
    Ok(())
}

/// Sequence lengths: 1, short, around one checkpoint segment, and several segments
/// (never required to be a multiple of the segment).
pub fn seqlen(max: usize) -> impl Strategy<Value = usize> {
    let seg = SCAN_CHECKPOINT as usize;
    prop_oneof![
        1 => Just(1usize),
        2 => 2..100usize,
        2 => (seg - 3)..(seg + 4),
        1 => (2 * seg - 2)..(2 * seg + 3),
        4 => 100..max,
    ]
}

/// Random cases: batch 1..=3, groups 1..=3 with 1..=4 channels each, d_state 1..=40 or
/// 256, seqlen from [`seqlen`], every option on or off; then cut to `budget` state steps.
pub fn cases(max_seqlen: usize, budget: usize) -> impl Strategy<Value = Case> {
    (
        (1..=3usize, 1..=3usize, 1..=4usize, prop_oneof![6 => 1..=40usize, 1 => Just(256usize)], seqlen(max_seqlen)),
        prop::array::uniform6(any::<bool>()),
        any::<u64>(),
    )
        .prop_map(move |((batch, groups, per_group, d_state, seqlen), o, seed)| {
            Case {
                batch,
                groups,
                per_group,
                d_state,
                seqlen,
                softplus: o[0],
                has_d: o[1],
                has_z: o[2],
                has_bias: o[3],
                has_init: o[4],
                has_dfinal: o[5],
                delta_scale: 1.0,
                seed,
            }
            .fit(budget)
        })
}
