//! The GPU selective scan against the f64 reference: the property checks of
//! `cpu_scan.rs` on `Device::Cuda(0)` (outputs poisoned with NaN before each launch, so
//! an unwritten element fails), every d_state tier of the kernel, channel counts that
//! leave CTAs partly empty, lengths that are and are not whole 16-byte rows (the kernel's
//! two staging paths), a 1M-step sequence, state passing between two calls, and the
//! backward kernel against the reference gradients (both modes, every variant, long
//! sequences), and its deterministic mode run twice. Run with
//! `cargo test --release --test gpu_scan -- --ignored` on a machine with an NVIDIA GPU.

mod scan_common;

use flashscan::mamba::{ScanGrads, ScanOptions, selective_scan};
use flashscan::{Device, Element, Tensor, bf16, f16, runtime::Gpu};
use ndarray::{ArrayD, Axis, Slice};
use proptest::prelude::*;
use scan_common::{Case, Inputs, Tol, check_grads, forward_errors, print_error, run_with, tol, tol_of};

/// State steps (batch * dim * seqlen * d_state) per random case: the f64 reference is the
/// slow part.
const BUDGET: usize = 6_000_000;

fn gpu() -> Device {
    let g = Gpu::get(0).expect("these tests need a CUDA GPU");
    g.set_poison_outputs(true);
    Device::Cuda(0)
}

/// The GPU keeps the CPU's tolerances (`scan_common::tol`): its exp is `ex2.approx`
/// (2^-22 relative) and its softplus a 7-term series (~1e-8), both within the f32 budget
/// of 30 units; measured on an H200, the worst f32 state error was 3.4e-7 against 2e-6.
fn gpu_tol<T: Element>() -> Tol {
    tol::<T>()
}

/// Forward on the GPU against the reference: out, final state, checkpoints.
fn check_forward<T: Element>(case: &Case) -> Result<(), String> {
    check_forward_with::<T>(case, None)
}

