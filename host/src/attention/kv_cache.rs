//! The KV cache of generation: per-sequence keys and values that grow by a few tokens a
//! step, read whole by every step's attention ([`super::decode`]).
//!
//! Two layouts, both with rows of `[heads_kv, head_dim]` per position:
//! - contiguous: k and v `[batch, max_seqlen, heads_kv, head_dim]`;
//! - paged: k and v `[num_pages, page_size, heads_kv, head_dim]` and a block table per
//!   sequence listing its pages in order (position p of sequence b lives in page
//!   `table[b][p / page_size]`, row `p % page_size`), as inference servers keep them so
//!   that sequences share one pool. The page size is a multiple of the kernel's 64-key
//!   block ([`PAGE_SIZE_MULTIPLE`]).
//!
//! The cache also keeps each sequence's length (the tokens written so far). On a GPU the
//! lengths and the block table live in device memory too; they are uploaded again only
//! after they change.

use crate::kernels::attention::decode::SPLIT_BLOCK_N;
use crate::ops::{RotaryStyle, RotaryTables};
use crate::runtime::{Gpu, GpuTensor};
use crate::tensor::check;
use crate::{DType, Device, Element, Error, Result, Tensor};
use cudarc::driver::{CudaSlice, DevicePtr};
use std::sync::Arc;

/// A paged cache's page size must be a multiple of this (the split-KV kernel's key block:
/// one page holds whole blocks).
pub const PAGE_SIZE_MULTIPLE: usize = SPLIT_BLOCK_N as usize;

/// Rotary embedding applied by [`KvCache::append`] to the new keys (and by
/// [`super::decode`] to the queries): token positions are their places in the cache.
#[derive(Clone, Copy)]
pub struct Rotary<'a> {
    pub tables: &'a RotaryTables,
    pub style: RotaryStyle,
}

/// A per-sequence KV cache, contiguous or paged, on the CPU or a GPU.
pub struct KvCache<T: Element> {
    pub(crate) k: Tensor<T>,
    pub(crate) v: Tensor<T>,
    pub(crate) batch: usize,
    pub(crate) heads_kv: usize,
    pub(crate) head_dim: usize,
    /// Contiguous: max_seqlen. Paged: the page size.
    pub(crate) rows_per_unit: usize,
    /// Paged: `[batch, pages_per_seq]` page indices (a sequence with fewer pages is
    /// padded with its last page, never read); `None` when contiguous.
    pub(crate) table: Option<Vec<u32>>,
    pub(crate) pages_per_seq: usize,
    /// Pages each sequence owns (paged) — its capacity is that times the page size.
    pages_of: Vec<usize>,
    pub(crate) seqlens: Vec<usize>,
    dev: Option<DeviceIndex>,
}

/// The lengths and block table in device memory, and whether the lengths there are
/// current.
struct DeviceIndex {
    gpu: Arc<Gpu>,
    seqlens: CudaSlice<u32>,
    table: Option<CudaSlice<u32>>,
    seqlens_current: bool,
}

impl<T: Element> KvCache<T> {
    /// An empty contiguous cache of zeros: `batch` sequences of up to `max_seqlen` tokens.
    pub fn contiguous(
        batch: usize,
        max_seqlen: usize,
        heads_kv: usize,
        head_dim: usize,
        device: Device,
    ) -> Result<Self> {
        let shape = [batch, max_seqlen, heads_kv, head_dim];
        check::nonempty("shape", &shape, 4)?;
        let (k, v) = (zeros(&shape, device)?, zeros(&shape, device)?);
        Self::from_contiguous(k, v, &vec![0; batch])
    }

    /// A contiguous cache over existing tensors k and v `[batch, max_seqlen, heads_kv,
    /// head_dim]` whose first `seqlens[b]` positions of sequence b hold tokens.
    pub fn from_contiguous(k: Tensor<T>, v: Tensor<T>, seqlens: &[usize]) -> Result<Self> {
        let ks = k.shape().to_vec();
        check_kv(&k, &v, "[batch, max_seqlen, heads_kv, head_dim]")?;
        let (batch, max_seqlen) = (ks[0], ks[1]);
        let cache = KvCache {
            k,
            v,
            batch,
            heads_kv: ks[2],
            head_dim: ks[3],
            rows_per_unit: max_seqlen,
            table: None,
            pages_per_seq: 0,
            pages_of: vec![],
            seqlens: vec![0; batch],
            dev: None,
        };
        cache.finish(seqlens)
    }

