//! The fixture corpus of `cargo xtask fixture`: four parts under one root, each listed by
//! the layout it imitates. The corpus root of every part's manifest is the fixture root, so
//! paths keep their part folder (`emotion/AudioWAV/...`); utterance ids follow the imitated
//! layout (`id00001/<session>/00001`, `1001_DFA_ANG_XX`, `noise/free-sound/...`).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{ManifestError, Result};
use crate::scan::Listing;
use crate::scan::layouts::{augmentation, emotion, voxceleb};

/// A part of the fixture corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FixturePart {
    /// `wav/<speaker>/<session>/NNNNN.wav`; split `train`/`test` from `fixture.json`.
    Speech,
    /// `emotion/AudioWAV/*.wav` (CREMA-D naming).
    Emotion,
    /// `musan/{noise,music,speech}/...`.
    Musan,
    /// `rirs/...` (RIRS_NOISES layout).
    Rirs,
}

impl FixturePart {
    pub fn name(self) -> &'static str {
        match self {
            FixturePart::Speech => "speech",
            FixturePart::Emotion => "emotion",
            FixturePart::Musan => "musan",
            FixturePart::Rirs => "rirs",
        }
    }
}

/// The part of `fixture.json` the scan needs.
#[derive(Deserialize)]
struct FixtureSpeakers {
    train_speakers: Vec<String>,
    test_speakers: Vec<String>,
}

/// Lists one part of the fixture at `root`.
pub fn list(root: &Path, part: FixturePart) -> Result<Listing> {
    match part {
        FixturePart::Speech => {
            let json = root.join("fixture.json");
            let text = std::fs::read_to_string(&json).map_err(|source| ManifestError::Io {
                path: json.clone(),
                source,
            })?;
            let speakers: FixtureSpeakers = serde_json::from_str(&text)
                .map_err(|e| ManifestError::invalid(&json, format!("unreadable: {e}")))?;
            let split: HashMap<String, &str> = speakers
                .train_speakers
                .into_iter()
                .map(|s| (s, "train"))
                .chain(speakers.test_speakers.into_iter().map(|s| (s, "test")))
                .collect();
            voxceleb::speaker_tree(root, "wav", |speaker| {
                split
                    .get(speaker)
                    .map(|s| (*s).to_owned())
                    .ok_or_else(|| format!("speaker {speaker} is not listed in fixture.json"))
            })
        }
        FixturePart::Emotion => emotion::crema_d(root, "emotion/AudioWAV"),
        FixturePart::Musan => augmentation::musan(root, "musan"),
        FixturePart::Rirs => augmentation::rirs(root, "rirs"),
    }
}
