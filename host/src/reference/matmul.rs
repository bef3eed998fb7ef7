//! Matrix products in f64: the oracle of the matmul / linear tests.

use ndarray::{Array2, ArrayView2};

/// `a b` for a `[m, k]` and b `[k, n]`, each product and sum in f64, in index order.
pub fn matmul(a: ArrayView2<'_, f64>, b: ArrayView2<'_, f64>) -> Array2<f64> {
    let (m, k) = a.dim();
    let n = b.ncols();
    assert_eq!(b.nrows(), k, "matmul reference: inner dimensions differ");
    Array2::from_shape_fn((m, n), |(i, j)| (0..k).map(|p| a[[i, p]] * b[[p, j]]).sum())
}
