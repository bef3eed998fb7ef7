//! The one-token decode steps (`conv1d_update`, `selective_state_update`) against the
//! prefill path: running a sequence token by token from zero states must give the
//! prefill's outputs (causal_conv1d then selective_scan) and its final conv and SSM
//! states. Each step is also checked against a direct f64 computation of that step.

mod scan_common;

use flashscan::mamba::{
    Conv1dOptions, ScanInputs, ScanOptions, causal_conv1d, conv1d_update, selective_scan, selective_state_update,
};
use flashscan::{DType, Element, Tensor, bf16};
use ndarray::{ArrayD, Axis, IxDyn};
use proptest::prelude::*;
use scan_common::{Rng, scaled_error};

#[derive(Clone, Debug)]
struct DecodeCase {
    batch: usize,
    groups: usize,
    per_group: usize,
    d_state: usize,
    seqlen: usize,
    width: usize,
    conv_bias: bool,
    silu: bool,
    softplus: bool,
    has_d: bool,
    has_z: bool,
    has_delta_bias: bool,
    seed: u64,
}

/// A Mamba block's inputs: the conv's input, weight and bias; the scan's delta, A, B, C,
/// D, z and delta_bias (u is the conv's output).
struct Block<T: Element> {
    x: ArrayD<T>,
    w: ArrayD<T>,
    wb: Option<ArrayD<T>>,
    delta: ArrayD<T>,
    a: ArrayD<f32>,
    b: ArrayD<T>,
    c: ArrayD<T>,
    d: Option<ArrayD<f32>>,
    z: Option<ArrayD<T>>,
    dbias: Option<ArrayD<f32>>,
}

impl DecodeCase {
    fn dim(&self) -> usize {
        self.groups * self.per_group
    }

    /// x, weights, B, C, z, D N(0, 1); A = -exp(N(0, 1)); delta so that delta' is about
    /// 0.05..0.7 (N(0, 0.5) - 1 under softplus, uniform in [0.001, 0.5] without).
    fn inputs<T: Element>(&self) -> Block<T> {
        let mut rng = Rng::new(self.seed);
        let (bt, d, n, l, g, w) = (self.batch, self.dim(), self.d_state, self.seqlen, self.groups, self.width);
        let softplus = self.softplus;
        Block {
            x: rng.normal(&[bt, d, l]),
            w: rng.fill(&[d, w], |r| r.std_normal() / (w as f64).sqrt()),
            wb: self.conv_bias.then(|| rng.normal(&[d])),
            delta: rng.fill(&[bt, d, l], |r| {
                if softplus { 0.5 * r.std_normal() - 1.0 } else { r.uniform(0.001, 0.5) as f64 }
            }),
            a: rng.fill(&[d, n], |r| -r.std_normal().exp()),
            b: rng.normal(&[bt, g, n, l]),
            c: rng.normal(&[bt, g, n, l]),
            d: self.has_d.then(|| rng.normal(&[d])),
            z: self.has_z.then(|| rng.normal(&[bt, d, l])),
            dbias: self.has_delta_bias.then(|| rng.fill(&[d], |r| 0.05 * r.uniform(0.0, 1.0) as f64)),
        }
    }
}

fn cpu<E: Element>(a: &ArrayD<E>) -> Tensor<E> {
    Tensor::Cpu(a.clone())
}

fn host<E: Element>(t: &Tensor<E>) -> ArrayD<E> {
    t.to_array().expect("a CPU tensor")
}

/// Step t of a `[.., seqlen]` array (its last axis).
fn at<E: Element>(a: &ArrayD<E>, t: usize) -> ArrayD<E> {
    a.index_axis(Axis(a.ndim() - 1), t).to_owned()
}

fn softplus(x: f64) -> f64 {
    if x > 20.0 { x } else { x.exp().ln_1p() }
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Tolerance of a decode step against f64 on ||got - want|| / ||magnitudes||: f32
/// results 1e-5 (the state update's exp(delta' A) has exponents up to ~|15|, so the f32
/// error of delta' A, a few units of 2^-24 relative, becomes ~15x that in the decay);
/// results rounded to bf16 add 2^-8: 4e-3 + 1e-5.
fn step_tol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => 1e-5,
        DType::BF16 => 4.01e-3,
        DType::F16 => 6.1e-4,
    }
}

