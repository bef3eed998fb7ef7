//! Mamba-1 selective scan, forward and backward, on the GPU (`kernels-gpu/src/mamba`) or
//! the CPU (`cpu.rs`, the same checkpointed algorithm).
//!
//! Layouts (DESIGN.md): u, delta, z `[batch, dim, seqlen]` of the element type T (f32,
//! bf16 or f16); A `[dim, d_state]` f32; B, C `[batch, groups, d_state, seqlen]` T;
//! D, delta_bias `[dim]` f32; initial and final state `[batch, dim, d_state]` f32.
//! Channel c reads group `g = c / (dim / groups)` of B and C.
//!
//! Per (batch b, channel c, state n), for t = 0..seqlen:
//!
//! ```text
//! x_t      = delta[b,c,t] + delta_bias[c]
//! delta'_t = softplus(x_t) if delta_softplus else x_t      (softplus(x) = x for x > 20)
//! h_t[n]   = exp(delta'_t A[c,n]) h_{t-1}[n] + delta'_t B[b,g,n,t] u[b,c,t]
//! y_t      = sum_n h_t[n] C[b,g,n,t] + D[c] u[b,c,t]
//! out_t    = y_t silu(z[b,c,t])   (y_t without z)
//! ```
//!
//! with h_{-1} the initial state (0 when absent) and the final state h_{seqlen-1}. Math
//! and state are f32. The forward also returns checkpoints, f32 `[batch, dim, n_ckpt,
//! d_state]` with `n_ckpt = scan_checkpoints(seqlen)`: checkpoint i is the state before
//! step `i * SCAN_CHECKPOINT`. The backward recomputes each segment's states from its
//! checkpoint instead of storing all `seqlen x d_state` of them.
//!
//! The rest of a Mamba block's operators, on the CPU only so far: [`conv`] (the causal
//! depthwise conv1d in front of the scan, forward and backward) and [`decode`] (one-token
//! steps of the conv and of the scan's recurrence, updating their states in place).

pub mod conv;
mod conv_gpu;
mod cpu;
pub mod decode;
mod decode_gpu;
mod gpu;

use crate::tensor::check;
use crate::{Device, Element, Error, Result, Tensor};
pub use conv::{CONV_MAX_WIDTH, Conv1dGrads, Conv1dOptions, Conv1dOutput, causal_conv1d, causal_conv1d_backward};
pub use decode::{conv1d_update, selective_state_update};
use flashscan_kernels::mamba::scan_slices_for;
pub use flashscan_kernels::mamba::{SCAN_CHECKPOINT, SCAN_MAX_STATE};

/// Options of [`selective_scan`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ScanOptions {
    /// delta' = softplus(delta + delta_bias) (Mamba's parameterisation); else delta + delta_bias.
    pub delta_softplus: bool,
    /// GPU tuning: the states each GPU thread carries, 4, 8 or 16 (at most 32 threads per
    /// channel: 8 or 16 above d_state 128). `None` (the default) picks by d_state and by
    /// how many threads the problem gives (`kernels::mamba::scan_states_for_launch`).
    /// Results do not depend on it beyond f32 rounding; the CPU ignores it.
    pub gpu_states_per_thread: Option<u32>,
}

/// The inputs of a scan; the optional ones are left out of the math when `None`.
pub struct ScanInputs<'a, T: Element> {
    /// `[batch, dim, seqlen]`
    pub u: &'a Tensor<T>,
    /// `[batch, dim, seqlen]`
    pub delta: &'a Tensor<T>,
    /// `[dim, d_state]`, d_state <= 256
    pub a: &'a Tensor<f32>,
    /// `[batch, groups, d_state, seqlen]`, groups dividing dim
    pub b: &'a Tensor<T>,
    /// like `b`
    pub c: &'a Tensor<T>,
    /// `[dim]`: the skip term D * u
    pub d: Option<&'a Tensor<f32>>,
    /// `[batch, dim, seqlen]`: the gate, out = y * silu(z)
    pub z: Option<&'a Tensor<T>>,
    /// `[dim]`
    pub delta_bias: Option<&'a Tensor<f32>>,
    /// `[batch, dim, d_state]`: h before the first step (0 when absent)
    pub initial_state: Option<&'a Tensor<f32>>,
}

