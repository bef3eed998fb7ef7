//! The two ends of a language model, shared by the examples: the embedding lookup (a
//! host table, a few rows per step uploaded) and the LM head's logits of the last
//! position, brought back to the host for sampling.

use flashscan::ops::{self, WeightLayout};
use flashscan::{Device, Element, Error, Result, Tensor};
use ndarray::{Array2, ArrayD, IxDyn};

/// `[batch, seqlen, d]` on `device`: row `tokens[b][t]` of `table` `[vocab, d]`, plus row
/// `start + t` of `positions` when given (GPT-2's learned positions), summed in f32 and
/// rounded to T. Errors name `tokens` for ragged sequences, ids outside the vocabulary
/// or positions past the table.
pub fn embed<T: Element>(
    table: &Array2<f32>,
    positions: Option<&Array2<f32>>,
    tokens: &[Vec<u32>],
    start: usize,
    device: Device,
) -> Result<Tensor<T>> {
    let (batch, seqlen, d) = (tokens.len(), tokens.first().map_or(0, Vec::len), table.ncols());
    if let Some(p) = positions
        && start + seqlen > p.nrows()
    {
        return Err(Error::Value {
            arg: "tokens",
            got: format!("positions up to {}", start + seqlen),
            expected: format!("at most {} positions (the model's)", p.nrows()),
        });
    }
    let mut x = Vec::with_capacity(batch * seqlen * d);
    for seq in tokens {
        if seq.len() != seqlen {
            return Err(Error::Value {
                arg: "tokens",
                got: format!("sequences of {} and {} tokens", seqlen, seq.len()),
                expected: "one length for the whole batch".into(),
            });
        }
        for (t, &tok) in seq.iter().enumerate() {
            if tok as usize >= table.nrows() {
                return Err(Error::Value {
                    arg: "tokens",
                    got: format!("token id {tok}"),
                    expected: format!("ids below the vocabulary size {}", table.nrows()),
                });
            }
            let row = table.row(tok as usize);
            match positions {
                Some(p) => x.extend(row.iter().zip(p.row(start + t)).map(|(a, b)| T::from_f32(a + b))),
                None => x.extend(row.iter().map(|&a| T::from_f32(a))),
            }
        }
    }
    let a = ArrayD::from_shape_vec(IxDyn(&[batch, seqlen, d]), x).map_err(|e| Error::Shape {
        arg: "tokens",
        got: vec![batch, seqlen],
        expected: format!("a rectangular batch ({e})"),
    })?;
    Tensor::from_array(a, device)
}

/// Logits `[.., vocab]` of T from hidden states `[.., d]` and the LM head `[vocab, d]`.
pub fn logits<T: Element>(hidden: &Tensor<T>, lm_head: &Tensor<T>) -> Result<Tensor<T>> {
    ops::linear(hidden, lm_head, None, WeightLayout::OutIn)
}

/// The logits of the last position of hidden `[batch, seqlen, d]`, on the host in f32,
/// `[batch, vocab]`.
pub fn last_logits<T: Element>(hidden: &Tensor<T>, lm_head: &Tensor<T>) -> Result<Array2<f32>> {
    let (batch, seqlen) = (hidden.shape()[0], hidden.shape()[1]);
    let logits = logits(&ops::narrow(hidden, 1, seqlen - 1, 1)?, lm_head)?.to_array()?;
    let vocab = lm_head.shape()[0];
    let v = logits.iter().map(|x| x.to_f32()).collect();
    Array2::from_shape_vec((batch, vocab), v).map_err(|e| Error::Shape {
        arg: "logits",
        got: logits.shape().to_vec(),
        expected: format!("[{batch}, 1, {vocab}] ({e})"),
    })
}

/// What the runs and checks need of a model: a prompt pass that returns the hidden states
/// after the final norm `[batch, seqlen, d]` and the state generation continues from (KV
/// caches, or conv and scan states), one-token steps from that state, and the LM head.
pub trait LanguageModel<T: Element> {
    type State;

    /// The prompt pass; `capacity`: the tokens per sequence the state must be able to
    /// hold (the prompt and every token to generate).
    fn prefill(&self, tokens: &[Vec<u32>], capacity: usize) -> Result<(Tensor<T>, Self::State)>;

    /// One token per sequence: hidden states `[batch, 1, d]`, the state advanced.
    fn step(&self, tokens: &[u32], state: &mut Self::State) -> Result<Tensor<T>>;

    /// `[vocab, d]` on the model's device.
    fn lm_head(&self) -> &Tensor<T>;

    /// The state's tensors by name, in f32 on the host (for the checks).
    fn state_tensors(&self, state: &Self::State) -> Result<Vec<(String, ArrayD<f32>)>>;
}

/// `t` on the host in f32.
pub fn host_f32<E: Element>(t: &Tensor<E>) -> Result<ArrayD<f32>> {
    Ok(t.to_array()?.mapv(|x| x.to_f32()))
}
