//! Any tree of audio files: the utterance id is the path relative to the root without
//! extension; speaker and session come from path components or from a regex's named groups.

use std::path::Path;

use regex::Regex;

use crate::error::{ManifestError, Result};
use crate::scan::listing::{audio_files, without_extension};
use crate::scan::{Candidate, Listing};

/// Named groups a `--regex` may define; `utt` replaces the default utterance id.
pub const REGEX_GROUPS: &[&str] = &["utt", "speaker", "session", "split", "emotion", "fold"];

/// How the generic layout reads labels from paths.
#[derive(Debug, Clone)]
pub struct GenericOptions {
    /// Index of the path component (of the path relative to the root, extension removed)
    /// holding the speaker; negative counts from the end (-1 is the file stem).
    pub speaker_component: Option<i32>,
    /// Same, for the session.
    pub session_component: Option<i32>,
    /// A regex matched against the whole relative path (with extension, `/`-separated); its
    /// named groups (see [`REGEX_GROUPS`]) give the labels. Files it does not match are
    /// rejected.
    pub regex: Option<Regex>,
    /// Split of every utterance unless the regex has a `split` group.
    pub split: String,
}

impl GenericOptions {
    /// Checks that the regex names at least one known group and no unknown one.
    pub fn validate(&self) -> Result<()> {
        let Some(regex) = &self.regex else {
            return Ok(());
        };
        let names: Vec<&str> = regex.capture_names().flatten().collect();
        if let Some(unknown) = names.iter().find(|n| !REGEX_GROUPS.contains(n)) {
            return Err(ManifestError::invalid(
                format!("--regex {}", regex.as_str()),
                format!(
                    "unknown named group {unknown:?} in --regex (known: {})",
                    REGEX_GROUPS.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Lists every audio file under `root`.
pub fn list(root: &Path, options: &GenericOptions) -> Result<Listing> {
    options.validate()?;
    let mut listing = Listing::default();
    for path in audio_files(root, "")? {
        let id = without_extension(&path);
        let mut candidate = Candidate::new(&path, id, &options.split);
        let components: Vec<&str> = id.split('/').collect();
        let component = |index: Option<i32>| -> std::result::Result<Option<String>, String> {
            let Some(index) = index else {
                return Ok(None);
            };
            let resolved = if index < 0 {
                components.len() as i64 + i64::from(index)
            } else {
                i64::from(index)
            };
            usize::try_from(resolved)
                .ok()
                .and_then(|i| components.get(i))
                .map(|c| Some((*c).to_owned()))
                .ok_or_else(|| {
                    format!(
                        "path has {} components, no component {index}",
                        components.len()
                    )
                })
        };
        match (
            component(options.speaker_component),
            component(options.session_component),
        ) {
            (Ok(speaker), Ok(session)) => {
                candidate.speaker = speaker;
                candidate.session = session;
            }
            (Err(reason), _) | (_, Err(reason)) => {
                listing.reject(&path, "layout", reason);
                continue;
            }
        }
        if let Some(regex) = &options.regex {
            let Some(m) = regex.captures(&path) else {
                listing.reject(&path, "layout", format!("path does not match {regex}"));
                continue;
            };
            let group = |name: &str| m.name(name).map(|g| g.as_str().to_owned());
            if let Some(utt) = group("utt") {
                candidate.utt_id = utt;
            }
            candidate.speaker = group("speaker").or(candidate.speaker);
            candidate.session = group("session").or(candidate.session);
            candidate.split = group("split").unwrap_or(candidate.split);
            candidate.emotion = group("emotion");
            candidate.fold = group("fold");
        }
        listing.candidates.push(candidate);
    }
    Ok(listing)
}
