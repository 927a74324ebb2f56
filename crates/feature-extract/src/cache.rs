//! Packed HDF5 caches of audio (int16) and fbank features (f32 or f16): one 2-D dataset
//! `/data` `[rows, cols]` holding every utterance back to back along time, plus an index
//! `/utt_id`, `/group`, `/offset`, `/length` (rows), so a random crop of an utterance is one
//! read of consecutive rows.
//!
//! Schema 2 (`audio-cache/2`, `fbank-cache/2`) stores `/data` uncompressed and contiguous, so
//! that crops are read without HDF5 and without its lock ([`crate::rows`]) and merging caches
//! is a byte copy; the files stay ordinary HDF5 (h5py reads them). Schema 1 files (chunked,
//! deflated) are still read, through HDF5 behind one lock; `prepare` rebuilds them as schema 2.
//!
//! Attributes: `schema`, `sample_rate`, `config` (JSON of the resolved options that produced
//! the data) and `rejects` (JSON list of `{"path", "reason"}` for inputs left out). `group` is
//! the manifest's `split` (for noise and RIR caches, the MUSAN/RIR category used by
//! augmentation).
//!
//! Readers are shareable between threads.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use half::f16;
use hdf5::dataset::{AllocTime, FillTime, Layout};
use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenUnicode};
use ndarray::{Array1, Array2, ArrayView2, s};
use serde::{Deserialize, Serialize};

use crate::embeddings::{read_string_attr, write_string_attr};
use crate::error::{Error, Result};
use crate::rows::Rows;
pub use crate::rows::{Element, ReadStats};

/// Rows per chunk of a schema 1 audio data set (2 s at 16 kHz).
const SCHEMA1_AUDIO_CHUNK_ROWS: usize = 32_768;
/// Rows (frames) per chunk of a schema 1 fbank data set.
const SCHEMA1_FBANK_CHUNK_ROWS: usize = 512;
/// Bytes a writer buffers before it writes its sidecar file.
const WRITE_BUFFER_BYTES: usize = 1 << 20;

/// What a cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// Mono int16 samples, one column.
    Audio,
    /// Feature frames, one column per bin.
    Fbank,
}

/// The schema version written (contiguous `/data`); version 1 is still read.
pub const SCHEMA_VERSION: u32 = 2;

impl CacheKind {
    /// The `schema` attribute this version writes for this kind of cache.
    pub fn schema(self) -> String {
        self.schema_of(SCHEMA_VERSION)
    }

    fn schema_of(self, version: u32) -> String {
        match self {
            CacheKind::Audio => format!("audio-cache/{version}"),
            CacheKind::Fbank => format!("fbank-cache/{version}"),
        }
    }

    fn schema1_chunk_rows(self) -> usize {
        match self {
            CacheKind::Audio => SCHEMA1_AUDIO_CHUNK_ROWS,
            CacheKind::Fbank => SCHEMA1_FBANK_CHUNK_ROWS,
        }
    }

    /// The kind and version of a `schema` attribute this code reads.
    fn from_schema(schema: &str) -> Option<(Self, u32)> {
        [CacheKind::Audio, CacheKind::Fbank]
            .into_iter()
            .flat_map(|k| [(k, 1), (k, SCHEMA_VERSION)])
            .find(|&(k, v)| k.schema_of(v) == schema)
    }
}

/// Storage type of fbank values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FbankDtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit floats (half the size; ~3 significant digits).
    F16,
}

/// One utterance of a cache: rows `offset..offset + length` of `/data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    /// Utterance id (unique in the cache).
    pub utt_id: String,
    /// First row of the utterance in `/data`.
    pub offset: u64,
    /// Rows (samples or frames) of the utterance.
    pub length: u64,
    /// The manifest's `split` (augmentation category for noise and RIR caches).
    pub group: String,
}

/// An input that did not make it into a cache, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheReject {
    /// The input file, as the manifest names it.
    pub path: String,
    /// Why it was left out.
    pub reason: String,
}

