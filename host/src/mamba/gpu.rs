//! GPU path of the selective scan: fills the launch parameters (`kernels-gpu/src/mamba`)
//! and launches one CTA per (run of channels of one group, batch row), forward and backward.

use super::{Problem, ScanGrads, ScanInputs, ScanOutput};
use crate::kernels::mamba::{
    SCAN_BWD_SEG, SCAN_CHECKPOINT, SCAN_SUM_THREADS, SCAN_THREADS, ScanBwdParams, ScanBwdSmem, ScanFwdParams, ScanSmem,
    ScanSumParams, scan_bwd_fixed, scan_bwd_states_per_thread, scan_slices_for, scan_states_for_launch,
};
use crate::runtime::{GpuTensor, LaunchGrid};
use crate::tensor::device_addr_or_0 as addr;
use crate::{Element, Error, Result, Tensor};

/// Launch limits, checked before anything is allocated: batch is the grid's y, steps
/// are counted in u32.
fn check_launch<T: Element>(p: &Problem, x: &ScanInputs<T>) -> Result<()> {
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
    Ok(())
}

/// The grid's x: `groups x ctas_per_group` CTAs.
fn grid_x<T: Element>(p: &Problem, x: &ScanInputs<T>, ctas_per_group: usize) -> Result<u32> {
    let grid_x = p.groups * ctas_per_group;
    if grid_x > i32::MAX as usize {
        return Err(Error::Shape {
            arg: "u",
            got: x.u.shape().to_vec(),
            expected: "dim small enough for the grid's x dimension".into(),
        });
    }
    Ok(grid_x as u32)
}

pub(crate) fn forward<T: Element>(p: &Problem, x: &ScanInputs<T>) -> Result<ScanOutput<T>> {
    check_launch(p, x)?;
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
    let grid = grid_x(p, x, ctas_per_group)?;
    let cfg = LaunchGrid { grid: (grid, p.batch as u32, 1), block: SCAN_THREADS, smem: lay.total };
    let kernel = format!("scan_fwd_{}_s{ns}", T::DTYPE.suffix());
    gpu.launch(&kernel, cfg, &params)?;
    Ok(ScanOutput {
        out: Tensor::Cuda(out),
        final_state: Tensor::Cuda(final_state),
        checkpoints: Tensor::Cuda(checkpoints),
    })
}

