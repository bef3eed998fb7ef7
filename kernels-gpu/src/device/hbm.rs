//! Global memory (HBM): typed pointers with 16-byte vector access.

use core::arch::asm;

/// A read-only tensor in HBM (the device address comes from a launch-parameter struct).
#[derive(Clone, Copy)]
pub struct Hbm<T> {
    ptr: *const T,
}

impl<T: Copy> Hbm<T> {
    #[inline(always)]
    pub fn from_addr(addr: u64) -> Self {
        Hbm { ptr: addr as *const T }
    }

    #[inline(always)]
    pub fn is_null(self) -> bool {
        self.ptr.is_null()
    }

    /// The tensor shifted by `i` elements.
    #[inline(always)]
    pub fn offset(self, i: usize) -> Self {
        Hbm { ptr: self.ptr.wrapping_add(i) }
    }

    #[inline(always)]
    pub fn ptr(self) -> *const T {
        self.ptr
    }

    /// `ld.global.T` — element `i`.
    #[inline(always)]
    pub unsafe fn load(self, i: usize) -> T {
        unsafe { self.ptr.add(i).read() }
    }

    /// `ld.global.nc.v4.b32` — 16 bytes from element `i` (16-byte aligned), through the
    /// read-only data path: for inputs that no thread of this launch writes.
    #[inline(always)]
    pub unsafe fn load_v4(self, i: usize) -> [u32; 4] {
        let p = self.ptr.wrapping_add(i) as u64;
        let (a, b, c, d): (u32, u32, u32, u32);
        unsafe {
            asm!("ld.global.nc.v4.b32 {{{0}, {1}, {2}, {3}}}, [{4}];",
                 out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg64) p,
                 options(pure, readonly, nostack));
        }
        [a, b, c, d]
    }
}

/// A writable tensor in HBM.
#[derive(Clone, Copy)]
pub struct HbmMut<T> {
    ptr: *mut T,
}

impl<T: Copy> HbmMut<T> {
    #[inline(always)]
    pub fn from_addr(addr: u64) -> Self {
        HbmMut { ptr: addr as *mut T }
    }

    #[inline(always)]
    pub fn is_null(self) -> bool {
        self.ptr.is_null()
    }

    #[inline(always)]
    pub fn offset(self, i: usize) -> Self {
        HbmMut { ptr: self.ptr.wrapping_add(i) }
    }

    #[inline(always)]
    pub fn ptr(self) -> *mut T {
        self.ptr
    }

    /// `st.global.T` — element `i`.
    #[inline(always)]
    pub unsafe fn store(self, i: usize, v: T) {
        unsafe { self.ptr.add(i).write(v) }
    }

    /// `ld.global.T` — element `i` (for in-place updates).
    #[inline(always)]
    pub unsafe fn load(self, i: usize) -> T {
        unsafe { self.ptr.add(i).read() }
    }

    /// `ld.global.v4.b32` — 16 bytes from element `i` (16-byte aligned), through the
    /// coherent path: for a tensor this launch also writes (an in-place update).
    #[inline(always)]
    pub unsafe fn load_v4(self, i: usize) -> [u32; 4] {
        let p = self.ptr.wrapping_add(i) as u64;
        let (a, b, c, d): (u32, u32, u32, u32);
        unsafe {
            asm!("ld.global.v4.b32 {{{0}, {1}, {2}, {3}}}, [{4}];",
                 out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg64) p,
                 options(readonly, nostack));
        }
        [a, b, c, d]
    }

    /// `ld.relaxed.gpu.global.b32` — the 4-byte element `i`, read at GPU scope (past L1):
    /// for values other CTAs of this launch wrote and released (see `atomic`).
    #[inline(always)]
    pub unsafe fn load_b32_gpu(self, i: usize) -> u32 {
        const { assert!(core::mem::size_of::<T>() == 4) };
        let p = self.ptr.wrapping_add(i) as u64;
        let v: u32;
        unsafe {
            asm!("ld.relaxed.gpu.global.b32 {0}, [{1}];", out(reg32) v, in(reg64) p, options(readonly, nostack));
        }
        v
    }

    /// `ld.relaxed.gpu.global.v4.b32` — 16 bytes from element `i` (16-byte aligned) at GPU
    /// scope, as [`Self::load_b32_gpu`].
    #[inline(always)]
    pub unsafe fn load_v4_gpu(self, i: usize) -> [u32; 4] {
        let p = self.ptr.wrapping_add(i) as u64;
        let (a, b, c, d): (u32, u32, u32, u32);
        unsafe {
            asm!("ld.relaxed.gpu.global.v4.b32 {{{0}, {1}, {2}, {3}}}, [{4}];",
                 out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg64) p,
                 options(readonly, nostack));
        }
        [a, b, c, d]
    }

    /// `st.global.v4.b32` — 16 bytes at element `i` (16-byte aligned).
    #[inline(always)]
    pub unsafe fn store_v4(self, i: usize, v: [u32; 4]) {
        let p = self.ptr.wrapping_add(i) as u64;
        unsafe {
            asm!("st.global.v4.b32 [{0}], {{{1}, {2}, {3}, {4}}};",
                 in(reg64) p, in(reg32) v[0], in(reg32) v[1], in(reg32) v[2], in(reg32) v[3],
                 options(nostack));
        }
    }
}
