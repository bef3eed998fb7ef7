//! Exact attention (FlashAttention-2 algorithm) forward, on the GPU
//! (`kernels-gpu/src/attention`) or the CPU (`cpu.rs`, the same tiled algorithm), and
//! its backward ([`backward`]), on the GPU (`gpu_bwd.rs`) or the CPU (`cpu_bwd.rs`, the
//! kernel's tiled algorithm).
//!
//! Layouts (DESIGN.md): q `[batch, seqlen_q, heads_q, head_dim]`, k and v
//! `[batch, seqlen_k, heads_kv, head_dim]`, heads_q a multiple of heads_kv (MQA/GQA:
//! query head h reads kv head `h / (heads_q / heads_kv)`); o like q, lse
//! `[batch, heads_q, seqlen_q]` f32. Inputs are bf16 or f16; scores, softmax statistics
//! and the output accumulator are f32.
//!
//! Scores: `s = scale * q·k`, or with a softcap `s = softcap * tanh(scale * q·k / softcap)`.
//! `o = softmax(s) v` over the visible keys and `lse = log(sum(exp(s)))` (natural log).
//!
//! Masking: query i sees key j (0 <= j < seqlen_k) when
//! `i + (seqlen_k - seqlen_q) - window_left <= j <= i + (seqlen_k - seqlen_q) + window_right`
//! (bottom-right alignment, the shift may be negative; `causal` sets window_right = 0).
//! A row that sees no key gets o = 0 and lse = +inf (so that exp(s - lse) = 0 for it in a
//! backward pass). With `causal` and seqlen_q > seqlen_k, the first
//! `seqlen_q - seqlen_k` rows are such rows.
//!
//! NaN in the inputs propagates: a NaN in row i of q makes row i of o (and its lse) NaN,
//! other rows are unaffected; a NaN in k or v reaches every query that sees that key.

mod cpu;
mod cpu_bwd;
mod decode;
mod decode_cpu;
mod decode_gpu;
mod gpu;
mod gpu_bwd;
mod kv_cache;

pub use decode::{DecodeOptions, decode};
pub use kv_cache::{KvCache, PAGE_SIZE_MULTIPLE, Rotary};

use crate::tensor::check;
use crate::{DType, Device, Element, Error, Result, Tensor};

/// The largest head dimension the kernels support.
pub const MAX_HEAD_DIM: usize = 256;
/// The head dimension must be a multiple of this (16-byte rows of bf16/f16).
pub const HEAD_DIM_MULTIPLE: usize = 8;

/// Options of [`forward`]. `Default` is plain softmax(q k^T / sqrt(head_dim)) v.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionOptions {
    /// Mask keys after the query (bottom-right aligned when seqlen_q != seqlen_k).
    pub causal: bool,
    /// Sliding window: how many keys before (left) and after (right) the query's diagonal
    /// it may see; `None` = unlimited on that side. With `causal`, the right side is 0.
    pub window_left: Option<usize>,
    pub window_right: Option<usize>,
    /// Soft-capping of the scaled scores: s = softcap * tanh(s / softcap); `None` = off.
    /// Must be finite and > 0 when given.
    pub softcap: Option<f32>,
    /// Softmax scale; `None` = 1/sqrt(head_dim). Must be finite and > 0 when given.
    pub softmax_scale: Option<f32>,
}

/// The resolved problem that both backends receive after validation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Problem {
    pub batch: usize,
    pub seqlen_q: usize,
    pub seqlen_k: usize,
    pub heads_q: usize,
    pub heads_kv: usize,
    pub head_dim: usize,
    /// Softmax scale (already resolved from the option).
    pub scale: f32,
    /// 0.0 = off.
    pub softcap: f32,
    /// Visible keys of query i: [i + shift - left, i + shift + right] with
    /// shift = seqlen_k - seqlen_q; `None` = unbounded. Causal is folded into right = Some(0).
    pub window_left: Option<usize>,
    pub window_right: Option<usize>,
}

impl Problem {
    /// The kernels' window bounds (left, right): -1 for a side without a bound, and for
    /// one too wide to hide any key (left >= seqlen_k, right >= seqlen_q), so that the
    /// kernels' i32 position sums never see a huge window.
    pub(crate) fn kernel_windows(&self) -> (i32, i32) {
        (kernel_window(self.window_left, self.seqlen_k), kernel_window(self.window_right, self.seqlen_q))
    }

    /// The kernels' score parameters (softcap flag, score_pre, score_log2): the score
    /// enters the base-2 softmax as `x * score_log2`, x = q.k or, with a soft cap,
    /// x = tanh(q.k * score_pre).
    pub(crate) fn kernel_scores(&self) -> (u32, f32, f32) {
        let capped = self.softcap > 0.0;
        let score_pre = if capped { self.scale / self.softcap } else { 0.0 };
        (capped as u32, score_pre, std::f32::consts::LOG2_E * if capped { self.softcap } else { self.scale })
    }
}

