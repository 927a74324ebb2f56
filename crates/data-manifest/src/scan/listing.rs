//! What a layout finds in a corpus folder before any file is opened: candidates with their
//! labels, and the files it could not place.

use std::collections::HashMap;
use std::path::Path;

use walkdir::WalkDir;

use crate::error::{ManifestError, Result};
use crate::rejects::Reject;

/// Extensions of the audio files a scan looks at (compared case-insensitively).
pub const AUDIO_EXTENSIONS: &[&str] = &["wav", "flac", "m4a", "sph"];

/// An utterance found by a layout, with the labels its path or label files give.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Relative to the corpus root, `/`-separated.
    pub path: String,
    pub utt_id: String,
    pub speaker: Option<String>,
    pub session: Option<String>,
    pub split: String,
    pub emotion: Option<String>,
    pub fold: Option<String>,
}

impl Candidate {
    /// A candidate with no labels but its split.
    pub fn new(path: &str, utt_id: &str, split: &str) -> Self {
        Candidate {
            path: path.to_owned(),
            utt_id: utt_id.to_owned(),
            speaker: None,
            session: None,
            split: split.to_owned(),
            emotion: None,
            fold: None,
        }
    }
}

/// A layout's listing of a corpus.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub candidates: Vec<Candidate>,
    /// Files the layout could not place (and labels naming missing files), with reasons.
    pub rejects: Vec<Reject>,
}

impl Listing {
    /// Records a reject `<category>: <details>`.
    pub fn reject(&mut self, path: &str, category: &str, details: impl AsRef<str>) {
        self.rejects.push(Reject {
            path: path.to_owned(),
            reason: format!("{category}: {}", details.as_ref()),
        });
    }

    /// Candidates sorted by path with each utterance id kept once (the first path), and the
    /// rejects including the duplicates.
    pub fn deduplicated(mut self) -> (Vec<Candidate>, Vec<Reject>) {
        self.candidates.sort_by(|a, b| a.path.cmp(&b.path));
        let mut first: HashMap<String, String> = HashMap::new();
        let mut kept = Vec::with_capacity(self.candidates.len());
        for candidate in self.candidates {
            match first.get(&candidate.utt_id) {
                Some(kept_path) => self.rejects.push(Reject {
                    reason: format!(
                        "duplicate: utterance id {} is already taken by {kept_path}",
                        candidate.utt_id
                    ),
                    path: candidate.path,
                }),
                None => {
                    first.insert(candidate.utt_id.clone(), candidate.path.clone());
                    kept.push(candidate);
                }
            }
        }
        (kept, self.rejects)
    }
}

/// Audio files under `root/sub` (`sub` may be empty), as `/`-separated paths relative to
/// `root`, sorted. Symbolic links are followed, as corpora are often assembled from links.
pub fn audio_files(root: &Path, sub: &str) -> Result<Vec<String>> {
    let start = root.join(sub);
    if !start.is_dir() {
        return Err(ManifestError::invalid(&start, "folder not found"));
    }
    let mut files = Vec::new();
    for entry in WalkDir::new(&start).follow_links(true) {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(&start).to_path_buf();
            ManifestError::Io {
                source: e.into_io_error().unwrap_or_else(|| {
                    std::io::Error::other("file system loop through symbolic links")
                }),
                path,
            }
        })?;
        if !entry.file_type().is_file() || !is_audio(entry.path()) {
            continue;
        }
        let rel = entry
            .path()
            .strip_prefix(root)
            .expect("walked paths are under the root");
        files.push(slash_path(rel));
    }
    files.sort();
    Ok(files)
}

fn is_audio(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| AUDIO_EXTENSIONS.iter().any(|a| a.eq_ignore_ascii_case(e)))
}

/// A relative path with `/` separators.
fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// `path` without the leading `base/` (`base` may be empty).
pub fn under<'a>(path: &'a str, base: &str) -> &'a str {
    if base.is_empty() {
        path
    } else {
        path.strip_prefix(base)
            .and_then(|p| p.strip_prefix('/'))
            .unwrap_or(path)
    }
}

/// `a/b/c.wav` -> `a/b/c`.
pub fn without_extension(path: &str) -> &str {
    match path.rfind('.') {
        Some(dot) if !path[dot..].contains('/') => &path[..dot],
        _ => path,
    }
}

/// The file name without extension of a `/`-separated path.
pub fn stem(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    without_extension(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_helpers() {
        assert_eq!(without_extension("id1/yt/00001.wav"), "id1/yt/00001");
        assert_eq!(without_extension("a.b/c"), "a.b/c");
        assert_eq!(stem("AudioWAV/1001_DFA_ANG_XX.wav"), "1001_DFA_ANG_XX");
        assert_eq!(under("musan/noise/a.wav", "musan"), "noise/a.wav");
        assert_eq!(under("noise/a.wav", ""), "noise/a.wav");
    }

    #[test]
    fn duplicates_keep_the_first_path() {
        let listing = Listing {
            candidates: vec![
                Candidate::new("wav/a/s/1.wav", "a/s/1", "dev"),
                Candidate::new("aac/a/s/1.m4a", "a/s/1", "dev"),
                Candidate::new("aac/a/s/2.m4a", "a/s/2", "dev"),
            ],
            rejects: vec![],
        };
        let (kept, rejects) = listing.deduplicated();
        let paths: Vec<&str> = kept.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["aac/a/s/1.m4a", "aac/a/s/2.m4a"]);
        assert_eq!(rejects.len(), 1);
        assert_eq!(rejects[0].path, "wav/a/s/1.wav");
        assert_eq!(
            rejects[0].reason,
            "duplicate: utterance id a/s/1 is already taken by aac/a/s/1.m4a"
        );
    }
}