    /// An empty paged cache of zeros: `num_pages` pages of `page_size` positions, and
    /// sequence b owning the pages `block_table[b]` in order.
    pub fn paged(
        num_pages: usize,
        page_size: usize,
        heads_kv: usize,
        head_dim: usize,
        block_table: &[Vec<usize>],
        device: Device,
    ) -> Result<Self> {
        let shape = [num_pages, page_size, heads_kv, head_dim];
        check::nonempty("shape", &shape, 4)?;
        let (k, v) = (zeros(&shape, device)?, zeros(&shape, device)?);
        Self::from_pages(k, v, block_table, &vec![0; block_table.len()])
    }

    /// A paged cache over existing page pools k and v `[num_pages, page_size, heads_kv,
    /// head_dim]`: sequence b owns pages `block_table[b]` (in order; a page may not be
    /// listed twice) and holds `seqlens[b]` tokens.
    pub fn from_pages(k: Tensor<T>, v: Tensor<T>, block_table: &[Vec<usize>], seqlens: &[usize]) -> Result<Self> {
        check_kv(&k, &v, "[num_pages, page_size, heads_kv, head_dim]")?;
        let ks = k.shape().to_vec();
        let (num_pages, page_size) = (ks[0], ks[1]);
        if page_size % PAGE_SIZE_MULTIPLE != 0 {
            return Err(Error::Shape {
                arg: "k",
                got: ks,
                expected: format!("a page size (dimension 1) that is a multiple of {PAGE_SIZE_MULTIPLE}"),
            });
        }
        let batch = block_table.len();
        if batch == 0 || block_table.iter().any(|t| t.is_empty()) {
            return Err(Error::Value {
                arg: "block_table",
                got: format!("{:?}", block_table.iter().map(|t| t.len()).collect::<Vec<_>>()),
                expected: "at least one sequence, each with at least one page".into(),
            });
        }
        let mut used = vec![false; num_pages];
        for pages in block_table {
            for &pg in pages {
                if pg >= num_pages || used[pg] {
                    return Err(Error::Value {
                        arg: "block_table",
                        got: format!("page {pg}"),
                        expected: format!("page indices below {num_pages}, each used once"),
                    });
                }
                used[pg] = true;
            }
        }
        let pages_per_seq = block_table.iter().map(|t| t.len()).max().unwrap_or(1);
        let mut table = Vec::with_capacity(batch * pages_per_seq);
        for pages in block_table {
            let last = pages[pages.len() - 1];
            table.extend((0..pages_per_seq).map(|i| pages.get(i).copied().unwrap_or(last) as u32));
        }
        let cache = KvCache {
            k,
            v,
            batch,
            heads_kv: ks[2],
            head_dim: ks[3],
            rows_per_unit: page_size,
            table: Some(table),
            pages_per_seq,
            pages_of: block_table.iter().map(|t| t.len()).collect(),
            seqlens: vec![0; batch],
            dev: None,
        };
        cache.finish(seqlens)
    }

    fn finish(mut self, seqlens: &[usize]) -> Result<Self> {
        if self.k.device() != Device::Cpu {
            let gpu = self.k.device().gpu()?;
            let seqlens_dev = gpu
                .stream()
                .clone_htod(&vec![0u32; self.batch])
                .map_err(crate::error::driver("uploading the cache lengths"))?;
            let table = match &self.table {
                Some(t) => Some(gpu.stream().clone_htod(t).map_err(crate::error::driver("uploading the block table"))?),
                None => None,
            };
            self.dev = Some(DeviceIndex { gpu, seqlens: seqlens_dev, table, seqlens_current: false });
        }
        self.set_seqlens(seqlens)?;
        Ok(self)
    }

