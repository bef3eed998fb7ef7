//! CPU path of the matrix products: the operands converted to f32 once, then ndarray's
//! f32 GEMM (matrixmultiply: blocked, f32 accumulation) per batch item and block of
//! output columns, the blocks spread over the CPU's threads. Column blocks (not rows) so
//! that a decode step's single row still uses every thread.

use super::Gemm;
use crate::parallel::run_parallel;
use crate::{Element, Error, Result, Tensor};
use ndarray::{Array2, ArrayD, ArrayView2, IxDyn, s};

/// Below this many multiply-adds, one thread does the whole product: starting threads
/// would cost more than they save.
const PARALLEL_MIN_MACS: usize = 1 << 20;
/// Output columns of a block, at least (a multiple of matrixmultiply's kernel widths).
const MIN_BLOCK_COLS: usize = 64;

pub(super) fn matmul<T: Element>(a: &ArrayD<T>, b: &ArrayD<T>, g: &Gemm, out_shape: &[usize]) -> Result<Tensor<T>> {
    // `iter` walks the logical (row-major) order whatever the array's memory layout.
    let a32: Vec<f32> = a.iter().map(|v| v.to_f32()).collect();
    let b32: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
    let (m, n, k) = (g.m, g.n, g.k);

    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let macs = g.batch.saturating_mul(m).saturating_mul(n).saturating_mul(k);
    let blocks = if macs < PARALLEL_MIN_MACS { 1 } else { threads.min(n.div_ceil(MIN_BLOCK_COLS)).max(1) };
    let width = n.div_ceil(blocks);

    let parts = run_parallel(
        "matmul",
        g.batch * blocks,
        || (),
        |_, item| -> Result<(usize, usize, Array2<f32>)> {
            let (i, blk) = (item / blocks, item % blocks);
            let av = matrix(&a32, if g.a_batched { i } else { 0 }, g.a_dims(), g.transpose_a)?;
            let bv = matrix(&b32, if g.b_batched { i } else { 0 }, g.b_dims(), g.transpose_b)?;
            let (c0, c1) = ((blk * width).min(n), ((blk + 1) * width).min(n));
            Ok((i, c0, av.dot(&bv.slice(s![.., c0..c1]))))
        },
    );

    let mut c = vec![T::default(); g.batch * m * n];
    for part in parts {
        let (i, c0, block) = part?;
        for (r, row) in block.rows().into_iter().enumerate() {
            let start = i * m * n + r * n + c0;
            for (dst, &v) in c[start..start + row.len()].iter_mut().zip(row) {
                *dst = T::from_f32(v);
            }
        }
    }
    ArrayD::from_shape_vec(IxDyn(out_shape), c).map(Tensor::Cpu).map_err(|e| Error::Shape {
        arg: "c",
        got: out_shape.to_vec(),
        expected: format!("{} elements (internal error: {e})", g.batch * m * n),
    })
}

/// Matrix `index` of a row-major stack of `[rows, cols]` matrices, seen transposed when
/// `transpose` (so that it is always op(matrix)).
fn matrix(data: &[f32], index: usize, (rows, cols): (usize, usize), transpose: bool) -> Result<ArrayView2<'_, f32>> {
    let len = rows * cols;
    let view = data
        .get(index * len..(index + 1) * len)
        .and_then(|d| ArrayView2::from_shape((rows, cols), d).ok())
        .ok_or_else(|| Error::Shape {
            arg: "matmul operand",
            got: vec![data.len()],
            expected: format!("matrix {index} of [{rows}, {cols}] (internal error: too few elements)"),
        })?;
    Ok(if transpose { view.reversed_axes() } else { view })
}
