//! Shared by the model examples (`gpt_block`, `mamba_block`): flags, device and dtype,
//! checkpoint and tokenizer files, the LM ends (embedding, logits) and the model trait,
//! the self-checks, token sampling, the timed run, the progress bar and the final table.
#![allow(dead_code)]

pub mod args;
pub mod check;
pub mod files;
pub mod lm;
pub mod progress;
pub mod report;
pub mod run;
pub mod sample;
pub mod setup;
#[cfg(test)]
pub mod testing;
