//! Emotion corpora: CREMA-D, IEMOCAP, MSP-Podcast and RAVDESS. `speaker` is the actor,
//! `emotion` the corpus's own label, `fold` the corpus's fold where it defines one, `split`
//! its official split where it has one (`all` otherwise).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::LazyLock;

use regex::Regex;

use crate::error::{ManifestError, Result};
use crate::scan::listing::{audio_files, stem};
use crate::scan::{Candidate, EXCLUDED, Listing};

/// Split of corpora without an official one.
const NO_SPLIT: &str = "all";

/// CREMA-D's six emotion codes.
pub const CREMA_D_EMOTIONS: &[&str] = &["ANG", "DIS", "FEA", "HAP", "NEU", "SAD"];

static CREMA_D_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$").expect("valid regex")
});

/// The folder of CREMA-D's WAV files: `AudioWAV/` when the root has one, else the root.
pub fn crema_d_folder(root: &Path) -> &'static str {
    if root.join("AudioWAV").is_dir() {
        "AudioWAV"
    } else {
        ""
    }
}

/// CREMA-D: `<actor>_<sentence>_<EMO>_<level>.wav` under `root/base`.
pub fn crema_d(root: &Path, base: &str) -> Result<Listing> {
    let mut listing = Listing::default();
    for path in audio_files(root, base)? {
        let utt = stem(&path);
        let parsed = CREMA_D_NAME
            .captures(utt)
            .filter(|m| CREMA_D_EMOTIONS.contains(&&m[3]));
        let Some(m) = parsed else {
            listing.reject(
                &path,
                "layout",
                format!(
                    "expected <actor>_<sentence>_<EMO>_<level>.wav with EMO one of {}",
                    CREMA_D_EMOTIONS.join(" ")
                ),
            );
            continue;
        };
        listing.candidates.push(Candidate {
            speaker: Some(m[1].to_owned()),
            emotion: Some(m[3].to_owned()),
            ..Candidate::new(&path, utt, NO_SPLIT)
        });
    }
    Ok(listing)
}

/// IEMOCAP labels merged into the usual 4-class set (excited counts as happy).
fn iemocap_four_class(label: &str) -> Option<&'static str> {
    match label {
        "neu" => Some("neu"),
        "hap" | "exc" => Some("hap"),
        "ang" => Some("ang"),
        "sad" => Some("sad"),
        _ => None,
    }
}

/// IEMOCAP: for each of `Session1`..`Session5`, the turn labels of
/// `dialog/EmoEvaluation/*.txt` (`[start - end]<TAB>turn<TAB>label<TAB>[V, A, D]`) joined with
/// `sentences/wav/<dialog>/<turn>.wav`. The speaker is the session plus the gender letter of
/// the turn (`Ses01F_impro01_M003` is spoken by `Ses01M`); the session is the fold.
pub fn iemocap(root: &Path, all_emotions: bool) -> Result<Listing> {
    let mut listing = Listing::default();
    let mut sessions = 0;
    for n in 1..=5 {
        let session = format!("Session{n}");
        if !root.join(&session).is_dir() {
            continue;
        }
        sessions += 1;
        let labels = iemocap_labels(&root.join(&session).join("dialog/EmoEvaluation"))?;
        let audio = audio_files(root, &format!("{session}/sentences/wav"))?;
        let mut labelled = HashSet::new();
        for path in &audio {
            let turn = stem(path);
            let Some(label) = labels.get(turn) else {
                listing.reject(path, EXCLUDED, "no label in dialog/EmoEvaluation");
                continue;
            };
            labelled.insert(turn.to_owned());
            let emotion = if all_emotions {
                Some(label.as_str())
            } else {
                iemocap_four_class(label)
            };
            let Some(emotion) = emotion else {
                listing.reject(
                    path,
                    EXCLUDED,
                    format!("label {label} is outside the 4-class set (neu, hap+exc, ang, sad)"),
                );
                continue;
            };
            let Some(gender) = turn.rsplit('_').next().and_then(|t| t.get(..1)) else {
                listing.reject(path, "layout", "turn name without a speaker part");
                continue;
            };
            let speaker = format!("{}{gender}", turn.get(..5).unwrap_or(turn));
            listing.candidates.push(Candidate {
                speaker: Some(speaker),
                session: Some(session.clone()),
                emotion: Some(emotion.to_owned()),
                fold: Some(session.clone()),
                ..Candidate::new(path, turn, NO_SPLIT)
            });
        }
        for turn in labels.keys().filter(|t| !labelled.contains(*t)) {
            let dialog = turn.rsplit_once('_').map_or(turn.as_str(), |(d, _)| d);
            let path = format!("{session}/sentences/wav/{dialog}/{turn}.wav");
            listing.reject(
                &path,
                "missing",
                "labelled in dialog/EmoEvaluation but no audio file",
            );
        }
    }
    if sessions == 0 {
        return Err(ManifestError::invalid(root, "no Session1..Session5 folder"));
    }
    Ok(listing)
}

