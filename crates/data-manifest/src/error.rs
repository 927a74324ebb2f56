//! Errors of manifest reading and writing; every variant names the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a readable Parquet file: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    /// Writing failed (a full disk, a lost mount): the file is not the problem.
    #[error("{path}: writing Parquet failed: {source}")]
    ParquetWrite {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: PathBuf,
        source: arrow_schema::ArrowError,
    },
    /// The file is readable but its content breaks the table's contract.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ManifestError {
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        ManifestError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl From<stage_kit::FileError> for ManifestError {
    fn from(e: stage_kit::FileError) -> Self {
        ManifestError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

pub type Result<T> = std::result::Result<T, ManifestError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_is_not_reported_as_an_unreadable_file() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let err = ManifestError::ParquetWrite {
            path: "out/utterances.parquet".into(),
            source: parquet::errors::ParquetError::External(Box::new(full)),
        }
        .to_string();
        assert!(
            err.starts_with("out/utterances.parquet: writing Parquet failed: ")
                && !err.contains("not a readable"),
            "{err}"
        );
    }
}
