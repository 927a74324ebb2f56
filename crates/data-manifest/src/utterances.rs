//! `utterances.parquet`: one row per utterance of a corpus. Paths are relative to the corpus
//! root kept in the file's metadata, so a corpus can move without rewriting its manifest
//! (the root can be overridden when reading).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, UInt16Array, UInt32Array, UInt64Array};

use crate::error::{ManifestError, Result};
use crate::table::{self, Columns, TableKind, optional_strings, optional_value, strings};

pub const KIND: TableKind = TableKind {
    name: "utterances",
    version: 1,
};

/// Metadata key of the corpus root (absolute path).
pub const CORPUS_ROOT_KEY: &str = "speech_dino.corpus_root";

/// Metadata key present when a manifest went through a filter that used speaker labels
/// (its value says which): such a manifest must not feed self-supervised training.
pub const LABEL_FILTERS_KEY: &str = "speech_dino.label_filters";

/// Metadata a manifest carries besides its schema tag and corpus root (scanner, label
/// filters, ...), kept by the utilities that rewrite a manifest.
pub type ExtraMetadata = std::collections::BTreeMap<String, String>;

/// One utterance. `speaker`, `session` and `emotion` are ground truth for evaluation and
/// diagnostics only; self-supervised training never reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Unique id, e.g. `id10270/x6uYqmx31kE/00001`.
    pub utt_id: String,
    /// Audio file, relative to the corpus root.
    pub path: String,
    pub corpus: String,
    pub speaker: Option<String>,
    pub session: Option<String>,
    /// Samples per channel at `sample_rate` (for AAC: without the encoder's priming samples).
    pub num_samples: u64,
    pub sample_rate: u32,
    pub channels: u16,
    /// Codec as probed (e.g. `pcm_s16le`, `flac`, `aac`).
    pub codec: String,
    /// `train`, `test`, `dev`, ... as the corpus defines it.
    pub split: String,
    pub emotion: Option<String>,
    /// Cross-validation fold where the corpus defines one (IEMOCAP session, speaker group).
    pub fold: Option<String>,
    /// The one channel (0-based) of a multi-channel file this utterance is, when the
    /// channels are separate recordings (two-channel telephone SPHERE: one speaker each);
    /// `None`: every channel, downmixed.
    pub channel: Option<u16>,
}

impl Utterance {
    pub fn duration_seconds(&self) -> f64 {
        self.num_samples as f64 / f64::from(self.sample_rate.max(1))
    }

    /// A 16 kHz mono `train` utterance of `seconds` for unit tests.
    #[cfg(test)]
    pub(crate) fn for_test(id: &str, speaker: Option<&str>, seconds: f64) -> Self {
        Utterance {
            utt_id: id.to_owned(),
            path: format!("{id}.wav"),
            corpus: "test".to_owned(),
            speaker: speaker.map(str::to_owned),
            session: None,
            num_samples: (16000.0 * seconds) as u64,
            sample_rate: 16000,
            channels: 1,
            codec: "pcm_s16le".to_owned(),
            split: "train".to_owned(),
            emotion: None,
            fold: None,
            channel: None,
        }
    }
}

/// The id of one channel's utterance of a file whose channels are separate recordings:
/// `-A`, `-B`, ... appended as Kaldi's Switchboard and Fisher recipes name the two sides.
pub fn channel_utt_id(utt_id: &str, channel: u16) -> String {
    let side = char::from(b'A' + (channel % 26) as u8);
    if channel < 26 {
        format!("{utt_id}-{side}")
    } else {
        format!("{utt_id}-{side}{}", channel / 26)
    }
}

/// A corpus manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct UtteranceManifest {
    pub corpus_root: PathBuf,
    pub utterances: Vec<Utterance>,
}

impl UtteranceManifest {
    /// Absolute path of an utterance's audio.
    pub fn audio_path(&self, utterance: &Utterance) -> PathBuf {
        self.corpus_root.join(&utterance.path)
    }

    /// Fails on duplicate utterance ids, listing them.
    pub fn check_unique_ids(&self, file: &Path) -> Result<()> {
        let mut seen = HashSet::new();
        let mut duplicates: Vec<&str> = self
            .utterances
            .iter()
            .filter(|u| !seen.insert(u.utt_id.as_str()))
            .map(|u| u.utt_id.as_str())
            .collect();
        if duplicates.is_empty() {
            return Ok(());
        }
        duplicates.sort_unstable();
        duplicates.dedup();
        let shown: Vec<&str> = duplicates.iter().take(10).copied().collect();
        Err(ManifestError::invalid(
            file,
            format!(
                "{} duplicate utterance id(s): {}{}",
                duplicates.len(),
                shown.join(", "),
                if duplicates.len() > shown.len() {
                    ", ..."
                } else {
                    ""
                }
            ),
        ))
    }

    /// Writes the manifest atomically; duplicate ids are an error.
    pub fn write(&self, path: &Path) -> Result<()> {
        self.write_with_metadata(path, &ExtraMetadata::new())
    }

