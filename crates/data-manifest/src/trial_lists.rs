//! Trial list text files (VoxCeleb1 O/E/H, original and cleaned, the fixture's `trials.txt`)
//! read into [`TrialList`]s, and checked against the manifest of the utterances they name.
//!
//! Lines are `label enroll test` as VoxCeleb ships them (`1 id10270/x6uYqmx31kE/00001.wav
//! id10270/8jEAjG6SegY/00008.wav`), or Kaldi's `enroll test target|nontarget`. Paths become
//! utterance ids by dropping the extension, which is how the VoxCeleb scanners name
//! utterances.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::error::{ManifestError, Result};
use crate::scan::listing::without_extension;
use crate::summary::Summary;
use crate::trials::{Trial, TrialList};
use crate::utterances::UtteranceManifest;

/// An official list: its file name, what it is called, how many trials it has.
#[derive(Debug, Clone, Copy)]
pub struct KnownList {
    pub file_name: &'static str,
    pub name: &'static str,
    pub trials: usize,
}

/// The VoxCeleb1 verification lists.
pub const KNOWN_LISTS: &[KnownList] = &[
    KnownList {
        file_name: "veri_test.txt",
        name: "VoxCeleb1-O",
        trials: 37_720,
    },
    KnownList {
        file_name: "veri_test2.txt",
        name: "VoxCeleb1-O (cleaned)",
        trials: 37_611,
    },
    KnownList {
        file_name: "list_test_all.txt",
        name: "VoxCeleb1-E",
        trials: 581_480,
    },
    KnownList {
        file_name: "list_test_all2.txt",
        name: "VoxCeleb1-E (cleaned)",
        trials: 579_818,
    },
    KnownList {
        file_name: "list_test_hard.txt",
        name: "VoxCeleb1-H",
        trials: 552_536,
    },
    KnownList {
        file_name: "list_test_hard2.txt",
        name: "VoxCeleb1-H (cleaned)",
        trials: 550_894,
    },
];

/// The official list a file name stands for.
pub fn known_list(path: &Path) -> Option<&'static KnownList> {
    let name = path.file_name()?.to_str()?;
    KNOWN_LISTS.iter().find(|k| k.file_name == name)
}

/// Parses a trial list text file.
pub fn read_text(path: &Path) -> Result<TrialList> {
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_text(&text).map_err(|message| ManifestError::invalid(path, message))
}

/// The list as text in VoxCeleb's form, `label enroll test` per line (label 1 for a target
/// trial); [`parse_text`] reads it back.
pub fn to_text(list: &TrialList) -> String {
    list.trials
        .iter()
        .map(|t| format!("{} {} {}\n", u8::from(t.target), t.enroll, t.test))
        .collect()
}

/// The utterance id a trial or score line names: the name without its audio extension
/// (`id10270/x6uYqmx31kE/00001.wav` -> `id10270/x6uYqmx31kE/00001`).
pub fn utterance_id(name: &str) -> &str {
    without_extension(name)
}

/// Parses trial lines; the error names the line.
pub fn parse_text(text: &str) -> std::result::Result<TrialList, String> {
    let mut trials = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let trial = match fields[..] {
            [] => continue,
            [label @ ("0" | "1"), enroll, test] => Trial {
                enroll: without_extension(enroll).to_owned(),
                test: without_extension(test).to_owned(),
                target: label == "1",
            },
            [enroll, test, label @ ("target" | "nontarget")] => Trial {
                enroll: without_extension(enroll).to_owned(),
                test: without_extension(test).to_owned(),
                target: label == "target",
            },
            _ => {
                return Err(format!(
                    "line {}: expected `label enroll test` (label 0 or 1) or `enroll test \
                     target|nontarget`, got {line:?}",
                    number + 1
                ));
            }
        };
        trials.push(trial);
    }
    Ok(TrialList { trials })
}

/// Utterance ids a trial list names that the manifest lacks, sorted.
pub fn missing_utterances(list: &TrialList, manifest: &UtteranceManifest) -> Vec<String> {
    let known: HashSet<&str> = manifest
        .utterances
        .iter()
        .map(|u| u.utt_id.as_str())
        .collect();
    let missing: BTreeSet<&str> = list
        .trials
        .iter()
        .flat_map(|t| [t.enroll.as_str(), t.test.as_str()])
        .filter(|id| !known.contains(id))
        .collect();
    missing.into_iter().map(str::to_owned).collect()
}

