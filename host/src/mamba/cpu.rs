//! CPU path of the selective scan: the GPU kernel's checkpointed algorithm, written with
//! plain loops so that it reads next to the kernel.
//!
//! The kernel gives each (batch, channel) pair its own thread block and keeps all d_state
//! states of that channel in registers while it walks the sequence in segments of
//! `SCAN_CHECKPOINT` steps. Per segment it loads the segment's B and C tiles and its
//! delta' into shared memory, saves the state at the segment start to the checkpoints,
//! and runs the recurrence step by step in f32.
//!
//! The backward walks the segments in reverse. For each it recomputes the segment's
//! states from the segment's checkpoint into a `seg_len x d_state` buffer (the only
//! states it ever holds), then runs the reverse recurrence over them, carrying the
//! gradient of the state `dh` from segment to segment (starting from `dfinal_state`; what
//! is left at the start is `dinitial_state`). Recomputing with the same [`step`] as the
//! forward gives exactly the forward's states.
//!
//! Sums across channels and batches (dB and dC over the channels of a group; dA, dD and
//! ddelta_bias over the batch) are done in a fixed order that depends only on the
//! problem, never on the thread count or timing: the results are bitwise reproducible.

use super::{Problem, SCAN_CHECKPOINT, ScanGrads, ScanInputs, ScanOutput};
use crate::parallel::run_parallel;
use crate::{Element, Error, Result, Tensor};
use ndarray::{ArrayD, IxDyn};

/// Steps per segment (the checkpoint interval).
const SEG: usize = SCAN_CHECKPOINT as usize;

/// The backward splits each (batch, group) into chunks of consecutive channels, so that
/// there are about this many work units in all (at least one chunk per (batch, group),
/// at most one per channel). Each chunk sums its channels' dB and dC contributions into a
/// private `[d_state, seqlen]` partial, and the partials of a group are then added in
/// chunk order. The split depends only on the problem, never on the thread count, so the
/// sums are the same on any machine. The partials, one (batch, group) slice of dB and dC
/// each, number at most about `TARGET_UNITS + batch * groups`.
const TARGET_UNITS: usize = 64;

/// Runs the forward on CPU tensors that validation has checked against `p`.
pub(super) fn forward<T: Element>(p: &Problem, x: &ScanInputs<T>) -> Result<ScanOutput<T>> {
    let inputs = Inputs::new(x)?;
    let (l, n, n_ckpt) = (p.seqlen, p.d_state, p.n_checkpoints());

    // One unit per (batch, channel): independent, like the kernel's blocks.
    let channels = run_parallel(
        "scan",
        p.batch * p.dim,
        || Segment::new(n),
        |seg, item| forward_channel::<T>(&inputs, p, seg, item / p.dim, item % p.dim),
    );

    // Each channel's rows are contiguous in all three outputs: concatenate in order.
    let mut out = Vec::with_capacity(p.batch * p.dim * l);
    let mut final_state = Vec::with_capacity(p.batch * p.dim * n);
    let mut checkpoints = Vec::with_capacity(p.batch * p.dim * n_ckpt * n);
    for ch in channels {
        out.extend_from_slice(&ch.out);
        final_state.extend_from_slice(&ch.state);
        checkpoints.extend_from_slice(&ch.checkpoints);
    }
    Ok(ScanOutput {
        out: tensor("out", &[p.batch, p.dim, l], out)?,
        final_state: tensor("final_state", &[p.batch, p.dim, n], final_state)?,
        checkpoints: tensor("checkpoints", &[p.batch, p.dim, n_ckpt, n], checkpoints)?,
    })
}