    /// Writes the manifest atomically with `extra` key-value metadata.
    pub fn write_with_metadata(&self, path: &Path, extra: &ExtraMetadata) -> Result<()> {
        self.check_unique_ids(path)?;
        let u = &self.utterances;
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("utt_id", strings(u.iter().map(|x| x.utt_id.as_str()))),
            ("path", strings(u.iter().map(|x| x.path.as_str()))),
            ("corpus", strings(u.iter().map(|x| x.corpus.as_str()))),
            (
                "speaker",
                optional_strings(u.iter().map(|x| x.speaker.as_deref())),
            ),
            (
                "session",
                optional_strings(u.iter().map(|x| x.session.as_deref())),
            ),
            (
                "num_samples",
                Arc::new(UInt64Array::from_iter_values(
                    u.iter().map(|x| x.num_samples),
                )),
            ),
            (
                "sample_rate",
                Arc::new(UInt32Array::from_iter_values(
                    u.iter().map(|x| x.sample_rate),
                )),
            ),
            (
                "channels",
                Arc::new(UInt16Array::from_iter_values(u.iter().map(|x| x.channels))),
            ),
            ("codec", strings(u.iter().map(|x| x.codec.as_str()))),
            ("split", strings(u.iter().map(|x| x.split.as_str()))),
            (
                "emotion",
                optional_strings(u.iter().map(|x| x.emotion.as_deref())),
            ),
            (
                "fold",
                optional_strings(u.iter().map(|x| x.fold.as_deref())),
            ),
            (
                "channel",
                Arc::new(UInt16Array::from_iter(u.iter().map(|x| x.channel))),
            ),
        ];
        let mut metadata: Vec<(&str, String)> = extra
            .iter()
            .filter(|(k, _)| k.as_str() != CORPUS_ROOT_KEY && k.as_str() != table::SCHEMA_KEY)
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        metadata.push((CORPUS_ROOT_KEY, self.corpus_root.display().to_string()));
        table::write(path, KIND, &metadata, columns)
    }

    /// The extra metadata of the manifest at `path` (read from its footer alone).
    pub fn read_metadata(path: &Path) -> Result<ExtraMetadata> {
        Ok(table::read_metadata(path, KIND)?
            .into_iter()
            .filter(|(k, _)| k != CORPUS_ROOT_KEY && k != table::SCHEMA_KEY)
            .collect())
    }

    /// Reads a manifest; duplicate ids are an error.
    pub fn read(path: &Path) -> Result<Self> {
        let table = table::read(path, KIND)?;
        let corpus_root = PathBuf::from(table.required_metadata(CORPUS_ROOT_KEY)?);
        let mut utterances = Vec::with_capacity(table.num_rows());
        for batch in &table.batches {
            let c = Columns::new(path, batch);
            let (utt_id, rel, corpus, codec, split) = (
                c.utf8("utt_id")?,
                c.utf8("path")?,
                c.utf8("corpus")?,
                c.utf8("codec")?,
                c.utf8("split")?,
            );
            let (speaker, session, emotion) =
                (c.utf8("speaker")?, c.utf8("session")?, c.utf8("emotion")?);
            let fold = c.optional_utf8("fold")?;
            // Manifests written before the column existed have every channel downmixed.
            let channel = c.optional_u16("channel")?;
            let (num_samples, sample_rate, channels) = (
                c.u64("num_samples")?,
                c.u32("sample_rate")?,
                c.u16("channels")?,
            );
            for row in 0..batch.num_rows() {
                utterances.push(Utterance {
                    utt_id: c.require(utt_id, "utt_id", row)?.to_owned(),
                    path: c.require(rel, "path", row)?.to_owned(),
                    corpus: c.require(corpus, "corpus", row)?.to_owned(),
                    speaker: optional_value(speaker, row),
                    session: optional_value(session, row),
                    num_samples: num_samples.value(row),
                    sample_rate: sample_rate.value(row),
                    channels: channels.value(row),
                    codec: c.require(codec, "codec", row)?.to_owned(),
                    split: c.require(split, "split", row)?.to_owned(),
                    emotion: optional_value(emotion, row),
                    fold: fold.and_then(|f| optional_value(f, row)),
                    channel: channel.and_then(|c| (!c.is_null(row)).then(|| c.value(row))),
                });
            }
        }
        let manifest = UtteranceManifest {
            corpus_root,
            utterances,
        };
        manifest.check_unique_ids(path)?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> UtteranceManifest {
        let utt = |id: &str, speaker: Option<&str>, emotion: Option<&str>| Utterance {
            utt_id: id.to_owned(),
            path: format!("wav/{id}.wav"),
            corpus: "fixture".to_owned(),
            speaker: speaker.map(str::to_owned),
            session: Some("sess".to_owned()),
            num_samples: 32000,
            sample_rate: 16000,
            channels: 1,
            codec: "pcm_s16le".to_owned(),
            split: "train".to_owned(),
            emotion: emotion.map(str::to_owned),
            fold: None,
            channel: None,
        };
        UtteranceManifest {
            corpus_root: PathBuf::from("/data/corpus"),
            utterances: vec![
                utt("a/s/1", Some("a"), None),
                utt("b/s/1", None, Some("HAP")),
                Utterance {
                    channel: Some(1),
                    ..utt("c/s/1-B", None, None)
                },
            ],
        }
    }

    #[test]
    fn parquet_round_trip_keeps_rows_and_corpus_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("utterances.parquet");
        let manifest = sample();
        manifest.write(&path).unwrap();
        assert_eq!(UtteranceManifest::read(&path).unwrap(), manifest);
        assert_eq!(
            manifest.audio_path(&manifest.utterances[0]),
            PathBuf::from("/data/corpus/wav/a/s/1.wav")
        );
    }

    #[test]
    fn duplicate_ids_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("utterances.parquet");
        let mut manifest = sample();
        manifest.utterances.push(manifest.utterances[0].clone());
        let err = manifest.write(&path).unwrap_err().to_string();
        assert!(err.contains("1 duplicate utterance id(s): a/s/1"), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn another_table_kind_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trials.parquet");
        crate::trials::TrialList { trials: vec![] }
            .write(&path)
            .unwrap();
        let err = UtteranceManifest::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("is a trials table, expected utterances"),
            "{err}"
        );
    }
}