fn check<T: Element>(case: &DecodeCase) -> Result<(), String> {
    let k = case.inputs::<T>();
    let (bt, d, n, l, w) = (case.batch, case.dim(), case.d_state, case.seqlen, case.width);
    let copts = Conv1dOptions { silu: case.silu };
    let (wt, wbt) = (cpu(&k.w), k.wb.as_ref().map(cpu));
    let (at_, dt, dbt) = (cpu(&k.a), k.d.as_ref().map(cpu), k.dbias.as_ref().map(cpu));
    let what = format!("{case:?} ({})", T::DTYPE);

    // Prefill: the conv, then the scan over its output.
    let conv = causal_conv1d(&cpu(&k.x), &wt, wbt.as_ref(), None, &copts).map_err(|e| e.to_string())?;
    let (delta, bm, cm) = (cpu(&k.delta), cpu(&k.b), cpu(&k.c));
    let z = k.z.as_ref().map(cpu);
    let scan = selective_scan(
        &ScanInputs {
            u: &conv.y,
            delta: &delta,
            a: &at_,
            b: &bm,
            c: &cm,
            d: dt.as_ref(),
            z: z.as_ref(),
            delta_bias: dbt.as_ref(),
            initial_state: None,
        },
        &ScanOptions { delta_softplus: case.softplus, ..Default::default() },
    )
    .map_err(|e| e.to_string())?;
    let (conv_y, scan_out) = (host(&conv.y), host(&scan.out));

    // Decode, token by token, from zero states.
    let mut conv_state = Tensor::Cpu(ArrayD::from_elem(IxDyn(&[bt, d, w - 1]), T::from_f32(0.0)));
    let mut ssm_state = Tensor::Cpu(ArrayD::<f32>::zeros(IxDyn(&[bt, d, n])));
    let tol = step_tol::<T>();
    for t in 0..l {
        let conv_before = host(&conv_state);
        let u = conv1d_update(&cpu(&at(&k.x, t)), &mut conv_state, &wt, wbt.as_ref(), &copts)
            .map_err(|e| format!("conv1d_update at {t}: {e}"))?;
        let u = host(&u);
        if u != at(&conv_y, t) {
            return Err(format!("conv1d_update output at step {t} differs from causal_conv1d in {what}"));
        }
        // The conv step in f64 from the state it started from.
        {
            let (mut want, mut mag, mut got) = (vec![], vec![], vec![]);
            for ((bi, c), &v) in u.indexed_iter().map(|(i, v)| ((i[0], i[1]), v)) {
                let bias = k.wb.as_ref().map_or(0.0, |b| b[[c]].to_f64());
                let (mut s, mut m) = (bias, bias.abs());
                for j in 0..w {
                    let xv = if j < w - 1 { conv_before[[bi, c, j]].to_f64() } else { k.x[[bi, c, t]].to_f64() };
                    s += k.w[[c, j]].to_f64() * xv;
                    m += (k.w[[c, j]].to_f64() * xv).abs();
                }
                want.push(if case.silu { silu(s) } else { s });
                mag.push(m);
                got.push(v.to_f64());
            }
            let err = scaled_error(&got, &want, &mag);
            if err.is_nan() || err > tol {
                return Err(format!("conv step {t}: error {err:.3e} > {tol:.1e} vs f64 in {what}"));
            }
        }

        let h_before = host(&ssm_state);
        let zt = k.z.as_ref().map(|z| cpu(&at(z, t)));
        let out = selective_state_update(
            &mut ssm_state,
            &cpu(&u),
            &cpu(&at(&k.delta, t)),
            &at_,
            &cpu(&at(&k.b, t)),
            &cpu(&at(&k.c, t)),
            dt.as_ref(),
            zt.as_ref(),
            dbt.as_ref(),
            case.softplus,
        )
        .map_err(|e| format!("selective_state_update at {t}: {e}"))?;
        let out = host(&out);
        if out != at(&scan_out, t) {
            return Err(format!("selective_state_update output at step {t} differs from selective_scan in {what}"));
        }
        // The SSM step in f64 from the state it started from (and the f32-rounded u).
        let h_after = host(&ssm_state);
        let (mut hw, mut hm, mut hg) = (vec![], vec![], vec![]);
        let (mut ow, mut om, mut og) = (vec![], vec![], vec![]);
        for bi in 0..bt {
            for c in 0..d {
                let grp = c / case.per_group;
                let uv = u[[bi, c]].to_f64();
                let raw = k.delta[[bi, c, t]].to_f64() + k.dbias.as_ref().map_or(0.0, |v| v[[c]] as f64);
                let dlt = if case.softplus { softplus(raw) } else { raw };
                let (mut y, mut ym) = (0.0, 0.0);
                for s in 0..n {
                    let decay = (dlt * k.a[[c, s]] as f64).exp();
                    let prev = h_before[[bi, c, s]] as f64;
                    let inp = dlt * k.b[[bi, grp, s, t]].to_f64() * uv;
                    let h = decay * prev + inp;
                    let hmag = (decay * prev).abs() + inp.abs();
                    hw.push(h);
                    hm.push(hmag);
                    hg.push(h_after[[bi, c, s]] as f64);
                    let cv = k.c[[bi, grp, s, t]].to_f64();
                    y += h * cv;
                    ym += hmag * cv.abs();
                }
                if let Some(dd) = &k.d {
                    y += dd[[c]] as f64 * uv;
                    ym += (dd[[c]] as f64 * uv).abs();
                }
                if let Some(z) = &k.z {
                    let gate = silu(z[[bi, c, t]].to_f64());
                    y *= gate;
                    ym *= gate.abs();
                }
                ow.push(y);
                om.push(ym);
                og.push(out[[bi, c]].to_f64());
            }
        }
        let eh = scaled_error(&hg, &hw, &hm);
        if eh.is_nan() || eh > 1e-5 {
            return Err(format!("state after step {t}: error {eh:.3e} > 1e-5 vs f64 in {what}"));
        }
        let eo = scaled_error(&og, &ow, &om);
        if eo.is_nan() || eo > tol {
            return Err(format!("output of step {t}: error {eo:.3e} > {tol:.1e} vs f64 in {what}"));
        }
    }
    if host(&conv_state) != host(&conv.final_state) {
        return Err(format!("final conv state differs from causal_conv1d's in {what}"));
    }
    if host(&ssm_state) != host(&scan.final_state) {
        return Err(format!("final SSM state differs from selective_scan's in {what}"));
    }
    Ok(())
}

