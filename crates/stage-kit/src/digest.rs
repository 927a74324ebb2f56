//! SHA-256 digests in hex: of bytes (configurations, command lines) and of files (binaries,
//! models), for the runner's stage hashes and for recognising a model file by its content.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::FileError;

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a byte string, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file's content, hex (read in 1 MiB blocks).
pub fn file_sha256(path: &Path) -> Result<String, FileError> {
    let mut file = std::fs::File::open(path).map_err(|e| FileError::new(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| FileError::new(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_and_bytes_digests_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, b"abc").unwrap();
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_hex(b"abc"), expected);
        assert_eq!(file_sha256(&path).unwrap(), expected);
        assert!(file_sha256(&dir.path().join("missing")).is_err());
    }
}