/// Index and metadata of an open cache, shared by the typed readers.
struct Packed {
    path: PathBuf,
    kind: CacheKind,
    rows: Rows,
    sample_rate: u32,
    config: String,
    rejects: Vec<CacheReject>,
    entries: Vec<CacheEntry>,
    positions: HashMap<String, usize>,
}

impl Packed {
    fn open(path: &Path, expected: Option<CacheKind>) -> Result<Self> {
        let h5 = Error::hdf5(path);
        let file = crate::h5file::open(path).map_err(Error::hdf5(path))?;
        let schema = read_string_attr(&file, "schema")
            .map_err(|_| Error::invalid(path, "not a feature cache (no schema attribute)"))?;
        let (kind, version) = CacheKind::from_schema(&schema)
            .ok_or_else(|| Error::invalid(path, format!("unknown cache schema {schema:?}")))?;
        if let Some(expected) = expected.filter(|&e| e != kind) {
            return Err(Error::invalid(
                path,
                format!("is an {schema} file, expected {}", expected.schema()),
            ));
        }
        let read = || -> hdf5::Result<_> {
            let data = file.dataset("data")?;
            let sample_rate = file.attr("sample_rate")?.read_scalar::<u32>()?;
            let config = read_string_attr(&file, "config")?;
            let rejects = read_string_attr(&file, "rejects")?;
            let ids = file.dataset("utt_id")?.read_raw::<VarLenUnicode>()?;
            let groups = file.dataset("group")?.read_raw::<VarLenUnicode>()?;
            let offsets = file.dataset("offset")?.read_raw::<u64>()?;
            let lengths = file.dataset("length")?.read_raw::<u64>()?;
            Ok((
                data,
                sample_rate,
                config,
                rejects,
                ids,
                groups,
                offsets,
                lengths,
            ))
        };
        let (data, sample_rate, config, rejects, ids, groups, offsets, lengths) =
            read().map_err(h5)?;
        let rows = Rows::open(path, data, version >= 2)?;
        if rows.is_chunked() {
            tracing::warn!(
                "{} is an {schema} cache: its reads go through HDF5 one at a time; \
                 rerun `feature-extract prepare` into a new output for lock-free reads ({})",
                path.display(),
                kind.schema()
            );
        }
        let n = ids.len();
        if groups.len() != n || offsets.len() != n || lengths.len() != n {
            return Err(Error::invalid(
                path,
                "index data sets (utt_id, group, offset, length) differ in length",
            ));
        }
        let rejects: Vec<CacheReject> = serde_json::from_str(&rejects)
            .map_err(|e| Error::invalid(path, format!("rejects attribute: {e}")))?;
        let mut entries = Vec::with_capacity(n);
        let mut positions = HashMap::with_capacity(n);
        for i in 0..n {
            let entry = CacheEntry {
                utt_id: ids[i].as_str().to_owned(),
                offset: offsets[i],
                length: lengths[i],
                group: groups[i].as_str().to_owned(),
            };
            if entry.offset + entry.length > rows.rows() {
                return Err(Error::invalid(
                    path,
                    format!(
                        "{} ends at row {} of {}",
                        entry.utt_id,
                        entry.offset + entry.length,
                        rows.rows()
                    ),
                ));
            }
            if positions.insert(entry.utt_id.clone(), i).is_some() {
                return Err(Error::invalid(
                    path,
                    format!("duplicate utterance {}", entry.utt_id),
                ));
            }
            entries.push(entry);
        }
        Ok(Packed {
            path: path.to_path_buf(),
            kind,
            rows,
            sample_rate,
            config,
            rejects,
            entries,
            positions,
        })
    }

    /// Rows `start..start + len` of entry `index` (clipped to the entry), row-major.
    fn read_rows<T: Element>(&self, index: usize, start: u64, len: u64) -> Result<Vec<T>> {
        let entry = self.entries.get(index).ok_or_else(|| {
            Error::invalid(
                &self.path,
                format!("entry {index} out of {}", self.entries.len()),
            )
        })?;
        let start = start.min(entry.length);
        let end = start.saturating_add(len).min(entry.length);
        self.rows.read(entry.offset + start, entry.offset + end)
    }

