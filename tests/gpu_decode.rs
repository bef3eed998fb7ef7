//! The GPU decode steps: `conv1d_update` and `selective_state_update` on
//! `Device::Cuda(0)` against the CPU steps (themselves checked against f64 in
//! `cpu_decode.rs`) from the same states, at batch 1 and 64, every width, d_state 1..=256
//! (both state paths: rows of whole 16-byte vectors and not), every option; and the key
//! consistency check on the GPU: decoding token by token reproduces the GPU prefill
//! (causal_conv1d then selective_scan). Outputs are poisoned (NaN) before every launch.
//! Run with `cargo test --release --test gpu_decode -- --ignored` on a GPU machine.

mod scan_common;

use flashscan::mamba::{
    Conv1dOptions, ScanInputs, ScanOptions, causal_conv1d, conv1d_update, selective_scan, selective_state_update,
};
use flashscan::{DType, Device, Element, Tensor, bf16, f16, runtime::Gpu};
use ndarray::{ArrayD, Axis};
use scan_common::Rng;

fn gpu() -> Device {
    let g = Gpu::get(0).expect("these tests need a CUDA GPU");
    g.set_poison_outputs(true);
    Device::Cuda(0)
}

fn on<E: Element>(a: &ArrayD<E>, d: Device) -> Tensor<E> {
    Tensor::from_array(a.clone(), d).expect("place")
}

fn host<E: Element>(t: &Tensor<E>) -> ArrayD<E> {
    t.to_array().expect("download")
}

/// ||got - want|| / max(||want||, 1e-2 sqrt(n)) in f64: relative, but a result that is
/// near 0 by cancellation (inputs are O(1)) is judged on the inputs' scale.
fn err<E: Element>(got: &ArrayD<E>, want: &ArrayD<E>) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let (mut num, mut den) = (0.0, 0.0);
    for (g, w) in got.iter().zip(want) {
        let (g, w) = (g.to_f64(), w.to_f64());
        num += (g - w) * (g - w);
        den += w * w;
    }
    num.sqrt() / den.sqrt().max(1e-2 * (got.len() as f64).sqrt())
}

/// GPU vs CPU: f32 results 2e-5 (the state's exp(delta' A) has exponents up to ~15, and
/// the GPU's ex2.approx errs by 2^-22 relative on top of the f32 rounding of delta' A);
/// results rounded to bf16 / f16 may round the other way: one unit, 2^-8 / 2^-11.
fn tol<T: Element>() -> f64 {
    match T::DTYPE {
        DType::F32 => 2e-5,
        DType::BF16 => 8e-3,
        DType::F16 => 1.2e-3,
    }
}

struct StepCase {
    batch: usize,
    dim: usize,
    groups: usize,
    d_state: usize,
    width: usize,
    all: bool,
    seed: u64,
}

