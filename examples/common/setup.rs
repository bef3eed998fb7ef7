//! The device and element type a run uses, from `--device` and `--dtype`.

use super::args::UsageError;
use flashscan::{Device, runtime::Gpu};

/// Element types the examples run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    Bf16,
    F16,
    F32,
}

impl Dtype {
    /// Parses `bf16`, `f16` or (where `f32_ok`) `f32`.
    pub fn parse(s: &str, f32_ok: bool) -> Result<Dtype, UsageError> {
        match s {
            "bf16" => Ok(Dtype::Bf16),
            "f16" => Ok(Dtype::F16),
            "f32" if f32_ok => Ok(Dtype::F32),
            _ => Err(UsageError(format!(
                "`--dtype {s}`: expected bf16 or f16{}",
                if f32_ok { " or f32" } else { " (attention runs in 16-bit types)" }
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::Bf16 => "bf16",
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
        }
    }
}

/// The device of `--device auto|cpu|cuda|cuda:N`, and when it is the CPU, why (for the
/// "running on the CPU because ..." line). `auto` takes GPU 0 when it is usable.
pub fn choose_device(flag: &str) -> Result<(Device, Option<String>), UsageError> {
    match flag {
        "auto" => {
            let (device, why_not) = Device::cuda_if_available();
            Ok((device, why_not.map(|e| e.to_string())))
        }
        "cpu" => Ok((Device::Cpu, Some("--device cpu asked for it".into()))),
        _ => {
            let n = match flag {
                "cuda" => Some(0),
                _ => flag.strip_prefix("cuda:").and_then(|n| n.parse().ok()),
            };
            let n = n.ok_or_else(|| UsageError(format!("`--device {flag}`: expected auto, cpu, cuda or cuda:N")))?;
            Gpu::get(n).map_err(|e| UsageError(format!("`--device {flag}`: {e}")))?;
            Ok((Device::Cuda(n), None))
        }
    }
}

/// The line that says where a run goes.
pub fn announce(device: Device, why_cpu: &Option<String>) {
    match why_cpu {
        None => println!("running on {}", device.describe()),
        Some(why) => println!("running on the CPU ({why})"),
    }
}
