//! The self-checks shared by the model examples: generation steps from a prefill's state
//! must give the logits (and leave the state) that a prefill over the same tokens gives;
//! on a GPU, the GPU's results must match the CPU path's for the same weights and tokens.

use super::lm::{LanguageModel, host_f32};
use flashscan::reference::rel_error;
use flashscan::{Device, Element, Result};
use ndarray::{Array3, ArrayD, s};

/// One measured relative error and its bound.
pub struct Measured {
    pub what: String,
    pub error: f64,
    pub bound: f64,
}

/// What [`prefill_and_steps`] measured on one device.
pub struct Run {
    /// Logits of a prefill of all the tokens, every position: `[batch, seqlen, vocab]`.
    pub full: Array3<f32>,
    /// Logits of a prefill of the first `split` tokens (its last position) and then of
    /// one step per remaining token: positions `split - 1 .. seqlen`.
    pub stepped: Array3<f32>,
    /// The states after the full prefill and after the steps.
    pub full_state: Vec<(String, ArrayD<f32>)>,
    pub stepped_state: Vec<(String, ArrayD<f32>)>,
}

/// Runs `model` both ways over `tokens` (see [`Run`]).
pub fn prefill_and_steps<T: Element, M: LanguageModel<T>>(model: &M, tokens: &[Vec<u32>], split: usize) -> Result<Run> {
    let (batch, seqlen) = (tokens.len(), tokens[0].len());
    let vocab = model.lm_head().shape()[0];
    let (hidden, full_state) = model.prefill(tokens, seqlen)?;
    let full = host_f32(&super::lm::logits(&hidden, model.lm_head())?)?;
    let full = full.into_shape_with_order((batch, seqlen, vocab)).map_err(|e| flashscan::Error::Value {
        arg: "logits",
        got: e.to_string(),
        expected: "[batch, seqlen, vocab]".into(),
    })?;

    let head: Vec<Vec<u32>> = tokens.iter().map(|t| t[..split].to_vec()).collect();
    let (hidden, mut state) = model.prefill(&head, seqlen)?;
    let mut stepped = Array3::zeros((batch, seqlen - split + 1, vocab));
    stepped.slice_mut(s![.., 0, ..]).assign(&super::lm::last_logits(&hidden, model.lm_head())?);
    for t in split..seqlen {
        let column: Vec<u32> = tokens.iter().map(|seq| seq[t]).collect();
        let hidden = model.step(&column, &mut state)?;
        stepped.slice_mut(s![.., t - split + 1, ..]).assign(&super::lm::last_logits(&hidden, model.lm_head())?);
    }
    Ok(Run {
        full,
        stepped,
        full_state: model.state_tensors(&full_state)?,
        stepped_state: model.state_tensors(&state)?,
    })
}

/// ||a - b|| / ||b|| over every element.
pub fn rel<D: ndarray::Dimension>(a: &ndarray::Array<f32, D>, b: &ndarray::Array<f32, D>) -> f64 {
    let f = |x: &ndarray::Array<f32, D>| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
    rel_error(&f(a), &f(b))
}

/// The worst relative error over the state tensors of two runs.
fn state_error(a: &[(String, ArrayD<f32>)], b: &[(String, ArrayD<f32>)]) -> f64 {
    a.iter().zip(b).map(|((_, x), (_, y))| rel(x, y)).fold(0.0, f64::max)
}

/// Seeded test tokens: `batch` sequences of `seqlen` ids below `vocab`.
pub fn tokens(batch: usize, seqlen: usize, vocab: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut s = seed;
    (0..batch)
        .map(|_| {
            (0..seqlen)
                .map(|_| {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    ((s >> 33) % vocab as u64) as u32
                })
                .collect()
        })
        .collect()
}

/// The checks of one model: steps vs prefill on `device` (logits and states), and when
/// `cpu_twin` (the same weights on the CPU) is given, `device` vs the CPU. `label` names
/// the variant in the report; `bound` is the relative error allowed.
pub fn measure<T: Element, M: LanguageModel<T>>(
    label: &str,
    model: &M,
    device: Device,
    cpu_twin: Option<&M>,
    tokens: &[Vec<u32>],
    split: usize,
    bound: f64,
) -> Result<Vec<Measured>> {
    let run = prefill_and_steps(model, tokens, split)?;
    let tail = run.full.slice(s![.., split - 1.., ..]).to_owned();
    let m = |what: String, error| Measured { what, error, bound };
    let mut out = vec![
        m(format!("{device}: steps vs prefill logits, {label}"), rel(&run.stepped, &tail)),
        m(format!("{device}: steps vs prefill state, {label}"), state_error(&run.stepped_state, &run.full_state)),
    ];
    if let Some(cpu) = cpu_twin {
        let c = prefill_and_steps(cpu, tokens, split)?;
        out.push(m(format!("{device} vs cpu: prefill logits, {label}"), rel(&run.full, &c.full)));
        out.push(m(format!("{device} vs cpu: step logits, {label}"), rel(&run.stepped, &c.stepped)));
    }
    Ok(out)
}

/// Prints each measurement with its bound; an error when one is over.
pub fn report(title: &str, measured: &[Measured]) -> std::result::Result<(), String> {
    println!("{title}");
    let mut failed = 0;
    for m in measured {
        let ok = m.error <= m.bound;
        failed += usize::from(!ok);
        let verdict = if ok { "ok" } else { "FAILED" };
        println!("  {:<56} relative error {:.2e} (bound {:.0e}) {verdict}", m.what, m.error, m.bound);
    }
    if failed > 0 {
        return Err(format!("{failed} self-check(s) over their bounds"));
    }
    Ok(())
}