    fn header(&self) -> Header<'_> {
        Header {
            kind: self.kind,
            cols: self.rows.cols(),
            sample_rate: self.sample_rate,
            config: &self.config,
        }
    }
}

/// Reader of an audio cache (16 kHz int16 unless its `sample_rate` says otherwise).
pub struct AudioCache(Packed);

impl AudioCache {
    /// Opens an audio cache, checking its schema and index.
    pub fn open(path: &Path) -> Result<Self> {
        Packed::open(path, Some(CacheKind::Audio)).map(AudioCache)
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Sample rate of the cached audio.
    pub fn sample_rate(&self) -> u32 {
        self.0.sample_rate
    }

    /// Number of utterances.
    pub fn len(&self) -> usize {
        self.0.entries.len()
    }

    /// Whether the cache holds no utterance.
    pub fn is_empty(&self) -> bool {
        self.0.entries.is_empty()
    }

    /// The index, in storage order.
    pub fn entries(&self) -> &[CacheEntry] {
        &self.0.entries
    }

    /// Index of an utterance.
    pub fn position(&self, utt_id: &str) -> Option<usize> {
        self.0.positions.get(utt_id).copied()
    }

    /// JSON of the options that produced the cache.
    pub fn config(&self) -> &str {
        &self.0.config
    }

    /// Inputs the producing run left out, with reasons.
    pub fn rejects(&self) -> &[CacheReject] {
        &self.0.rejects
    }

    /// Whether reads are serialised (a schema 1 file).
    pub fn is_locked(&self) -> bool {
        self.0.rows.is_chunked()
    }

    /// What the reads so far cost (all threads together).
    pub fn read_stats(&self) -> ReadStats {
        self.0.rows.stats()
    }

    /// Samples `start..start + len` of entry `index` (clipped to its end), one read.
    pub fn read(&self, index: usize, start: usize, len: usize) -> Result<Vec<i16>> {
        self.0.read_rows::<i16>(index, start as u64, len as u64)
    }

    /// All samples of entry `index`.
    pub fn read_all(&self, index: usize) -> Result<Vec<i16>> {
        self.read(index, 0, usize::MAX / 2)
    }
}

/// Reader of an fbank cache; values come back as f32 whatever the storage type.
pub struct FbankCache {
    packed: Packed,
    dtype: FbankDtype,
}

impl FbankCache {
    /// Opens an fbank cache, checking its schema, index and element type.
    pub fn open(path: &Path) -> Result<Self> {
        let packed = Packed::open(path, Some(CacheKind::Fbank))?;
        let dtype = match packed.rows.element() {
            TypeDescriptor::Float(FloatSize::U4) => FbankDtype::F32,
            TypeDescriptor::Float(FloatSize::U2) => FbankDtype::F16,
            other => {
                return Err(Error::invalid(
                    path,
                    format!("fbank data of type {other:?}"),
                ));
            }
        };
        Ok(FbankCache { packed, dtype })
    }

    /// The cache file.
    pub fn path(&self) -> &Path {
        &self.packed.path
    }

    /// Sample rate of the audio the features were computed from.
    pub fn sample_rate(&self) -> u32 {
        self.packed.sample_rate
    }

    /// Feature dimension.
    pub fn dim(&self) -> usize {
        self.packed.rows.cols()
    }

    /// Storage type of the values.
    pub fn dtype(&self) -> FbankDtype {
        self.dtype
    }

    /// Number of utterances.
    pub fn len(&self) -> usize {
        self.packed.entries.len()
    }

    /// Whether the cache holds no utterance.
    pub fn is_empty(&self) -> bool {
        self.packed.entries.is_empty()
    }