/// What [`selective_scan`] returns, on u's device. Pass it back to
/// [`selective_scan_backward`] (it reads the checkpoints).
pub struct ScanOutput<T: Element> {
    /// `[batch, dim, seqlen]`
    pub out: Tensor<T>,
    /// `[batch, dim, d_state]`: h after the last step
    pub final_state: Tensor<f32>,
    /// `[batch, dim, n_ckpt, d_state]`: the state before steps 0, 128, 256, ... (every
    /// `SCAN_CHECKPOINT`)
    pub checkpoints: Tensor<f32>,
}

/// Gradients of a loss with respect to each input of [`ScanInputs`], each shaped like its
/// input. The optional ones are `Some` exactly when the input was given.
pub struct ScanGrads<T: Element> {
    pub du: Tensor<T>,
    /// With respect to the raw `delta` (through the bias and the softplus).
    pub ddelta: Tensor<T>,
    pub da: Tensor<f32>,
    /// Summed over the channels of each group (in f32, then rounded to T).
    pub db: Tensor<T>,
    pub dc: Tensor<T>,
    pub dd: Option<Tensor<f32>>,
    pub dz: Option<Tensor<T>>,
    pub ddelta_bias: Option<Tensor<f32>>,
    pub dinitial_state: Option<Tensor<f32>>,
}

/// The resolved problem that both backends receive after validation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Problem {
    pub batch: usize,
    pub dim: usize,
    pub seqlen: usize,
    pub d_state: usize,
    pub groups: usize,
    pub delta_softplus: bool,
    pub has_d: bool,
    pub has_z: bool,
    pub has_bias: bool,
    pub has_init: bool,
    pub gpu_states_per_thread: Option<u32>,
}

impl Problem {
    /// Checkpoints per (batch, channel): `scan_checkpoints(seqlen)`, in usize.
    pub fn n_checkpoints(&self) -> usize {
        self.seqlen.div_ceil(SCAN_CHECKPOINT as usize).max(1)
    }

    /// Channels per group of B and C.
    pub fn channels_per_group(&self) -> usize {
        self.dim / self.groups
    }
}

/// The selective scan forward: out, the final state and the checkpoints (see the module
/// documentation for the recurrence and the layouts).
///
/// Errors: [`Error::Shape`] naming the argument whose shape is wrong (d_state over 256 is
/// reported on `a`, groups not dividing dim on `b`), [`Error::DeviceMismatch`] when an
/// input is not on u's device, and the GPU runtime's errors on `Device::Cuda`.
pub fn selective_scan<T: Element>(x: &ScanInputs<T>, opts: &ScanOptions) -> Result<ScanOutput<T>> {
    let p = validate(x, opts)?;
    match x.u.device() {
        Device::Cpu => cpu::forward(&p, x),
        Device::Cuda(_) => gpu::forward(&p, x),
    }
}

/// The selective scan backward: the gradient of a loss with respect to every input, given
/// `dout` (like out) and optionally `dfinal_state` (`[batch, dim, d_state]` f32, the
/// gradient flowing into the final state). `saved` is the forward's output for the same
/// inputs and options; its checkpoints are where the states are recomputed from.
///
/// `deterministic` asks for bitwise reproducible results (the GPU otherwise sums dB and
/// dC with atomics); the CPU path is always deterministic, independent of its thread count.
///
/// Errors: those of [`selective_scan`], plus [`Error::Shape`] / [`Error::DeviceMismatch`]
/// naming `dout`, `dfinal_state`, `saved.out`, `saved.final_state` or `saved.checkpoints`.
pub fn selective_scan_backward<T: Element>(
    x: &ScanInputs<T>,
    opts: &ScanOptions,
    saved: &ScanOutput<T>,
    dout: &Tensor<T>,
    dfinal_state: Option<&Tensor<f32>>,
    deterministic: bool,
) -> Result<ScanGrads<T>> {
    let p = validate(x, opts)?;
    validate_backward(&p, x.u.device(), saved, dout, dfinal_state)?;
    match x.u.device() {
        Device::Cpu => cpu::backward(&p, x, saved, dout, dfinal_state),
        Device::Cuda(_) => gpu::backward(&p, x, saved, dout, dfinal_state, deterministic),
    }
}

