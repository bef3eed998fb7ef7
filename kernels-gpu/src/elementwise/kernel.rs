//! `ew_*`: y = op(x + bias, z) over `n` elements. Each thread takes vectors i, i + NT,
//! ... (EW_UNROLL of them in flight, the norm kernels' pattern), grid-stride; the last
//! n % lanes elements, and everything when the bias cannot be read as whole vectors
//! (cols % lanes != 0), go element by element.

use super::*;
use crate::device::act::{gelu_tanh, silu, softplus};
use crate::device::math::div_rem;
use crate::device::thread::{block_x, grid_x, tid};
use crate::device::{Bf16, Elem, F16, Hbm, HbmMut, unroll};

const NT: usize = EW_THREADS as usize;
const UNROLL: usize = EW_UNROLL as usize;

#[inline(always)]
fn apply(op: u32, x: f32, z: f32) -> f32 {
    match op {
        1 => silu(x),
        2 => gelu_tanh(x),
        3 => softplus(x),
        4 => x + z,
        5 => x * silu(z),
        _ => x,
    }
}

#[inline(always)]
unsafe fn ew<T: Elem>(p: &EwParams) {
    let n = p.n as usize;
    let lanes = T::LANES;
    let (x, y) = (Hbm::<T>::from_addr(p.x), HbmMut::<T>::from_addr(p.y));
    let (z, bias) = (Hbm::<T>::from_addr(p.z), Hbm::<T>::from_addr(p.bias));
    let cols = p.cols as usize;
    let (has_z, has_bias) = (p.z != 0, p.bias != 0);
    // Vectors only when a vector never straddles two bias rows.
    let nvec = if !has_bias || cols % lanes == 0 { n / lanes } else { 0 };
    let stride = grid_x() as usize * NT;
    let mut base = block_x() as usize * NT + tid() as usize;
    while base < nvec {
        let mut xv = [[0u32; 4]; UNROLL];
        let mut zv = [[0u32; 4]; UNROLL];
        unroll::<UNROLL, _>(|u| {
            let i = base + u * stride;
            if i < nvec {
                xv[u] = unsafe { x.load_v4(i * lanes) };
                if has_z {
                    zv[u] = unsafe { z.load_v4(i * lanes) };
                }
            }
        });
        unroll::<UNROLL, _>(|u| {
            let i = base + u * stride;
            if i < nvec {
                let mut xf = T::unpack_v4(xv[u]);
                let zf = T::unpack_v4(zv[u]);
                if has_bias {
                    let bf = T::unpack_v4(unsafe { bias.load_v4(div_rem(i * lanes, cols).1) });
                    unroll::<8, _>(|e| xf[e] += bf[e]);
                }
                let mut o = [0.0f32; 8];
                unroll::<8, _>(|e| o[e] = apply(p.op, xf[e], zf[e]));
                unsafe { y.store_v4(i * lanes, T::pack_v4(&o)) };
            }
        });
        base += UNROLL * stride;
    }
    // The elements after the last whole vector.
    let mut i = nvec * lanes + block_x() as usize * NT + tid() as usize;
    while i < n {
        let mut xf = unsafe { x.load(i) }.to_f32();
        if has_bias {
            xf += unsafe { bias.load(div_rem(i, cols).1) }.to_f32();
        }
        let zf = if has_z { unsafe { z.load(i) }.to_f32() } else { 0.0 };
        unsafe { y.store(i, T::from_f32(apply(p.op, xf, zf))) };
        i += stride;
    }
}

macro_rules! ew_entry {
    ($name:ident, $t:ty) => {
        #[unsafe(no_mangle)]
        pub unsafe extern "ptx-kernel" fn $name(p: EwParams) {
            unsafe { ew::<$t>(&p) }
        }
    };
}

ew_entry!(ew_f32, f32);
ew_entry!(ew_bf16, Bf16);
ew_entry!(ew_f16, F16);
