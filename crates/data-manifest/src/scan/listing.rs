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

    /// Candidates sorted by path, each with the number of its utterance id (ids numbered in
    /// the order their first path comes), and the listing's rejects. Files sharing an id
    /// share a number, so that a shard gets all of them and picks one after probing.
    pub fn numbered_by_id(mut self) -> (Vec<(Candidate, usize)>, Vec<Reject>) {
        self.candidates.sort_by(|a, b| a.path.cmp(&b.path));
        let mut numbers: HashMap<String, usize> = HashMap::new();
        let numbered = self
            .candidates
            .into_iter()
            .map(|c| {
                let next = numbers.len();
                let number = *numbers.entry(c.utt_id.clone()).or_insert(next);
                (c, number)
            })
            .collect();
        (numbered, self.rejects)
    }
}

/// Each utterance id kept once, for the first of its files (in `items` order) that probed
/// well; the later ones are rejects (`duplicate`). Resolving after probing keeps a good
/// `x.wav` when an empty `x.flac` sorts first.
pub fn first_of_each_id<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> (&str, &str),
) -> (Vec<T>, Vec<Reject>) {
    let mut first: HashMap<String, String> = HashMap::new();
    let mut kept = Vec::with_capacity(items.len());
    let mut rejects = Vec::new();
    for item in items {
        let (utt_id, path) = key(&item);
        match first.get(utt_id) {
            Some(kept_path) => rejects.push(Reject {
                reason: format!("duplicate: utterance id {utt_id} is already taken by {kept_path}"),
                path: path.to_owned(),
            }),
            None => {
                first.insert(utt_id.to_owned(), path.to_owned());
                kept.push(item);
            }
        }
    }
    (kept, rejects)
}

/// The entries under `root` that a walk cannot read (symbolic-link loops, dangling links,
/// folders without permission) and the audio files whose names are not UTF-8 (a manifest
/// cannot name them), as `unreadable` rejects: one of them must not stop a scan.
pub fn unreadable_entries(root: &Path) -> Vec<Reject> {
    let relative = |path: &Path| slash_path(path.strip_prefix(root).unwrap_or(path));
    WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_map(|entry| match entry {
            Err(e) => Some(Reject {
                path: relative(e.path().unwrap_or(root)),
                reason: format!("unreadable: {e}"),
            }),
            Ok(entry) if is_audio(entry.path()) && not_utf8(entry.path()) => Some(Reject {
                path: relative(entry.path()),
                reason: "unreadable: the file name is not valid UTF-8 (rename the file)".into(),
            }),
            Ok(_) => None,
        })
        .collect()
}

fn not_utf8(path: &Path) -> bool {
    path.to_str().is_none()
}

/// Audio files under `root/sub` (`sub` may be empty), as `/`-separated paths relative to
/// `root`, sorted. Symbolic links are followed, as corpora are often assembled from links;
/// entries the walk cannot read are passed over here and reported by [`unreadable_entries`].
pub fn audio_files(root: &Path, sub: &str) -> Result<Vec<String>> {
    let start = root.join(sub);
    if !start.is_dir() {
        return Err(ManifestError::invalid(&start, "folder not found"));
    }
    let mut files = Vec::new();
    for entry in WalkDir::new(&start).follow_links(true) {
        let Ok(entry) = entry else {
            continue;
        };
        if !entry.file_type().is_file() || !is_audio(entry.path()) || not_utf8(entry.path()) {
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
    fn duplicates_share_a_number_and_keep_the_first_path() {
        let listing = Listing {
            candidates: vec![
                Candidate::new("wav/a/s/1.wav", "a/s/1", "dev"),
                Candidate::new("aac/a/s/1.m4a", "a/s/1", "dev"),
                Candidate::new("aac/a/s/2.m4a", "a/s/2", "dev"),
            ],
            rejects: vec![],
        };
        let (numbered, _) = listing.numbered_by_id();
        let numbers: Vec<(&str, usize)> = numbered
            .iter()
            .map(|(c, n)| (c.path.as_str(), *n))
            .collect();
        assert_eq!(
            numbers,
            [
                ("aac/a/s/1.m4a", 0),
                ("aac/a/s/2.m4a", 1),
                ("wav/a/s/1.wav", 0)
            ]
        );
        let candidates: Vec<Candidate> = numbered.into_iter().map(|(c, _)| c).collect();
        let (kept, rejects) = first_of_each_id(candidates, |c| (&c.utt_id, &c.path));
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