/// Runs the backward on CPU tensors that validation has checked against `p`.
pub(super) fn backward<T: Element>(
    p: &Problem,
    x: &ScanInputs<T>,
    saved: &ScanOutput<T>,
    dout: &Tensor<T>,
    dfinal_state: Option<&Tensor<f32>>,
) -> Result<ScanGrads<T>> {
    let inputs = Inputs::new(x)?;
    let grads_in = GradInputs {
        dout: to_f32(dout.cpu_data("dout")?),
        dfinal: dfinal_state.map(|t| t.cpu_data("dfinal_state").map(to_f32)).transpose()?,
        checkpoints: to_f32(saved.checkpoints.cpu_data("saved.checkpoints")?),
    };
    let (l, n, cpg) = (p.seqlen, p.d_state, p.channels_per_group());

    // Units: (batch, group, chunk of the group's channels), in that order.
    let chunk = cpg.div_ceil(TARGET_UNITS.div_ceil(p.batch * p.groups).clamp(1, cpg));
    let chunks = cpg.div_ceil(chunk);
    let unit_channels = |unit: usize| {
        let (bg, k) = (unit / chunks, unit % chunks);
        let (b, g) = (bg / p.groups, bg % p.groups);
        let first = g * cpg + k * chunk;
        (b, g, first..(first + chunk).min((g + 1) * cpg))
    };
    let units = p.batch * p.groups * chunks;
    let results = run_parallel(
        "scan",
        units,
        || Segment::new(n),
        |seg, unit| {
            let (b, _, channels) = unit_channels(unit);
            backward_unit::<T>(&inputs, &grads_in, p, seg, b, channels)
        },
    );

    // Gather in unit order. A unit's channels are consecutive channels of one batch entry,
    // so their rows are contiguous in the per-(batch, channel) gradients; the units come
    // in batch-major order, so these are concatenations. dA, dD and ddelta_bias add the
    // batch entries in order; dB and dC add a group's chunks in order.
    let (bdl, bdn) = (p.batch * p.dim * l, p.batch * p.dim * n);
    let mut du = Vec::with_capacity(bdl);
    let mut ddelta = Vec::with_capacity(bdl);
    let mut dz = Vec::with_capacity(if p.has_z { bdl } else { 0 });
    let mut dinit = Vec::with_capacity(if p.has_init { bdn } else { 0 });
    let mut da = vec![0f32; p.dim * n];
    let mut dd = vec![0f32; p.dim];
    let mut dbias = vec![0f32; p.dim];
    let mut db = vec![0f32; p.batch * p.groups * n * l];
    let mut dc = vec![0f32; p.batch * p.groups * n * l];
    for (unit, r) in results.into_iter().enumerate() {
        let (b, g, channels) = unit_channels(unit);
        du.extend_from_slice(&r.du);
        ddelta.extend_from_slice(&r.ddelta);
        dz.extend_from_slice(&r.dz);
        if p.has_init {
            dinit.extend_from_slice(&r.dh);
        }
        let first = channels.start;
        add(&mut da[first * n..channels.end * n], &r.da);
        add(&mut dd[channels.clone()], &r.dd);
        add(&mut dbias[channels], &r.dbias);
        let group = (b * p.groups + g) * n * l;
        add(&mut db[group..group + n * l], &r.db);
        add(&mut dc[group..group + n * l], &r.dc);
    }

    let seq = [p.batch, p.dim, p.seqlen];
    let bc_shape = [p.batch, p.groups, n, l];
    let round = |v: Vec<f32>| v.into_iter().map(T::from_f32).collect::<Vec<T>>();
    Ok(ScanGrads {
        du: tensor("du", &seq, du)?,
        ddelta: tensor("ddelta", &seq, ddelta)?,
        da: tensor("da", &[p.dim, n], da)?,
        db: tensor("db", &bc_shape, round(db))?,
        dc: tensor("dc", &bc_shape, round(dc))?,
        dd: if p.has_d { Some(tensor("dd", &[p.dim], dd)?) } else { None },
        dz: if p.has_z { Some(tensor("dz", &seq, dz)?) } else { None },
        ddelta_bias: if p.has_bias { Some(tensor("ddelta_bias", &[p.dim], dbias)?) } else { None },
        dinitial_state: if p.has_init { Some(tensor("dinitial_state", &[p.batch, p.dim, n], dinit)?) } else { None },
    })
}

/// The inputs as row-major f32 (the kernel converts as it loads; converting once here
/// keeps the loops simple).
struct Inputs {
    u: Vec<f32>,
    delta: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    d: Option<Vec<f32>>,
    z: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
    init: Option<Vec<f32>>,
}

