//! LibriSpeech (`[<subset>/]<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac`) and
//! CN-Celeb (`data/<speaker>/<genre>-<session>-<utterance>.{flac,wav}`): speaker corpora
//! whose recording session is in the path, the chapter for LibriSpeech (one book chapter,
//! one recording) and `<genre>-<session>` for CN-Celeb.

use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::Result;
use crate::scan::listing::{audio_files, under};
use crate::scan::{Candidate, Listing};

static LIBRISPEECH_PATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:([^/]+)/)?(\d+)/(\d+)/((\d+)-(\d+)-\d+)\.[^./]+$").expect("valid regex")
});

/// LibriSpeech: the utterance id is the file stem (`19-198-0000`), the speaker its first
/// field, the session the chapter; the split is the subset folder (`train-clean-100`, ...)
/// or `train` when the root is a subset. A file whose name disagrees with its folders is
/// rejected.
pub fn librispeech(root: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for path in audio_files(root, "")? {
        let Some(m) = LIBRISPEECH_PATH.captures(&path) else {
            listing.reject(
                &path,
                "layout",
                "expected [<subset>/]<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac",
            );
            continue;
        };
        if m[2] != m[5] || m[3] != m[6] {
            listing.reject(
                &path,
                "layout",
                format!(
                    "file name {} disagrees with its folders {}/{}",
                    &m[4], &m[2], &m[3]
                ),
            );
            continue;
        }
        let split = m.get(1).map_or("train", |s| s.as_str());
        listing.candidates.push(Candidate {
            speaker: Some(m[2].to_owned()),
            session: Some(m[3].to_owned()),
            ..Candidate::new(&path, &m[4], split)
        });
    }
    Ok(listing)
}

static CNCELEB_PATH: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([^/]+)/(([^/]+-\d+)-\d+)\.[^./]+$").expect("valid regex"));

/// CN-Celeb: files under `data/`; the utterance id is `<speaker>/<stem>`, the session
/// `<genre>-<session>` (e.g. `interview-01`), the split `train` (the `eval/` folder with
/// its enrolment and test files is not scanned).
pub fn cnceleb(root: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for path in audio_files(root, "data")? {
        let inner = under(&path, "data");
        let Some(m) = CNCELEB_PATH.captures(inner) else {
            listing.reject(
                &path,
                "layout",
                "expected data/<speaker>/<genre>-<session>-<utterance>.flac",
            );
            continue;
        };
        let utt_id = format!("{}/{}", &m[1], &m[2]);
        listing.candidates.push(Candidate {
            speaker: Some(m[1].to_owned()),
            session: Some(m[3].to_owned()),
            ..Candidate::new(&path, &utt_id, "train")
        });
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn librispeech_and_cnceleb_paths() {
        let m = LIBRISPEECH_PATH
            .captures("train-clean-100/19/198/19-198-0001.flac")
            .unwrap();
        assert_eq!(
            (&m[1], &m[2], &m[3], &m[4]),
            ("train-clean-100", "19", "198", "19-198-0001")
        );
        assert!(
            LIBRISPEECH_PATH
                .captures("19/198/19-198-0001.flac")
                .unwrap()
                .get(1)
                .is_none()
        );
        assert!(LIBRISPEECH_PATH.captures("19/19-198-0001.flac").is_none());
        let m = CNCELEB_PATH
            .captures("id00012/live_broadcast-02-013.flac")
            .unwrap();
        assert_eq!(
            (&m[1], &m[2], &m[3]),
            ("id00012", "live_broadcast-02-013", "live_broadcast-02")
        );
        assert!(CNCELEB_PATH.captures("id00012/singing.flac").is_none());
    }
}
