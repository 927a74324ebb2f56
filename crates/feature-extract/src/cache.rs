//! Packed HDF5 caches of audio (int16) and fbank features (f32 or f16): one chunked,
//! deflate-compressed 2-D dataset `/data` `[rows, cols]` holding every utterance back to back
//! along time, plus an index `/utt_id`, `/group`, `/offset`, `/length` (rows), so a random crop
//! of an utterance is one hyperslab read.
//!
//! Attributes: `schema` (`audio-cache/1` or `fbank-cache/1`), `sample_rate`, `config` (JSON of
//! the resolved options that produced the data) and `rejects` (JSON list of
//! `{"path", "reason"}` for inputs left out). `group` is the manifest's `split` (for noise and
//! RIR caches, the MUSAN/RIR category used by augmentation).
//!
//! Readers are shareable between threads (hdf5-metno serialises every HDF5 call).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use half::f16;
use hdf5::types::{FloatSize, IntSize, TypeDescriptor, VarLenUnicode};
use hdf5::{Dataset, H5Type};
use ndarray::{Array1, Array2, ArrayView2, s};
use serde::{Deserialize, Serialize};

use crate::embeddings::{read_string_attr, write_string_attr};
use crate::error::{Error, Result};

/// Rows per chunk of the audio data set (2 s at 16 kHz).
const AUDIO_CHUNK_ROWS: usize = 32_768;
/// Rows (frames) per chunk of the fbank data set.
const FBANK_CHUNK_ROWS: usize = 512;
/// Rows copied per step when merging caches.
const MERGE_BLOCK_ROWS: usize = 1 << 20;

/// What a cache holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// Mono int16 samples, one column.
    Audio,
    /// Feature frames, one column per bin.
    Fbank,
}

impl CacheKind {
    /// The `schema` attribute of this kind of cache.
    pub fn schema(self) -> &'static str {
        match self {
            CacheKind::Audio => "audio-cache/1",
            CacheKind::Fbank => "fbank-cache/1",
        }
    }

    fn chunk_rows(self) -> usize {
        match self {
            CacheKind::Audio => AUDIO_CHUNK_ROWS,
            CacheKind::Fbank => FBANK_CHUNK_ROWS,
        }
    }

    fn from_schema(schema: &str) -> Option<Self> {
        [CacheKind::Audio, CacheKind::Fbank]
            .into_iter()
            .find(|k| k.schema() == schema)
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
    data: Dataset,
    cols: usize,
    sample_rate: u32,
    config: String,
    rejects: Vec<CacheReject>,
    entries: Vec<CacheEntry>,
    positions: HashMap<String, usize>,
}