impl Inputs {
    fn new<T: Element>(x: &ScanInputs<T>) -> Result<Self> {
        let opt = |t: Option<&Tensor<f32>>, arg| t.map(|t| t.cpu_data(arg).map(to_f32)).transpose();
        Ok(Inputs {
            u: to_f32(x.u.cpu_data("u")?),
            delta: to_f32(x.delta.cpu_data("delta")?),
            a: to_f32(x.a.cpu_data("a")?),
            b: to_f32(x.b.cpu_data("b")?),
            c: to_f32(x.c.cpu_data("c")?),
            d: opt(x.d, "d")?,
            z: x.z.map(|t| t.cpu_data("z").map(to_f32)).transpose()?,
            bias: opt(x.delta_bias, "delta_bias")?,
            init: opt(x.initial_state, "initial_state")?,
        })
    }
}

/// dout, dfinal_state and the checkpoints as row-major f32.
struct GradInputs {
    dout: Vec<f32>,
    dfinal: Option<Vec<f32>>,
    checkpoints: Vec<f32>,
}

/// What the kernel holds in shared memory for one segment: delta' of its steps, and its
/// B and C tiles, time-major (`[seg_len, d_state]`, so one step's states are adjacent).
/// The backward adds the segment's recomputed states, `[seg_len, d_state]` too.
/// Allocated once per thread.
struct Segment {
    n: usize,
    dt: Vec<f32>,
    /// delta' before the softplus, x = delta + delta_bias (the backward needs it).
    x: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    h: Vec<f32>,
}

impl Segment {
    fn new(n: usize) -> Self {
        Segment {
            n,
            dt: vec![0.0; SEG],
            x: vec![0.0; SEG],
            b: vec![0.0; SEG * n],
            c: vec![0.0; SEG * n],
            h: vec![0.0; SEG * n],
        }
    }

    /// Loads steps `t0..t0 + len` of (batch `b`, channel `c`).
    fn load(&mut self, x: &Inputs, p: &Problem, b: usize, c: usize, t0: usize, len: usize) {
        let (l, n) = (p.seqlen, self.n);
        let row = (b * p.dim + c) * l + t0;
        let bias = x.bias.as_ref().map_or(0.0, |v| v[c]);
        for i in 0..len {
            self.x[i] = x.delta[row + i] + bias;
            self.dt[i] = delta_eff(self.x[i], p.delta_softplus);
        }
        let g = c / p.channels_per_group();
        let group = (b * p.groups + g) * n * l + t0;
        for s in 0..n {
            let (src_b, src_c) = (&x.b[group + s * l..][..len], &x.c[group + s * l..][..len]);
            for i in 0..len {
                self.b[i * n + s] = src_b[i];
                self.c[i * n + s] = src_c[i];
            }
        }
    }

    fn b_at(&self, i: usize) -> &[f32] {
        &self.b[i * self.n..(i + 1) * self.n]
    }

    fn c_at(&self, i: usize) -> &[f32] {
        &self.c[i * self.n..(i + 1) * self.n]
    }
}

/// One channel's forward results: its out row, final state and checkpoints.
struct ChannelOut<T> {
    out: Vec<T>,
    state: Vec<f32>,
    checkpoints: Vec<f32>,
}

/// The forward of (batch `b`, channel `c`): one thread block of the kernel.
fn forward_channel<T: Element>(x: &Inputs, p: &Problem, seg: &mut Segment, b: usize, c: usize) -> ChannelOut<T> {
    let (l, n) = (p.seqlen, p.d_state);
    let row = (b * p.dim + c) * l;
    let a = &x.a[c * n..(c + 1) * n];
    let d = x.d.as_ref().map(|v| v[c]);
    let mut h = match &x.init {
        Some(h0) => h0[(b * p.dim + c) * n..][..n].to_vec(),
        None => vec![0.0; n],
    };
    let mut out = Vec::with_capacity(l);
    let mut checkpoints = Vec::with_capacity(p.n_checkpoints() * n);
    for t0 in (0..l).step_by(SEG) {
        let len = SEG.min(l - t0);
        checkpoints.extend_from_slice(&h);
        seg.load(x, p, b, c, t0, len);
        for i in 0..len {
            let t = row + t0 + i;
            let u = x.u[t];
            step(&mut h, a, seg.b_at(i), seg.dt[i], u);
            let mut y = dot(&h, seg.c_at(i));
            if let Some(d) = d {
                y += d * u;
            }
            if let Some(z) = &x.z {
                y *= silu(z[t]);
            }
            out.push(T::from_f32(y));
        }
    }
    ChannelOut { out, state: h, checkpoints }
}

