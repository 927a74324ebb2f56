//! Errors of feature extraction and of the HDF5 stores; every variant names the file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: HDF5: {source}")]
    Hdf5 { path: PathBuf, source: hdf5::Error },
    /// The file is readable but its content breaks the store's contract.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// An utterance manifest that cannot be read (the error names the file).
    #[error(transparent)]
    Manifest(#[from] data_manifest::ManifestError),
    /// Options that cannot work (filter edges above the Nyquist frequency, a 0 Hz rate).
    #[error("{0}")]
    Options(String),
}

impl Error {
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Wraps an I/O error with the file it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// Wraps an HDF5 error with the file it concerns.
    pub fn hdf5(path: impl Into<PathBuf>) -> impl FnOnce(hdf5::Error) -> Self {
        let path = path.into();
        move |source| Error::Hdf5 { path, source }
    }
}

impl From<stage_kit::FileError> for Error {
    fn from(e: stage_kit::FileError) -> Self {
        Error::Io {
            path: e.path,
            source: e.source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
