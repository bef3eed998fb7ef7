//! The PTX tier: every kernel of the registry, for sm_80 and sm_90a, goes through
//! `ptxas -v`; the test fails on register spills, a stack frame, shared memory over the
//! kernel's declared budget plus its static use, a missing required instruction
//! (`wgmma` for the Hopper-only kernels, which only the sm_90a PTX holds), or wgmma
//! products that ptxas serialized.
//!
//! ptxas comes from $PTXAS, PATH, or the PyPI wheel `nvidia-cuda-nvcc-cu12`; the test
//! fails (it does not skip) when none is found, so CI cannot pass without checking.

use flashscan::kernels::registry::{KERNELS, kernel_info};
use flashscan::runtime::ptx::{Arch, source};
use std::path::PathBuf;
use std::process::Command;

fn ptxas() -> PathBuf {
    if let Some(p) = std::env::var_os("PTXAS") {
        return p.into();
    }
    if Command::new("ptxas").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return "ptxas".into();
    }
    for py in ["python3", "python"] {
        let code =
            "import nvidia.cuda_nvcc, os; print(os.path.join(list(nvidia.cuda_nvcc.__path__)[0], 'bin', 'ptxas'))";
        if let Ok(o) = Command::new(py).args(["-c", code]).output()
            && o.status.success()
        {
            let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if p.exists() {
                return p;
            }
        }
    }
    panic!("ptxas not found: set $PTXAS, put it on PATH, or `pip install nvidia-cuda-nvcc-cu12`");
}

#[derive(Debug, Default)]
struct Usage {
    regs: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
    smem: u32,
}

fn number_before(line: &str, unit: &str) -> Option<u32> {
    let i = line.find(unit)?;
    line[..i].split_whitespace().last()?.parse().ok()
}

/// The lines where ptxas says it serialized a kernel's wgmma products.
fn wgmma_serialized(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("wgmma") && l.to_lowercase().contains("serialized")).collect()
}

/// Parses `ptxas -v` output into per-kernel usage.
fn parse(log: &str) -> Vec<(String, Usage)> {
    let mut out: Vec<(String, Usage)> = vec![];
    for line in log.lines() {
        if let Some(rest) = line.split("Function properties for ").nth(1) {
            out.push((rest.trim().to_string(), Usage::default()));
        } else if let Some((_, u)) = out.last_mut() {
            if line.contains("bytes stack frame") {
                u.stack = number_before(line, "bytes stack frame").unwrap_or(u32::MAX);
                u.spill_stores = number_before(line, "bytes spill stores").unwrap_or(u32::MAX);
                u.spill_loads = number_before(line, "bytes spill loads").unwrap_or(u32::MAX);
            } else if line.contains("Used") && line.contains("registers") {
                u.regs = number_before(line, "registers").unwrap_or(u32::MAX);
                u.smem = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    out
}

/// The body of `.entry name(` up to the next entry (the kernels inline everything).
fn entry_body<'a>(ptx: &'a str, name: &str) -> &'a str {
    let start = ptx.find(&format!(".entry {name}(")).unwrap_or_else(|| panic!("{name} not in PTX"));
    let rest = &ptx[start + 1..];
    let end = rest.find(".entry ").map_or(rest.len(), |i| i);
    &ptx[start..start + 1 + end]
}

#[test]
fn ptxas_accepts_every_kernel_without_spills_stack_or_smem_overrun() {
    let ptxas = ptxas();
    let dir = std::env::temp_dir().join(format!("flashscan-ptx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut report = String::new();
    for arch in Arch::ALL {
        let ptx = source(arch);
        let file = dir.join(format!("{}.ptx", arch.name()));
        std::fs::write(&file, ptx).expect("write ptx");
        let o = Command::new(&ptxas)
            .args(["-v", &format!("-arch={}", arch.name()), "-o"])
            .arg(dir.join(format!("{}.cubin", arch.name())))
            .arg(&file)
            .output()
            .expect("run ptxas");
        let log = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "ptxas rejected the {} PTX:\n{log}", arch.name());
        // ptxas only notes it (an info line, C7513 / C7518) when it serializes a kernel's
        // wgmma products, e.g. for a wait on a branch it cannot prove uniform: the
        // kernel still runs, several times slower.
        let serialized = wgmma_serialized(&log);
        assert!(serialized.is_empty(), "{}: ptxas serialized wgmma:\n{}", arch.name(), serialized.join("\n"));
        let usage = parse(&log);
        for k in KERNELS.iter().filter(|k| arch == Arch::Sm90a || !k.sm90a_only) {
            let (_, u) = usage
                .iter()
                .find(|(n, _)| n == k.name)
                .unwrap_or_else(|| panic!("{}: ptxas did not report {}:\n{log}", arch.name(), k.name));
            report += &format!(
                "{:6} {:28} {:3} regs {:6} B static smem, budget {:6}\n",
                arch.name(),
                k.name,
                u.regs,
                u.smem,
                k.smem_budget
            );
            assert_eq!(
                (u.stack, u.spill_stores, u.spill_loads),
                (0, 0, 0),
                "{} {}: stack/spills {u:?}",
                arch.name(),
                k.name
            );
            assert!(
                u.smem + k.smem_budget <= arch.smem_optin_limit(),
                "{} {}: {} B static + {} B dynamic SRAM > {} B",
                arch.name(),
                k.name,
                u.smem,
                k.smem_budget,
                arch.smem_optin_limit()
            );
            let body = entry_body(ptx, k.name);
            for needle in k.must_contain {
                assert!(body.contains(needle), "{} {}: PTX lacks `{needle}`", arch.name(), k.name);
            }
            // A `trap` is a panic path that survived (a bounds or divide-by-zero check).
            assert!(!body.contains("trap;"), "{} {}: PTX contains a panic path (`trap;`)", arch.name(), k.name);
        }
        // Every entry in the PTX is registered (so none escapes these checks).
        for name in
            ptx.lines().filter_map(|l| l.split(".entry ").nth(1)).map(|r| r.split('(').next().unwrap_or(r).trim())
        {
            assert!(kernel_info(name).is_some(), "{name} is in the PTX but not in kernels::registry::KERNELS");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("{report}");
}

#[test]
fn parser_reads_ptxas_output() {
    let log = "ptxas info    : Compiling entry function 'k' for 'sm_90a'\n\
               ptxas info    : Function properties for k\n    \
               16 bytes stack frame, 4 bytes spill stores, 8 bytes spill loads\n\
               ptxas info    : Used 40 registers, used 1 barriers, 1024 bytes smem, 400 bytes cmem[0]\n";
    let u = parse(log);
    assert_eq!(u.len(), 1);
    assert_eq!((u[0].1.stack, u[0].1.spill_stores, u[0].1.spill_loads, u[0].1.regs, u[0].1.smem), (16, 4, 8, 40, 1024));
}

#[test]
fn wgmma_serialization_notes_are_found() {
    let log = "ptxas info    : Compiling entry function 'k' for 'sm_90a'\n\
               ptxas info    : (C7518) Potential Performance Loss: wgmma.mma_async instructions are serialized \
               due to a wait in a divergent path in the function 'k'\n\
               ptxas info    : Used 40 registers\n";
    assert_eq!(wgmma_serialized(log).len(), 1);
    assert!(wgmma_serialized("ptxas info    : Used 40 registers\n").is_empty());
}