/// One backward unit's gradients: per channel (rows of its consecutive channels) du,
/// ddelta, dz, the state gradient left at the start (dinitial_state), dA, dD and
/// ddelta_bias; and the unit's partial dB and dC of its group, `[d_state, seqlen]`.
struct UnitGrads<T> {
    du: Vec<T>,
    ddelta: Vec<T>,
    dz: Vec<T>,
    dh: Vec<f32>,
    da: Vec<f32>,
    dd: Vec<f32>,
    dbias: Vec<f32>,
    db: Vec<f32>,
    dc: Vec<f32>,
}

/// The backward of `channels` (consecutive, one group) of batch entry `b`, one channel
/// after the other, each one thread block of the kernel.
fn backward_unit<T: Element>(
    x: &Inputs,
    gi: &GradInputs,
    p: &Problem,
    seg: &mut Segment,
    b: usize,
    channels: std::ops::Range<usize>,
) -> UnitGrads<T> {
    let (l, n) = (p.seqlen, p.d_state);
    let k = channels.len();
    let mut r = UnitGrads {
        du: Vec::with_capacity(k * l),
        ddelta: Vec::with_capacity(k * l),
        dz: Vec::with_capacity(if p.has_z { k * l } else { 0 }),
        dh: Vec::with_capacity(k * n),
        da: vec![0.0; k * n],
        dd: vec![0.0; k],
        dbias: vec![0.0; k],
        db: vec![0.0; n * l],
        dc: vec![0.0; n * l],
    };
    // Per-step results of one channel, written back to front.
    let (mut du, mut ddelta, mut dz) = (vec![0f32; l], vec![0f32; l], vec![0f32; l]);
    for (j, c) in channels.enumerate() {
        let row = (b * p.dim + c) * l;
        let a = &x.a[c * n..(c + 1) * n];
        let d = x.d.as_ref().map(|v| v[c]);
        let ckpt = (b * p.dim + c) * p.n_checkpoints() * n;
        let da = &mut r.da[j * n..(j + 1) * n];
        let (mut dd, mut dbias) = (0f32, 0f32);
        // dL/dh, carried backwards across steps and segments.
        let mut dh = match &gi.dfinal {
            Some(df) => df[(b * p.dim + c) * n..][..n].to_vec(),
            None => vec![0.0; n],
        };
        for si in (0..p.n_checkpoints()).rev() {
            let t0 = si * SEG;
            let len = SEG.min(l - t0);
            seg.load(x, p, b, c, t0, len);
            // Recompute the segment's states h_{t0}, ..., h_{t0+len-1} from its checkpoint.
            let h0 = &gi.checkpoints[ckpt + si * n..][..n];
            let mut h = h0.to_vec();
            for i in 0..len {
                step(&mut h, a, seg.b_at(i), seg.dt[i], x.u[row + t0 + i]);
                seg.h[i * n..(i + 1) * n].copy_from_slice(&h);
            }
            // The reverse recurrence over the segment.
            for i in (0..len).rev() {
                let t = t0 + i;
                let (u, dt, g) = (x.u[row + t], seg.dt[i], gi.dout[row + t]);
                let h_t = &seg.h[i * n..(i + 1) * n];
                let h_prev = if i == 0 { h0 } else { &seg.h[(i - 1) * n..i * n] };
                let (b_t, c_t) = (seg.b_at(i), seg.c_at(i));
                // Through the gate: out = y silu(z).
                let dy = match &x.z {
                    Some(zs) => {
                        let z = zs[row + t];
                        let mut y = dot(h_t, c_t);
                        if let Some(d) = d {
                            y += d * u;
                        }
                        let sig = sigmoid(z);
                        dz[t] = g * y * (sig * (1.0 + z * (1.0 - sig)));
                        g * z * sig
                    }
                    None => g,
                };
                // Through y = sum_n h C + D u, then h_t = dA h_{t-1} + delta' B u.
                let (dc_part, db_part) = (&mut r.dc, &mut r.db);
                let mut sum_gb = 0f32; // sum_n dL/dh_t[n] B[n]
                let mut sum_ga = 0f32; // sum_n dL/dh_t[n] A[n] dA[n] h_{t-1}[n]
                let dtu = dt * u;
                for s in 0..n {
                    dc_part[s * l + t] += dy * h_t[s];
                    let gh = dh[s] + dy * c_t[s];
                    db_part[s * l + t] += gh * dtu;
                    sum_gb += gh * b_t[s];
                    let decay = (dt * a[s]).exp();
                    let g_decay = gh * decay * h_prev[s];
                    sum_ga += a[s] * g_decay;
                    da[s] += dt * g_decay;
                    dh[s] = gh * decay;
                }
                let mut du_t = dt * sum_gb;
                if let Some(d) = d {
                    du_t += d * dy;
                    dd += dy * u;
                }
                du[t] = du_t;
                let ddt = u * sum_gb + sum_ga;
                let dx = ddt * delta_eff_grad(seg.x[i], p.delta_softplus);
                ddelta[t] = dx;
                dbias += dx;
            }
        }
        r.du.extend(du.iter().map(|&v| T::from_f32(v)));
        r.ddelta.extend(ddelta.iter().map(|&v| T::from_f32(v)));
        if p.has_z {
            r.dz.extend(dz.iter().map(|&v| T::from_f32(v)));
        }
        r.dh.extend_from_slice(&dh);
        r.dd[j] = dd;
        r.dbias[j] = dbias;
    }
    r
}

