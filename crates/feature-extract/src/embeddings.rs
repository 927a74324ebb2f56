//! `embeddings.h5`: one vector per utterance, the contract between embedding extraction and
//! the stages that consume embeddings (scoring, emotion classifiers, clustering).
//!
//! Layout: `/embeddings` float32 [N, D], `/utt_id` variable-length UTF-8 [N], and the string
//! attributes `schema` (`embeddings/1`) and `description` (JSON: what produced the vectors).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use hdf5::types::VarLenUnicode;
use ndarray::{Array1, Array2, ArrayView1};

use crate::error::{Error, Result};

pub const SCHEMA: &str = "embeddings/1";

/// Utterance embeddings, row `i` belonging to `utt_ids[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    pub utt_ids: Vec<String>,
    pub vectors: Array2<f32>,
    /// JSON description of the producer (model, checkpoint, options).
    pub description: String,
}

impl Embeddings {
    pub fn dim(&self) -> usize {
        self.vectors.ncols()
    }

    /// Row of an utterance by id.
    pub fn index(&self) -> HashMap<&str, usize> {
        self.utt_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect()
    }

    pub fn row(&self, i: usize) -> ArrayView1<'_, f32> {
        self.vectors.row(i)
    }

    /// Fails if any vector has a NaN or infinite component, naming the utterances.
    pub fn check_finite(&self, path: &Path) -> Result<()> {
        let bad: Vec<&str> = self
            .vectors
            .rows()
            .into_iter()
            .zip(&self.utt_ids)
            .filter(|(row, _)| row.iter().any(|v| !v.is_finite()))
            .map(|(_, id)| id.as_str())
            .collect();
        if bad.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = bad.iter().take(10).copied().collect();
        Err(Error::invalid(
            path,
            format!(
                "{} embedding(s) contain NaN or infinity: {}{}",
                bad.len(),
                shown.join(", "),
                if bad.len() > 10 { ", ..." } else { "" }
            ),
        ))
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        if self.utt_ids.len() != self.vectors.nrows() {
            return Err(Error::invalid(
                path,
                format!(
                    "{} utterance ids for {} embedding rows",
                    self.utt_ids.len(),
                    self.vectors.nrows()
                ),
            ));
        }
        let ids = self
            .utt_ids
            .iter()
            .map(|id| {
                VarLenUnicode::from_str(id)
                    .map_err(|e| Error::invalid(path, format!("utterance id {id:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        stage_kit::write_atomically(path, |partial| {
            let write = || -> hdf5::Result<()> {
                let file = crate::h5file::create(partial)?;
                file.new_dataset_builder()
                    .with_data(&self.vectors)
                    .create("embeddings")?;
                file.new_dataset_builder()
                    .with_data(&Array1::from(ids))
                    .create("utt_id")?;
                write_string_attr(&file, "schema", SCHEMA)?;
                write_string_attr(&file, "description", &self.description)?;
                // HDF5 writes its metadata when the file is flushed or closed: an error
                // there (a full disk) must fail the write before the rename, not be dropped.
                file.flush()?;
                file.close()
            };
            write().map_err(Error::hdf5(path))
        })
    }

    /// Reads and checks a file written by [`Embeddings::write`].
    pub fn read(path: &Path) -> Result<Self> {
        let file = crate::h5file::open(path).map_err(Error::hdf5(path))?;
        let schema = read_string_attr(&file, "schema")
            .map_err(|_| Error::invalid(path, "not an embeddings file (no schema attribute)"))?;
        if schema != SCHEMA {
            return Err(Error::invalid(
                path,
                format!("schema {schema:?}, expected {SCHEMA:?}"),
            ));
        }
        let vectors = file
            .dataset("embeddings")
            .and_then(|d| d.read_2d::<f32>())
            .map_err(Error::hdf5(path))?;
        let utt_ids: Vec<String> = file
            .dataset("utt_id")
            .and_then(|d| d.read_raw::<VarLenUnicode>())
            .map_err(Error::hdf5(path))?
            .into_iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        let description = read_string_attr(&file, "description").map_err(Error::hdf5(path))?;
        if utt_ids.len() != vectors.nrows() {
            return Err(Error::invalid(
                path,
                format!(
                    "{} utterance ids for {} embedding rows",
                    utt_ids.len(),
                    vectors.nrows()
                ),
            ));
        }
        Ok(Embeddings {
            utt_ids,
            vectors,
            description,
        })
    }
}

/// Writes a scalar UTF-8 attribute on a file, group or dataset.
pub fn write_string_attr(location: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let value = VarLenUnicode::from_str(value).map_err(|e| hdf5::Error::from(e.to_string()))?;
    location
        .new_attr::<VarLenUnicode>()
        .shape(())
        .create(name)?
        .write_scalar(&value)
}

/// Reads a scalar UTF-8 attribute.
pub fn read_string_attr(location: &hdf5::Location, name: &str) -> hdf5::Result<String> {
    Ok(location
        .attr(name)?
        .read_scalar::<VarLenUnicode>()?
        .as_str()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn hdf5_round_trip_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("embeddings.h5");
        let e = Embeddings {
            utt_ids: vec!["a/1".into(), "b/2".into()],
            vectors: array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
            description: r#"{"model":"test"}"#.into(),
        };
        e.write(&path).unwrap();
        let back = Embeddings::read(&path).unwrap();
        assert_eq!(back, e);
        assert_eq!(back.index()["b/2"], 1);
        back.check_finite(&path).unwrap();

        let mut bad = e.clone();
        bad.vectors[[1, 2]] = f32::NAN;
        let err = bad.check_finite(&path).unwrap_err().to_string();
        assert!(
            err.contains("1 embedding(s) contain NaN or infinity: b/2"),
            "{err}"
        );
    }

    #[test]
    fn mismatched_ids_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("embeddings.h5");
        let e = Embeddings {
            utt_ids: vec!["a".into()],
            vectors: Array2::zeros((2, 4)),
            description: String::new(),
        };
        assert!(
            e.write(&path)
                .unwrap_err()
                .to_string()
                .contains("1 utterance ids for 2 embedding rows")
        );
        assert!(!path.exists());
    }
}
