//! flashscan's main example: LayerNorm and RMSNorm over a batch of token vectors and a
//! Mamba selective scan, on the best device available (the GPU if there is one, else the
//! CPU, saying why), each checked against its f64 reference.
//!
//!     cargo run --release --example demo

use flashscan::mamba::{ScanInputs, ScanOptions, selective_scan};
use flashscan::reference::scan::{self as scan_ref, ScanRefInputs};
use flashscan::reference::{self, rel_error};
use flashscan::{Device, Tensor, bf16, norm};
use ndarray::{ArrayD, IxDyn};

fn main() -> Result<(), flashscan::Error> {
    let (device, why_not_gpu) = Device::cuda_if_available();
    match &why_not_gpu {
        None => println!("running on {}", device.describe()),
        Some(e) => println!("running on the CPU ({e})"),
    }

    let (tokens, hidden) = (4096, 2048);
    let x = ArrayD::from_shape_fn(IxDyn(&[tokens, hidden]), |i| {
        bf16::from_f32(((i[0] * 131 + i[1] * 17) % 1013) as f32 / 500.0 - 1.0)
    });
    let w = ArrayD::from_shape_fn(IxDyn(&[hidden]), |i| bf16::from_f32(1.0 + (i[0] % 7) as f32 / 10.0));
    let b = ArrayD::from_shape_fn(IxDyn(&[hidden]), |i| bf16::from_f32((i[0] % 5) as f32 / 10.0 - 0.2));

    let (xt, wt, bt) = (
        Tensor::from_array(x.clone(), device)?,
        Tensor::from_array(w.clone(), device)?,
        Tensor::from_array(b.clone(), device)?,
    );
    let start = std::time::Instant::now();
    let ln = norm::layer_norm(&xt, &wt, Some(&bt), 1e-5)?;
    let rms = norm::rms_norm(&xt, &wt, 1e-6)?;
    let (ln_y, rms_y) = (ln.y.to_array()?, rms.y.to_array()?);
    let elapsed = start.elapsed();

    let f64s = |a: &ArrayD<bf16>| a.mapv(|v| v.to_f64());
    let (xf, wf, bf) = (f64s(&x), f64s(&w).into_raw_vec_and_offset().0, f64s(&b).into_raw_vec_and_offset().0);
    let (ref_ln, _, _) = reference::layer_norm(&xf, &wf, Some(&bf), 1e-5);
    let (ref_rms, _) = reference::rms_norm(&xf, &wf, 1e-6);
    let err = |y: &ArrayD<bf16>, r: &ArrayD<f64>| {
        rel_error(&f64s(y).into_raw_vec_and_offset().0, r.as_slice().unwrap_or(&[]))
    };
    println!("LayerNorm [{tokens} x {hidden}] bf16: relative error vs f64 reference {:.2e}", err(&ln_y, &ref_ln));
    println!("RMSNorm   [{tokens} x {hidden}] bf16: relative error vs f64 reference {:.2e}", err(&rms_y, &ref_rms));
    println!("both norms, including copies back to the host: {:.1} ms", elapsed.as_secs_f64() * 1e3);
    scan_demo(device)
}

/// A Mamba selective scan (delta softplus, D, the silu(z) gate) on `device`, against the
/// sequential f64 reference.
fn scan_demo(device: Device) -> Result<(), flashscan::Error> {
    let (batch, dim, d_state, seqlen) = (2, 256, 16, 2048);
    let wave = |seed: usize| {
        move |i: usize| ((i.wrapping_mul(2654435761).wrapping_add(seed * 97)) % 1000) as f32 / 500.0 - 1.0
    };
    let arr = |shape: &[usize], seed: usize, scale: f32, shift: f32| {
        let f = wave(seed);
        let n: usize = shape.iter().product();
        ArrayD::from_shape_vec(IxDyn(shape), (0..n).map(|i| bf16::from_f32(f(i) * scale + shift)).collect())
            .unwrap_or_else(|_| ArrayD::zeros(IxDyn(shape)))
    };
    let seq = [batch, dim, seqlen];
    let (u, delta, z) = (arr(&seq, 1, 1.0, 0.0), arr(&seq, 2, 1.5, -3.0), arr(&seq, 3, 2.0, 0.0));
    let (bm, cm) = (arr(&[batch, 1, d_state, seqlen], 4, 1.0, 0.0), arr(&[batch, 1, d_state, seqlen], 5, 1.0, 0.0));
    let a = ArrayD::from_shape_fn(IxDyn(&[dim, d_state]), |i| -1.0 - (i[1] as f32) / 4.0);
    let d = ArrayD::from_shape_fn(IxDyn(&[dim]), |i| 1.0 + (i[0] % 3) as f32 / 10.0);

    let t = |x: &ArrayD<bf16>| Tensor::from_array(x.clone(), device);
    let (ut, dt, zt, bt, ct) = (t(&u)?, t(&delta)?, t(&z)?, t(&bm)?, t(&cm)?);
    let (at, dd) = (Tensor::from_array(a.clone(), device)?, Tensor::from_array(d.clone(), device)?);
    let x = ScanInputs {
        u: &ut,
        delta: &dt,
        a: &at,
        b: &bt,
        c: &ct,
        d: Some(&dd),
        z: Some(&zt),
        delta_bias: None,
        initial_state: None,
    };
    let start = std::time::Instant::now();
    let out = selective_scan(&x, &ScanOptions { delta_softplus: true, ..Default::default() })?.out.to_array()?;
    let elapsed = start.elapsed();

    let f64s = |a: &ArrayD<bf16>| a.mapv(|v| v.to_f64());
    let want = scan_ref::selective_scan(&ScanRefInputs {
        u: f64s(&u),
        delta: f64s(&delta),
        a: a.mapv(f64::from),
        b: f64s(&bm),
        c: f64s(&cm),
        d: Some(d.mapv(f64::from)),
        z: Some(f64s(&z)),
        delta_bias: None,
        initial_state: None,
        delta_softplus: true,
    });
    let err = rel_error(&f64s(&out).into_raw_vec_and_offset().0, want.out.as_slice().unwrap_or(&[]));
    println!(
        "selective scan b={batch} dim={dim} d_state={d_state} L={seqlen} bf16: relative error vs f64 reference {err:.2e}, {:.1} ms with copies",
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}