impl Packed {
    fn open(path: &Path, expected: Option<CacheKind>) -> Result<Self> {
        let h5 = Error::hdf5(path);
        let file = hdf5::File::open(path).map_err(Error::hdf5(path))?;
        let schema = read_string_attr(&file, "schema")
            .map_err(|_| Error::invalid(path, "not a feature cache (no schema attribute)"))?;
        let kind = CacheKind::from_schema(&schema)
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
        let shape = data.shape();
        if shape.len() != 2 {
            return Err(Error::invalid(path, format!("/data has shape {shape:?}")));
        }
        let (rows, cols) = (shape[0] as u64, shape[1]);
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
            if entry.offset + entry.length > rows {
                return Err(Error::invalid(
                    path,
                    format!(
                        "{} ends at row {} of {rows}",
                        entry.utt_id,
                        entry.offset + entry.length
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
            data,
            cols,
            sample_rate,
            config,
            rejects,
            entries,
            positions,
        })
    }

    /// Rows `start..start + len` of entry `index` (clipped to the entry).
    fn read_rows<T: H5Type>(&self, index: usize, start: u64, len: u64) -> Result<Array2<T>> {
        let entry = self.entries.get(index).ok_or_else(|| {
            Error::invalid(
                &self.path,
                format!("entry {index} out of {}", self.entries.len()),
            )
        })?;
        let start = start.min(entry.length);
        let end = (start + len).min(entry.length);
        let (a, b) = (
            (entry.offset + start) as usize,
            (entry.offset + end) as usize,
        );
        self.data
            .read_slice_2d::<T, _>(s![a..b, ..])
            .map_err(Error::hdf5(&self.path))
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

    /// Samples `start..start + len` of entry `index` (clipped to its end), one hyperslab read.
    pub fn read(&self, index: usize, start: usize, len: usize) -> Result<Vec<i16>> {
        let rows = self.0.read_rows::<i16>(index, start as u64, len as u64)?;
        Ok(rows.into_raw_vec_and_offset().0)
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
        let dtype = match element_type(&packed.data, path)? {
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
        self.packed.cols
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
        match self.dtype {
            FbankDtype::F32 => self
                .packed
                .read_rows::<f32>(index, start as u64, len as u64),
            FbankDtype::F16 => Ok(self
                .packed
                .read_rows::<f16>(index, start as u64, len as u64)?
                .mapv(f16::to_f32)),
        }
    }

    /// All frames of entry `index`.
    pub fn read_all(&self, index: usize) -> Result<Array2<f32>> {
        self.read(index, 0, usize::MAX / 2)
    }
}

fn element_type(data: &Dataset, path: &Path) -> Result<TypeDescriptor> {
    data.dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(Error::hdf5(path))
}

/// Writes a cache at `path` (the caller makes it atomic): rows are appended utterance by
/// utterance, the index and attributes go in at [`CacheWriter::finish`].
pub struct CacheWriter<T: H5Type> {
    path: PathBuf,
    file: hdf5::File,
    data: Dataset,
    cols: usize,
    rows: u64,
    entries: Vec<CacheEntry>,
    _element: std::marker::PhantomData<T>,
}

impl<T: H5Type> CacheWriter<T> {
    /// Creates the file with an empty, resizable `/data` of `cols` columns, compressed
    /// (byte shuffle + deflate) or not (for intermediate files that are merged later).
    pub fn create(path: &Path, kind: CacheKind, cols: usize, compress: bool) -> Result<Self> {
        let h5 = Error::hdf5(path);
        let file = hdf5::File::create(path).map_err(Error::hdf5(path))?;
        write_string_attr(&file, "schema", kind.schema()).map_err(Error::hdf5(path))?;
        let mut builder = file.new_dataset::<T>().chunk((kind.chunk_rows(), cols));
        if compress {
            builder = builder.shuffle().deflate(1);
        }
        let data = builder.shape((0.., cols)).create("data").map_err(h5)?;
        Ok(CacheWriter {
            path: path.to_path_buf(),
            file,
            data,
            cols,
            rows: 0,
            entries: Vec::new(),
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
        let n = rows.nrows() as u64;
        self.append_rows(rows)?;
        self.entries.push(CacheEntry {
            utt_id: utt_id.to_owned(),
            offset: self.rows - n,
            length: n,
            group: group.to_owned(),
        });
        Ok(())
    }

    fn append_rows(&mut self, rows: ArrayView2<T>) -> Result<()> {
        let n = rows.nrows();
        if n == 0 {
            return Ok(());
        }
        let start = self.rows as usize;
        let write = || -> hdf5::Result<()> {
            self.data.resize((start + n, self.cols))?;
            self.data.write_slice(rows, s![start..start + n, ..])
        };
        write().map_err(Error::hdf5(&self.path))?;
        self.rows += n as u64;
        Ok(())
    }

    /// Writes the index and attributes and closes the file.
    pub fn finish(self, sample_rate: u32, config: &str, rejects: &[CacheReject]) -> Result<()> {
        let path = self.path.clone();
        let to_unicode = |s: &str| {
            VarLenUnicode::from_str(s)
                .map_err(|e| Error::invalid(&path, format!("string {s:?}: {e}")))
        };
        let ids = self
            .entries
            .iter()
            .map(|e| to_unicode(&e.utt_id))
            .collect::<Result<Vec<_>>>()?;
        let groups = self
            .entries
            .iter()
            .map(|e| to_unicode(&e.group))
            .collect::<Result<Vec<_>>>()?;
        let offsets: Array1<u64> = self.entries.iter().map(|e| e.offset).collect();
        let lengths: Array1<u64> = self.entries.iter().map(|e| e.length).collect();
        let rejects = serde_json::to_string(rejects).expect("rejects serialise");
        let f = &self.file;
        let write = || -> hdf5::Result<()> {
            f.new_dataset_builder()
                .with_data(&Array1::from(ids))
                .create("utt_id")?;
            f.new_dataset_builder()
                .with_data(&Array1::from(groups))
                .create("group")?;
            f.new_dataset_builder()
                .with_data(&offsets)
                .create("offset")?;
            f.new_dataset_builder()
                .with_data(&lengths)
                .create("length")?;
            f.new_attr::<u32>()
                .shape(())
                .create("sample_rate")?
                .write_scalar(&sample_rate)?;
            write_string_attr(f, "config", config)?;
            write_string_attr(f, "rejects", &rejects)?;
            f.flush()
        };
        write().map_err(Error::hdf5(&path))
    }
}

/// Concatenates caches of the same kind, sample rate, element type and config into `output`
/// (written atomically), in the order given; duplicate utterances are an error.
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
    let first = inputs
        .first()
        .ok_or_else(|| Error::invalid(output, "nothing to merge"))?;
    let head = Packed::open(first, None)?;
    match element_type(&head.data, first)? {
        TypeDescriptor::Integer(IntSize::U2) => merge_typed::<i16>(inputs, output, order),
        TypeDescriptor::Float(FloatSize::U4) => merge_typed::<f32>(inputs, output, order),
        TypeDescriptor::Float(FloatSize::U2) => merge_typed::<f16>(inputs, output, order),
        other => Err(Error::invalid(
            first,
            format!("cache data of type {other:?}"),
        )),
    }
}

fn merge_typed<T: H5Type + Clone>(
    inputs: &[PathBuf],
    output: &Path,
    order: Option<&[String]>,
) -> Result<()> {
    let parts = inputs
        .iter()
        .map(|p| Packed::open(p, None))
        .collect::<Result<Vec<_>>>()?;
    let head = &parts[0];
    let head_type = element_type(&head.data, &head.path)?;
    for p in &parts[1..] {
        let same = p.kind == head.kind
            && p.cols == head.cols
            && p.sample_rate == head.sample_rate
            && p.config == head.config
            && element_type(&p.data, &p.path)? == head_type;
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
    if let Some(order) = order {
        let rank: std::collections::HashMap<&str, usize> = order
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut placed = Vec::new();
        for (pi, p) in parts.iter().enumerate() {
            for (ei, e) in p.entries.iter().enumerate() {
                let r = rank.get(e.utt_id.as_str()).ok_or_else(|| {
                    Error::invalid(
                        &p.path,
                        format!("utterance {} is not in the manifest", e.utt_id),
                    )
                })?;
                placed.push((*r, pi, ei));
            }
        }
        placed.sort_unstable();
        return stage_kit::write_atomically(output, |partial| {
            let mut writer = CacheWriter::<T>::create(partial, head.kind, head.cols, true)?;
            for &(_, pi, ei) in &placed {
                let (p, e) = (&parts[pi], &parts[pi].entries[ei]);
                let (start, end) = (e.offset as usize, (e.offset + e.length) as usize);
                let rows = p
                    .data
                    .read_slice_2d::<T, _>(s![start..end, ..])
                    .map_err(Error::hdf5(&p.path))?;
                writer.append(&e.utt_id, &e.group, rows.view())?;
            }
            let rejects: Vec<CacheReject> = parts
                .iter()
                .flat_map(|p| p.rejects.iter().cloned())
                .collect();
            writer.finish(head.sample_rate, &head.config, &rejects)
        });
    }
    stage_kit::write_atomically(output, |partial| {
        let mut writer = CacheWriter::<T>::create(partial, head.kind, head.cols, true)?;
        let mut rejects = Vec::new();
        for p in &parts {
            let base = writer.rows;
            let rows = p.data.shape()[0];
            for start in (0..rows).step_by(MERGE_BLOCK_ROWS) {
                let end = (start + MERGE_BLOCK_ROWS).min(rows);
                let block = p
                    .data
                    .read_slice_2d::<T, _>(s![start..end, ..])
                    .map_err(Error::hdf5(&p.path))?;
                writer.append_rows(block.view())?;
            }
            writer.entries.extend(p.entries.iter().map(|e| CacheEntry {
                offset: base + e.offset,
                ..e.clone()
            }));
            rejects.extend(p.rejects.iter().cloned());
        }
        writer.finish(head.sample_rate, &head.config, &rejects)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn write_audio(path: &Path, utts: &[(&str, Vec<i16>)], config: &str) {
        let mut w = CacheWriter::<i16>::create(path, CacheKind::Audio, 1, false).unwrap();
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
    }

    #[test]
    fn fbank_f16_reads_back_as_f32() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.h5");
        let feats = Array2::from_shape_fn((30, 4), |(t, b)| t as f32 * 0.5 + b as f32);
        let mut w = CacheWriter::<f16>::create(&path, CacheKind::Fbank, 4, true).unwrap();
        w.append("u", "train", feats.mapv(f16::from_f32).view())
            .unwrap();
        w.finish(16000, "{}", &[]).unwrap();
        let cache = FbankCache::open(&path).unwrap();
        assert_eq!((cache.dim(), cache.dtype()), (4, FbankDtype::F16));
        assert_eq!(cache.read(0, 10, 2).unwrap(), feats.slice(s![10..12, ..]));
    }
}