/// Checks every input (shape, then device, in argument order) and resolves the problem.
pub(crate) fn validate<T: Element>(x: &ScanInputs<T>, opts: &ScanOptions) -> Result<Problem> {
    let us = x.u.shape();
    rank("u", us, 3, "[batch, dim, seqlen]")?;
    let (batch, dim, seqlen) = (us[0], us[1], us[2]);
    let device = x.u.device();

    arg("delta", x.delta.shape(), x.delta.device(), &[batch, dim, seqlen], device)?;

    let a_shape = x.a.shape();
    rank("a", a_shape, 2, "[dim, d_state]")?;
    let d_state = a_shape[1];
    if a_shape[0] != dim || d_state > SCAN_MAX_STATE as usize {
        return Err(Error::Shape {
            arg: "a",
            got: a_shape.to_vec(),
            expected: format!("[{dim}, d_state] (u's dim) with d_state at most {SCAN_MAX_STATE}"),
        });
    }
    check::same_device("a", x.a.device(), device)?;

    let b_shape = x.b.shape();
    rank("b", b_shape, 4, "[batch, groups, d_state, seqlen]")?;
    let groups = b_shape[1];
    if b_shape[0] != batch || b_shape[2] != d_state || b_shape[3] != seqlen || dim % groups != 0 {
        return Err(Error::Shape {
            arg: "b",
            got: b_shape.to_vec(),
            expected: format!(
                "[{batch}, groups, {d_state}, {seqlen}] (u's batch and seqlen, a's d_state) with groups dividing dim = {dim}"
            ),
        });
    }
    check::same_device("b", x.b.device(), device)?;
    arg("c", x.c.shape(), x.c.device(), b_shape, device)?;

    if let Some(d) = x.d {
        arg("d", d.shape(), d.device(), &[dim], device)?;
    }
    if let Some(z) = x.z {
        arg("z", z.shape(), z.device(), &[batch, dim, seqlen], device)?;
    }
    if let Some(bias) = x.delta_bias {
        arg("delta_bias", bias.shape(), bias.device(), &[dim], device)?;
    }
    if let Some(h0) = x.initial_state {
        arg("initial_state", h0.shape(), h0.device(), &[batch, dim, d_state], device)?;
    }

    if let Some(ns) = opts.gpu_states_per_thread
        && (!matches!(ns, 4 | 8 | 16) || scan_slices_for(d_state as u32, ns) > 32)
    {
        return Err(Error::Value {
            arg: "gpu_states_per_thread",
            got: ns.to_string(),
            expected: format!("4, 8 or 16, and at least d_state / 32 = {}", d_state.div_ceil(32)),
        });
    }

    Ok(Problem {
        batch,
        dim,
        seqlen,
        d_state,
        groups,
        delta_softplus: opts.delta_softplus,
        has_d: x.d.is_some(),
        has_z: x.z.is_some(),
        has_bias: x.delta_bias.is_some(),
        has_init: x.initial_state.is_some(),
        gpu_states_per_thread: opts.gpu_states_per_thread,
    })
}

/// Checks the backward's extra arguments against the validated problem.
fn validate_backward<T: Element>(
    p: &Problem,
    device: Device,
    saved: &ScanOutput<T>,
    dout: &Tensor<T>,
    dfinal_state: Option<&Tensor<f32>>,
) -> Result<()> {
    let (seq, state) = ([p.batch, p.dim, p.seqlen], [p.batch, p.dim, p.d_state]);
    arg("dout", dout.shape(), dout.device(), &seq, device)?;
    if let Some(df) = dfinal_state {
        arg("dfinal_state", df.shape(), df.device(), &state, device)?;
    }
    arg("saved.out", saved.out.shape(), saved.out.device(), &seq, device)?;
    arg("saved.final_state", saved.final_state.shape(), saved.final_state.device(), &state, device)?;
    let ckpt = [p.batch, p.dim, p.n_checkpoints(), p.d_state];
    arg("saved.checkpoints", saved.checkpoints.shape(), saved.checkpoints.device(), &ckpt, device)
}

/// `arg` has `n` dimensions, each at least 1; `layout` names them for the message.
pub(crate) fn rank(arg: &'static str, shape: &[usize], n: usize, layout: &str) -> Result<()> {
    if shape.len() != n || shape.contains(&0) {
        return Err(Error::Shape { arg, got: shape.to_vec(), expected: format!("{n} dimensions {layout}, each >= 1") });
    }
    Ok(())
}

/// `arg` has exactly shape `expected` and lives on `device`.
pub(crate) fn arg(arg: &'static str, shape: &[usize], on: Device, expected: &[usize], device: Device) -> Result<()> {
    check::shape(arg, shape, expected)?;
    check::same_device(arg, on, device)
}