    /// The index, in storage order.
    pub fn entries(&self) -> &[CacheEntry] {
        &self.packed.entries
    }

    /// Index of an utterance.
    pub fn position(&self, utt_id: &str) -> Option<usize> {
        self.packed.positions.get(utt_id).copied()
    }

    /// JSON of the options that produced the cache (fbank options included).
    pub fn config(&self) -> &str {
        &self.packed.config
    }

    /// Inputs the producing run left out, with reasons.
    pub fn rejects(&self) -> &[CacheReject] {
        &self.packed.rejects
    }

    /// Frames `start..start + len` of entry `index` (clipped), `[frames, dim]`.
    pub fn read(&self, index: usize, start: usize, len: usize) -> Result<Array2<f32>> {
        let values: Vec<f32> = match self.dtype {
            FbankDtype::F32 => self
                .packed
                .read_rows::<f32>(index, start as u64, len as u64)?,
            FbankDtype::F16 => self
                .packed
                .read_rows::<f16>(index, start as u64, len as u64)?
                .into_iter()
                .map(f16::to_f32)
                .collect(),
        };
        let dim = self.dim();
        Ok(
            Array2::from_shape_vec((values.len() / dim.max(1), dim), values)
                .expect("whole rows were read"),
        )
    }

    /// All frames of entry `index`.
    pub fn read_all(&self, index: usize) -> Result<Array2<f32>> {
        self.read(index, 0, usize::MAX / 2)
    }
}

/// What a cache file says about itself besides its rows and index.
struct Header<'a> {
    kind: CacheKind,
    cols: usize,
    sample_rate: u32,
    config: &'a str,
}

/// Writes the index, the attributes and the `schema` of `version` into `file`.
fn write_index(
    file: &hdf5::File,
    path: &Path,
    header: &Header,
    version: u32,
    entries: &[CacheEntry],
    rejects: &[CacheReject],
) -> Result<()> {
    let to_unicode = |s: &str| {
        VarLenUnicode::from_str(s).map_err(|e| Error::invalid(path, format!("string {s:?}: {e}")))
    };
    let ids = entries
        .iter()
        .map(|e| to_unicode(&e.utt_id))
        .collect::<Result<Vec<_>>>()?;
    let groups = entries
        .iter()
        .map(|e| to_unicode(&e.group))
        .collect::<Result<Vec<_>>>()?;
    let offsets: Array1<u64> = entries.iter().map(|e| e.offset).collect();
    let lengths: Array1<u64> = entries.iter().map(|e| e.length).collect();
    let rejects = serde_json::to_string(rejects).expect("rejects serialise");
    let write = || -> hdf5::Result<()> {
        write_string_attr(file, "schema", &header.kind.schema_of(version))?;
        file.new_dataset_builder()
            .with_data(&Array1::from(ids))
            .create("utt_id")?;
        file.new_dataset_builder()
            .with_data(&Array1::from(groups))
            .create("group")?;
        file.new_dataset_builder()
            .with_data(&offsets)
            .create("offset")?;
        file.new_dataset_builder()
            .with_data(&lengths)
            .create("length")?;
        file.new_attr::<u32>()
            .shape(())
            .create("sample_rate")?
            .write_scalar(&header.sample_rate)?;
        write_string_attr(file, "config", header.config)?;
        write_string_attr(file, "rejects", &rejects)
    };
    write().map_err(Error::hdf5(path))
}

