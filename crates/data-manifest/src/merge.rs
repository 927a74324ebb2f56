//! `merge`: joins the manifests (and rejects) of scan shards, or of parts scanned apart under
//! the same corpus root, into one.

use std::path::{Path, PathBuf};

use crate::error::{ManifestError, Result};
use crate::rejects::RejectList;
use crate::utterances::{ExtraMetadata, UtteranceManifest};

/// Reads and concatenates `inputs` (all under one corpus root); duplicate ids are an error.
/// The extra metadata is the union of the inputs' (later inputs win on a clash).
pub fn merge_manifests(inputs: &[PathBuf]) -> Result<(UtteranceManifest, ExtraMetadata)> {
    let (first, rest) = inputs
        .split_first()
        .ok_or_else(|| ManifestError::invalid("merge", "no input manifest"))?;
    let mut merged = UtteranceManifest::read(first)?;
    let mut metadata = UtteranceManifest::read_metadata(first)?;
    for path in rest {
        let part = UtteranceManifest::read(path)?;
        if part.corpus_root != merged.corpus_root {
            return Err(ManifestError::invalid(
                path,
                format!(
                    "corpus root {} differs from {} of {}",
                    part.corpus_root.display(),
                    merged.corpus_root.display(),
                    first.display()
                ),
            ));
        }
        merged.utterances.extend(part.utterances);
        metadata.extend(UtteranceManifest::read_metadata(path)?);
    }
    merged.utterances.sort_by(|a, b| a.path.cmp(&b.path));
    merged.check_unique_ids(Path::new("merged manifest"))?;
    Ok((merged, metadata))
}

/// Reads and concatenates rejects tables, sorted by path.
pub fn merge_rejects(inputs: &[PathBuf]) -> Result<RejectList> {
    let mut rejects = Vec::new();
    for path in inputs {
        rejects.extend(RejectList::read(path)?.rejects);
    }
    rejects.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(RejectList { rejects })
}
