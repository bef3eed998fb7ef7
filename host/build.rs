//! Compiles `kernels-gpu` to PTX with rustc's own `nvptx64-nvidia-cuda` target, once per
//! GPU architecture, and leaves the PTX files in OUT_DIR for `host/src/runtime/ptx.rs`
//! to embed. No CUDA toolkit and no GPU are needed: rustc writes the PTX, the driver
//! JIT-compiles it at run time.
//!
//! The nested cargo gets its own target directory (the outer build holds the lock on
//! ours) and a clean environment (the outer build's RUSTFLAGS are for the host).
//! `-Zbuild-std=core` builds core for nvptx from rust-src, since rustup ships no
//! nvptx64 rust-std; the target flags go through CARGO_TARGET_<triple>_RUSTFLAGS so that
//! core is compiled for the same GPU as the kernels.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (file stem, target-cpu, target features). sm_80 serves every GPU from Ampere on
/// (the driver JITs PTX forward); sm_90a unlocks Hopper-only instructions.
const ARCHES: &[(&str, &str, &str)] = &[("sm80", "sm_80", "+ptx80"), ("sm90a", "sm_90a", "+ptx81")];

const TRIPLE: &str = "nvptx64-nvidia-cuda";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernels = manifest_dir.join("kernels-gpu");

    println!("cargo:rerun-if-changed={}", kernels.join("src").display());
    println!("cargo:rerun-if-changed={}", kernels.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", manifest_dir.join("rust-toolchain.toml").display());
    println!("cargo:rerun-if-env-changed=FLASHSCAN_PTX_DIR");

    // A prebuilt PTX folder (files flashscan_sm80.ptx, flashscan_sm90a.ptx) skips the
    // nested build: for packagers, and for checking a hand-edited PTX file.
    if let Ok(dir) = env::var("FLASHSCAN_PTX_DIR") {
        for (stem, _, _) in ARCHES {
            let name = format!("flashscan_{stem}.ptx");
            let src = Path::new(&dir).join(&name);
            fs::copy(&src, out_dir.join(&name))
                .unwrap_or_else(|e| fail(&format!("FLASHSCAN_PTX_DIR: cannot copy {}: {e}", src.display())));
        }
        return;
    }

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (stem, cpu, features) in ARCHES {
        let target_dir = out_dir.join(format!("ptx-build-{stem}"));
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(&kernels)
            .args(["rustc", "--profile", "ptx", "-Zbuild-std=core", "--target", TRIPLE])
            .args(["--crate-type", "cdylib", "--message-format", "short"])
            .arg("--manifest-path")
            .arg(kernels.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            // `--emit=asm` writes the PTX; no bitcode linker ships for nvptx64 here, and
            // with LTO there is nothing left to link: `true` stands in for it.
            .args(["--", "--emit=asm", "-C", "linker=true"]);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_PRIMARY_PACKAGE",
        ] {
            cmd.env_remove(var);
        }
        cmd.env(
            "CARGO_TARGET_NVPTX64_NVIDIA_CUDA_RUSTFLAGS",
            // The inline threshold: kernels pass closures to `device::unroll`, and every
            // call must be inlined for the fragment arrays to stay in registers.
            format!("-C target-cpu={cpu} -C target-feature={features} -C llvm-args=-inline-threshold=100000"),
        );
        let output = cmd.output().unwrap_or_else(|e| fail(&format!("could not start the nested cargo ({cargo}): {e}")));
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            eprintln!("{stderr}");
            fail(&format!(
                "kernels-gpu failed to compile for {cpu} (errors above).\n\
                 The GPU build needs the pinned nightly with rust-src (see rust-toolchain.toml)."
            ));
        }
        let asm = target_dir.join(TRIPLE).join("ptx").join("deps").join("flashscan_kernels.s");
        let ptx = fs::read_to_string(&asm)
            .unwrap_or_else(|e| fail(&format!("kernel build for {cpu} left no PTX at {}: {e}", asm.display())));
        let ptx = with_launch_bounds(&ptx, stem);
        fs::write(out_dir.join(format!("flashscan_{stem}.ptx")), ptx)
            .unwrap_or_else(|e| fail(&format!("cannot write PTX into OUT_DIR: {e}")));
    }
}

/// The PTX with `.maxntid` / `.minnctapersm` after the parameter list of each kernel in
/// `registry::LAUNCH_BOUNDS` (its CTA count for this architecture, `stem`), `.maxnreg`
/// for each in `registry::MAX_REGS`, and the parameter of each kernel in
/// `registry::PARAM_ALIGN_64` aligned to 64 bytes (rustc has no attribute for the first
/// two, and its kernel ABI caps a parameter's alignment at 16 bytes, while the tensor
/// maps that the copy engine reads in place need 64).
fn with_launch_bounds(ptx: &str, stem: &str) -> String {
    use flashscan_kernels::registry::{LAUNCH_BOUNDS, MAX_REGS, PARAM_ALIGN_64};
    let mut out = String::with_capacity(ptx.len() + 1024);
    let mut pending: Option<String> = None;
    let mut realign: Option<String> = None;
    for line in ptx.lines() {
        if let Some(name) = realign.take() {
            let from = format!(".param .align 16 .b8 {name}_param_0[");
            if !line.trim_start().starts_with(&from) {
                fail(&format!("{name}: expected its parameter declared as `{from}...`, found `{line}`"));
            }
            out.push_str(&line.replacen(".align 16", ".align 64", 1));
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if let Some(rest) = line.trim_start().strip_prefix(".visible .entry ") {
            let name = rest.split('(').next().unwrap_or("").trim();
            if PARAM_ALIGN_64.contains(&name) {
                realign = Some(name.to_string());
            }
            let bounds = LAUNCH_BOUNDS.iter().find(|(k, _, _, _)| *k == name).map(|&(_, threads, sm90, sm80)| {
                let ctas = if stem == "sm80" { sm80 } else { sm90 };
                format!(".maxntid {threads}, 1, 1\n.minnctapersm {ctas}\n")
            });
            let regs = MAX_REGS.iter().find(|(k, _)| *k == name).map(|&(_, n)| format!(".maxnreg {n}\n"));
            pending = match (bounds, regs) {
                (None, None) => None,
                (b, r) => Some(b.unwrap_or_default() + &r.unwrap_or_default()),
            };
        } else if line.trim() == ")"
            && let Some(directives) = pending.take()
        {
            out.push_str(&directives);
        }
    }
    out
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}