/// One step of the recurrence for all states: h = exp(delta' A) h + (delta' u) B.
/// The forward and the backward's recomputation both use it, so they agree bitwise.
#[inline]
pub(super) fn step(h: &mut [f32], a: &[f32], b: &[f32], dt: f32, u: f32) {
    let dtu = dt * u;
    for ((h, &a), &b) in h.iter_mut().zip(a).zip(b) {
        *h = (dt * a).exp() * *h + dtu * b;
    }
}

/// delta' from x = delta + delta_bias: softplus(x), or x. Above 20 softplus(x) is taken as
/// x (they differ by < 3e-9, and exp(x) is kept far from overflow), as mamba_ssm does.
pub(super) fn delta_eff(x: f32, softplus: bool) -> f32 {
    if softplus && x <= 20.0 { x.exp().ln_1p() } else { x }
}

/// d delta' / dx: sigmoid(x) under the softplus (1 above 20, matching [`delta_eff`]), else 1.
fn delta_eff_grad(x: f32, softplus: bool) -> f32 {
    if softplus && x <= 20.0 { sigmoid(x) } else { 1.0 }
}

pub(super) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

pub(super) fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `acc += v`, elementwise.
fn add(acc: &mut [f32], v: &[f32]) {
    for (a, &x) in acc.iter_mut().zip(v) {
        *a += x;
    }
}

pub(super) fn to_f32<T: Element>(a: &ArrayD<T>) -> Vec<f32> {
    a.iter().map(|v| v.to_f32()).collect()
}

/// A CPU tensor of `shape` from row-major `data`. The lengths match by construction; a
/// mismatch is reported as an error on the output `arg` rather than a panic.
pub(super) fn tensor<E: Element>(arg: &'static str, shape: &[usize], data: Vec<E>) -> Result<Tensor<E>> {
    let len = data.len();
    ArrayD::from_shape_vec(IxDyn(shape), data).map(Tensor::Cpu).map_err(|_| Error::Shape {
        arg,
        got: vec![len],
        expected: format!("{shape:?} (internal error: the CPU scan produced the wrong number of elements)"),
    })
}
