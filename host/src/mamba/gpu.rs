//! GPU path of the selective scan: fills the launch parameters (`kernels-gpu/src/mamba`)
//! and launches one CTA per (run of channels of one group, batch row).

use super::{Problem, ScanGrads, ScanInputs, ScanOutput};
use crate::kernels::mamba::{SCAN_THREADS, ScanFwdParams, ScanSmem, scan_states_for_launch};
use crate::runtime::{GpuTensor, LaunchGrid};
use crate::{Element, Error, Result, Tensor};

/// The device address of an optional input (0 when absent).
fn addr<E: Element>(t: Option<&Tensor<E>>, name: &'static str) -> Result<u64> {
    Ok(match t {
        Some(t) => t.gpu_data(name)?.device_addr(),
        None => 0,
    })
}

pub(crate) fn forward<T: Element>(p: &Problem, x: &ScanInputs<T>) -> Result<ScanOutput<T>> {
    // Launch limits, checked before anything is allocated: batch is the grid's y.
    if p.batch > 65535 {
        return Err(Error::Shape {
            arg: "u",
            got: x.u.shape().to_vec(),
            expected: "batch <= 65535 (the grid's y dimension)".into(),
        });
    }
    if p.seqlen > u32::MAX as usize / 2 {
        return Err(Error::Value {
            arg: "seqlen",
            got: p.seqlen.to_string(),
            expected: format!("at most {}", u32::MAX / 2),
        });
    }
    let u = x.u.gpu_data("u")?;
    let gpu = u.gpu().clone();
    let out = GpuTensor::<T>::uninit(&gpu, u.shape())?;
    let final_state = GpuTensor::<f32>::uninit(&gpu, &[p.batch, p.dim, p.d_state])?;
    let checkpoints = GpuTensor::<f32>::uninit(&gpu, &[p.batch, p.dim, p.n_checkpoints(), p.d_state])?;

    let ns = p
        .gpu_states_per_thread
        .unwrap_or_else(|| scan_states_for_launch(p.d_state as u32, (p.batch * p.dim) as u64, gpu.sm_count()));
    let lay = ScanSmem::new(p.d_state as u32, T::DTYPE.size_bytes(), ns);
    let cpg = p.channels_per_group();
    let ctas_per_group = cpg.div_ceil(lay.channels as usize);
    let params = ScanFwdParams {
        u: u.device_addr(),
        delta: x.delta.gpu_data("delta")?.device_addr(),
        z: addr(x.z, "z")?,
        out: out.device_addr(),
        a: x.a.gpu_data("a")?.device_addr(),
        b: x.b.gpu_data("b")?.device_addr(),
        c: x.c.gpu_data("c")?.device_addr(),
        d: addr(x.d, "d")?,
        delta_bias: addr(x.delta_bias, "delta_bias")?,
        initial_state: addr(x.initial_state, "initial_state")?,
        final_state: final_state.device_addr(),
        checkpoints: checkpoints.device_addr(),
        batch: p.batch as u32,
        dim: p.dim as u32,
        seqlen: p.seqlen as u32,
        d_state: p.d_state as u32,
        groups: p.groups as u32,
        channels_per_group: cpg as u32,
        ctas_per_group: ctas_per_group as u32,
        delta_softplus: p.delta_softplus as u32,
    };
    let grid_x = p.groups * ctas_per_group;
    if grid_x > i32::MAX as usize {
        return Err(Error::Shape {
            arg: "u",
            got: x.u.shape().to_vec(),
            expected: "dim small enough for the grid's x dimension".into(),
        });
    }
    let cfg = LaunchGrid { grid: (grid_x as u32, p.batch as u32, 1), block: SCAN_THREADS, smem: lay.total };
    let kernel = format!("scan_fwd_{}_s{ns}", T::DTYPE.suffix());
    gpu.launch(&kernel, cfg, &params)?;
    Ok(ScanOutput {
        out: Tensor::Cuda(out),
        final_state: Tensor::Cuda(final_state),
        checkpoints: Tensor::Cuda(checkpoints),
    })
}

/// The backward of a GPU scan. There is no backward kernel yet: this copies the inputs
/// to the host, runs the CPU backward (`cpu.rs`, the same checkpointed algorithm, always
/// deterministic) and copies the gradients back to the GPU. Correct, but bound by the
/// host (seconds at Mamba sizes); a GPU kernel is the next step of this module.
pub(crate) fn backward<T: Element>(
    p: &Problem,
    x: &ScanInputs<T>,
    saved: &ScanOutput<T>,
    dout: &Tensor<T>,
    dfinal_state: Option<&Tensor<f32>>,
    deterministic: bool,
) -> Result<ScanGrads<T>> {
    let _ = deterministic;
    let device = x.u.device();
    fn host<E: Element>(t: &Tensor<E>) -> Result<Tensor<E>> {
        Ok(Tensor::Cpu(t.to_array()?))
    }
    fn host_opt<E: Element>(t: Option<&Tensor<E>>) -> Result<Option<Tensor<E>>> {
        t.map(host).transpose()
    }
    let (u, delta, a, b, c) = (host(x.u)?, host(x.delta)?, host(x.a)?, host(x.b)?, host(x.c)?);
    let (d, z, bias, init) = (host_opt(x.d)?, host_opt(x.z)?, host_opt(x.delta_bias)?, host_opt(x.initial_state)?);
    let hx = ScanInputs {
        u: &u,
        delta: &delta,
        a: &a,
        b: &b,
        c: &c,
        d: d.as_ref(),
        z: z.as_ref(),
        delta_bias: bias.as_ref(),
        initial_state: init.as_ref(),
    };
    let hsaved = ScanOutput {
        out: host(&saved.out)?,
        final_state: host(&saved.final_state)?,
        checkpoints: host(&saved.checkpoints)?,
    };
    let (hdout, hdfinal) = (host(dout)?, host_opt(dfinal_state)?);
    let g = super::cpu::backward(p, &hx, &hsaved, &hdout, hdfinal.as_ref())?;
    fn back<E: Element>(t: Tensor<E>, device: crate::Device) -> Result<Tensor<E>> {
        Tensor::from_array(t.to_array()?, device)
    }
    fn back_opt<E: Element>(t: Option<Tensor<E>>, device: crate::Device) -> Result<Option<Tensor<E>>> {
        t.map(|t| back(t, device)).transpose()
    }
    Ok(ScanGrads {
        du: back(g.du, device)?,
        ddelta: back(g.ddelta, device)?,
        da: back(g.da, device)?,
        db: back(g.db, device)?,
        dc: back(g.dc, device)?,
        dd: back_opt(g.dd, device)?,
        dz: back_opt(g.dz, device)?,
        ddelta_bias: back_opt(g.ddelta_bias, device)?,
        dinitial_state: back_opt(g.dinitial_state, device)?,
    })
}