/// Most missing names shown in an error.
const SHOWN_MISSING: usize = 20;

/// The error for a list whose utterances are missing from `manifest_path`.
pub fn missing_error(list_path: &Path, manifest_path: &Path, missing: &[String]) -> ManifestError {
    let shown = &missing[..missing.len().min(SHOWN_MISSING)];
    ManifestError::invalid(
        list_path,
        format!(
            "{} trial utterance(s) are not in the manifest {}: {}{}",
            missing.len(),
            manifest_path.display(),
            shown.join(", "),
            if missing.len() > shown.len() {
                format!(" and {} more", missing.len() - shown.len())
            } else {
                String::new()
            }
        ),
    )
}

/// What `trials` did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct TrialsSummary {
    pub list: String,
    /// The official list the file name stands for, if any.
    pub known_as: Option<String>,
    pub expected_trials: Option<usize>,
    pub trials: usize,
    pub targets: usize,
    pub nontargets: usize,
    pub utterances: usize,
    /// Trials dropped because an utterance is missing from the manifest (`--drop-missing`).
    pub dropped: usize,
    pub missing_utterances: usize,
}

impl TrialsSummary {
    pub fn new(list_path: &Path, list: &TrialList, dropped: usize, missing: usize) -> Self {
        let known = known_list(list_path);
        let (targets, nontargets) = list.counts();
        let utterances: HashSet<&str> = list
            .trials
            .iter()
            .flat_map(|t| [t.enroll.as_str(), t.test.as_str()])
            .collect();
        TrialsSummary {
            list: list_path.display().to_string(),
            known_as: known.map(|k| k.name.to_owned()),
            expected_trials: known.map(|k| k.trials),
            trials: list.trials.len(),
            targets,
            nontargets,
            utterances: utterances.len(),
            dropped,
            missing_utterances: missing,
        }
    }
}

impl Summary for TrialsSummary {
    fn paragraph(&self) -> String {
        let mut text = format!(
            "Trial list {}{}: {} trials ({} target, {} non-target) over {} utterances",
            self.list,
            self.known_as
                .as_ref()
                .map(|k| format!(" ({k})"))
                .unwrap_or_default(),
            self.trials + self.dropped,
            self.targets,
            self.nontargets,
            self.utterances
        );
        if self.dropped > 0 {
            text += &format!(
                "; {} trials DROPPED because {} of their utterances are not in the manifest \
                 ({} kept)",
                self.dropped, self.missing_utterances, self.trials
            );
        }
        if let Some(expected) = self.expected_trials
            && expected != self.trials + self.dropped
        {
            text += &format!("; the official list has {expected} trials");
        }
        text + "."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_line_formats() {
        let list = parse_text(
            "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n\n\
             a/1 b/2.flac nontarget\n",
        )
        .unwrap();
        assert_eq!(
            list.trials,
            vec![
                Trial {
                    enroll: "id10270/x6uYqmx31kE/00001".into(),
                    test: "id10270/8jEAjG6SegY/00008".into(),
                    target: true,
                },
                Trial {
                    enroll: "a/1".into(),
                    test: "b/2".into(),
                    target: false,
                },
            ]
        );
        let err = parse_text("1 a/1.wav\n").unwrap_err();
        assert!(err.starts_with("line 1: expected"), "{err}");
    }

    #[test]
    fn text_reads_back_as_the_same_list() {
        let list = parse_text("1 a/1 a/2\n0 a/1 b/7\n").unwrap();
        assert_eq!(to_text(&list), "1 a/1 a/2\n0 a/1 b/7\n");
        assert_eq!(parse_text(&to_text(&list)).unwrap(), list);
    }

    #[test]
    fn known_lists_by_file_name() {
        let k = known_list(Path::new("/data/vox1/list_test_hard2.txt")).unwrap();
        assert_eq!((k.name, k.trials), ("VoxCeleb1-H (cleaned)", 550_894));
        assert!(known_list(Path::new("trials.txt")).is_none());
    }
}
