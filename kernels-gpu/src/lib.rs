//! flashscan's GPU side: the device layer (`device`) and the kernels, compiled to PTX for
//! `nvptx64-nvidia-cuda` by `host/build.rs`.
//!
//! The crate is also built for the host. There only the shared half exists: launch
//! parameter structs, tile constants, SRAM budgets and pure index math (fragment
//! layouts, swizzles), so host and device use ONE definition of each, and the pure
//! helpers are unit-tested on the CPU. Everything that emits PTX sits behind
//! `cfg(target_arch = "nvptx64")`.
#![no_std]
#![cfg_attr(target_arch = "nvptx64", feature(abi_ptx, stdarch_nvptx, asm_experimental_arch, link_llvm_intrinsics))]

#[cfg(test)]
extern crate std;

pub mod attention;
pub mod conv;
pub mod decode;
#[cfg(target_arch = "nvptx64")]
pub mod device;
pub mod dtype;
pub mod elementwise;
pub mod layout;
pub mod mamba;
pub mod norm;
pub mod registry;
pub mod selftest;
pub mod tensor_map;

/// No unwinding on the GPU: a panic (an out-of-bounds slice index, say) traps the
/// kernel, and the host sees `CUDA_ERROR_ILLEGAL_INSTRUCTION` at the next sync.
#[cfg(target_arch = "nvptx64")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    unsafe { core::arch::asm!("trap;", options(noreturn)) }
}