/// Creates the schema 2 file `path` with its index and attributes and an allocated, unfilled
/// contiguous `/data` of `rows` rows, and returns the file opened for writing at the first
/// byte of `/data`, for the caller to write the rows' little-endian bytes.
fn create_schema2<T: Element>(
    path: &Path,
    header: &Header,
    rows: u64,
    entries: &[CacheEntry],
    rejects: &[CacheReject],
) -> Result<File> {
    let file = crate::h5file::create(path).map_err(Error::hdf5(path))?;
    write_index(&file, path, header, SCHEMA_VERSION, entries, rejects)?;
    let data = file
        .new_dataset::<T>()
        .no_chunk()
        .layout(Layout::Contiguous)
        .alloc_time(Some(AllocTime::Early))
        .fill_time(FillTime::Never)
        .shape((rows as usize, header.cols))
        .create("data")
        .map_err(Error::hdf5(path))?;
    let offset = data.offset();
    drop(data);
    file.close().map_err(Error::hdf5(path))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(Error::io(path))?;
    match offset {
        Some(offset) => {
            out.seek(SeekFrom::Start(offset)).map_err(Error::io(path))?;
        }
        None if rows == 0 || header.cols == 0 => {}
        None => return Err(Error::invalid(path, "HDF5 allocated no storage for /data")),
    }
    Ok(out)
}

/// Writes a cache at `path` (the caller makes it atomic): rows are appended utterance by
/// utterance into a sidecar file `<path>.rows`, and [`CacheWriter::finish`] creates the HDF5
/// file (index, attributes, contiguous `/data`) and copies the rows into it.
pub struct CacheWriter<T: Element> {
    path: PathBuf,
    kind: CacheKind,
    cols: usize,
    rows: u64,
    entries: Vec<CacheEntry>,
    sidecar: PathBuf,
    sink: BufWriter<File>,
    bytes: Vec<u8>,
    _element: std::marker::PhantomData<T>,
}

impl<T: Element> CacheWriter<T> {
    /// Starts a cache of `cols` columns.
    pub fn create(path: &Path, kind: CacheKind, cols: usize) -> Result<Self> {
        let mut sidecar = path.as_os_str().to_owned();
        sidecar.push(".rows");
        let sidecar = PathBuf::from(sidecar);
        let sink = File::create(&sidecar).map_err(Error::io(&sidecar))?;
        Ok(CacheWriter {
            path: path.to_path_buf(),
            kind,
            cols,
            rows: 0,
            entries: Vec::new(),
            sink: BufWriter::with_capacity(WRITE_BUFFER_BYTES, sink),
            sidecar,
            bytes: Vec::new(),
            _element: std::marker::PhantomData,
        })
    }

    /// Appends the rows of one utterance.
    pub fn append(&mut self, utt_id: &str, group: &str, rows: ArrayView2<T>) -> Result<()> {
        if rows.ncols() != self.cols {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "{utt_id}: {} columns for a cache of {}",
                    rows.ncols(),
                    self.cols
                ),
            ));
        }
        self.bytes.clear();
        for &v in rows.iter() {
            v.put_le(&mut self.bytes);
        }
        self.sink
            .write_all(&self.bytes)
            .map_err(Error::io(&self.sidecar))?;
        let n = rows.nrows() as u64;
        self.entries.push(CacheEntry {
            utt_id: utt_id.to_owned(),
            offset: self.rows,
            length: n,
            group: group.to_owned(),
        });
        self.rows += n;
        Ok(())
    }

    /// Writes the file: index, attributes and the rows, then removes the sidecar.
    pub fn finish(mut self, sample_rate: u32, config: &str, rejects: &[CacheReject]) -> Result<()> {
        self.sink.flush().map_err(Error::io(&self.sidecar))?;
        let header = Header {
            kind: self.kind,
            cols: self.cols,
            sample_rate,
            config,
        };
        let mut out = create_schema2::<T>(&self.path, &header, self.rows, &self.entries, rejects)?;
        let mut rows = File::open(&self.sidecar).map_err(Error::io(&self.sidecar))?;
        std::io::copy(&mut rows, &mut out).map_err(Error::io(&self.path))?;
        out.flush().map_err(Error::io(&self.path))
    }
}

impl<T: Element> Drop for CacheWriter<T> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.sidecar);
    }
}

