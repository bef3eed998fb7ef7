//! The PTX that `host/build.rs` compiled from `kernels-gpu`, embedded in the library.

/// The PTX build a GPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Ampere and newer (compute 8.x; also the portable choice for 10.x/12.x, which the
    /// driver JIT-compiles forward).
    Sm80,
    /// Hopper (compute 9.0): may use wgmma and other sm_90a-only instructions.
    Sm90a,
}

impl Arch {
    /// The PTX for a device of compute capability `major.minor`, or None if too old.
    pub fn for_compute_capability(major: i32, _minor: i32) -> Option<Arch> {
        match major {
            ..=7 => None,
            9 => Some(Arch::Sm90a),
            // 8.x, and newer GPUs, where sm_90a code (arch-specific) cannot run.
            _ => Some(Arch::Sm80),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90a => "sm_90a",
        }
    }

    /// The largest dynamic shared memory a block may opt into on the reference GPU of
    /// this build (A100: 163 KiB; H100: 227 KiB). The runtime checks the real device.
    pub fn smem_optin_limit(self) -> u32 {
        match self {
            Arch::Sm80 => 163 * 1024,
            Arch::Sm90a => 227 * 1024,
        }
    }

    pub const ALL: [Arch; 2] = [Arch::Sm80, Arch::Sm90a];
}

/// The PTX text for `arch`.
pub fn source(arch: Arch) -> &'static str {
    match arch {
        Arch::Sm80 => include_str!(concat!(env!("OUT_DIR"), "/flashscan_sm80.ptx")),
        Arch::Sm90a => include_str!(concat!(env!("OUT_DIR"), "/flashscan_sm90a.ptx")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_choice() {
        assert_eq!(Arch::for_compute_capability(7, 5), None);
        assert_eq!(Arch::for_compute_capability(8, 0), Some(Arch::Sm80));
        assert_eq!(Arch::for_compute_capability(8, 9), Some(Arch::Sm80));
        assert_eq!(Arch::for_compute_capability(9, 0), Some(Arch::Sm90a));
        assert_eq!(Arch::for_compute_capability(12, 0), Some(Arch::Sm80));
    }

    #[test]
    fn both_ptx_builds_are_embedded_and_name_their_target() {
        assert!(source(Arch::Sm80).contains(".target sm_80"));
        assert!(source(Arch::Sm90a).contains(".target sm_90a"));
        for k in flashscan_kernels::registry::KERNELS {
            for arch in Arch::ALL {
                let present = source(arch).contains(&format!(".entry {}(", k.name));
                // A Hopper-only kernel must not reach the PTX that other GPUs JIT.
                let expected = arch == Arch::Sm90a || !k.sm90a_only;
                assert_eq!(present, expected, "{} in the {:?} PTX: {present}", k.name, arch);
            }
        }
    }
}