/// One conv step and one SSM step from random states, GPU against CPU.
fn check_step<T: Element>(c: &StepCase) {
    let (b, d, n, g, w) = (c.batch, c.dim, c.d_state, c.groups, c.width);
    let mut rng = Rng::new(c.seed);
    let what = format!("b={b} dim={d} n={n} groups={g} width={w} all={} ({})", c.all, T::DTYPE);
    let x: ArrayD<T> = rng.normal(&[b, d]);
    let wt: ArrayD<T> = rng.normal(&[d, w]);
    let bias: ArrayD<T> = rng.normal(&[d]);
    let cstate: ArrayD<T> = rng.normal(&[b, d, w - 1]);
    let opts = Conv1dOptions { silu: c.all };
    let dev = gpu();
    let bias_on = |dv| c.all.then(|| on(&bias, dv));
    let (bc, bg) = (bias_on(Device::Cpu), bias_on(dev));
    let mut sc = on(&cstate, Device::Cpu);
    let mut sg = on(&cstate, dev);
    let yc = host(&conv1d_update(&on(&x, Device::Cpu), &mut sc, &on(&wt, Device::Cpu), bc.as_ref(), &opts).unwrap());
    let yg = host(&conv1d_update(&on(&x, dev), &mut sg, &on(&wt, dev), bg.as_ref(), &opts).unwrap());
    let e = err(&yg, &yc);
    assert!(e <= tol::<T>(), "conv1d_update y: error {e:.3e} in {what}");
    // The shifted state is a copy of inputs: exact.
    assert_eq!(host(&sg), host(&sc), "conv state after the step in {what}");

    let h: ArrayD<f32> = rng.normal(&[b, d, n]);
    // delta' > 0 with or without the softplus (a negative one grows the state by
    // exp(|delta' A|) a step, to inf in f16 or within a few steps).
    let delta: ArrayD<T> = rng.fill(&[b, d], |r| (0.5 * r.std_normal() - 1.0).exp());
    let a: ArrayD<f32> = rng.fill(&[d, n], |r| -r.std_normal().exp());
    let (bm, cm): (ArrayD<T>, ArrayD<T>) = (rng.normal(&[b, g, n]), rng.normal(&[b, g, n]));
    let dd: ArrayD<f32> = rng.normal(&[d]);
    let z: ArrayD<T> = rng.normal(&[b, d]);
    let db: ArrayD<f32> = rng.fill(&[d], |r| 0.1 * r.std_normal());
    let run = |dv: Device| {
        let mut state = on(&h, dv);
        let opt = |a: &ArrayD<f32>| c.all.then(|| on(a, dv));
        let (d_t, db_t, z_t) = (opt(&dd), opt(&db), c.all.then(|| on(&z, dv)));
        let out = selective_state_update(
            &mut state,
            &on(&x, dv),
            &on(&delta, dv),
            &on(&a, dv),
            &on(&bm, dv),
            &on(&cm, dv),
            d_t.as_ref(),
            z_t.as_ref(),
            db_t.as_ref(),
            c.all,
        )
        .unwrap();
        (host(&out), host(&state))
    };
    let ((oc, hc), (og, hg)) = (run(Device::Cpu), run(dev));
    let e = err(&og, &oc);
    assert!(e <= tol::<T>(), "selective_state_update out: error {e:.3e} in {what}");
    let e = err(&hg, &hc);
    assert!(e <= 2e-5, "selective_state_update state: error {e:.3e} in {what}");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_decode_steps_match_cpu() {
    let mut seed = 0;
    for batch in [1, 64] {
        for (dim, groups) in [(1, 1), (37, 1), (96, 3), (512, 2)] {
            for d_state in [1, 3, 4, 16, 17, 64, 128, 129, 256] {
                for width in [1, 2, 4, 8] {
                    for all in [false, true] {
                        seed += 1;
                        let c = StepCase { batch, dim, groups, d_state, width, all, seed };
                        check_step::<f32>(&c);
                        check_step::<bf16>(&c);
                        check_step::<f16>(&c);
                    }
                }
            }
        }
    }
}

/// Decoding `seqlen` tokens one by one on the GPU from zero states against the GPU
/// prefill on the same inputs: conv outputs and the final conv state bitwise (the same
/// `conv_point` FMAs), the scan's outputs and final state to f32 rounding (the step and
/// the scan sum over the states in different orders).
fn decode_equals_prefill<T: Element>(
    batch: usize,
    dim: usize,
    groups: usize,
    n: usize,
    width: usize,
    l: usize,
    all: bool,
) {
    let dev = gpu();
    let mut rng = Rng::new((batch * 1000 + dim * 10 + n + width + l) as u64);
    let what = format!("b={batch} dim={dim} groups={groups} n={n} width={width} L={l} all={all} ({})", T::DTYPE);
    let x: ArrayD<T> = rng.normal(&[batch, dim, l]);
    let w: ArrayD<T> = rng.fill(&[dim, width], |r| r.std_normal() / (width as f64).sqrt());
    let wb: ArrayD<T> = rng.normal(&[dim]);
    let delta: ArrayD<T> = rng.fill(&[batch, dim, l], |r| (0.5 * r.std_normal() - 1.0).exp());
    let a: ArrayD<f32> = rng.fill(&[dim, n], |r| -r.std_normal().exp());
    let (bm, cm): (ArrayD<T>, ArrayD<T>) = (rng.normal(&[batch, groups, n, l]), rng.normal(&[batch, groups, n, l]));
    let dd: ArrayD<f32> = rng.normal(&[dim]);
    let z: ArrayD<T> = rng.normal(&[batch, dim, l]);
    let dbias: ArrayD<f32> = rng.fill(&[dim], |r| 0.05 * r.std_normal());
    let copts = Conv1dOptions { silu: all };
    let (wt, wbt) = (on(&w, dev), all.then(|| on(&wb, dev)));
    let (at, dt, zt, dbt) =
        (on(&a, dev), all.then(|| on(&dd, dev)), all.then(|| on(&z, dev)), all.then(|| on(&dbias, dev)));

    let conv = causal_conv1d(&on(&x, dev), &wt, wbt.as_ref(), None, &copts).unwrap();
    let (deltat, bt, ct) = (on(&delta, dev), on(&bm, dev), on(&cm, dev));
    let scan = selective_scan(
        &ScanInputs {
            u: &conv.y,
            delta: &deltat,
            a: &at,
            b: &bt,
            c: &ct,
            d: dt.as_ref(),
            z: zt.as_ref(),
            delta_bias: dbt.as_ref(),
            initial_state: None,
        },
        &ScanOptions { delta_softplus: all, ..Default::default() },
    )
    .unwrap();
    let (conv_y, scan_out) = (host(&conv.y), host(&scan.out));

    let mut conv_state = on(&ArrayD::from_elem(ndarray::IxDyn(&[batch, dim, width - 1]), T::from_f32(0.0)), dev);
    let mut ssm_state = on(&ArrayD::<f32>::zeros(ndarray::IxDyn(&[batch, dim, n])), dev);
    let step = |a: &ArrayD<T>, t: usize| a.index_axis(Axis(a.ndim() - 1), t).to_owned();
    for t in 0..l {
        let u = conv1d_update(&on(&step(&x, t), dev), &mut conv_state, &wt, wbt.as_ref(), &copts).unwrap();
        assert_eq!(host(&u), step(&conv_y, t), "conv1d_update at step {t} differs from causal_conv1d in {what}");
        let zs = all.then(|| on(&step(&z, t), dev));
        let out = selective_state_update(
            &mut ssm_state,
            &u,
            &on(&step(&delta, t), dev),
            &at,
            &on(&step(&bm, t), dev),
            &on(&step(&cm, t), dev),
            dt.as_ref(),
            zs.as_ref(),
            dbt.as_ref(),
            all,
        )
        .unwrap();
        let e = err(&host(&out), &step(&scan_out, t));
        assert!(e <= tol::<T>(), "step {t}: output error {e:.3e} against the scan in {what}");
    }
    assert_eq!(host(&conv_state), host(&conv.final_state), "final conv state in {what}");
    let e = err(&host(&ssm_state), &host(&scan.final_state));
    assert!(e <= 2e-5, "final SSM state error {e:.3e} against the scan in {what}");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_decode_equals_prefill() {
    for (batch, dim, groups) in [(1, 48, 1), (64, 24, 2), (3, 130, 1)] {
        for (n, width, l) in [(16, 4, 40), (1, 1, 9), (5, 8, 20), (64, 2, 33), (256, 3, 12)] {
            for all in [false, true] {
                decode_equals_prefill::<f32>(batch, dim, groups, n, width, l, all);
                decode_equals_prefill::<bf16>(batch, dim, groups, n, width, l, all);
            }
        }
    }
    decode_equals_prefill::<f16>(2, 16, 1, 16, 4, 30, true);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn gpu_decode_small_ragged() {
    // A few small cases for compute-sanitizer: d_state not a multiple of 4 (element path),
    // partial CTAs, groups, every option.
    for (i, &(batch, dim, groups, d_state, width)) in
        [(1, 5, 1, 3, 4), (3, 130, 2, 17, 8), (2, 33, 1, 256, 2)].iter().enumerate()
    {
        let c = StepCase { batch, dim, groups, d_state, width, all: true, seed: 900 + i as u64 };
        check_step::<f32>(&c);
        check_step::<bf16>(&c);
    }
    decode_equals_prefill::<bf16>(2, 20, 2, 13, 4, 6, true);
}