/// The backward on the GPU: `scan_bwd_*` (one CTA per run of channels of one group and
/// batch row, walking the checkpoint segments in reverse) writes du, ddelta, dz and
/// dinitial_state, per-batch-row partials of dA, dD and ddelta_bias, and dB / dC in f32;
/// `scan_bwd_sum_*` then sums the partials in a fixed order and rounds dB, dC to T.
/// With `deterministic`, each CTA stores its own dB / dC partial (`[ctas_per_group, 2,
/// batch, groups, d_state, seqlen]` f32, summed in CTA order: bitwise reproducible);
/// else every CTA adds into one zeroed buffer with `red.global.add` (the order of the
/// additions varies from run to run).
pub(crate) fn backward<T: Element>(
    p: &Problem,
    x: &ScanInputs<T>,
    saved: &ScanOutput<T>,
    dout: &Tensor<T>,
    dfinal_state: Option<&Tensor<f32>>,
    deterministic: bool,
) -> Result<ScanGrads<T>> {
    check_launch(p, x)?;
    let u = x.u.gpu_data("u")?;
    let gpu = u.gpu().clone();
    let (seq, state) = ([p.batch, p.dim, p.seqlen], [p.batch, p.dim, p.d_state]);
    let du = GpuTensor::<T>::uninit(&gpu, &seq)?;
    let ddelta = GpuTensor::<T>::uninit(&gpu, &seq)?;
    let dz = if p.has_z { Some(GpuTensor::<T>::uninit(&gpu, &seq)?) } else { None };
    let dinit = if p.has_init { Some(GpuTensor::<f32>::uninit(&gpu, &state)?) } else { None };
    let da_part = GpuTensor::<f32>::uninit(&gpu, &state)?;
    let dd_part = GpuTensor::<f32>::uninit(&gpu, &[p.batch, p.dim])?;
    let dbias_part = GpuTensor::<f32>::uninit(&gpu, &[p.batch, p.dim])?;

    // The backward holds 8 x NS recomputed states per thread: 4 or 8 states per thread
    // (a forced 16 becomes 8; a forced 4 that would need more than 32 slices, 8).
    let mut ns = p.gpu_states_per_thread.unwrap_or(scan_bwd_states_per_thread(p.d_state as u32)).min(8);
    if scan_slices_for(p.d_state as u32, ns) > 32 {
        ns = 8;
    }
    let lay = ScanBwdSmem::new(p.d_state as u32, T::DTYPE.size_bytes(), ns);
    let cpg = p.channels_per_group();
    let ctas_per_group = cpg.div_ceil(lay.channels as usize);
    let parts = if deterministic { ctas_per_group } else { 1 };
    let bc_len = p.batch * p.groups * p.d_state * p.seqlen;
    let dbc = GpuTensor::<f32>::uninit(&gpu, &[parts, 2, bc_len])?;
    if !deterministic {
        dbc.fill_bytes(0)?;
    }
    let grid = grid_x(p, x, ctas_per_group)?;
    let per = (SCAN_CHECKPOINT / SCAN_BWD_SEG) as usize;
    let starts =
        GpuTensor::<f32>::uninit(&gpu, &[grid as usize * p.batch, lay.threads as usize, per - 1, ns as usize])?;
    let params = ScanBwdParams {
        u: u.device_addr(),
        delta: x.delta.gpu_data("delta")?.device_addr(),
        z: addr(x.z, "z")?,
        dout: dout.gpu_data("dout")?.device_addr(),
        a: x.a.gpu_data("a")?.device_addr(),
        b: x.b.gpu_data("b")?.device_addr(),
        c: x.c.gpu_data("c")?.device_addr(),
        d: addr(x.d, "d")?,
        delta_bias: addr(x.delta_bias, "delta_bias")?,
        checkpoints: saved.checkpoints.gpu_data("saved.checkpoints")?.device_addr(),
        dfinal_state: addr(dfinal_state, "dfinal_state")?,
        du: du.device_addr(),
        ddelta: ddelta.device_addr(),
        dz: dz.as_ref().map_or(0, |t| t.device_addr()),
        dinitial_state: dinit.as_ref().map_or(0, |t| t.device_addr()),
        da_part: da_part.device_addr(),
        dd_part: dd_part.device_addr(),
        dbias_part: dbias_part.device_addr(),
        dbc: dbc.device_addr(),
        batch: p.batch as u32,
        dim: p.dim as u32,
        seqlen: p.seqlen as u32,
        d_state: p.d_state as u32,
        groups: p.groups as u32,
        channels_per_group: cpg as u32,
        ctas_per_group: ctas_per_group as u32,
        delta_softplus: p.delta_softplus as u32,
        deterministic: deterministic as u32,
        threads: lay.threads,
        _pad: 0,
        starts: starts.device_addr(),
    };
    let cfg = LaunchGrid { grid: (grid, p.batch as u32, 1), block: lay.threads, smem: lay.total };
    let kernel = if scan_bwd_fixed(ns, lay.slices) {
        format!("scan_bwd_{}_s{ns}_x{}", T::DTYPE.suffix(), lay.slices)
    } else {
        format!("scan_bwd_{}_s{ns}", T::DTYPE.suffix())
    };
    gpu.launch(&kernel, cfg, &params)?;

    // The fixed-order sums: over the batch rows (dA, dD, ddelta_bias), over the parts
    // (dB, dC).
    let sum_f32 = |part: &GpuTensor<f32>, shape: &[usize]| -> Result<Tensor<f32>> {
        let out = GpuTensor::<f32>::uninit(&gpu, shape)?;
        let len = shape.iter().product::<usize>();
        sum::<f32>(part, &out, None, len, len, p.batch)?;
        Ok(Tensor::Cuda(out))
    };
    let da = sum_f32(&da_part, &[p.dim, p.d_state])?;
    let dd = if p.has_d { Some(sum_f32(&dd_part, &[p.dim])?) } else { None };
    let ddelta_bias = if p.has_bias { Some(sum_f32(&dbias_part, &[p.dim])?) } else { None };
    let bc_shape = [p.batch, p.groups, p.d_state, p.seqlen];
    let (db, dc) = (GpuTensor::<T>::uninit(&gpu, &bc_shape)?, GpuTensor::<T>::uninit(&gpu, &bc_shape)?);
    sum::<T>(&dbc, &db, Some(&dc), 2 * bc_len, bc_len, parts)?;
    Ok(ScanGrads {
        du: Tensor::Cuda(du),
        ddelta: Tensor::Cuda(ddelta),
        da,
        db: Tensor::Cuda(db),
        dc: Tensor::Cuda(dc),
        dd,
        dz: dz.map(Tensor::Cuda),
        ddelta_bias,
        dinitial_state: dinit.map(Tensor::Cuda),
    })
}

/// `dst[i] = sum_{k < parts} src[k * len + i]` for i < split, `dst2[i - split]` above,
/// rounded to E (`scan_bwd_sum_*`).
fn sum<E: Element>(
    src: &GpuTensor<f32>,
    dst: &GpuTensor<E>,
    dst2: Option<&GpuTensor<E>>,
    len: usize,
    split: usize,
    parts: usize,
) -> Result<()> {
    let gpu = src.gpu();
    let params = ScanSumParams {
        src: src.device_addr(),
        dst: dst.device_addr(),
        dst2: dst2.map_or(0, |t| t.device_addr()),
        len: len as u64,
        split: split as u64,
        parts: parts as u32,
        _pad: 0,
    };
    // A grid-stride loop: enough CTAs to fill the GPU, no more.
    let blocks = len.div_ceil(SCAN_SUM_THREADS as usize).clamp(1, gpu.sm_count() as usize * 8);
    let cfg = LaunchGrid { grid: (blocks as u32, 1, 1), block: SCAN_SUM_THREADS, smem: 0 };
    gpu.launch(&format!("scan_bwd_sum_{}", E::DTYPE.suffix()), cfg, &params)
}
