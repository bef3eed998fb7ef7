//! GPU path of the causal conv1d: fills the launch parameters of `kernels-gpu/src/conv`
//! and launches one warp per (row segment) task, 4 per CTA; the backward adds the
//! fixed-order reduction of its per-warp dweight / dbias partials.

use super::conv::{Conv1dGrads, Conv1dOptions, Conv1dOutput, ConvShape};
use crate::kernels::conv::{
    CONV_BWD_VECS, CONV_FWD_VECS, CONV_PARTIAL, CONV_REDUCE_THREADS, CONV_THREADS, CONV_WARPS, ConvParams,
    ConvReduceParams, ConvSmem, conv_fwd_segments, conv_segments,
};
use crate::runtime::{GpuTensor, LaunchGrid};
use crate::tensor::device_addr_or_0 as addr;
use crate::{Element, Error, Result, Tensor};

/// Most CTAs of a conv grid: larger problems are walked grid-stride by the warps.
const MAX_GRID: usize = 1 << 20;

/// The launch-size limits of the kernels' index math, checked before any allocation.
fn check_limits(x: &Tensor<impl Element>, s: &ConvShape, seqlen: usize) -> Result<()> {
    if seqlen > (i32::MAX as usize) || s.dim > u32::MAX as usize || s.batch > u32::MAX as usize {
        return Err(Error::Shape {
            arg: "x",
            got: x.shape().to_vec(),
            expected: format!("seqlen at most {} and batch, dim at most {} on the GPU", i32::MAX, u32::MAX),
        });
    }
    Ok(())
}

/// CTAs for `tasks` warp tasks.
fn grid(tasks: usize) -> u32 {
    tasks.div_ceil(CONV_WARPS as usize).clamp(1, MAX_GRID) as u32
}

/// The parameters both directions share: inputs, shape, options.
#[allow(clippy::too_many_arguments)]
fn common_params<T: Element>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    initial_state: Option<&Tensor<T>>,
    opts: &Conv1dOptions,
    s: &ConvShape,
    seqlen: usize,
    segments: u32,
) -> Result<ConvParams> {
    Ok(ConvParams {
        x: x.gpu_data("x")?.device_addr(),
        weight: weight.gpu_data("weight")?.device_addr(),
        bias: addr(bias, "bias")?,
        initial_state: addr(initial_state, "initial_state")?,
        batch: s.batch as u32,
        dim: s.dim as u32,
        seqlen: seqlen as u32,
        width: s.width as u32,
        segments,
        silu: opts.silu as u32,
        ..Default::default()
    })
}

pub(super) fn forward<T: Element>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    initial_state: Option<&Tensor<T>>,
    opts: &Conv1dOptions,
    s: &ConvShape,
    seqlen: usize,
) -> Result<Conv1dOutput<T>> {
    check_limits(x, s, seqlen)?;
    let xg = x.gpu_data("x")?;
    let gpu = xg.gpu().clone();
    let w1 = s.width - 1;
    let y = GpuTensor::<T>::uninit(&gpu, &[s.batch, s.dim, seqlen])?;
    let final_state = GpuTensor::<T>::uninit(&gpu, &[s.batch, s.dim, w1])?;
    let eb = T::DTYPE.size_bytes();
    let segments = conv_fwd_segments(seqlen as u32, eb);
    let params = ConvParams {
        y: y.device_addr(),
        final_state: final_state.device_addr(),
        ..common_params(x, weight, bias, initial_state, opts, s, seqlen, segments)?
    };
    let tasks = s.batch * s.dim * segments as usize;
    let smem = ConvSmem::new(CONV_FWD_VECS, eb, false).cta_bytes();
    let cfg = LaunchGrid { grid: (grid(tasks), 1, 1), block: CONV_THREADS, smem };
    gpu.launch(&format!("conv1d_fwd_{}", T::DTYPE.suffix()), cfg, &params)?;
    Ok(Conv1dOutput { y: Tensor::Cuda(y), final_state: Tensor::Cuda(final_state) })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backward<T: Element>(
    x: &Tensor<T>,
    weight: &Tensor<T>,
    bias: Option<&Tensor<T>>,
    initial_state: Option<&Tensor<T>>,
    dy: &Tensor<T>,
    dfinal_state: Option<&Tensor<T>>,
    opts: &Conv1dOptions,
    s: &ConvShape,
    seqlen: usize,
) -> Result<Conv1dGrads<T>> {
    check_limits(x, s, seqlen)?;
    let xg = x.gpu_data("x")?;
    let gpu = xg.gpu().clone();
    let w1 = s.width - 1;
    let eb = T::DTYPE.size_bytes();
    let segments = conv_segments(seqlen as u32, eb, CONV_BWD_VECS);
    let records = s.batch * segments as usize;
    if records > u32::MAX as usize {
        return Err(Error::Shape {
            arg: "x",
            got: x.shape().to_vec(),
            expected: "batch x seqlen small enough for u32 partial counts".into(),
        });
    }
    let dx = GpuTensor::<T>::uninit(&gpu, &[s.batch, s.dim, seqlen])?;
    let dinit = initial_state.map(|_| GpuTensor::<T>::uninit(&gpu, &[s.batch, s.dim, w1])).transpose()?;
    let dweight = GpuTensor::<T>::uninit(&gpu, &[s.dim, s.width])?;
    let dbias = bias.map(|_| GpuTensor::<T>::uninit(&gpu, &[s.dim])).transpose()?;
    let partials = GpuTensor::<f32>::uninit(&gpu, &[s.dim, records, CONV_PARTIAL as usize])?;
    let params = ConvParams {
        dy: dy.gpu_data("dy")?.device_addr(),
        dfinal_state: addr(dfinal_state, "dfinal_state")?,
        dx: dx.device_addr(),
        dinitial_state: dinit.as_ref().map_or(0, |t| t.device_addr()),
        partials: partials.device_addr(),
        ..common_params(x, weight, bias, initial_state, opts, s, seqlen, segments)?
    };
    let tasks = s.batch * s.dim * segments as usize;
    let smem = ConvSmem::new(CONV_BWD_VECS, eb, true).cta_bytes();
    let cfg = LaunchGrid { grid: (grid(tasks), 1, 1), block: CONV_THREADS, smem };
    gpu.launch(&format!("conv1d_bwd_{}", T::DTYPE.suffix()), cfg, &params)?;

    let reduce = ConvReduceParams {
        partials: partials.device_addr(),
        dweight: dweight.device_addr(),
        dbias: dbias.as_ref().map_or(0, |t| t.device_addr()),
        dim: s.dim as u32,
        width: s.width as u32,
        records: records as u32,
        _pad: 0,
    };
    let per_cta = (CONV_REDUCE_THREADS / 32) as usize;
    let blocks = s.dim.div_ceil(per_cta);
    if blocks > i32::MAX as usize {
        return Err(Error::Shape { arg: "weight", got: weight.shape().to_vec(), expected: "a smaller dim".into() });
    }
    let cfg = LaunchGrid { grid: (blocks as u32, 1, 1), block: CONV_REDUCE_THREADS, smem: 0 };
    gpu.launch(&format!("conv1d_bwd_reduce_{}", T::DTYPE.suffix()), cfg, &reduce)?;
    Ok(Conv1dGrads {
        dx: Tensor::Cuda(dx),
        dweight: Tensor::Cuda(dweight),
        dbias: dbias.map(Tensor::Cuda),
        dinitial_state: dinit.map(Tensor::Cuda),
    })
}