/// Turn name -> label from every `*.txt` in an EmoEvaluation folder.
fn iemocap_labels(folder: &Path) -> Result<BTreeMap<String, String>> {
    let io = |source, path: &Path| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut files: Vec<_> = std::fs::read_dir(folder)
        .map_err(|e| io(e, folder))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "txt") && p.is_file())
        .collect();
    files.sort();
    let mut labels = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| io(e, &file))?;
        for (number, line) in text.lines().enumerate() {
            if !line.starts_with('[') {
                continue;
            }
            let fields: Vec<&str> = line.split('\t').collect();
            let (Some(turn), Some(label)) = (fields.get(1), fields.get(2)) else {
                return Err(ManifestError::invalid(
                    &file,
                    format!(
                        "line {}: expected [start - end]<TAB>turn<TAB>label<TAB>[V, A, D]",
                        number + 1
                    ),
                ));
            };
            labels.insert(turn.trim().to_owned(), label.trim().to_owned());
        }
    }
    Ok(labels)
}

/// MSP-Podcast emotion classes kept by default (no `O` other, no `X` no agreement).
pub const MSP_PODCAST_EMOTIONS: &[&str] = &["A", "S", "H", "U", "F", "D", "C", "N"];

/// MSP-Podcast: `Audios/<file>` labelled by `Labels/labels_consensus.csv` (columns
/// `FileName`, `EmoClass`, `SpkrID`, `Split_Set`).
pub fn msp_podcast(root: &Path, all_emotions: bool) -> Result<Listing> {
    let csv_path = root.join("Labels/labels_consensus.csv");
    let mut reader = csv::Reader::from_path(&csv_path).map_err(|e| csv_error(&csv_path, e))?;
    let headers = reader
        .headers()
        .map_err(|e| csv_error(&csv_path, e))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| ManifestError::invalid(&csv_path, format!("column {name} is missing")))
    };
    let (file_col, class_col, speaker_col, split_col) = (
        column("FileName")?,
        column("EmoClass")?,
        column("SpkrID")?,
        column("Split_Set")?,
    );
    let audio: HashSet<String> = audio_files(root, "Audios")?.into_iter().collect();
    let mut labelled = HashSet::new();
    let mut listing = Listing::default();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(&csv_path, e))?;
        let field = |i: usize| record.get(i).unwrap_or("").trim();
        let path = format!("Audios/{}", field(file_col));
        if !audio.contains(&path) {
            listing.reject(
                &path,
                "missing",
                "labelled in labels_consensus.csv but no audio file",
            );
            continue;
        }
        labelled.insert(path.clone());
        let class = field(class_col);
        if !all_emotions && !MSP_PODCAST_EMOTIONS.contains(&class) {
            listing.reject(
                &path,
                EXCLUDED,
                format!("EmoClass {class} is not an emotion class"),
            );
            continue;
        }
        let speaker = field(speaker_col);
        listing.candidates.push(Candidate {
            speaker: (!speaker.is_empty() && !speaker.eq_ignore_ascii_case("unknown"))
                .then(|| speaker.to_owned()),
            emotion: Some(class.to_owned()),
            ..Candidate::new(&path, stem(&path), &field(split_col).to_lowercase())
        });
    }
    for path in audio.iter().filter(|p| !labelled.contains(*p)) {
        listing.reject(path, EXCLUDED, "no label in labels_consensus.csv");
    }
    Ok(listing)
}

fn csv_error(path: &Path, e: csv::Error) -> ManifestError {
    ManifestError::invalid(path, format!("unreadable CSV: {e}"))
}

/// RAVDESS emotion names by code `01`..`08`.
pub const RAVDESS_EMOTIONS: &[&str] = &[
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
];

static RAVDESS_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$").expect("valid regex")
});

/// RAVDESS: `MM-VV-EE-II-SS-RR-AA.{wav,flac}` anywhere under the root (`Actor_AA/` folders in
/// the distribution). Audio-only speech (modality 03, vocal channel 01) is kept; songs are
/// excluded; a file in an `Actor_NN` folder of another actor is rejected.
pub fn ravdess(root: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    for path in audio_files(root, "")? {
        let utt = stem(&path);
        let Some(m) = RAVDESS_NAME.captures(utt) else {
            listing.reject(&path, "layout", "expected MM-VV-EE-II-SS-RR-AA.<ext>");
            continue;
        };
        let code = |i: usize| m[i].parse::<usize>().expect("two digits");
        if &m[2] == "02" {
            listing.reject(&path, EXCLUDED, "song (vocal channel 02), not speech");
            continue;
        }
        let emotion = (m[1] == *"03" && m[2] == *"01")
            .then(|| RAVDESS_EMOTIONS.get(code(3).wrapping_sub(1)))
            .flatten();
        let Some(emotion) = emotion else {
            listing.reject(
                &path,
                "layout",
                "not an audio-only speech file (03-01-..) with an emotion code 01-08",
            );
            continue;
        };
        let speaker = format!("Actor_{}", &m[7]);
        let folder = path.rsplit('/').nth(1);
        if let Some(folder) = folder.filter(|f| f.starts_with("Actor_") && *f != speaker) {
            listing.reject(
                &path,
                "layout",
                format!("file of {speaker} in folder {folder}"),
            );
            continue;
        }
        listing.candidates.push(Candidate {
            speaker: Some(speaker),
            emotion: Some(emotion.to_string()),
            ..Candidate::new(&path, utt, NO_SPLIT)
        });
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iemocap_classes() {
        assert_eq!(iemocap_four_class("exc"), Some("hap"));
        assert_eq!(iemocap_four_class("fru"), None);
    }
}