    pub fn batch(&self) -> usize {
        self.batch
    }
    pub fn heads_kv(&self) -> usize {
        self.heads_kv
    }
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }
    pub fn device(&self) -> Device {
        self.k.device()
    }
    /// Whether the cache is paged.
    pub fn is_paged(&self) -> bool {
        self.table.is_some()
    }
    /// The keys: `[batch, max_seqlen, ..]` or the page pool `[num_pages, page_size, ..]`.
    pub fn k(&self) -> &Tensor<T> {
        &self.k
    }
    pub fn v(&self) -> &Tensor<T> {
        &self.v
    }
    /// Tokens held per sequence.
    pub fn seqlens(&self) -> &[usize] {
        &self.seqlens
    }

    /// Positions sequence b can hold.
    pub fn capacity(&self, b: usize) -> usize {
        match &self.table {
            None => self.rows_per_unit,
            Some(_) => self.pages_of.get(b).copied().unwrap_or(0) * self.rows_per_unit,
        }
    }

    /// Where position `pos` of sequence b lives in the storage of [`Self::k`] and
    /// [`Self::v`]: (sequence, pos) when contiguous, (page, row) when paged; `None` past
    /// the sequence's capacity.
    pub fn locate(&self, b: usize, pos: usize) -> Option<(usize, usize)> {
        if b >= self.batch || pos >= self.capacity(b) {
            return None;
        }
        match &self.table {
            None => Some((b, pos)),
            Some(t) => Some((t[b * self.pages_per_seq + pos / self.rows_per_unit] as usize, pos % self.rows_per_unit)),
        }
    }

    /// Sets the number of tokens each sequence holds (e.g. to reuse a cache for new
    /// sequences: all zeros). Errors when a length exceeds the sequence's capacity.
    pub fn set_seqlens(&mut self, seqlens: &[usize]) -> Result<()> {
        if seqlens.len() != self.batch {
            return Err(Error::Shape {
                arg: "seqlens",
                got: vec![seqlens.len()],
                expected: format!("[{}] (one length per sequence)", self.batch),
            });
        }
        for (b, &n) in seqlens.iter().enumerate() {
            if n > self.capacity(b) || n > i32::MAX as usize / 2 {
                return Err(Error::Value {
                    arg: "seqlens",
                    got: format!("{n} for sequence {b}"),
                    expected: format!("at most its capacity of {} positions", self.capacity(b)),
                });
            }
        }
        self.seqlens.copy_from_slice(seqlens);
        if let Some(d) = &mut self.dev {
            d.seqlens_current = false;
        }
        Ok(())
    }

    /// Writes `seqlen_new` new tokens per sequence after the ones it holds: k_new and
    /// v_new `[batch, seqlen_new, heads_kv, head_dim]`, k_new rotated to its positions when
    /// `rotary` is given. Errors (and changes nothing) when a sequence would overflow.
    pub fn append(&mut self, k_new: &Tensor<T>, v_new: &Tensor<T>, rotary: Option<Rotary<'_>>) -> Result<()> {
        let new = self.check_new(k_new, v_new)?;
        if let Some(r) = rotary {
            self.check_rotary(r, self.seqlens.iter().map(|&n| n + new).max().unwrap_or(0))?;
        }
        match self.device() {
            Device::Cpu => super::decode_cpu::append(self, k_new, v_new, rotary)?,
            Device::Cuda(_) => super::decode_gpu::append(self, Some((k_new, v_new)), None, rotary)?,
        }
        self.advance(new);
        Ok(())
    }

    /// Checks k_new and v_new against the cache and the capacity; returns seqlen_new.
    pub(crate) fn check_new(&self, k_new: &Tensor<T>, v_new: &Tensor<T>) -> Result<usize> {
        let ks = k_new.shape();
        if ks.len() != 4 || ks[0] != self.batch || ks[2] != self.heads_kv || ks[3] != self.head_dim || ks[1] == 0 {
            return Err(Error::Shape {
                arg: "k_new",
                got: ks.to_vec(),
                expected: format!(
                    "[{}, seqlen_new >= 1, {}, {}] (the cache's batch, heads_kv, head_dim)",
                    self.batch, self.heads_kv, self.head_dim
                ),
            });
        }
        check::shape("v_new", v_new.shape(), ks)?;
        check::same_device("k_new", k_new.device(), self.device())?;
        check::same_device("v_new", v_new.device(), self.device())?;
        let new = ks[1];
        for (b, &n) in self.seqlens.iter().enumerate() {
            if n + new > self.capacity(b) {
                return Err(Error::Value {
                    arg: "k_new",
                    got: format!("{new} new tokens for sequence {b}, which holds {n}"),
                    expected: format!("at most {} in all (its capacity)", self.capacity(b)),
                });
            }
        }
        Ok(new)
    }

    /// Checks rotary tables against the cache: on its device, rot_dim <= head_dim, and
    /// positions up to `end` (exclusive) in the tables.
    pub(crate) fn check_rotary(&self, r: Rotary<'_>, end: usize) -> Result<()> {
        let cs = r.tables.cos.shape();
        if cs.len() != 2 || cs.contains(&0) || 2 * cs[1] > self.head_dim {
            return Err(Error::Shape {
                arg: "rotary.tables.cos",
                got: cs.to_vec(),
                expected: format!("[max_positions, rot_dim / 2] with rot_dim <= head_dim = {}", self.head_dim),
            });
        }
        check::shape("rotary.tables.sin", r.tables.sin.shape(), cs)?;
        check::same_device("rotary.tables.cos", r.tables.cos.device(), self.device())?;
        check::same_device("rotary.tables.sin", r.tables.sin.device(), self.device())?;
        if end > cs[0] {
            return Err(Error::Value {
                arg: "rotary.tables",
                got: format!("{} positions", cs[0]),
                expected: format!("at least {end} (the longest sequence after the new tokens)"),
            });
        }
        Ok(())
    }

    /// Counts `new` more tokens in every sequence (after they were written).
    pub(crate) fn advance(&mut self, new: usize) {
        for n in &mut self.seqlens {
            *n += new;
        }
        if let Some(d) = &mut self.dev {
            d.seqlens_current = false;
        }
    }

    /// Device addresses of the lengths (uploaded first if stale) and the block table (0
    /// when contiguous).
    pub(crate) fn device_index(&mut self) -> Result<(u64, u64)> {
        let Some(d) = &mut self.dev else {
            return Err(Error::DeviceMismatch { arg: "cache", got: "cpu".into(), expected: "a CUDA device".into() });
        };
        if !d.seqlens_current {
            let lens: Vec<u32> = self.seqlens.iter().map(|&n| n as u32).collect();
            d.gpu
                .stream()
                .memcpy_htod(&lens, &mut d.seqlens)
                .map_err(crate::error::driver("uploading the cache lengths"))?;
            d.seqlens_current = true;
        }
        let stream = d.gpu.stream();
        let (lens, _s) = d.seqlens.device_ptr(stream);
        let table = match &d.table {
            Some(t) => t.device_ptr(stream).0,
            None => 0,
        };
        Ok((lens, table))
    }

    /// Elements between sequences (contiguous) or pages (paged).
    pub(crate) fn unit_stride(&self) -> usize {
        self.rows_per_unit * self.heads_kv * self.head_dim
    }
}