/// Writes a schema 1 cache (chunked, shuffled and deflated `/data`: the layout before schema
/// 2) from `(utt_id, group, rows)` items: what old caches look like, for the tests and the
/// loader benchmark that read them through the locked path.
pub fn write_schema1<T: Element>(
    path: &Path,
    kind: CacheKind,
    cols: usize,
    sample_rate: u32,
    items: impl IntoIterator<Item = (String, String, Array2<T>)>,
) -> Result<()> {
    let file = crate::h5file::create(path).map_err(Error::hdf5(path))?;
    let data = file
        .new_dataset::<T>()
        .chunk((kind.schema1_chunk_rows(), cols))
        .shuffle()
        .deflate(1)
        .shape((0.., cols))
        .create("data")
        .map_err(Error::hdf5(path))?;
    let mut entries = Vec::new();
    let mut rows = 0usize;
    for (utt_id, group, x) in items {
        let n = x.nrows();
        data.resize((rows + n, cols))
            .and_then(|()| data.write_slice(x.view(), s![rows..rows + n, ..]))
            .map_err(Error::hdf5(path))?;
        entries.push(CacheEntry {
            utt_id,
            offset: rows as u64,
            length: n as u64,
            group,
        });
        rows += n;
    }
    let header = Header {
        kind,
        cols,
        sample_rate,
        config: "{}",
    };
    write_index(&file, path, &header, 1, &entries, &[])?;
    file.close().map_err(Error::hdf5(path))
}

/// Concatenates caches of the same kind, sample rate, element type and config into `output`
/// (written atomically, schema 2), in the order given; duplicate utterances are an error.
/// Schema 2 inputs are copied byte for byte.
pub fn merge(inputs: &[PathBuf], output: &Path) -> Result<()> {
    merge_ordered(inputs, output, None)
}

/// Joins the shards of one `prepare` run into the cache the unsharded run writes: utterances
/// in the order of `order` (the manifest's ids; shards own every N-th utterance, so plain
/// concatenation would interleave them). An utterance `order` lacks is an error.
pub fn merge_in_order(inputs: &[PathBuf], output: &Path, order: &[String]) -> Result<()> {
    merge_ordered(inputs, output, Some(order))
}

