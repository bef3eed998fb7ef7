//! The CPU selective scan (the kernel's checkpointed algorithm), forward and backward,
//! against the f64 reference: property tests over shapes, groups and options; the
//! reference's gradients against finite differences; state passing (two halves equal one
//! run); determinism; edge sizes and extreme delta.

mod scan_common;

use flashscan::mamba::{SCAN_CHECKPOINT, ScanGrads, ScanOutput};
use flashscan::reference::scan::{self, ScanRefGrads, ScanRefInputs};
use flashscan::{Device, Element, Tensor, bf16, f16};
use ndarray::{ArrayD, Axis, IxDyn, Slice};
use proptest::prelude::*;
use scan_common::{Case, F32_TOL, Inputs, check, f64s, run, scaled_error};

const CPU: Device = Device::Cpu;
/// State steps (batch * dim * seqlen * d_state) per property case: the f64 reference
/// (forward and backward, values and magnitudes) dominates the time of a case.
const BUDGET: usize = 3_000_000;
const SEG: usize = SCAN_CHECKPOINT as usize;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn cpu_matches_reference_f32(case in scan_common::cases(1300, BUDGET)) {
        check::<f32>(&case, CPU).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn cpu_matches_reference_bf16(case in scan_common::cases(1300, BUDGET)) {
        check::<bf16>(&case, CPU).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn cpu_matches_reference_f16(case in scan_common::cases(1300, BUDGET)) {
        check::<f16>(&case, CPU).map_err(TestCaseError::fail)?;
    }
}

/// f16 gradients of a one-step sequence land in f16's subnormal range (dB, dC ~1e-5),
/// where f16's spacing is a fixed 2^-24: a case proptest found (the errors were 1.7e-3
/// relative to the terms' own magnitudes, within one f16 subnormal unit).
#[test]
fn f16_gradients_in_the_subnormal_range() {
    for has_dfinal in [false, true] {
        let case = Case {
            batch: 1,
            groups: 1,
            per_group: 2,
            d_state: 13,
            seqlen: 1,
            softplus: true,
            has_d: false,
            has_z: true,
            has_bias: false,
            has_init: false,
            has_dfinal,
            delta_scale: 1.0,
            seed: 16844472792247417273,
        };
        check::<f16>(&case, CPU).unwrap();
    }
}

fn host<E: Element>(t: &Tensor<E>) -> ArrayD<E> {
    t.to_array().expect("a CPU tensor")
}

/// L = sum(dout * out) + sum(dfinal * final_state) by the reference forward.
fn loss(x: &ScanRefInputs, dout: &ArrayD<f64>, dfinal: &ArrayD<f64>) -> f64 {
    let r = scan::selective_scan(x);
    (&r.out * dout).sum() + (&r.final_state * dfinal).sum()
}

/// The names of the reference's inputs, with their arrays and gradients.
const FIELDS: [&str; 9] = ["u", "delta", "a", "b", "c", "d", "z", "delta_bias", "initial_state"];

fn field<'a>(x: &'a mut ScanRefInputs, name: &str) -> Option<&'a mut ArrayD<f64>> {
    match name {
        "u" => Some(&mut x.u),
        "delta" => Some(&mut x.delta),
        "a" => Some(&mut x.a),
        "b" => Some(&mut x.b),
        "c" => Some(&mut x.c),
        "d" => x.d.as_mut(),
        "z" => x.z.as_mut(),
        "delta_bias" => x.delta_bias.as_mut(),
        "initial_state" => x.initial_state.as_mut(),
        _ => unreachable!("{name}"),
    }
}

fn grad<'a>(g: &'a ScanRefGrads, name: &str) -> Option<&'a ArrayD<f64>> {
    match name {
        "u" => Some(&g.du),
        "delta" => Some(&g.ddelta),
        "a" => Some(&g.da),
        "b" => Some(&g.db),
        "c" => Some(&g.dc),
        "d" => g.dd.as_ref(),
        "z" => g.dz.as_ref(),
        "delta_bias" => g.ddelta_bias.as_ref(),
        "initial_state" => g.dinitial_state.as_ref(),
        _ => unreachable!("{name}"),
    }
}

