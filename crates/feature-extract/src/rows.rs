//! Where a cache's rows are and how they are read.
//!
//! Schema 2 caches (`audio-cache/2`, `fbank-cache/2`) store `/data` uncompressed with a
//! contiguous layout, so its rows lie back to back at one byte offset of the file
//! (`H5Dget_offset`). The reader takes that offset once, through HDF5, and then reads rows
//! with positional reads (`pread`) on its own file handle: no HDF5 call per crop, hence no
//! HDF5 lock, and any number of loader threads read at once. (Positional reads rather than a
//! memory map: no `unsafe`, and a file truncated under a reader is an I/O error naming it,
//! not a SIGBUS; the one copy they make is the one the int16 -> f32 conversion makes anyway.)
//!
//! Schema 1 caches (chunked, deflated) are still read, through HDF5: the library is not
//! thread-safe, hdf5-metno serialises every call, and so those reads take [`LEGACY_LOCK`]
//! first, which makes the wait for it measurable ([`ReadStats::lock_wait_seconds`]).
//!
//! Element bytes are little-endian: the writer creates `/data` with the native type of a
//! little-endian machine, and the reader refuses a contiguous dataset of another byte order.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use half::f16;
use hdf5::H5Type;
use hdf5::dataset::Layout;
use hdf5::datatype::ByteOrder;
use hdf5::types::TypeDescriptor;
use hdf5::{Dataset, Datatype};
use ndarray::s;

use crate::error::{Error, Result};

/// Rows read per step when copying a chunked (schema 1) data set.
const COPY_BLOCK_ROWS: usize = 1 << 20;

/// Serialises the reads of chunked (schema 1) caches; see the module documentation.
static LEGACY_LOCK: Mutex<()> = Mutex::new(());

/// A cache element: its HDF5 type and its little-endian bytes.
pub trait Element: H5Type + Copy + Send + Sync + 'static {
    /// Bytes per element.
    const BYTES: usize;
    /// The element from its little-endian bytes (`BYTES` of them).
    fn from_le(bytes: &[u8]) -> Self;
    /// Appends the element's little-endian bytes.
    fn put_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($t:ty, $n:expr) => {
        impl Element for $t {
            const BYTES: usize = $n;
            fn from_le(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("BYTES bytes"))
            }
            fn put_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    };
}
element!(i16, 2);
element!(f32, 4);
element!(f16, 2);

/// What the reads of one cache cost so far (all threads together).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReadStats {
    /// Reads made.
    pub reads: u64,
    /// Seconds inside reads (I/O, and decompression for schema 1), lock wait excluded.
    pub read_seconds: f64,
    /// Seconds spent waiting for the lock of schema 1 reads (0 for schema 2).
    pub lock_wait_seconds: f64,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    read_ns: AtomicU64,
    lock_wait_ns: AtomicU64,
}

enum Storage {
    /// Schema 2: contiguous, uncompressed, little-endian rows at `offset` of `file`.
    Contiguous { file: File, offset: u64 },
    /// Schema 1: chunked and compressed, read through HDF5.
    Chunked(Dataset),
}

/// The rows of a cache's `/data`, readable from many threads.
pub struct Rows {
    path: PathBuf,
    storage: Storage,
    rows: u64,
    cols: usize,
    element: TypeDescriptor,
    counters: Counters,
}