fn zeros<T: Element>(shape: &[usize], device: Device) -> Result<Tensor<T>> {
    match device {
        Device::Cpu => Ok(Tensor::Cpu(ndarray::ArrayD::from_elem(ndarray::IxDyn(shape), T::default()))),
        Device::Cuda(_) => {
            let t = GpuTensor::<T>::uninit(&device.gpu()?, shape)?;
            t.fill_bytes(0)?;
            Ok(Tensor::Cuda(t))
        }
    }
}

/// k and v: bf16 / f16, rank 4 with no empty dimension, the same shape and device, a head
/// dim the kernels take.
fn check_kv<T: Element>(k: &Tensor<T>, v: &Tensor<T>, layout: &str) -> Result<()> {
    if !matches!(T::DTYPE, DType::BF16 | DType::F16) {
        return Err(Error::DType { arg: "k", got: T::DTYPE, expected: "bf16 or f16".into() });
    }
    let ks = k.shape();
    if ks.len() != 4 || ks.contains(&0) {
        return Err(Error::Shape { arg: "k", got: ks.to_vec(), expected: format!("4 dimensions {layout}, each >= 1") });
    }
    let hd = ks[3];
    if hd % super::HEAD_DIM_MULTIPLE != 0 || hd > super::MAX_HEAD_DIM {
        return Err(Error::Shape {
            arg: "k",
            got: ks.to_vec(),
            expected: format!(
                "a head_dim that is a multiple of {} and at most {}",
                super::HEAD_DIM_MULTIPLE,
                super::MAX_HEAD_DIM
            ),
        });
    }
    check::shape("v", v.shape(), ks)?;
    check::same_device("v", v.device(), k.device())
}
