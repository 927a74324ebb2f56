//! The files `embed-audio` writes, chosen by the output's extension: Parquet (`utt_id`,
//! `path`, `vector` as a fixed-size list of float32), NumPy `.npy` (float32 `[N, D]`) with an
//! `<out>.index.tsv` of `utt_id<TAB>path` per row, or the toolkit's `embeddings.h5`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, FixedSizeListArray, Float32Array};
use arrow_schema::{DataType, Field};
use data_manifest::table::{self, TableKind, strings};
use feature_extract::Embeddings;

use crate::error::{Error, Result};

/// Schema tag of the Parquet embeddings table.
pub const PARQUET_KIND: TableKind = TableKind {
    name: "embeddings",
    version: 1,
};
/// Parquet metadata key holding the producer's description (JSON).
pub const DESCRIPTION_KEY: &str = "speech_dino.description";

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Parquet,
    Npy,
    Hdf5,
}

impl OutputFormat {
    /// The format an output path's extension names.
    pub fn of(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("parquet") => Ok(OutputFormat::Parquet),
            Some("npy") => Ok(OutputFormat::Npy),
            Some("h5" | "hdf5") => Ok(OutputFormat::Hdf5),
            _ => Err(Error::Usage(format!(
                "{}: the output must end in .parquet, .npy or .h5",
                path.display()
            ))),
        }
    }
}

/// Writes `embeddings` to `out` in `format`; `paths` gives each utterance's audio file.
pub fn write(
    embeddings: &Embeddings,
    paths: &HashMap<&str, String>,
    format: OutputFormat,
    out: &Path,
) -> Result<()> {
    embeddings.check_finite(out)?;
    let path_of = |id: &str| paths.get(id).map_or("", String::as_str);
    match format {
        OutputFormat::Hdf5 => embeddings.write(out)?,
        OutputFormat::Parquet => {
            let dim = embeddings.dim() as i32;
            let values = Float32Array::from_iter_values(embeddings.vectors.iter().copied());
            let item = Arc::new(Field::new("item", DataType::Float32, false));
            let vectors = FixedSizeListArray::try_new(item, dim, Arc::new(values), None)
                .map_err(|e| Error::Config(format!("{}: {e}", out.display())))?;
            let ids = &embeddings.utt_ids;
            let columns: Vec<(&str, ArrayRef)> = vec![
                ("utt_id", strings(ids.iter().map(String::as_str))),
                ("path", strings(ids.iter().map(|id| path_of(id)))),
                ("vector", Arc::new(vectors)),
            ];
            let metadata = [(DESCRIPTION_KEY, embeddings.description.clone())];
            table::write(out, PARQUET_KIND, &metadata, columns)?;
        }
        OutputFormat::Npy => {
            stage_kit::write_bytes_atomically(out, &npy_bytes(embeddings))?;
            let index: String = embeddings
                .utt_ids
                .iter()
                .map(|id| format!("{id}\t{}\n", path_of(id)))
                .collect();
            let index_path = crate::apply::embed_audio::sibling(out, "index.tsv");
            stage_kit::write_bytes_atomically(&index_path, index.as_bytes())?;
        }
    }
    Ok(())
}

/// A NumPy format 1.0 file of the vectors: little-endian float32, C order.
fn npy_bytes(embeddings: &Embeddings) -> Vec<u8> {
    let (rows, cols) = embeddings.vectors.dim();
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len() + rows * cols * 4);
    bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in embeddings.vectors.iter() {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}
