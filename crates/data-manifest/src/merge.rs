//! `merge`: joins the manifests (and rejects) of scan shards, or of parts scanned apart under
//! the same corpus root, into one; with `--join`, manifests of different corpora (a training
//! pool such as VoxCeleb2 + CN-Celeb) under their common ancestor folder.

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

/// Joins manifests of different corpora: the corpus root becomes the roots' deepest common
/// ancestor and every path is rewritten relative to it; speakers (and so their sessions) of
/// an input whose root differs from the first one's are prefixed with that root relative to
/// the ancestor (`cnceleb/id00012`), since speaker ids of two corpora name different
/// people. Duplicate utterance ids are an error.
pub fn join_corpora(inputs: &[PathBuf]) -> Result<(UtteranceManifest, ExtraMetadata)> {
    let mut parts = Vec::with_capacity(inputs.len());
    let mut metadata = ExtraMetadata::new();
    for path in inputs {
        parts.push(UtteranceManifest::read(path)?);
        metadata.extend(UtteranceManifest::read_metadata(path)?);
    }
    let first = parts
        .first()
        .ok_or_else(|| ManifestError::invalid("merge", "no input manifest"))?
        .corpus_root
        .clone();
    let mut ancestor = first.clone();
    for part in &parts {
        while !part.corpus_root.starts_with(&ancestor) {
            if !ancestor.pop() {
                break;
            }
        }
    }
    let mut utterances = Vec::new();
    for part in parts {
        let under = part
            .corpus_root
            .strip_prefix(&ancestor)
            .unwrap_or(&part.corpus_root)
            .to_path_buf();
        let prefix = (part.corpus_root != first).then(|| under.display().to_string());
        for mut u in part.utterances {
            u.path = under.join(&u.path).display().to_string();
            if let (Some(prefix), Some(speaker)) = (&prefix, &u.speaker) {
                u.speaker = Some(format!("{prefix}/{speaker}"));
            }
            utterances.push(u);
        }
    }
    let joined = UtteranceManifest {
        corpus_root: ancestor,
        utterances,
    };
    joined.check_unique_ids(Path::new("joined manifest"))?;
    Ok((joined, metadata))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::utterances::Utterance;

    #[test]
    fn corpora_join_under_their_common_folder() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, root: &str, ids: &[&str]| {
            let path = dir.path().join(name);
            UtteranceManifest {
                corpus_root: PathBuf::from(root),
                utterances: ids
                    .iter()
                    .map(|id| Utterance::for_test(id, Some("spk1"), 1.0))
                    .collect(),
            }
            .write(&path)
            .unwrap();
            path
        };
        let a = write("a.parquet", "/data/vox2", &["x/1"]);
        let b = write("b.parquet", "/data/cn/celeb", &["y/1", "y/2"]);
        let (joined, _) = join_corpora(&[a.clone(), b]).unwrap();
        assert_eq!(joined.corpus_root, PathBuf::from("/data"));
        let rows: Vec<(&str, &str)> = joined
            .utterances
            .iter()
            .map(|u| (u.path.as_str(), u.speaker.as_deref().unwrap()))
            .collect();
        assert_eq!(
            rows,
            [
                ("vox2/x/1.wav", "spk1"),
                ("cn/celeb/y/1.wav", "cn/celeb/spk1"),
                ("cn/celeb/y/2.wav", "cn/celeb/spk1")
            ]
        );
        let again = write("c.parquet", "/elsewhere", &["x/1"]);
        let err = join_corpora(&[a, again]).unwrap_err().to_string();
        assert!(err.contains("x/1"), "{err}");
    }
}
