//! Reading embeddings with the checks every evaluation needs: no empty file, no duplicate
//! utterance, no NaN or infinity, matching dimensions, and no utterance missing.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use feature_extract::Embeddings;

use crate::error::{EvalError, Result, shorten_list};

/// An embeddings file read and checked, with its path kept for error messages.
#[derive(Debug, Clone)]
pub struct EmbeddingFile {
    pub path: std::path::PathBuf,
    pub embeddings: Embeddings,
}

impl EmbeddingFile {
    /// Reads `path`; refuses empty files, duplicate utterance ids and non-finite vectors.
    pub fn read(path: &Path) -> Result<Self> {
        let embeddings = Embeddings::read(path)?;
        if embeddings.utt_ids.is_empty() || embeddings.dim() == 0 {
            return Err(EvalError::invalid(
                path,
                format!(
                    "empty embeddings ({} x {})",
                    embeddings.utt_ids.len(),
                    embeddings.dim()
                ),
            ));
        }
        let mut seen = HashSet::new();
        let mut duplicates: Vec<&str> = embeddings
            .utt_ids
            .iter()
            .filter(|id| !seen.insert(id.as_str()))
            .map(String::as_str)
            .collect();
        if !duplicates.is_empty() {
            duplicates.sort_unstable();
            duplicates.dedup();
            return Err(EvalError::invalid(
                path,
                format!(
                    "{} utterance id(s) occur more than once: {}",
                    duplicates.len(),
                    shorten_list(&duplicates, 10)
                ),
            ));
        }
        embeddings.check_finite(path)?;
        Ok(EmbeddingFile {
            path: path.to_path_buf(),
            embeddings,
        })
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.embeddings.dim()
    }

    /// Fails unless `other` has this file's dimension.
    pub fn check_same_dim(&self, other: &EmbeddingFile) -> Result<()> {
        if other.dim() == self.dim() {
            return Ok(());
        }
        Err(EvalError::DimensionMismatch {
            path: other.path.clone(),
            found: other.dim(),
            reference: self.path.clone(),
            expected: self.dim(),
        })
    }

    /// Row of every id in `ids`, in order; fails listing the ids this file lacks.
    /// `needed_by` names the input that asks for them (e.g. the trial list).
    pub fn rows_of<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
        needed_by: &str,
    ) -> Result<Vec<usize>> {
        let index: HashMap<&str, usize> = self.embeddings.index();
        let mut rows = Vec::new();
        let mut missing = Vec::new();
        for id in ids {
            match index.get(id) {
                Some(&row) => rows.push(row),
                None => missing.push(id),
            }
        }
        if missing.is_empty() {
            Ok(rows)
        } else {
            Err(EvalError::missing(&self.path, needed_by, &missing))
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ndarray::Array2;

    /// Writes an embeddings file with the given ids and rows.
    pub(crate) fn write(
        dir: &Path,
        name: &str,
        ids: &[&str],
        vectors: Array2<f32>,
    ) -> EmbeddingFile {
        let path = dir.join(name);
        Embeddings {
            utt_ids: ids.iter().map(|s| s.to_string()).collect(),
            vectors,
            description: "{}".into(),
        }
        .write(&path)
        .unwrap();
        EmbeddingFile::read(&path).unwrap()
    }

    #[test]
    fn missing_ids_are_listed_and_dimensions_compared() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.h5", &["x", "y"], Array2::ones((2, 3)));
        let b = write(dir.path(), "b.h5", &["x"], Array2::ones((1, 4)));
        assert_eq!(a.rows_of(["y", "x"], "trials").unwrap(), vec![1, 0]);
        let err = a.rows_of(["x", "q", "r"], "trials.parquet").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("no embedding for 2 utterance(s) of trials.parquet: q, r"),
            "{err}"
        );
        let err = a.check_same_dim(&b).unwrap_err().to_string();
        assert!(err.contains("dimension 4, but"), "{err}");
        assert!(err.ends_with("has dimension 3"), "{err}");
    }

    #[test]
    fn duplicates_and_non_finite_vectors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dup.h5");
        Embeddings {
            utt_ids: vec!["x".into(), "x".into()],
            vectors: Array2::zeros((2, 2)),
            description: String::new(),
        }
        .write(&path)
        .unwrap();
        let err = EmbeddingFile::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("1 utterance id(s) occur more than once: x"),
            "{err}"
        );

        let mut vectors = Array2::zeros((2, 2));
        vectors[[1, 0]] = f32::INFINITY;
        Embeddings {
            utt_ids: vec!["x".into(), "y".into()],
            vectors,
            description: String::new(),
        }
        .write(&path)
        .unwrap();
        let err = EmbeddingFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("NaN or infinity: y"), "{err}");
    }
}
