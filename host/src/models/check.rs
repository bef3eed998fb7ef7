//! Checks of the model configurations given to the `random` constructors.

use crate::{Error, Result};

/// `value` of config field `arg` is at least 1.
pub(crate) fn positive(arg: &'static str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::Value { arg, got: "0".into(), expected: "at least 1".into() });
    }
    Ok(())
}

/// The element counts of a model's tensors sum to an array size ndarray can allocate
/// (no overflow), so that building them cannot panic.
pub(crate) fn total_size(tensors: &[&[usize]]) -> Result<usize> {
    let total = tensors.iter().try_fold(0usize, |acc, shape| {
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
        acc.checked_add(n)
    });
    match total {
        Some(t) if t <= isize::MAX as usize / 4 => Ok(t),
        _ => Err(Error::Value {
            arg: "config",
            got: "sizes whose weights overflow the address space".into(),
            expected: "a model that fits in memory".into(),
        }),
    }
}
