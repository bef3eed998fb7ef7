//! One `Gpu` per device: its context and stream (cudarc), the flashscan PTX module
//! loaded with the JIT's logs captured, and launches that raise each kernel's dynamic
//! shared-memory limit as needed and check the driver's answer.

use super::ptx::{self, Arch};
use crate::error::{driver, driver_message};
use crate::{Error, Result};
use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr};
use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Grid dimensions of a launch.
#[derive(Clone, Copy, Debug)]
pub struct LaunchGrid {
    pub grid: (u32, u32, u32),
    pub block: u32,
    /// Dynamic shared memory, bytes.
    pub smem: u32,
}

struct Function {
    raw: sys::CUfunction,
    /// The dynamic shared-memory limit currently set on it.
    smem_limit: u32,
}

pub struct Gpu {
    ordinal: usize,
    name: String,
    cc: (i32, i32),
    arch: Arch,
    sm_count: u32,
    smem_optin: u32,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    module: sys::CUmodule,
    functions: Mutex<HashMap<String, Function>>,
    sync_each_launch: bool,
    poison_outputs: AtomicBool,
    /// u32 counters for kernels whose last CTA finishes the work (see `counters`).
    counters: Mutex<Growing<u32>>,
    /// f32 scratch for kernels' intermediate results (see `scratch_f32`).
    scratch: Mutex<Growing<f32>>,
}

/// A device buffer that only grows (to powers of two), keeping the buffers it outgrew
/// until the device is dropped: a launch another thread queued may still hold their
/// addresses.
struct Growing<T> {
    current: Option<CudaSlice<T>>,
    outgrown: Vec<CudaSlice<T>>,
}

impl<T> Growing<T> {
    fn new() -> Self {
        Growing { current: None, outgrown: Vec::new() }
    }

    /// The buffer, first replaced by `alloc(len)` (len: `n` rounded up to a power of
    /// two) when it holds fewer than `n` elements.
    fn at_least(&mut self, n: usize, alloc: impl FnOnce(usize) -> Result<CudaSlice<T>>) -> Result<&CudaSlice<T>> {
        if self.current.as_ref().is_none_or(|b| b.len() < n) {
            let buf = alloc(n.max(1).next_power_of_two())?;
            if let Some(old) = self.current.replace(buf) {
                self.outgrown.push(old);
            }
        }
        Ok(self.current.as_ref().expect("allocated above"))
    }
}

// The module and function handles are plain driver handles, usable from any thread once
// the context is bound (every use below binds it first).
unsafe impl Send for Gpu {}
unsafe impl Sync for Gpu {}

/// Static shared memory a block may always use without opting in.
const SMEM_DEFAULT: u32 = 48 * 1024;

impl Gpu {
    /// The runtime of device `ordinal`, created on first use and shared afterwards.
    pub fn get(ordinal: usize) -> Result<Arc<Gpu>> {
        static GPUS: OnceLock<Mutex<HashMap<usize, Arc<Gpu>>>> = OnceLock::new();
        let map = GPUS.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = map.get(&ordinal) {
            return Ok(g.clone());
        }
        let g = Arc::new(Gpu::open(ordinal)?);
        map.insert(ordinal, g.clone());
        Ok(g)
    }