/// The same with the kernel variant (states per thread) forced.
fn check_forward_with<T: Element>(case: &Case, states_per_thread: Option<u32>) -> Result<(), String> {
    let x = case.inputs::<T>();
    let placed = x.place(gpu())?;
    let opts = ScanOptions { gpu_states_per_thread: states_per_thread, ..case.opts() };
    let fwd = selective_scan(&placed.inputs(), &opts).map_err(|e| format!("forward failed: {e}"))?;
    let tol = gpu_tol::<T>();
    for (name, err) in forward_errors(&x, &fwd)? {
        let limit = tol_of(&tol, name);
        print_error::<T>(case, name, err);
        if err.is_nan() || err > limit {
            return Err(format!("{name}: error {err:.3e} > {limit:.1e}\n  in {case:?} ({})", T::DTYPE));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_matches_reference_f32(case in scan_common::cases(3000, BUDGET)) {
        check_forward::<f32>(&case).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_matches_reference_bf16(case in scan_common::cases(3000, BUDGET)) {
        check_forward::<bf16>(&case).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_matches_reference_f16(case in scan_common::cases(3000, BUDGET)) {
        check_forward::<f16>(&case).map_err(TestCaseError::fail)?;
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_every_state_tier_and_partial_ctas() {
    // d_state in every slice count (1, 2, 4, 8, 16 threads per channel) and at its edges;
    // channel counts that leave the last CTA of a group partly empty; seqlen odd (element
    // staging), a whole number of 16-byte rows (cp.async), and 1.
    let shapes = [
        (2, 130, 1, 16, 100),
        (1, 200, 2, 1, 64),
        (2, 12, 3, 17, 257),
        (1, 70, 1, 33, 96),
        (1, 40, 2, 64, 33),
        (1, 18, 1, 100, 512),
        (1, 9, 1, 128, 1),
        (1, 8, 1, 129, 40),
        (2, 5, 1, 256, 80),
        (3, 129, 3, 16, 1),
    ];
    for (i, &(batch, dim, groups, d_state, seqlen)) in shapes.iter().enumerate() {
        for options in 0..2u32 {
            let mut case = Case::new(batch, dim, groups, d_state, seqlen);
            case.seed = 100 + i as u64;
            if options == 1 {
                case.softplus = false;
                (case.has_d, case.has_z, case.has_bias, case.has_init) = (false, false, false, false);
            }
            check_forward::<f32>(&case).unwrap();
            check_forward::<bf16>(&case).unwrap();
            check_forward::<f16>(&case).unwrap();
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_every_kernel_variant() {
    // Small problems get 4 states per thread by default (scan_states_for_launch): force
    // each variant (4, 8, 16 states per thread) on every slice count it allows.
    for (i, &d_state) in [1usize, 4, 5, 8, 9, 16, 17, 40, 64, 65, 128, 129, 256].iter().enumerate() {
        for ns in [4u32, 8, 16] {
            if d_state.div_ceil(ns as usize).next_power_of_two() > 32 {
                continue;
            }
            let mut case = Case::new(2, 70, 2, d_state, 97 + 64 * (i % 3));
            case.seed = 1000 + i as u64;
            for (name, r) in [
                ("f32", check_forward_with::<f32>(&case, Some(ns))),
                ("bf16", check_forward_with::<bf16>(&case, Some(ns))),
                ("f16", check_forward_with::<f16>(&case, Some(ns))),
            ] {
                if let Err(e) = r {
                    panic!("{name}, {ns} states per thread: {e}");
                }
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_long_sequences() {
    // 2^16 + 1 steps (element staging), 2^16 (cp.async) and 2^20: no limit from chunking.
    for (dim, d_state, seqlen) in [(3, 16, 65_537), (2, 8, 65_536), (1, 4, 1 << 20)] {
        let mut case = Case::new(1, dim, 1, d_state, seqlen);
        case.seed = seqlen as u64;
        check_forward::<f32>(&case).unwrap();
        check_forward::<bf16>(&case).unwrap();
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_large_delta_stays_finite() {
    // delta' up to 500: the decay underflows to 0, softplus meets x > 20.
    for scale in [1000.0, 60.0] {
        let mut case = Case::new(2, 6, 2, 16, 300);
        case.delta_scale = scale;
        check_forward::<f32>(&case).unwrap();
        check_forward::<bf16>(&case).unwrap();
    }
}

fn time_slice<E: Element>(a: &ArrayD<E>, from: usize, to: usize) -> ArrayD<E> {
    let last = Axis(a.ndim() - 1);
    a.slice_axis(last, Slice::from(from..to)).to_owned()
}

fn host<E: Element>(t: &Tensor<E>) -> ArrayD<E> {
    t.to_array().expect("download")
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_two_halves_equal_one_run() {
    // The second call starts from the first call's final state. Each thread computes the
    // same steps in the same order either way, so out and the final state are bitwise
    // equal; the split (700) is not a multiple of the chunk or the checkpoint interval.
    let dev = gpu();
    for d_state in [16, 40] {
        let case = Case::new(2, 20, 2, d_state, 1500);
        let x: Inputs<bf16> = case.inputs();
        let full = x.place(dev).unwrap();
        let one = selective_scan(&full.inputs(), &case.opts()).unwrap();
        let half = |from: usize, to: usize, init: Option<ArrayD<f32>>| {
            let mut p = x.clone();
            p.u = time_slice(&x.u, from, to);
            p.delta = time_slice(&x.delta, from, to);
            p.b = time_slice(&x.b, from, to);
            p.c = time_slice(&x.c, from, to);
            p.z = x.z.as_ref().map(|z| time_slice(z, from, to));
            p.dout = time_slice(&x.dout, from, to);
            if init.is_some() {
                p.init = init;
            }
            let placed = p.place(dev).unwrap();
            selective_scan(&placed.inputs(), &ScanOptions { delta_softplus: p.softplus, ..Default::default() }).unwrap()
        };
        let first = half(0, 700, None);
        let second = half(700, 1500, Some(host(&first.final_state)));
        let out = ndarray::concatenate(Axis(2), &[host(&first.out).view(), host(&second.out).view()]).unwrap();
        assert_eq!(out, host(&one.out), "d_state {d_state}");
        assert_eq!(host(&second.final_state), host(&one.final_state), "d_state {d_state}");
    }
}

/// Backward cases are smaller: the f64 reference gradients cost several forwards.
const BWD_BUDGET: usize = 1_000_000;

/// Forward and backward on the GPU against the reference (every result).
fn check_backward<T: Element>(case: &Case, states_per_thread: Option<u32>, deterministic: bool) -> Result<(), String> {
    let x = case.inputs::<T>();
    let (fwd, grads) = run_with(&x, gpu(), states_per_thread, deterministic)?;
    check_grads(case, &x, &fwd, &grads, gpu_tol::<T>())
        .map_err(|e| format!("{e} (states per thread {states_per_thread:?}, deterministic {deterministic})"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_backward_matches_reference_f32(case in scan_common::cases(1500, BWD_BUDGET), det in any::<bool>()) {
        check_backward::<f32>(&case, None, det).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_backward_matches_reference_bf16(case in scan_common::cases(1500, BWD_BUDGET), det in any::<bool>()) {
        check_backward::<bf16>(&case, None, det).map_err(TestCaseError::fail)?;
    }

    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn gpu_backward_matches_reference_f16(case in scan_common::cases(1500, BWD_BUDGET), det in any::<bool>()) {
        check_backward::<f16>(&case, None, det).map_err(TestCaseError::fail)?;
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_backward_every_tier_and_mode() {
    // Every slice count of both kernel variants (4 and 8 states per thread), groups
    // spread over several CTAs (dim 600: 10 CTAs of 64 channels in one group, whose dB
    // and dC partials are added), lengths around the segment (32), odd (element staging)
    // and 1; both modes; every option on, then off.
    let shapes = [
        (2, 130, 1, 16, 100),
        (1, 200, 2, 1, 64),
        (2, 12, 3, 17, 257),
        (1, 40, 2, 64, 33),
        (1, 18, 1, 100, 31),
        (1, 9, 1, 128, 1),
        (2, 5, 1, 256, 80),
        (3, 129, 3, 16, 1),
        (2, 600, 1, 16, 96),
        (1, 300, 3, 5, 45),
    ];
    for (i, &(batch, dim, groups, d_state, seqlen)) in shapes.iter().enumerate() {
        for options in 0..2u32 {
            let mut case = Case::new(batch, dim, groups, d_state, seqlen);
            case.seed = 300 + i as u64;
            if options == 1 {
                case.softplus = false;
                (case.has_d, case.has_z, case.has_bias, case.has_init, case.has_dfinal) =
                    (false, false, false, false, false);
            }
            for ns in [4u32, 8] {
                // The forward takes at most 32 threads per channel.
                if d_state.div_ceil(ns as usize).next_power_of_two() > 32 {
                    continue;
                }
                // Each variant in both modes, the dtypes taking turns (the f64 reference is
                // the slow part).
                let det = (i + ns as usize + options as usize) % 2 == 0;
                check_backward::<bf16>(&case, Some(ns), !det).unwrap();
                if ns == 4 {
                    check_backward::<f32>(&case, Some(ns), det).unwrap();
                } else {
                    check_backward::<f16>(&case, Some(ns), det).unwrap();
                }
            }
        }
    }
}

fn assert_same_grads<T: Element>(a: &ScanGrads<T>, b: &ScanGrads<T>) {
    let same = |x: &Tensor<T>, y: &Tensor<T>| host(x) == host(y);
    let same32 = |x: &Tensor<f32>, y: &Tensor<f32>| host(x) == host(y);
    let opt32 = |x: &Option<Tensor<f32>>, y: &Option<Tensor<f32>>| match (x, y) {
        (Some(x), Some(y)) => same32(x, y),
        (None, None) => true,
        _ => false,
    };
    assert!(same(&a.du, &b.du) && same(&a.ddelta, &b.ddelta), "du / ddelta differ");
    assert!(same(&a.db, &b.db) && same(&a.dc, &b.dc), "db / dc differ");
    assert!(same32(&a.da, &b.da) && opt32(&a.dd, &b.dd), "da / dd differ");
    assert!(opt32(&a.ddelta_bias, &b.ddelta_bias) && opt32(&a.dinitial_state, &b.dinitial_state));
    match (&a.dz, &b.dz) {
        (Some(x), Some(y)) => assert!(same(x, y), "dz differs"),
        (None, None) => {}
        _ => panic!("dz present in one run only"),
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_backward_deterministic_is_bitwise_reproducible() {
    // Many CTAs per group add into the same dB / dC: the deterministic mode gives the same
    // bits on every run; the atomic mode agrees with the reference either way.
    let case = Case::new(2, 1000, 2, 16, 300);
    let x: Inputs<f32> = case.inputs();
    let (fwd1, g1) = run_with(&x, gpu(), None, true).unwrap();
    let (_, g2) = run_with(&x, gpu(), None, true).unwrap();
    assert_same_grads(&g1, &g2);
    check_grads(&case, &x, &fwd1, &g1, gpu_tol::<f32>()).unwrap();
    let (fwd3, g3) = run_with(&x, gpu(), None, false).unwrap();
    check_grads(&case, &x, &fwd3, &g3, gpu_tol::<f32>()).unwrap();
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_backward_long_sequence_and_large_delta() {
    // 2^16 + 1 steps (2049 segments walked in reverse); delta' up to 500 (decays underflow).
    let mut case = Case::new(1, 3, 1, 16, 65_537);
    case.seed = 77;
    check_backward::<f32>(&case, None, true).unwrap();
    check_backward::<bf16>(&case, None, false).unwrap();
    for scale in [1000.0, 60.0] {
        let mut case = Case::new(2, 6, 2, 16, 300);
        case.delta_scale = scale;
        check_backward::<f32>(&case, None, true).unwrap();
        check_backward::<bf16>(&case, None, false).unwrap();
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_backward_small_and_ragged() {
    // The compute-sanitizer cases: a partial CTA and an odd length, both modes.
    for (i, &(dim, groups, d_state, seqlen)) in [(70, 2, 16, 45), (9, 1, 100, 33)].iter().enumerate() {
        let mut case = Case::new(1, dim, groups, d_state, seqlen);
        case.seed = 900 + i as u64;
        for det in [true, false] {
            check_backward::<f32>(&case, None, det).unwrap();
            check_backward::<bf16>(&case, None, det).unwrap();
        }
    }
}