impl Rows {
    /// The rows of `data` (of `path`); `contiguous` says which schema the file declares, and
    /// a schema 2 file whose `/data` is not stored as that schema says is refused.
    pub fn open(path: &Path, data: Dataset, contiguous: bool) -> Result<Self> {
        let shape = data.shape();
        if shape.len() != 2 {
            return Err(Error::invalid(path, format!("/data has shape {shape:?}")));
        }
        let (rows, cols) = (shape[0] as u64, shape[1]);
        let dtype = data.dtype().map_err(Error::hdf5(path))?;
        let element = dtype.to_descriptor().map_err(Error::hdf5(path))?;
        let storage = if contiguous {
            Storage::Contiguous {
                offset: contiguous_offset(
                    path,
                    &data,
                    &dtype,
                    rows * (cols * dtype.size()) as u64,
                )?,
                file: File::open(path).map_err(Error::io(path))?,
            }
        } else {
            Storage::Chunked(data)
        };
        Ok(Rows {
            path: path.to_path_buf(),
            storage,
            rows,
            cols,
            element,
            counters: Counters::default(),
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The element type of `/data`.
    pub fn element(&self) -> &TypeDescriptor {
        &self.element
    }

    /// Whether reads go through the lock (a schema 1 file).
    pub fn is_chunked(&self) -> bool {
        matches!(self.storage, Storage::Chunked(_))
    }

    /// Rows `a..b`, row-major (`(b - a) * cols` values); `T` must be the stored type.
    pub fn read<T: Element>(&self, a: u64, b: u64) -> Result<Vec<T>> {
        debug_assert!(a <= b && b <= self.rows);
        let started = Instant::now();
        let values = match &self.storage {
            Storage::Contiguous { file, offset } => {
                let row_bytes = (self.cols * T::BYTES) as u64;
                let mut bytes = vec![0u8; ((b - a) * row_bytes) as usize];
                file.read_exact_at(&mut bytes, offset + a * row_bytes)
                    .map_err(Error::io(&self.path))?;
                bytes.chunks_exact(T::BYTES).map(T::from_le).collect()
            }
            Storage::Chunked(data) => {
                let guard = LEGACY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
                let waited = started.elapsed();
                self.counters
                    .lock_wait_ns
                    .fetch_add(waited.as_nanos() as u64, Ordering::Relaxed);
                let rows = data
                    .read_slice_2d::<T, _>(s![a as usize..b as usize, ..])
                    .map_err(Error::hdf5(&self.path));
                drop(guard);
                self.counters.read_ns.fetch_add(
                    (started.elapsed() - waited).as_nanos() as u64,
                    Ordering::Relaxed,
                );
                self.counters.reads.fetch_add(1, Ordering::Relaxed);
                return Ok(rows?.into_raw_vec_and_offset().0);
            }
        };
        self.counters
            .read_ns
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
        Ok(values)
    }

    /// Appends every row to `out` in the file's byte layout (little-endian).
    pub fn copy_to<T: Element>(&self, out: &mut File) -> Result<()> {
        self.copy_rows_to::<T>(0, self.rows, out)
    }

    /// Appends rows `a..b` to `out` in the file's byte layout (little-endian): a byte copy
    /// from a contiguous dataset, block reads from a chunked one.
    pub fn copy_rows_to<T: Element>(&self, a: u64, b: u64, out: &mut File) -> Result<()> {
        let io = |e| Error::io(&self.path)(e);
        if a > b || b > self.rows {
            return Err(Error::invalid(
                &self.path,
                format!("rows {a}..{b} of a dataset of {} rows", self.rows),
            ));
        }
        let row_bytes = (self.cols * T::BYTES) as u64;
        match &self.storage {
            Storage::Contiguous { file, offset } => {
                let bytes = (b - a) * row_bytes;
                let mut source = file.try_clone().map_err(io)?;
                source
                    .seek(SeekFrom::Start(*offset + a * row_bytes))
                    .map_err(io)?;
                let copied = std::io::copy(&mut source.take(bytes), out).map_err(io)?;
                if copied != bytes {
                    return Err(Error::invalid(
                        &self.path,
                        format!("/data ends after {copied} of {bytes} bytes (truncated?)"),
                    ));
                }
            }
            Storage::Chunked(_) => {
                let mut bytes = Vec::new();
                for start in (a..b).step_by(COPY_BLOCK_ROWS) {
                    let end = (start + COPY_BLOCK_ROWS as u64).min(b);
                    bytes.clear();
                    for v in self.read::<T>(start, end)? {
                        v.put_le(&mut bytes);
                    }
                    out.write_all(&bytes).map_err(io)?;
                }
            }
        }
        Ok(())
    }

    /// The cost of the reads so far.
    pub fn stats(&self) -> ReadStats {
        let seconds = |c: &AtomicU64| c.load(Ordering::Relaxed) as f64 * 1e-9;
        ReadStats {
            reads: self.counters.reads.load(Ordering::Relaxed),
            read_seconds: seconds(&self.counters.read_ns),
            lock_wait_seconds: seconds(&self.counters.lock_wait_ns),
        }
    }
}

/// The byte offset of a schema 2 `/data` of `bytes` bytes, after checking that it is stored
/// as that schema says (contiguous, no filters, little-endian, inside the file).
fn contiguous_offset(path: &Path, data: &Dataset, dtype: &Datatype, bytes: u64) -> Result<u64> {
    if data.layout() != Layout::Contiguous || !data.filters().is_empty() {
        return Err(Error::invalid(
            path,
            "/data is not an uncompressed contiguous data set, as its schema says",
        ));
    }
    if dtype.size() > 1 && dtype.byte_order() != ByteOrder::LittleEndian {
        return Err(Error::invalid(path, "/data is not little-endian"));
    }
    if bytes == 0 {
        return Ok(0);
    }
    let offset = data
        .offset()
        .ok_or_else(|| Error::invalid(path, "/data has no storage allocated"))?;
    let len = std::fs::metadata(path).map_err(Error::io(path))?.len();
    if offset + bytes > len {
        return Err(Error::invalid(
            path,
            format!(
                "/data needs bytes {offset}..{} of a {len}-byte file (truncated?)",
                offset + bytes
            ),
        ));
    }
    Ok(offset)
}