fn merge_ordered(inputs: &[PathBuf], output: &Path, order: Option<&[String]>) -> Result<()> {
    let parts = inputs
        .iter()
        .map(|p| Packed::open(p, None))
        .collect::<Result<Vec<_>>>()?;
    let head = parts
        .first()
        .ok_or_else(|| Error::invalid(output, "nothing to merge"))?;
    for p in &parts[1..] {
        let same = p.kind == head.kind
            && p.rows.cols() == head.rows.cols()
            && p.sample_rate == head.sample_rate
            && p.config == head.config
            && p.rows.element() == head.rows.element();
        if !same {
            return Err(Error::invalid(
                &p.path,
                format!(
                    "cannot be merged with {}: kind, columns, sample rate, element type or config differ",
                    head.path.display()
                ),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for p in &parts {
        if let Some(dup) = p.entries.iter().find(|e| !seen.insert(e.utt_id.as_str())) {
            return Err(Error::invalid(
                &p.path,
                format!("utterance {} is already in an earlier input", dup.utt_id),
            ));
        }
    }
    match head.rows.element() {
        TypeDescriptor::Integer(IntSize::U2) => merge_typed::<i16>(&parts, output, order),
        TypeDescriptor::Float(FloatSize::U4) => merge_typed::<f32>(&parts, output, order),
        TypeDescriptor::Float(FloatSize::U2) => merge_typed::<f16>(&parts, output, order),
        other => Err(Error::invalid(
            &head.path,
            format!("cache data of type {other:?}"),
        )),
    }
}

/// The (part, entry) pairs of the output in its order: the inputs one after the other, or
/// the order of the given ids.
fn merge_placement(parts: &[Packed], order: Option<&[String]>) -> Result<Vec<(usize, usize)>> {
    let all = parts
        .iter()
        .enumerate()
        .flat_map(|(pi, p)| (0..p.entries.len()).map(move |ei| (pi, ei)));
    let Some(order) = order else {
        return Ok(all.collect());
    };
    let rank: std::collections::HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut placed = all
        .map(|(pi, ei)| {
            let (p, e) = (&parts[pi], &parts[pi].entries[ei]);
            rank.get(e.utt_id.as_str())
                .map(|r| (*r, pi, ei))
                .ok_or_else(|| {
                    Error::invalid(
                        &p.path,
                        format!("utterance {} is not in the manifest", e.utt_id),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    placed.sort_unstable();
    Ok(placed.into_iter().map(|(_, pi, ei)| (pi, ei)).collect())
}

fn merge_typed<T: Element>(
    parts: &[Packed],
    output: &Path,
    order: Option<&[String]>,
) -> Result<()> {
    let placement = merge_placement(parts, order)?;
    let mut entries = Vec::with_capacity(placement.len());
    let mut base = 0;
    for &(pi, ei) in &placement {
        let e = &parts[pi].entries[ei];
        entries.push(CacheEntry {
            offset: base,
            ..e.clone()
        });
        base += e.length;
    }
    let rejects: Vec<CacheReject> = parts
        .iter()
        .flat_map(|p| p.rejects.iter().cloned())
        .collect();
    stage_kit::write_atomically(output, |partial| {
        let mut out = create_schema2::<T>(partial, &parts[0].header(), base, &entries, &rejects)?;
        if order.is_none() {
            for p in parts {
                p.rows.copy_to::<T>(&mut out)?;
            }
        } else {
            for &(pi, ei) in &placement {
                let e = &parts[pi].entries[ei];
                parts[pi]
                    .rows
                    .copy_rows_to::<T>(e.offset, e.offset + e.length, &mut out)?;
            }
        }
        out.flush().map_err(Error::io(partial))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn write_audio(path: &Path, utts: &[(&str, Vec<i16>)], config: &str) {
        let mut w = CacheWriter::<i16>::create(path, CacheKind::Audio, 1).unwrap();
        for (id, x) in utts {
            let rows = Array2::from_shape_vec((x.len(), 1), x.clone()).unwrap();
            w.append(id, "train", rows.view()).unwrap();
        }
        let rejects = [CacheReject {
            path: "bad.wav".into(),
            reason: "truncated".into(),
        }];
        w.finish(16000, config, &rejects).unwrap();
    }

    #[test]
    fn audio_round_trip_crops_and_merge() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.h5");
        let b = dir.path().join("b.h5");
        let x: Vec<i16> = (0..50_000).map(|i| (i % 3000) as i16 - 1500).collect();
        write_audio(&a, &[("u1", x.clone()), ("u2", vec![7; 10])], "{}");
        write_audio(&b, &[("u3", vec![-3; 5])], "{}");
        let cache = AudioCache::open(&a).unwrap();
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.sample_rate(), 16000);
        assert_eq!(cache.position("u2"), Some(1));
        assert_eq!(cache.read(0, 40_000, 5).unwrap(), x[40_000..40_005]);
        assert_eq!(cache.read(1, 8, 100).unwrap(), vec![7, 7]);
        assert_eq!(cache.read_all(0).unwrap(), x);
        assert_eq!(cache.rejects()[0].reason, "truncated");
        assert!(FbankCache::open(&a).is_err());

        let ordered = dir.path().join("o.h5");
        let order = ["u3", "u1", "u2"].map(String::from);
        merge_in_order(&[a.clone(), b.clone()], &ordered, &order).unwrap();
        let o = AudioCache::open(&ordered).unwrap();
        let ids: Vec<&str> = o.entries().iter().map(|e| e.utt_id.as_str()).collect();
        assert_eq!(ids, ["u3", "u1", "u2"]);
        assert_eq!(o.read_all(1).unwrap(), x);
        assert_eq!(o.read_all(0).unwrap(), vec![-3; 5]);
        assert!(
            merge_in_order(
                std::slice::from_ref(&a),
                &dir.path().join("n.h5"),
                &order[..1]
            )
            .is_err()
        );

        let merged = dir.path().join("m.h5");
        merge(&[a.clone(), b.clone()], &merged).unwrap();
        let m = AudioCache::open(&merged).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m.entries()[2].offset, 50_010);
        assert_eq!(m.read_all(2).unwrap(), vec![-3; 5]);
        assert_eq!(m.rejects().len(), 2);
        assert!(merge(&[a.clone(), a.clone()], &dir.path().join("dup.h5")).is_err());
        let c = dir.path().join("c.h5");
        write_audio(&c, &[("u9", vec![1])], r#"{"other":1}"#);
        assert!(merge(&[a, c], &dir.path().join("x.h5")).is_err());
        assert!(!dir.path().join("m.h5.partial.rows").exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".rows"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn schema1_caches_are_read_through_the_lock_and_merge_into_schema2() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.h5");
        let x: Vec<i16> = (0..70_000)
            .map(|i| ((i * 7) % 5000) as i16 - 2500)
            .collect();
        let column = |v: &[i16]| Array2::from_shape_vec((v.len(), 1), v.to_vec()).unwrap();
        write_schema1(
            &old,
            CacheKind::Audio,
            1,
            16000,
            [
                ("o1".to_owned(), "train".to_owned(), column(&x)),
                ("o2".to_owned(), "test".to_owned(), column(&[5, 6, 7])),
            ],
        )
        .unwrap();
        let cache = AudioCache::open(&old).unwrap();
        assert!(cache.is_locked());
        assert_eq!(cache.read(0, 65_000, 4).unwrap(), x[65_000..65_004]);
        assert_eq!(cache.read_stats().reads, 1);
        let new = dir.path().join("new.h5");
        write_audio(&new, &[("n1", vec![1, 2, 3])], "{}");
        let fresh = AudioCache::open(&new).unwrap();
        assert!(!fresh.is_locked());
        fresh.read(0, 0, 3).unwrap();
        assert_eq!(fresh.read_stats().lock_wait_seconds, 0.0);

        let merged = dir.path().join("m.h5");
        merge(&[old, new], &merged).unwrap();
        let m = AudioCache::open(&merged).unwrap();
        assert!(!m.is_locked());
        assert_eq!(m.read_all(0).unwrap(), x);
        assert_eq!(m.read_all(1).unwrap(), vec![5, 6, 7]);
        assert_eq!(m.read(2, 1, 9).unwrap(), vec![2, 3]);
        assert_eq!(m.entries()[1].group, "test");
    }

    #[test]
    fn truncated_or_unknown_caches_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.h5");
        write_audio(
            &path,
            &[("u", (0..40_000).map(|i| i as i16).collect())],
            "{}",
        );
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 1000)
            .unwrap();
        let err = AudioCache::open(&path).err().unwrap().to_string();
        assert!(err.contains("t.h5") && err.contains("truncated"), "{err}");
        let other = dir.path().join("o.h5");
        let f = hdf5::File::create(&other).unwrap();
        write_string_attr(&f, "schema", "audio-cache/9").unwrap();
        drop(f);
        let err = AudioCache::open(&other).err().unwrap().to_string();
        assert!(
            err.contains("o.h5") && err.contains("audio-cache/9"),
            "{err}"
        );
    }

    #[test]
    fn fbank_f16_reads_back_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.h5");
        let feats = Array2::from_shape_fn((30, 4), |(t, b)| t as f32 * 0.5 + b as f32);
        let mut w = CacheWriter::<f16>::create(&path, CacheKind::Fbank, 4).unwrap();
        w.append("u", "train", feats.mapv(f16::from_f32).view())
            .unwrap();
        w.finish(16000, "{}", &[]).unwrap();
        let cache = FbankCache::open(&path).unwrap();
        assert_eq!((cache.dim(), cache.dtype()), (4, FbankDtype::F16));
        assert_eq!(cache.read(0, 10, 2).unwrap(), feats.slice(s![10..12, ..]));
    }
}