fn cases() -> impl Strategy<Value = DecodeCase> {
    (
        1..=2usize,
        1..=3usize,
        1..=2usize,
        1..=16usize,
        1..=40usize,
        1..=4usize,
        prop::array::uniform6(any::<bool>()),
        any::<u64>(),
    )
        .prop_map(|(batch, groups, per_group, d_state, seqlen, width, o, seed)| DecodeCase {
            batch,
            groups,
            per_group,
            d_state,
            seqlen,
            width,
            conv_bias: o[0],
            silu: o[1],
            softplus: o[2],
            has_d: o[3],
            has_z: o[4],
            has_delta_bias: o[5],
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Decoding equals prefill bitwise, in f32 and bf16: both paths compute every value
    /// with the same f32 functions in the same order (the conv's `conv_point`, the scan's
    /// `step`, `delta_eff`, `dot`, `silu`) from the same inputs, and round to T at the same
    /// points (the conv output that feeds the scan, the scan's output); the states are
    /// kept in T (conv, a copy of inputs) and f32 (SSM) by both.
    #[test]
    fn decode_equals_prefill_f32(case in cases()) {
        check::<f32>(&case).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn decode_equals_prefill_bf16(case in cases()) {
        check::<bf16>(&case).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn decode_equals_prefill_with_every_option() {
    for width in 1..=4 {
        let case = DecodeCase {
            batch: 2,
            groups: 2,
            per_group: 3,
            d_state: 16,
            seqlen: 40,
            width,
            conv_bias: true,
            silu: true,
            softplus: true,
            has_d: true,
            has_z: true,
            has_delta_bias: true,
            seed: 7 + width as u64,
        };
        check::<f32>(&case).expect("f32");
        check::<bf16>(&case).expect("bf16");
    }
}
