//! flashscan's main example: LayerNorm and RMSNorm over a batch of token vectors on the
//! best device available (the GPU if there is one, else the CPU, saying why), checked
//! against the f64 reference.
//!
//!     cargo run --release --example demo

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
    Ok(())
}
