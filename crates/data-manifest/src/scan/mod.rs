//! Corpus scanners: a corpus folder becomes an utterance manifest plus a rejects table.
//!
//! A scan has two steps. A [`Layout`] lists the corpus: it walks the folder (and reads label
//! files) and returns one [`Candidate`] per utterance with the labels its layout gives, plus
//! the files it cannot place. Then every candidate's header is probed in parallel
//! ([`crate::probe`]). Everything found but not in the manifest lands in `rejects.parquet`
//! with a reason `<category>: <details>`:
//!
//! - bad input (`empty`, `truncated`, `not audio`, `corrupt`, `unsupported`, `zero-length`,
//!   `unreadable`, `layout` for a file whose path the layout cannot read, `missing` for a
//!   label that names no file or for an entry the walk cannot read (a symbolic-link loop, a
//!   dangling link, a folder without permission), `duplicate` for a second file with an
//!   utterance id already taken: the first path in sorted order that probes well is kept)
//!   counts towards the reject share that
//!   `--max-reject-fraction` bounds;
//! - `excluded` files were left out by design (an IEMOCAP label outside the 4-class set, an
//!   MSP-Podcast file without a label, a RAVDESS song) and do not count.
//!
//! Conventions of the scanners (the other stages rely on them):
//!
//! | corpus | `utt_id` | `speaker` | `session` | `split` | `emotion` | `fold` |
//! |---|---|---|---|---|---|---|
//! | voxceleb1 | path under `wav/` without extension (`id10270/x6uYqmx31kE/00001`) | `idNNNNN` | YouTube id | `test` for the 40 verification test speakers id10270-id10309, else `dev` | - | - |
//! | voxceleb2 | path under `aac/` (or `wav/`, `flac/`) without extension | `idNNNNN` | YouTube id | `dev`/`test` from a `dev/` or `test/` folder above, else `dev` | - | - |
//! | librispeech | file stem (`19-198-0001`) | `19` | chapter (`198`) | subset folder (`train-clean-100`), else `train` | - | - |
//! | cnceleb | `<speaker>/<stem>` under `data/` (`id00012/interview-01-003`) | `id00012` | `<genre>-<session>` (`interview-01`) | `train` | - | - |
//! | generic | path relative to the root without extension, or the regex group `utt` | path component or regex group | same | `--split` or regex group | regex group | regex group |
//! | crema-d | file stem (`1001_DFA_ANG_XX`) | actor (`1001`) | - | `all` | `ANG DIS FEA HAP NEU SAD` | - |
//! | iemocap | turn name (`Ses01F_impro01_F000`) | `Ses01F` / `Ses01M` (session and the turn speaker's gender) | `Session1` | `all` | `neu hap ang sad` (`exc` merged into `hap`) | `Session1` |
//! | msp-podcast | file stem | `SpkrID` (none when `Unknown`) | - | `Split_Set` lower-cased (`train`, `development`, `test1`, ...) | `EmoClass` (`A S H U F D C N`) | - |
//! | ravdess | file stem (`03-01-05-01-02-01-12`) | `Actor_NN` | - | `all` | `neutral calm happy sad angry fearful disgust surprised` | - |
//! | musan | path relative to the root without extension | - | - | `noise` / `music` / `speech` | - | - |
//! | rirs | path relative to the root without extension | - | - | `smallroom` / `mediumroom` / `largeroom` / `real` / `isotropic_noise` / `pointsource_noise` | - | - |
//! | fixture | as voxceleb1 (speech), crema-d (emotion), musan, rirs for its four parts | | | speech: `train` / `test` from `fixture.json` | | |

pub mod layouts;
pub(crate) mod listing;
mod probe_all;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use stage_kit::Shard;

use crate::error::{ManifestError, Result};
use crate::probe::reason_category;
use crate::rejects::{Reject, RejectList};
use crate::stats::counts;
use crate::summary::Summary;
use crate::utterances::UtteranceManifest;

pub use layouts::{FixturePart, GenericOptions, Layout};
pub use listing::{AUDIO_EXTENSIONS, Candidate, Listing, audio_files};

/// Metadata key naming the scanner that wrote a manifest (`voxceleb1`, `fixture/speech`, ...).
pub const SCANNER_KEY: &str = "speech_dino.scanner";

/// Reject category of files left out by design; they do not count as rejects.
pub const EXCLUDED: &str = "excluded";

/// How to run a scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Probing threads (0: one per core).
    pub threads: usize,
    /// Which part of the candidates this process probes.
    pub shard: Shard,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            threads: 0,
            shard: Shard::WHOLE,
        }
    }
}

/// A finished scan.
#[derive(Debug, Clone)]
pub struct ScanOutcome {
    pub manifest: UtteranceManifest,
    /// Every file found but not in the manifest, with the reason.
    pub rejects: RejectList,
    pub summary: ScanSummary,
}

/// Headline numbers of a scan, printed and written as JSON for the pipeline report.
#[derive(Debug, Clone, Serialize)]
pub struct ScanSummary {
    pub scanner: String,
    pub corpus_root: PathBuf,
    pub shard: String,
    pub utterances: usize,
    pub hours: f64,
    pub speakers: usize,
    pub emotions: BTreeMap<String, usize>,
    pub splits: BTreeMap<String, usize>,
    /// Bad-input rejects (excluded files not counted).
    pub rejected: usize,
    /// `rejected / (utterances + rejected)`.
    pub reject_fraction: f64,
    pub rejects_by_reason: BTreeMap<String, usize>,
    pub excluded: usize,
    pub excluded_by_reason: BTreeMap<String, usize>,
    pub probe_seconds: f64,
    pub files_per_second: f64,
}

