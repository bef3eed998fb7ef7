//! Activation functions in f32 on the special-function unit (ex2, rcp): shared by the
//! conv, decode and elementwise kernels. Each is accurate to a few units of f32 rounding
//! (ex2.approx: 2^-22 relative; rcp.approx: 1 ulp); Rust never contracts a * b + c, so
//! the FMAs are explicit.

use super::math::{exp2, fma, max, rcp};
use super::unroll::unroll;

const LOG2E: f32 = core::f32::consts::LOG2_E;

/// 1 / (1 + e^-x). x -> -inf: e^-x overflows to inf and rcp(inf) = 0.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    rcp(1.0 + exp2(-x * LOG2E))
}

/// x * sigmoid(x).
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// d silu / dx = s (1 + x (1 - s)), s = sigmoid(x).
#[inline(always)]
pub fn silu_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    s * fma(x, 1.0 - s, 1.0)
}

/// ln(1 + e^x) = max(x, 0) + log1p(e^-|x|), with log1p(e) = 2 atanh(s), s = e / (2 + e)
/// <= 1/3, summed to s^13: relative error ~1e-8 over the whole range, one ex2 and one
/// rcp. NaN stays NaN; for x > 20 the result is x in f32 (log1p(e^-x) < 3e-9).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    let e = exp2(-x.abs() * LOG2E);
    let s = e * rcp(2.0 + e);
    let s2 = s * s;
    // 2 / (2k + 1) for k = 5, 4, ..., 0, written out (a loop over an array would put the
    // array on the stack).
    const COEF: [f32; 6] = [2.0 / 11.0, 2.0 / 9.0, 2.0 / 7.0, 2.0 / 5.0, 2.0 / 3.0, 2.0];
    let mut series = 2.0 / 13.0;
    unroll::<6, _>(|i| series = fma(series, s2, COEF[i]));
    fma(s, series, max(x, 0.0))
}

/// sqrt(2 / pi).
const GELU_K: f32 = 0.797_884_6;
const GELU_C: f32 = 0.044_715;

/// GELU, tanh form: 0.5 x (1 + tanh(k (x + c x^3))), written as x * sigmoid(2 k (x + c
/// x^3)) (0.5 (1 + tanh u) = sigmoid(2u)): ex2 + rcp keep f32 accuracy, where
/// `tanh.approx` would err by 2^-11.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let u = GELU_K * fma(GELU_C * x, x * x, x);
    x * sigmoid(2.0 * u)
}
