//! VoxCeleb1 and VoxCeleb2: `<speaker>/<youtube-id>/<NNNNN>.<ext>` under `wav/` (VoxCeleb1)
//! or `aac/` (VoxCeleb2, also `wav/` or `flac/` once converted).

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::Result;
use crate::scan::listing::{audio_files, under, without_extension};
use crate::scan::{Candidate, Listing};

/// The 40 VoxCeleb1 speakers of the verification test set (id10270-id10309), as VoxCeleb1-O
/// uses them; every other speaker is in `dev`.
fn voxceleb1_split(speaker: &str) -> &'static str {
    let number = speaker
        .strip_prefix("id")
        .and_then(|n| n.parse::<u32>().ok());
    match number {
        Some(10270..=10309) => "test",
        _ => "dev",
    }
}

/// VoxCeleb1: `wav/idNNNNN/<youtube-id>/NNNNN.wav` under the root.
pub fn voxceleb1(root: &Path) -> Result<Listing> {
    speaker_tree(root, "wav", |speaker| {
        Ok(voxceleb1_split(speaker).to_owned())
    })
}

/// A `<base>/<speaker>/<session>/<utterance>.<ext>` tree: the utterance id is the path under
/// `base` without extension; `split` gives a speaker's split, or the reason to reject it.
pub fn speaker_tree(
    root: &Path,
    base: &str,
    split: impl Fn(&str) -> std::result::Result<String, String>,
) -> Result<Listing> {
    let mut listing = Listing::default();
    for path in audio_files(root, base)? {
        let inner = under(&path, base);
        let parts: Vec<&str> = without_extension(inner).split('/').collect();
        let [speaker, session, _] = parts[..] else {
            listing.reject(
                &path,
                "layout",
                format!("expected {base}/<speaker>/<session>/<utterance>.<ext>"),
            );
            continue;
        };
        match split(speaker) {
            Ok(split) => listing.candidates.push(Candidate {
                speaker: Some(speaker.to_owned()),
                session: Some(session.to_owned()),
                ..Candidate::new(&path, without_extension(inner), &split)
            }),
            Err(reason) => listing.reject(&path, "layout", reason),
        }
    }
    Ok(listing)
}

static VOXCELEB2_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(dev|test)/)?(?:aac|wav|flac)/(([^/]+)/([^/]+)/[^/]+)\.[^./]+$")
        .expect("valid regex")
});

/// VoxCeleb2: `[dev/|test/]{aac,wav,flac}/idNNNNN/<youtube-id>/NNNNN.{m4a,wav,flac}`. A file
/// present in two formats keeps the first path in sorted order (`aac/` before `wav/`).
pub fn voxceleb2(root: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for path in audio_files(root, "")? {
        let Some(m) = VOXCELEB2_PATH.captures(&path) else {
            listing.reject(
                &path,
                "layout",
                "expected [dev/|test/]aac/<speaker>/<session>/<utterance>.m4a (or wav/, flac/)",
            );
            continue;
        };
        let split = m.get(1).map_or("dev", |s| s.as_str());
        listing.candidates.push(Candidate {
            speaker: Some(m[3].to_owned()),
            session: Some(m[4].to_owned()),
            ..Candidate::new(&path, &m[2], split)
        });
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voxceleb1_test_speakers() {
        assert_eq!(voxceleb1_split("id10270"), "test");
        assert_eq!(voxceleb1_split("id10309"), "test");
        assert_eq!(voxceleb1_split("id10310"), "dev");
        assert_eq!(voxceleb1_split("id10001"), "dev");
    }

    #[test]
    fn voxceleb2_paths() {
        let m = VOXCELEB2_PATH
            .captures("test/aac/id00017/01dfn2spqyE/00001.m4a")
            .unwrap();
        assert_eq!(
            (&m[1], &m[2], &m[3], &m[4]),
            (
                "test",
                "id00017/01dfn2spqyE/00001",
                "id00017",
                "01dfn2spqyE"
            )
        );
        let m = VOXCELEB2_PATH
            .captures("wav/id00012/21Uxsk56VDQ/00001.wav")
            .unwrap();
        assert!(m.get(1).is_none());
        assert!(VOXCELEB2_PATH.captures("aac/id00012/00001.m4a").is_none());
    }
}
