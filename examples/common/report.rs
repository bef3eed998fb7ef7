//! The final table of a run: per phase the tokens, the time, tokens/s and the memory in
//! use after it (peak host RSS; GPU memory from the driver), and the device that ran.

use flashscan::Device;

/// One timed phase of a run.
pub struct Phase {
    pub name: String,
    pub tokens: usize,
    pub seconds: f64,
    /// Peak resident host memory so far, bytes (`VmHWM`).
    pub host_peak: Option<u64>,
    /// GPU memory in use after the phase, bytes (the whole device, from `cuMemGetInfo`).
    pub gpu_used: Option<u64>,
}

impl Phase {
    /// A phase that took `seconds` for `tokens`, with the memory measured now.
    pub fn measured(name: &str, tokens: usize, seconds: f64, device: Device) -> Phase {
        Phase { name: name.into(), tokens, seconds, host_peak: peak_rss_bytes(), gpu_used: gpu_used_bytes(device) }
    }

    pub fn tokens_per_second(&self) -> f64 {
        if self.seconds > 0.0 { self.tokens as f64 / self.seconds } else { f64::INFINITY }
    }
}

/// The peak resident set of this process (`VmHWM` of /proc/self/status), bytes; `None`
/// where there is no /proc.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// GPU memory in use on `device` (total - free, every process's), bytes; `None` on the CPU.
pub fn gpu_used_bytes(device: Device) -> Option<u64> {
    let (free, total) = device.gpu().ok()?.memory_info().ok()?;
    Some(total.saturating_sub(free) as u64)
}

fn gib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.2}", b as f64 / (1u64 << 30) as f64))
}

/// Prints the table of `phases` and the line naming the device.
pub fn print_table(title: &str, phases: &[Phase], device: Device, dtype: &str) {
    println!("\n{title}");
    println!(
        "{:<22} {:>8} {:>10} {:>12} {:>14} {:>14}",
        "phase", "tokens", "time (s)", "tokens/s", "host peak GiB", "GPU used GiB"
    );
    for p in phases {
        println!(
            "{:<22} {:>8} {:>10.3} {:>12.1} {:>14} {:>14}",
            p.name,
            p.tokens,
            p.seconds,
            p.tokens_per_second(),
            gib(p.host_peak),
            gib(p.gpu_used)
        );
    }
    let gpu_total = device.gpu().ok().and_then(|g| g.memory_info().ok()).map(|(_, t)| t as u64);
    let on = match gpu_total {
        Some(t) => format!("{} with {} GiB", device.describe(), gib(Some(t))),
        None => device.describe(),
    };
    println!("device: {on}, dtype {dtype}");
}