/// A window side for the kernels: -1 = unbounded, also for a window of at least
/// `never_binds_from` positions (one that cannot hide a key).
pub(crate) fn kernel_window(w: Option<usize>, never_binds_from: usize) -> i32 {
    match w {
        Some(w) if w < never_binds_from => w.min(i32::MAX as usize) as i32,
        _ => -1,
    }
}

/// What [`forward`] returns: o (q's shape and element type, on q's device) and the
/// log-sum-exp of each query row's scores, f32 `[batch, heads_q, seqlen_q]` (natural log;
/// +inf for a row that sees no key).
pub struct AttentionOutput<T: Element> {
    pub o: Tensor<T>,
    pub lse: Tensor<f32>,
}

/// Attention forward: o = softmax(scale * q k^T, masked) v, and the row log-sum-exp.
///
/// q `[batch, seqlen_q, heads_q, head_dim]`, k and v `[batch, seqlen_k, heads_kv,
/// head_dim]`, all bf16 or all f16 and on one device; head_dim a multiple of 8 and at
/// most 256; heads_q a multiple of heads_kv. See the module documentation for the
/// masking and the conventions for rows without visible keys.
///
/// Errors: [`Error::DType`] for f32 inputs, [`Error::Shape`] for a wrong shape (naming
/// `q`, `k` or `v`), [`Error::Value`] for a bad option, [`Error::DeviceMismatch`] when
/// k or v is not on q's device, and the GPU runtime's errors on `Device::Cuda`.
pub fn forward<T: Element>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    opts: &AttentionOptions,
) -> Result<AttentionOutput<T>> {
    let problem = validate(q, k, v, opts)?;
    match q.device() {
        Device::Cpu => {
            let (o, lse) = cpu::forward(q.cpu_data("q")?, k.cpu_data("k")?, v.cpu_data("v")?, &problem);
            Ok(AttentionOutput { o: Tensor::Cpu(o), lse: Tensor::Cpu(lse) })
        }
        Device::Cuda(_) => {
            let (o, lse) = gpu::forward(q.gpu_data("q")?, k.gpu_data("k")?, v.gpu_data("v")?, &problem)?;
            Ok(AttentionOutput { o: Tensor::Cuda(o), lse: Tensor::Cuda(lse) })
        }
    }
}

/// Options of [`backward`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackwardOptions {
    /// Bitwise reproducible gradients. On the GPU the fast mode (`false`, the default)
    /// adds each key block's share of dQ into an f32 buffer with atomics, so the order of
    /// those sums (and the last bits of dq) varies from run to run; the deterministic mode
    /// has each key-block split write its own f32 dQ partial and sums the partials in a
    /// fixed order (more memory, somewhat slower). The CPU is always deterministic: its
    /// sums run in an order fixed by the problem, independent of the thread count, and it
    /// ignores this option.
    pub deterministic: bool,
}

/// What [`backward`] returns: the gradients of the loss with respect to q, k and v, each
/// shaped like its input, of the input element type, on q's device. With GQA / MQA, dk
/// and dv of a kv head are the sums over the query heads that read it.
pub struct AttentionGrads<T: Element> {
    pub dq: Tensor<T>,
    pub dk: Tensor<T>,
    pub dv: Tensor<T>,
}

/// Attention backward: given `dout`, the gradient of a loss with respect to the forward's
/// output o, returns the gradients with respect to q, k and v.
///
/// `q`, `k`, `v` and `opts` are exactly those of the [`forward`] call, and `o` and `lse`
/// its outputs: the backward does not store the probabilities, it recomputes them from q,
/// k and the saved lse, and it takes the softmax's row term `D = rowsum(dout * o)` from
/// o. `dout` has q's (and o's) shape. Rows that saw no key (lse = +inf) contribute
/// nothing: their dq rows are 0, and they add nothing to dk and dv.
///
/// `bwd.deterministic` picks the GPU's dQ summation (see [`BackwardOptions`]).
///
/// Errors: those of [`forward`] for q, k, v and `opts`; then [`Error::Shape`] naming `o`
/// or `dout` when its shape is not q's, or `lse` when it is not `[batch, heads_q,
/// seqlen_q]`, and [`Error::DeviceMismatch`] when one of them is not on q's device; the
/// GPU runtime's errors on `Device::Cuda`.
#[allow(clippy::too_many_arguments)]
pub fn backward<T: Element>(
    q: &Tensor<T>,
    k: &Tensor<T>,
    v: &Tensor<T>,
    o: &Tensor<T>,
    lse: &Tensor<f32>,
    dout: &Tensor<T>,
    opts: &AttentionOptions,
    bwd: &BackwardOptions,
) -> Result<AttentionGrads<T>> {
    let problem = validate(q, k, v, opts)?;
    let device = q.device();
    let lse_shape = [problem.batch, problem.heads_q, problem.seqlen_q];
    grad_arg("o", o.shape(), o.device(), q.shape(), "q's shape", device)?;
    grad_arg("lse", lse.shape(), lse.device(), &lse_shape, "[batch, heads_q, seqlen_q] of q", device)?;
    grad_arg("dout", dout.shape(), dout.device(), q.shape(), "q's shape", device)?;
    match device {
        Device::Cpu => cpu_bwd::backward(
            q.cpu_data("q")?,
            k.cpu_data("k")?,
            v.cpu_data("v")?,
            o.cpu_data("o")?,
            lse.cpu_data("lse")?,
            dout.cpu_data("dout")?,
            &problem,
        ),
        Device::Cuda(_) => gpu_bwd::backward(
            q.gpu_data("q")?,
            k.gpu_data("k")?,
            v.gpu_data("v")?,
            o.gpu_data("o")?,
            lse.gpu_data("lse")?,
            dout.gpu_data("dout")?,
            &problem,
            bwd.deterministic,
        ),
    }
}