    fn open(ordinal: usize) -> Result<Gpu> {
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::NoGpu { reason: "the NVIDIA driver library (libcuda.so) was not found".into() });
        }
        let count = CudaContext::device_count()
            .map_err(|e| Error::NoGpu { reason: format!("the driver did not initialise: {}", driver_message(&e)) })?;
        if ordinal >= count.max(0) as usize {
            return Err(Error::NoGpu { reason: format!("asked for device {ordinal}, the driver reports {count}") });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver("cuCtxCreate"))?;
        // One stream per device carries all our work in order, so cudarc's per-buffer
        // event tracking (for multi-stream use) is not needed.
        unsafe { ctx.disable_event_tracking() };
        let name = ctx.name().map_err(driver("cuDeviceGetName"))?;
        let cc = ctx.compute_capability().map_err(driver("cuDeviceGetAttribute"))?;
        let arch = Arch::for_compute_capability(cc.0, cc.1)
            .ok_or_else(|| Error::UnsupportedGpu { name: name.clone(), compute_capability: cc })?;
        let attr = |a| ctx.attribute(a).map_err(driver("cuDeviceGetAttribute"));
        let sm_count = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
        let smem_optin = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as u32;
        let stream = ctx.default_stream();
        let module = load_module(&ctx, ptx::source(arch))?;
        Ok(Gpu {
            ordinal,
            name,
            cc,
            arch,
            sm_count,
            smem_optin,
            ctx,
            stream,
            module,
            functions: Mutex::new(HashMap::new()),
            sync_each_launch: std::env::var_os("FLASHSCAN_SYNC_LAUNCHES").is_some_and(|v| v != "0"),
            poison_outputs: AtomicBool::new(false),
            counters: Mutex::new(Growing::new()),
            scratch: Mutex::new(Growing::new()),
        })
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn compute_capability(&self) -> (i32, i32) {
        self.cc
    }
    pub fn arch(&self) -> Arch {
        self.arch
    }
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }
    /// Most dynamic shared memory one block may opt into, bytes.
    pub fn smem_optin(&self) -> u32 {
        self.smem_optin
    }
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// When on, every output buffer an operation allocates is filled with 0xFF bytes (NaN
    /// in f32, bf16 and f16) before the kernel runs, so a test sees any element a kernel
    /// failed to write. Off by default (it costs a memset per output).
    pub fn set_poison_outputs(&self, on: bool) {
        self.poison_outputs.store(on, Ordering::Relaxed);
    }
    pub fn poison_outputs(&self) -> bool {
        self.poison_outputs.load(Ordering::Relaxed)
    }

    /// The device address of at least `n` u32 counters that are zero whenever the stream
    /// reaches a kernel: a kernel that counts on them puts each back to zero before it
    /// ends (the split-KV decode's last CTA per row block does). They are zeroed once,
    /// when first allocated or grown; every launch is on this device's one stream, so no
    /// two such kernels ever run at once. An outgrown buffer is kept (not freed) while
    /// the device lives, since a launch queued by another thread may still hold its
    /// address.
    pub fn counters(&self, n: usize) -> Result<u64> {
        let mut c = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let buf = c.at_least(n, |len| {
            self.stream.alloc_zeros::<u32>(len).map_err(driver(format!("allocating {len} counters")))
        })?;
        Ok(buf.device_ptr(&self.stream).0)
    }

    /// The device address of at least `n` f32 of scratch that one launch may use as it
    /// likes (the split-KV decode's partial o and lse; poisoned as an output when
    /// `poison_outputs` is on): nothing is kept in it between launches, and every launch
    /// is on this device's one stream, so the launches that use it run one after
    /// another. Grown to the next power of two when too small; an outgrown buffer is
    /// kept (not freed) while the device lives, since a launch queued by another thread
    /// may still hold its address.
    pub fn scratch_f32(&self, n: usize) -> Result<u64> {
        let mut s = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let buf = s.at_least(n, |len| {
            unsafe { self.stream.alloc::<f32>(len) }.map_err(driver(format!("allocating {len} f32 of scratch")))
        })?;
        let addr = buf.device_ptr(&self.stream).0;
        if self.poison_outputs() {
            unsafe { sys::cuMemsetD8Async(addr, 0xFF, n * 4, self.stream.cu_stream()) }
                .result()
                .map_err(driver("cuMemsetD8Async"))?;
        }
        Ok(addr)
    }

    /// Free and total device memory, bytes (`cuMemGetInfo`: the whole device, other
    /// processes' allocations included).
    pub fn memory_info(&self) -> Result<(usize, usize)> {
        self.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
        cudarc::driver::result::mem_get_info().map_err(driver("cuMemGetInfo"))
    }

    /// Waits for all work queued on this device; surfaces asynchronous kernel faults.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(driver("cuStreamSynchronize (an earlier kernel may have faulted)"))
    }

    /// Launches `kernel` with one by-value parameter struct `params` (the kernel crate's
    /// `#[repr(C)]` definition). Checks the shared-memory request against the device,
    /// raises the function's limit when above 48 KiB, and returns the driver's error if
    /// the launch is refused. With `FLASHSCAN_SYNC_LAUNCHES=1` it also waits for the
    /// kernel and reports faults against this launch.
    pub fn launch<P: Copy>(&self, kernel: &str, cfg: LaunchGrid, params: &P) -> Result<()> {
        if cfg.smem > self.smem_optin {
            return Err(Error::SharedMemory { kernel: kernel.into(), requested: cfg.smem, limit: self.smem_optin });
        }
        self.ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
        let func = self.function(kernel, cfg.smem)?;
        let mut p = *params;
        let mut args = [&mut p as *mut P as *mut c_void];
        let (gx, gy, gz) = cfg.grid;
        unsafe {
            sys::cuLaunchKernel(
                func,
                gx,
                gy,
                gz,
                cfg.block,
                1,
                1,
                cfg.smem,
                self.stream.cu_stream(),
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
            .result()
            .map_err(driver(format!(
                "launching {kernel} (grid {:?}, block {}, smem {})",
                cfg.grid, cfg.block, cfg.smem
            )))?;
        }
        if self.sync_each_launch {
            self.stream.synchronize().map_err(driver(format!("running {kernel}")))?;
        }
        Ok(())
    }

    fn function(&self, kernel: &str, smem: u32) -> Result<sys::CUfunction> {
        let mut funcs = self.functions.lock().unwrap_or_else(|p| p.into_inner());
        if !funcs.contains_key(kernel) {
            let cname = CString::new(kernel).map_err(|_| Error::Value {
                arg: "kernel",
                got: format!("{kernel:?}"),
                expected: "a name without NUL".into(),
            })?;
            let mut raw = std::ptr::null_mut();
            unsafe { sys::cuModuleGetFunction(&mut raw, self.module, cname.as_ptr()) }
                .result()
                .map_err(driver(format!("cuModuleGetFunction({kernel})")))?;
            funcs.insert(kernel.to_string(), Function { raw, smem_limit: SMEM_DEFAULT });
        }
        let f = funcs.get_mut(kernel).expect("inserted above");
        if smem > f.smem_limit {
            unsafe {
                sys::cuFuncSetAttribute(
                    f.raw,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                )
            }
            .result()
            .map_err(driver(format!("raising {kernel}'s shared-memory limit to {smem} bytes")))?;
            f.smem_limit = smem;
        }
        Ok(f.raw)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            unsafe {
                let _ = sys::cuModuleUnload(self.module);
            }
        }
    }
}

