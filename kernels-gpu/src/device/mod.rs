//! The device layer: a thin, typed skin over PTX so that a kernel reads as its
//! algorithm. Each type says which memory a value lives in:
//!
//! - [`hbm`]: `Hbm<T>` / `HbmMut<T>`, pointers into device memory (HBM), 16-byte vector
//!   loads and stores, read-only loads through the non-coherent path.
//! - [`sram`]: `Sram`, a region of the dynamic shared-memory arena at an offset the
//!   kernel's `const` layout fixes; 32-bit shared addresses for `ld.shared`, `ldmatrix`,
//!   `cp.async`.
//! - [`frag`]: register fragments of the tensor-core operands, fixed arrays indexed only
//!   by constants so they stay in registers; [`mma`] multiplies them.
//! - [`thread`], [`warp`], [`math`], [`act`] (activations), [`pack`], [`cp_async`],
//!   [`ldmatrix`], [`atomic`]; on sm_90a, `wgmma` (Hopper's warpgroup tensor-core product)
//!   and `tma` (the tensor memory accelerator's bulk copies and their mbarriers).
//!
//! Each wrapper's doc line names the PTX it emits.

pub mod act;
pub mod atomic;
pub mod cp_async;
pub mod elem;
pub mod frag;
pub mod hbm;
pub mod ldmatrix;
pub mod math;
pub mod mma;
pub mod pack;
pub mod sram;
pub mod thread;
/// Hopper only: compiled into the sm_90a PTX alone.
#[cfg(target_feature = "sm_90a")]
pub mod tma;
pub mod unroll;
pub mod warp;
/// Hopper only: compiled into the sm_90a PTX alone.
#[cfg(target_feature = "sm_90a")]
pub mod wgmma;

pub use elem::{Bf16, Elem, F16, TensorElem};
pub use frag::{FragA, FragB, FragC};
pub use hbm::{Hbm, HbmMut};
pub use sram::Sram;
pub use unroll::unroll;