/// Checks every argument and resolves the options into a [`Problem`].
fn validate<T: Element>(q: &Tensor<T>, k: &Tensor<T>, v: &Tensor<T>, opts: &AttentionOptions) -> Result<Problem> {
    if !matches!(T::DTYPE, DType::BF16 | DType::F16) {
        return Err(Error::DType { arg: "q", got: T::DTYPE, expected: "bf16 or f16".into() });
    }

    let qs = q.shape();
    rank4("q", qs, "[batch, seqlen_q, heads_q, head_dim]")?;
    let (batch, seqlen_q, heads_q, head_dim) = (qs[0], qs[1], qs[2], qs[3]);
    if head_dim % HEAD_DIM_MULTIPLE != 0 || head_dim > MAX_HEAD_DIM {
        return Err(Error::Shape {
            arg: "q",
            got: qs.to_vec(),
            expected: format!(
                "a head_dim (last dimension) that is a multiple of {HEAD_DIM_MULTIPLE} and at most {MAX_HEAD_DIM}"
            ),
        });
    }

    let ks = k.shape();
    rank4("k", ks, "[batch, seqlen_k, heads_kv, head_dim]")?;
    let (seqlen_k, heads_kv) = (ks[1], ks[2]);
    if ks[0] != batch || ks[3] != head_dim {
        return Err(Error::Shape {
            arg: "k",
            got: ks.to_vec(),
            expected: format!("[{batch}, seqlen_k, heads_kv, {head_dim}] (q's batch and head_dim)"),
        });
    }
    if heads_q % heads_kv != 0 {
        return Err(Error::Shape {
            arg: "k",
            got: ks.to_vec(),
            expected: format!("a heads_kv (dimension 2) that divides q's heads_q = {heads_q}"),
        });
    }
    check::shape("v", v.shape(), ks)?;

    check::same_device("k", k.device(), q.device())?;
    check::same_device("v", v.device(), q.device())?;

    let scale = match opts.softmax_scale {
        None => 1.0 / (head_dim as f32).sqrt(),
        Some(s) => positive_finite("softmax_scale", s)?,
    };
    let softcap = match opts.softcap {
        None => 0.0,
        Some(c) => positive_finite("softcap", c)?,
    };
    let window_right = if opts.causal { Some(0) } else { opts.window_right };

    Ok(Problem {
        batch,
        seqlen_q,
        seqlen_k,
        heads_q,
        heads_kv,
        head_dim,
        scale,
        softcap,
        window_left: opts.window_left,
        window_right,
    })
}

/// One of the backward's extra arguments (o, lse, dout): shape `expected` (`what` says
/// where it comes from), then on `device`.
fn grad_arg(
    arg: &'static str,
    shape: &[usize],
    dev: Device,
    expected: &[usize],
    what: &str,
    device: Device,
) -> Result<()> {
    if shape != expected {
        return Err(Error::Shape { arg, got: shape.to_vec(), expected: format!("{expected:?} ({what})") });
    }
    check::same_device(arg, dev, device)
}

/// `arg` has 4 dimensions, each at least 1; `layout` names them for the message.
fn rank4(arg: &'static str, shape: &[usize], layout: &str) -> Result<()> {
    if shape.len() != 4 || shape.contains(&0) {
        return Err(Error::Shape {
            arg,
            got: shape.to_vec(),
            expected: format!("4 dimensions {layout}, each of size >= 1"),
        });
    }
    Ok(())
}

fn positive_finite(arg: &'static str, x: f32) -> Result<f32> {
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(Error::Value { arg, got: x.to_string(), expected: "a finite value > 0".into() })
    }
}