#[test]
fn reference_gradients_match_finite_differences() {
    // Central differences of the f64 reference at h = 1e-6: truncation error ~h^2 and
    // cancellation ~1e-16 |L| / h, both below 1e-8 here; wrong gradients err by O(1e-2)
    // or more.
    let mut checked = 0;
    for (i, &(softplus, gate)) in [(true, true), (true, false), (false, true), (false, false)].iter().enumerate() {
        let mut case = Case::new(2, 4, 2, 3, 6);
        case.softplus = softplus;
        case.has_z = gate;
        case.delta_scale = 20.0; // delta' up to ~10: the decay matters
        case.seed = 100 + i as u64;
        let x = case.inputs::<f32>();
        let mut refx = x.reference();
        let (dout, dfinal) = (f64s(&x.dout), f64s(x.dfinal.as_ref().expect("dfinal")));
        let g = scan::selective_scan_backward(&refx, &dout, Some(&dfinal));
        assert!(g.dz.is_some() == gate && g.dd.is_some() && g.ddelta_bias.is_some() && g.dinitial_state.is_some());
        let h = 1e-6;
        for name in FIELDS {
            let Some(analytic) = grad(&g, name).cloned() else { continue };
            let n = analytic.len();
            for k in 0..n {
                let orig = field(&mut refx, name).expect("present").as_slice_mut().expect("standard layout")[k];
                let mut at = |v: f64| {
                    field(&mut refx, name).expect("present").as_slice_mut().expect("standard layout")[k] = v;
                    loss(&refx, &dout, &dfinal)
                };
                let fd = (at(orig + h) - at(orig - h)) / (2.0 * h);
                at(orig);
                let an = analytic.as_slice().expect("standard layout")[k];
                assert!(
                    (fd - an).abs() <= 1e-6 * (1.0 + an.abs()),
                    "d{name}[{k}]: finite difference {fd}, reference {an} (softplus {softplus}, z {gate})"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 4 * 250, "{checked} partial derivatives");
}

/// The state and its magnitude (the same recurrence on absolute values), per step.
#[derive(Clone, Copy)]
struct Stepped {
    h: f64,
    mag: f64,
}

/// The recurrence stepped in f64, written out here independently of the reference:
/// returns the final states `[batch, dim, d_state]` and the states before every step that
/// is a multiple of `SEG` (`[batch, dim, n_ckpt, d_state]`).
fn step_recurrence(x: &Inputs<f32>, case: &Case) -> (Vec<Stepped>, Vec<Stepped>) {
    let (nb, nd, nn, nl) = (case.batch, case.dim(), case.d_state, case.seqlen);
    let (mut last, mut ckpts) = (vec![], vec![]);
    for b in 0..nb {
        for c in 0..nd {
            let g = c / case.per_group;
            for n in 0..nn {
                let h0 = x.init.as_ref().map_or(0.0, |h| h[[b, c, n]] as f64);
                let mut s = Stepped { h: h0, mag: h0.abs() };
                for t in 0..nl {
                    if t % SEG == 0 {
                        ckpts.push(((b, c, t / SEG, n), s));
                    }
                    let xv = x.delta[[b, c, t]] as f64 + x.bias.as_ref().map_or(0.0, |v| v[[c]] as f64);
                    let dt = if case.softplus && xv <= 20.0 { (1.0 + xv.exp()).ln() } else { xv };
                    let decay = (dt * x.a[[c, n]] as f64).exp();
                    let input = dt * x.b[[b, g, n, t]] as f64 * x.u[[b, c, t]] as f64;
                    s = Stepped { h: decay * s.h + input, mag: decay * s.mag + input.abs() };
                }
                last.push(s);
            }
        }
    }
    ckpts.sort_by_key(|&(at, _)| at);
    (last, ckpts.into_iter().map(|(_, s)| s).collect())
}

/// The error of f32 `got` against stepped values, scaled by their magnitudes.
fn stepped_error(got: &Tensor<f32>, want: &[Stepped]) -> f64 {
    let got: Vec<f64> = host(got).iter().map(|&v| v as f64).collect();
    assert_eq!(got.len(), want.len());
    let (h, mag): (Vec<f64>, Vec<f64>) = want.iter().map(|s| (s.h, s.mag)).unzip();
    scaled_error(&got, &h, &mag)
}

#[test]
fn final_state_and_checkpoints_equal_stepping_the_recurrence() {
    for (seqlen, init) in [(1, true), (511, false), (512, true), (513, true), (1537, false), (2100, true)] {
        let mut case = Case::new(2, 3, 1, 5, seqlen);
        case.has_init = init;
        case.seed = seqlen as u64;
        let x = case.inputs::<f32>();
        let (fwd, _) = run(&x, CPU).expect("valid");
        assert_eq!(fwd.checkpoints.shape(), &[2, 3, seqlen.div_ceil(SEG), 5]);
        let (last, ckpts) = step_recurrence(&x, &case);
        let err = stepped_error(&fwd.final_state, &last);
        assert!(err <= F32_TOL, "seqlen {seqlen}: final state error {err:e}");
        let err = stepped_error(&fwd.checkpoints, &ckpts);
        assert!(err <= F32_TOL, "seqlen {seqlen}: checkpoint error {err:e}");
        // Checkpoint 0 is the initial state, exactly.
        let h0 = host(&fwd.checkpoints).index_axis(Axis(2), 0).to_owned();
        match &x.init {
            Some(init) => assert_eq!(&h0, init),
            None => assert!(h0.iter().all(|&v| v == 0.0)),
        }
    }
}

/// `a[.., .., range]` along the last axis (time), as an owned standard array.
fn time_slice<E: Element>(a: &ArrayD<E>, from: usize, to: usize) -> ArrayD<E> {
    let last = Axis(a.ndim() - 1);
    a.slice_axis(last, Slice::from(from..to)).as_standard_layout().into_owned()
}

fn time_concat<E: Element>(a: &ArrayD<E>, b: &ArrayD<E>) -> ArrayD<E> {
    ndarray::concatenate(Axis(a.ndim() - 1), &[a.view(), b.view()]).expect("same shapes but time")
}

/// The inputs of steps `from..to` of `x`, starting from `init`, with `dfinal` flowing in.
fn part(x: &Inputs<f32>, from: usize, to: usize, init: ArrayD<f32>, dfinal: ArrayD<f32>) -> Inputs<f32> {
    Inputs {
        u: time_slice(&x.u, from, to),
        delta: time_slice(&x.delta, from, to),
        b: time_slice(&x.b, from, to),
        c: time_slice(&x.c, from, to),
        z: x.z.as_ref().map(|z| time_slice(z, from, to)),
        dout: time_slice(&x.dout, from, to),
        init: Some(init),
        dfinal: Some(dfinal),
        ..x.clone()
    }
}

#[test]
fn two_halves_equal_one_run() {
    // The second half starts from the first half's final state; its backward's
    // dinitial_state is the gradient flowing into the first half's final state. Per step
    // the arithmetic is the same as in one run, whatever the segment boundaries, so
    // everything but the sums over time (dA, dD, ddelta_bias) is bitwise equal.
    for (seqlen, split) in [(1300, 700), (1100, 512), (1030, 1), (600, 599), (40, 17)] {
        let mut case = Case::new(2, 6, 3, 7, seqlen);
        case.seed = split as u64;
        let x = case.inputs::<f32>();
        let (fwd, grads) = run(&x, CPU).expect("valid");

        // Forward: first half, then the second from the first's final state.
        let zero = ArrayD::<f32>::zeros(IxDyn(&[2, 6, 7]));
        let first_fwd = part(&x, 0, split, x.init.clone().expect("init"), zero.clone());
        let (f1, _) = run(&first_fwd, CPU).expect("valid");
        let second = part(&x, split, seqlen, host(&f1.final_state), x.dfinal.clone().expect("dfinal"));
        let (f2, g2) = run(&second, CPU).expect("valid");
        assert_eq!(time_concat(&host(&f1.out), &host(&f2.out)), host(&fwd.out), "split {split}: out");
        assert_eq!(host(&f2.final_state), host(&fwd.final_state), "split {split}: final state");

        // Backward of the first half with the second's dinitial_state flowing in.
        let first = part(&x, 0, split, x.init.clone().expect("init"), host(g2.dinitial_state.as_ref().expect("init")));
        let (_, g1) = run(&first, CPU).expect("valid");
        let joined = |f: fn(&ScanGrads<f32>) -> &Tensor<f32>| time_concat(&host(f(&g1)), &host(f(&g2)));
        assert_eq!(joined(|g| &g.du), host(&grads.du), "split {split}: du");
        assert_eq!(joined(|g| &g.ddelta), host(&grads.ddelta), "split {split}: ddelta");
        assert_eq!(joined(|g| &g.db), host(&grads.db), "split {split}: db");
        assert_eq!(joined(|g| &g.dc), host(&grads.dc), "split {split}: dc");
        assert_eq!(joined(|g| g.dz.as_ref().expect("z")), host(grads.dz.as_ref().expect("z")), "split {split}: dz");
        assert_eq!(
            host(g1.dinitial_state.as_ref().expect("init")),
            host(grads.dinitial_state.as_ref().expect("init")),
            "split {split}: dinitial_state"
        );

        // Sums over time: the two halves' sums added, against one sum, to f32 accuracy
        // measured on the reference's magnitudes.
        let refx = x.reference();
        let dfinal = f64s(x.dfinal.as_ref().expect("dfinal"));
        let mag = scan::selective_scan_backward_magnitudes(&refx, &f64s(&x.dout), Some(&dfinal));
        let sums: [(&str, fn(&ScanGrads<f32>) -> &Tensor<f32>, &ArrayD<f64>); 3] = [
            ("da", |g| &g.da, &mag.da),
            ("dd", |g| g.dd.as_ref().expect("d"), mag.dd.as_ref().expect("d")),
            ("ddelta_bias", |g| g.ddelta_bias.as_ref().expect("bias"), mag.ddelta_bias.as_ref().expect("bias")),
        ];
        for (name, f, m) in sums {
            let parts: Vec<f64> = (&f64s(&host(f(&g1))) + &f64s(&host(f(&g2)))).iter().copied().collect();
            let whole: Vec<f64> = f64s(&host(f(&grads))).iter().copied().collect();
            let err = scaled_error(&parts, &whole, m.as_slice().expect("standard"));
            assert!(err <= F32_TOL, "split {split}: {name} error {err:e}");
        }
    }
}

fn assert_same_grads<T: Element>(a: &ScanGrads<T>, b: &ScanGrads<T>) {
    let same = |x: &Tensor<T>, y: &Tensor<T>, what| assert_eq!(host(x), host(y), "{what}");
    let same32 = |x: &Tensor<f32>, y: &Tensor<f32>, what| assert_eq!(host(x), host(y), "{what}");
    same(&a.du, &b.du, "du");
    same(&a.ddelta, &b.ddelta, "ddelta");
    same(&a.db, &b.db, "db");
    same(&a.dc, &b.dc, "dc");
    same32(&a.da, &b.da, "da");
    match (&a.dz, &b.dz) {
        (Some(x), Some(y)) => same(x, y, "dz"),
        (x, y) => assert_eq!(x.is_some(), y.is_some(), "dz"),
    }
    for (x, y, what) in [
        (&a.dd, &b.dd, "dd"),
        (&a.ddelta_bias, &b.ddelta_bias, "ddelta_bias"),
        (&a.dinitial_state, &b.dinitial_state, "dinitial_state"),
    ] {
        match (x, y) {
            (Some(x), Some(y)) => same32(x, y, what),
            (x, y) => assert_eq!(x.is_some(), y.is_some(), "{what}"),
        }
    }
}

fn assert_same_output<T: Element>(a: &ScanOutput<T>, b: &ScanOutput<T>) {
    assert_eq!(host(&a.out), host(&b.out));
    assert_eq!(host(&a.final_state), host(&b.final_state));
    assert_eq!(host(&a.checkpoints), host(&b.checkpoints));
}

#[test]
fn backward_is_deterministic() {
    // Many channels per group (several backward units add into each dB and dC) and a
    // batch (dA, dD, ddelta_bias add over it), so the fixed summation order matters.
    let case = Case::new(3, 96, 2, 16, 1100);
    let x = case.inputs::<bf16>();
    let (f1, g1) = run(&x, CPU).expect("valid");
    for _ in 0..2 {
        let (f2, g2) = run(&x, CPU).expect("valid");
        assert_same_output(&f1, &f2);
        assert_same_grads(&g1, &g2);
    }
}

#[test]
fn many_channels_per_group() {
    // Groups of 50 and 200 channels: the backward splits a group into chunks of several
    // channels whose partial dB and dC add up (the property tests have at most 4 per group).
    for (dim, groups, seqlen) in [(100, 2, 600), (200, 1, 70), (37, 1, 520)] {
        let mut case = Case::new(2, dim, groups, 4, seqlen);
        case.seed = dim as u64;
        check::<f32>(&case, CPU).unwrap();
        check::<bf16>(&case, CPU).unwrap();
    }
}

#[test]
fn edge_sizes() {
    // seqlen 1, d_state 1, one channel, the largest d_state, and their combinations.
    let shapes = [
        (1, 1, 1, 1, 1),
        (1, 1, 1, 1, 1025),
        (2, 3, 1, 1, 1),
        (1, 1, 1, 256, 1),
        (1, 2, 2, 256, 513),
        (3, 1, 1, 7, 512),
        (1, 4, 4, 1, 1024),
    ];
    for (i, &(batch, dim, groups, d_state, seqlen)) in shapes.iter().enumerate() {
        for options in 0..4u32 {
            let mut case = Case::new(batch, dim, groups, d_state, seqlen);
            case.softplus = options & 1 == 0;
            (case.has_d, case.has_z, case.has_bias, case.has_init) =
                if options & 2 == 0 { (true, true, true, true) } else { (false, false, false, false) };
            case.has_dfinal = options == 1;
            case.seed = (i * 4) as u64 + options as u64;
            check::<f32>(&case, CPU).unwrap();
            check::<bf16>(&case, CPU).unwrap();
            check::<f16>(&case, CPU).unwrap();
        }
    }
}

#[test]
fn large_delta_stays_finite() {
    // delta' up to 500 with A down to -20: the decay exp(delta' A) underflows to exactly 0
    // (the state restarts each step) and softplus takes its x > 20 branch. Everything stays
    // finite and matches the reference.
    for (scale, softplus) in [(1000.0, true), (1000.0, false), (60.0, true)] {
        let mut case = Case::new(2, 4, 2, 16, 700);
        case.delta_scale = scale;
        case.softplus = softplus;
        case.seed = scale as u64;
        let x = case.inputs::<f32>();
        let (fwd, grads) = run(&x, CPU).expect("valid");
        let bias = x.bias.as_ref().expect("bias");
        let above = x.delta.indexed_iter().filter(|(i, d)| **d + bias[[i[1]]] > 20.0).count();
        assert!(above > 100 && above < x.delta.len(), "{above} of the x = delta + bias are above 20");
        assert!(host(&fwd.out).iter().all(|v| v.is_finite()));
        assert!(host(&grads.da).iter().all(|v| v.is_finite()));
        check::<f32>(&case, CPU).unwrap();
        check::<bf16>(&case, CPU).unwrap();
    }
}

#[test]
fn no_dfinal_state_equals_a_zero_one() {
    let mut case = Case::new(2, 4, 1, 8, 600);
    case.has_dfinal = false;
    let x = case.inputs::<f32>();
    let (_, g_none) = run(&x, CPU).expect("valid");
    let zero = Inputs { dfinal: Some(ArrayD::zeros(IxDyn(&[2, 4, 8]))), ..x.clone() };
    let (_, g_zero) = run(&zero, CPU).expect("valid");
    assert_same_grads(&g_none, &g_zero);
}

#[test]
fn non_contiguous_inputs() {
    // The same values stored time-major and viewed in the [batch, dim, seqlen] layout.
    let case = Case::new(2, 4, 2, 6, 530);
    let x = case.inputs::<bf16>();
    fn permuted<E: Element>(a: &ArrayD<E>) -> ArrayD<E> {
        let rev: Vec<usize> = (0..a.ndim()).rev().collect();
        let reversed = a.view().permuted_axes(IxDyn(&rev)).as_standard_layout().into_owned();
        reversed.permuted_axes(IxDyn(&rev))
    }
    let y = Inputs {
        u: permuted(&x.u),
        delta: permuted(&x.delta),
        a: permuted(&x.a),
        b: permuted(&x.b),
        c: permuted(&x.c),
        z: x.z.as_ref().map(permuted),
        init: x.init.as_ref().map(permuted),
        dout: permuted(&x.dout),
        dfinal: x.dfinal.as_ref().map(permuted),
        ..x.clone()
    };
    assert!(!y.u.is_standard_layout() && !y.b.is_standard_layout());
    let (f1, g1) = run(&x, CPU).expect("valid");
    let (f2, g2) = run(&y, CPU).expect("valid");
    assert_same_output(&f1, &f2);
    assert_same_grads(&g1, &g2);
}

#[test]
fn softplus_and_its_gradient_on_both_sides_of_20() {
    // One step, one state, u = B = C = dout = 1, no initial state: out = delta' and
    // ddelta = d delta'/d delta, so channel c with delta = c / 2 (0 to 30) reads off
    // softplus and sigmoid directly, across the switch to the identity above 20.
    let dim = 61;
    let ones = |shape: &[usize]| Tensor::Cpu(ArrayD::<f32>::ones(IxDyn(shape)));
    let (u, b, c) = (ones(&[1, dim, 1]), ones(&[1, 1, 1, 1]), ones(&[1, 1, 1, 1]));
    let a = Tensor::Cpu(ArrayD::from_elem(IxDyn(&[dim, 1]), -1.0f32));
    let delta = Tensor::Cpu(ArrayD::from_shape_fn(IxDyn(&[1, dim, 1]), |i| i[1] as f32 * 0.5));
    let x = flashscan::mamba::ScanInputs {
        u: &u,
        delta: &delta,
        a: &a,
        b: &b,
        c: &c,
        d: None,
        z: None,
        delta_bias: None,
        initial_state: None,
    };
    let opts = flashscan::mamba::ScanOptions { delta_softplus: true, ..Default::default() };
    let fwd = flashscan::mamba::selective_scan(&x, &opts).expect("valid");
    let g = flashscan::mamba::selective_scan_backward(&x, &opts, &fwd, &u, None, true).expect("valid");
    let (out, ddelta) = (host(&fwd.out), host(&g.ddelta));
    for ch in 0..dim {
        let xv = ch as f64 * 0.5;
        let (sp, sig) = if xv > 20.0 { (xv, 1.0) } else { ((1.0 + xv.exp()).ln(), 1.0 / (1.0 + (-xv).exp())) };
        let (o, d) = (out[[0, ch, 0]] as f64, ddelta[[0, ch, 0]] as f64);
        assert!((o - sp).abs() <= 1e-6 * sp, "softplus({xv}) = {o}, expected {sp}");
        assert!((d - sig).abs() <= 1e-6 * sig, "sigmoid({xv}) = {d}, expected {sig}");
    }
}