impl Summary for ScanSummary {
    fn paragraph(&self) -> String {
        let mut text = format!(
            "Scanned {} ({}, shard {}): {} utterances, {:.2} h, {} speakers",
            self.corpus_root.display(),
            self.scanner,
            self.shard,
            self.utterances,
            self.hours,
            self.speakers
        );
        if !self.splits.is_empty() {
            text += &format!("; splits: {}", counts(&self.splits));
        }
        if !self.emotions.is_empty() {
            text += &format!("; emotions: {}", counts(&self.emotions));
        }
        text += &format!(
            ". Rejected {} file(s) ({:.2} %)",
            self.rejected,
            100.0 * self.reject_fraction
        );
        if self.rejected > 0 {
            text += &format!(": {}", counts(&self.rejects_by_reason));
        }
        if self.excluded > 0 {
            text += &format!(
                "; excluded {} by design: {}",
                self.excluded,
                counts(&self.excluded_by_reason)
            );
        }
        text + &format!(
            ". Probed at {:.0} files/s in {:.1} s.",
            self.files_per_second, self.probe_seconds
        )
    }
}

/// Probes `candidates` (paths relative to `root`) as a scan does, on `threads` threads (0:
/// one per core): their utterances (one per channel of a file whose channels are separate
/// recordings), in candidate order, and the rejects. For callers that list files themselves.
pub fn probe_candidates(
    root: &Path,
    corpus: &str,
    candidates: Vec<Candidate>,
    threads: usize,
) -> Result<(Vec<crate::Utterance>, Vec<Reject>)> {
    probe_all::probe_all(root, corpus, candidates, threads)
}

/// Lists and probes the corpus at `root` as `layout` describes it.
pub fn scan(layout: &Layout, root: &Path, options: &ScanOptions) -> Result<ScanOutcome> {
    let root = std::path::absolute(root).map_err(|source| ManifestError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if !root.is_dir() {
        return Err(ManifestError::invalid(&root, "corpus root is not a folder"));
    }
    let listed = layout.list(&root)?;
    let (candidates, mut rejects) = listed.numbered_by_id();
    rejects.extend(listing::unreadable_entries(&root));
    // Listing rejects belong to shard 0 so that merged shards report each once.
    if options.shard.index != 0 {
        rejects.clear();
    }
    // A shard owns every file of its utterance ids, and picks one after probing.
    let mine: Vec<Candidate> = candidates
        .into_iter()
        .filter(|(_, id)| options.shard.owns(*id))
        .map(|(c, _)| c)
        .collect();
    let started = Instant::now();
    let (utterances, probe_rejects) =
        probe_all::probe_all(&root, layout.corpus(), mine, options.threads)?;
    let probe_seconds = started.elapsed().as_secs_f64();
    let probed = utterances.len() + probe_rejects.len();
    let (utterances, duplicates) = listing::first_of_each_id(utterances, |u| (&u.utt_id, &u.path));
    rejects.extend(probe_rejects);
    rejects.extend(duplicates);
    rejects.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest = UtteranceManifest {
        corpus_root: root.clone(),
        utterances,
    };
    let summary = summarise(
        layout,
        &root,
        options.shard,
        &manifest,
        &rejects,
        probe_seconds,
        probed,
    );
    Ok(ScanOutcome {
        manifest,
        rejects: RejectList { rejects },
        summary,
    })
}

fn summarise(
    layout: &Layout,
    root: &Path,
    shard: Shard,
    manifest: &UtteranceManifest,
    rejects: &[Reject],
    probe_seconds: f64,
    probed: usize,
) -> ScanSummary {
    let mut rejects_by_reason = BTreeMap::new();
    let mut excluded_by_reason = BTreeMap::new();
    for reject in rejects {
        let category = reason_category(&reject.reason);
        if category == EXCLUDED {
            let detail = reject.reason[category.len() + 1..].trim().to_owned();
            *excluded_by_reason.entry(detail).or_insert(0) += 1;
        } else {
            *rejects_by_reason.entry(category.to_owned()).or_insert(0) += 1;
        }
    }
    let rejected: usize = rejects_by_reason.values().sum();
    let excluded: usize = excluded_by_reason.values().sum();
    let u = &manifest.utterances;
    let mut speakers = HashMap::new();
    let mut emotions = BTreeMap::new();
    let mut splits = BTreeMap::new();
    for utterance in u {
        if let Some(s) = &utterance.speaker {
            speakers.insert(s.as_str(), ());
        }
        if let Some(e) = &utterance.emotion {
            *emotions.entry(e.clone()).or_insert(0) += 1;
        }
        *splits.entry(utterance.split.clone()).or_insert(0) += 1;
    }
    ScanSummary {
        scanner: layout.name(),
        corpus_root: root.to_path_buf(),
        shard: shard.to_string(),
        utterances: u.len(),
        hours: u.iter().map(|x| x.duration_seconds()).sum::<f64>() / 3600.0,
        speakers: speakers.len(),
        emotions,
        splits,
        rejected,
        reject_fraction: rejected as f64 / (u.len() + rejected).max(1) as f64,
        rejects_by_reason,
        excluded,
        excluded_by_reason,
        probe_seconds,
        files_per_second: probed as f64 / probe_seconds.max(1e-9),
    }
}
