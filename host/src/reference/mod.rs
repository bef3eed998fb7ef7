//! Naive references in f64: the oracles of the tests. Written for clarity, not speed. They
//! expect well-formed shapes (they check with `expect` and panic otherwise): validate with
//! the real operations first.

pub mod attention;
pub mod conv;
pub mod matmul;
mod norm;
pub mod ops;
pub mod scan;

pub use norm::{layer_norm, rms_norm};

/// ||a - b|| / ||b|| over all elements (0 when both are zero).
pub fn rel_error(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    if den == 0.0 { num.sqrt() } else { (num / den).sqrt() }
}