/// Loads PTX through the driver's JIT, keeping its error and info logs so that a
/// rejected module reports why.
fn load_module(ctx: &Arc<CudaContext>, ptx: &str) -> Result<sys::CUmodule> {
    ctx.bind_to_thread().map_err(driver("cuCtxSetCurrent"))?;
    let image = CString::new(ptx)
        .map_err(|_| Error::PtxJit { message: "embedded PTX contains NUL".into(), log: String::new() })?;
    const LOG: usize = 1 << 16;
    let mut err_log = vec![0u8; LOG];
    let mut info_log = vec![0u8; LOG];
    let mut opts = [
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
        sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER,
        sys::CUjit_option::CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
    ];
    let mut vals = [
        err_log.as_mut_ptr() as *mut c_void,
        LOG as *mut c_void,
        info_log.as_mut_ptr() as *mut c_void,
        LOG as *mut c_void,
    ];
    let mut module = std::ptr::null_mut();
    let res = unsafe {
        sys::cuModuleLoadDataEx(
            &mut module,
            image.as_ptr() as *const c_void,
            opts.len() as u32,
            opts.as_mut_ptr(),
            vals.as_mut_ptr(),
        )
    };
    match res.result() {
        Ok(()) => Ok(module),
        Err(e) => {
            let text = |b: &[u8]| {
                String::from_utf8_lossy(&b[..b.iter().position(|&c| c == 0).unwrap_or(b.len())]).into_owned()
            };
            Err(Error::PtxJit { message: driver_message(&e), log: format!("{}{}", text(&err_log), text(&info_log)) })
        }
    }
}
