//! `data-manifest`: corpus scanners, trial lists and manifest utilities. Every subcommand
//! prints a one-paragraph summary and writes its headline numbers as JSON with
//! `--summary-json PATH`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use data_manifest::filter::FilterOptions;
use data_manifest::folds::FoldUnit;
use data_manifest::make_trials::MakeTrialsOptions;
use data_manifest::scan::{FixturePart, GenericOptions, Layout, SCANNER_KEY, ScanOptions};
use data_manifest::summary;
use data_manifest::trial_lists::{self, TrialsSummary};
use data_manifest::utterances::{ExtraMetadata, LABEL_FILTERS_KEY};
use data_manifest::{UtteranceManifest, make_trials};
use stage_kit::Shard;

#[derive(Parser)]
#[command(name = "data-manifest", version, about = "Corpus manifests as Parquet")]
struct Cli {
    /// Also write the log as JSON lines to this file.
    #[arg(long, global = true)]
    log_json: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan a corpus folder into utterances.parquet and rejects.parquet.
    Scan {
        #[command(subcommand)]
        kind: ScanKind,
    },
    /// Convert a trial list text file (VoxCeleb `label enroll test` lines) to trials.parquet,
    /// checking every utterance against the manifest.
    Trials {
        #[arg(long)]
        list: PathBuf,
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Drop trials whose utterances are missing from the manifest (said loudly) instead
        /// of failing.
        #[arg(long)]
        drop_missing: bool,
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Build a balanced, deterministic trial list from a manifest with speaker labels.
    MakeTrials {
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Most target trials per speaker (as many non-target trials again).
        #[arg(long, default_value_t = 100)]
        per_speaker: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// No pair (target or non-target) shares a session.
        #[arg(long)]
        exclude_same_session: bool,
        /// Use only utterances of this split (repeatable; all when absent).
        #[arg(long = "split")]
        splits: Vec<String>,
        /// Never draw a pair of this trial list (trials.parquet; repeatable), e.g. an
        /// evaluation's when making a validation list from the same corpus.
        #[arg(long = "exclude-trials")]
        exclude_trials: Vec<PathBuf>,
        /// Also write the list as text (`label enroll test` lines), e.g. to ship it.
        #[arg(long)]
        text_out: Option<PathBuf>,
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Print statistics of a manifest.
    Stats {
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Write speaker- or session-disjoint folds into the `fold` column.
    Split {
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum)]
        by: FoldUnit,
        #[arg(long, default_value_t = 5)]
        folds: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Write shard i of N, balanced by total duration.
    Shard {
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        shard: Shard,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Keep utterances by duration and split; optionally (using speaker labels) by speaker.
    Filter {
        #[arg(long)]
        manifest: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        min_seconds: Option<f64>,
        #[arg(long)]
        max_seconds: Option<f64>,
        /// Keep only this split (repeatable).
        #[arg(long = "split")]
        splits: Vec<String>,
        /// USES SPEAKER LABELS: drop speakers with fewer utterances; the output is marked
        /// as label-filtered and must not feed self-supervised training.
        #[arg(long)]
        min_utts_per_speaker: Option<usize>,
        #[arg(long)]
        summary_json: Option<PathBuf>,
    },
    /// Join manifests of scan shards (same corpus root), and optionally their rejects; with
    /// --join, manifests of different corpora (a training pool).
    Merge {
        #[arg(long, num_args = 1.., required = true)]
        manifests: Vec<PathBuf>,
        /// The inputs are different corpora: join them under their roots' common folder,
        /// prefixing the speakers of all but the first with their corpus folder.
        #[arg(long)]
        join: bool,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, num_args = 1.., requires = "rejects_out")]
        rejects: Vec<PathBuf>,
        #[arg(long)]
        rejects_out: Option<PathBuf>,
    },
    /// Print the first rows of an utterance manifest.
    Show {
        manifest: PathBuf,
        #[arg(long, default_value_t = 10)]
        rows: usize,
    },
}

/// Options shared by every scanner.
#[derive(Args)]
struct ScanArgs {
    /// Corpus root; manifest paths are relative to it.
    #[arg(long)]
    root: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    rejects: PathBuf,
    /// Fail (exit non-zero, no manifest written) when more than this share of the files are
    /// bad input (files excluded by design do not count).
    #[arg(long, default_value_t = 0.05, value_parser = stage_kit::config::fraction)]
    max_reject_fraction: f64,
    /// Probing threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Probe only this shard of the files (merge the shards with `merge`).
    #[arg(long, default_value_t = Shard::WHOLE)]
    shard: Shard,
    #[arg(long)]
    summary_json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum ScanKind {
    /// `wav/idNNNNN/<youtube-id>/NNNNN.wav`.
    Voxceleb1(ScanArgs),
    /// `[dev/|test/]aac/idNNNNN/<youtube-id>/NNNNN.m4a` (or converted under wav/, flac/).
    Voxceleb2(ScanArgs),
    /// Any tree; speaker/session from path components or a regex.
    Generic {
        #[command(flatten)]
        args: ScanArgs,
        /// Path component holding the speaker (0-based; negative counts from the end, -1 is
        /// the file stem).
        #[arg(long, allow_negative_numbers = true)]
        speaker_component: Option<i32>,
        /// Path component holding the session.
        #[arg(long, allow_negative_numbers = true)]
        session_component: Option<i32>,
        /// Regex on the relative path with named groups utt, speaker, session, split,
        /// emotion, fold; files it does not match are rejected.
        #[arg(long)]
        regex: Option<regex::Regex>,
        /// Split of every utterance (unless the regex has a `split` group).
        #[arg(long, default_value = "train")]
        split: String,
    },
    /// LibriSpeech: `[<subset>/]<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`
    /// (session: the chapter; split: the subset folder, else `train`).
    Librispeech(ScanArgs),
    /// CN-Celeb: `data/<speaker>/<genre>-<session>-<utt>.flac` (session: `<genre>-<session>`).
    Cnceleb(ScanArgs),
    /// CREMA-D: `[AudioWAV/]1001_DFA_ANG_XX.wav`.
    CremaD(ScanArgs),
    /// IEMOCAP: Session1-5 with dialog/EmoEvaluation labels (4-class set by default).
    Iemocap {
        #[command(flatten)]
        args: ScanArgs,
        /// Keep every label instead of the 4-class set (neu, hap+exc, ang, sad).
        #[arg(long)]
        all_emotions: bool,
    },
    /// MSP-Podcast: Audios/ with Labels/labels_consensus.csv.
    MspPodcast {
        #[command(flatten)]
        args: ScanArgs,
        /// Keep the O (other) and X (no agreement) classes too.
        #[arg(long)]
        all_emotions: bool,
    },
    /// RAVDESS: `Actor_NN/03-01-EE-II-SS-RR-AA.{wav,flac}`.
    Ravdess(ScanArgs),
    /// MUSAN: `{noise,music,speech}/<source>/*.wav`.
    Musan(ScanArgs),
    /// RIRS_NOISES: simulated rooms, real RIRs, noises.
    Rirs(ScanArgs),
    /// A part of the `cargo xtask fixture` corpus (root: the fixture folder).
    Fixture {
        #[command(flatten)]
        args: ScanArgs,
        #[arg(long, value_enum)]
        part: FixturePart,
    },
}

impl ScanKind {
    fn split(self) -> (Layout, ScanArgs) {
        match self {
            ScanKind::Voxceleb1(a) => (Layout::VoxCeleb1, a),
            ScanKind::Voxceleb2(a) => (Layout::VoxCeleb2, a),
            ScanKind::Generic {
                args,
                speaker_component,
                session_component,
                regex,
                split,
            } => (
                Layout::Generic(GenericOptions {
                    speaker_component,
                    session_component,
                    regex,
                    split,
                }),
                args,
            ),
            ScanKind::Librispeech(a) => (Layout::LibriSpeech, a),
            ScanKind::Cnceleb(a) => (Layout::CnCeleb, a),
            ScanKind::CremaD(a) => (Layout::CremaD, a),
            ScanKind::Iemocap { args, all_emotions } => (Layout::Iemocap { all_emotions }, args),
            ScanKind::MspPodcast { args, all_emotions } => {
                (Layout::MspPodcast { all_emotions }, args)
            }
            ScanKind::Ravdess(a) => (Layout::Ravdess, a),
            ScanKind::Musan(a) => (Layout::Musan, a),
            ScanKind::Rirs(a) => (Layout::Rirs, a),
            ScanKind::Fixture { args, part } => (Layout::Fixture(part), args),
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    stage_kit::logging::init(cli.log_json.as_deref())?;
    match cli.command {
        Command::Scan { kind } => {
            let (layout, args) = kind.split();
            scan(&layout, &args)
        }
        Command::Trials {
            list,
            manifest,
            out,
            drop_missing,
            summary_json,
        } => trials(
            &list,
            &manifest,
            &out,
            drop_missing,
            summary_json.as_deref(),
        ),
        Command::MakeTrials {
            manifest,
            out,
            per_speaker,
            seed,
            exclude_same_session,
            splits,
            exclude_trials,
            text_out,
            summary_json,
        } => {
            let m = UtteranceManifest::read(&manifest)?;
            let mut exclude = Vec::new();
            for path in &exclude_trials {
                exclude.extend(data_manifest::TrialList::read(path)?.trials);
            }
            let options = MakeTrialsOptions {
                per_speaker,
                seed,
                exclude_same_session,
                splits,
                exclude,
            };
            let (list, summary) = make_trials::make_trials(&m, &options)
                .with_context(|| format!("making trials from {}", manifest.display()))?;
            list.write(&out)?;
            if let Some(path) = text_out {
                stage_kit::write_bytes_atomically(&path, trial_lists::to_text(&list).as_bytes())?;
            }
            summary::emit(&summary, summary_json.as_deref())?;
            Ok(())
        }
        Command::Stats {
            manifest,
            summary_json,
        } => {
            let m = UtteranceManifest::read(&manifest)?;
            summary::emit(&data_manifest::stats::stats(&m), summary_json.as_deref())?;
            Ok(())
        }
        Command::Split {
            manifest,
            out,
            by,
            folds,
            seed,
            summary_json,
        } => {
            let mut m = UtteranceManifest::read(&manifest)?;
            let metadata = UtteranceManifest::read_metadata(&manifest)?;
            if m.utterances.iter().any(|u| u.fold.is_some()) {
                tracing::warn!(
                    "{} already has folds; they are replaced by {by:?}-disjoint ones",
                    manifest.display()
                );
            }
            let summary = data_manifest::folds::assign_folds(&mut m, by, folds, seed)
                .with_context(|| format!("making folds of {}", manifest.display()))?;
            m.write_with_metadata(&out, &metadata)?;
            summary::emit(&summary, summary_json.as_deref())?;
            Ok(())
        }
        Command::Shard {
            manifest,
            shard,
            out,
            summary_json,
        } => {
            let m = UtteranceManifest::read(&manifest)?;
            let metadata = UtteranceManifest::read_metadata(&manifest)?;
            let (part, summary) = data_manifest::sharding::shard(&m, shard);
            part.write_with_metadata(&out, &metadata)?;
            summary::emit(&summary, summary_json.as_deref())?;
            Ok(())
        }
        Command::Filter {
            manifest,
            out,
            min_seconds,
            max_seconds,
            splits,
            min_utts_per_speaker,
            summary_json,
        } => {
            let mut m = UtteranceManifest::read(&manifest)?;
            let mut metadata = UtteranceManifest::read_metadata(&manifest)?;
            let (before, present) = (m.utterances.len(), split_values(&m));
            let options = FilterOptions {
                min_seconds,
                max_seconds,
                splits,
                min_utterances_per_speaker: min_utts_per_speaker,
            };
            let summary = data_manifest::filter::filter(&mut m, &options);
            if m.utterances.is_empty() {
                bail!(
                    "{}: the filter keeps none of its {before} utterances (its splits: {present}); \
                     no manifest written",
                    manifest.display()
                );
            }
            if !summary.label_filters.is_empty() {
                tracing::warn!(
                    "filtering {} with speaker labels ({}): the output must not be used for \
                     self-supervised training",
                    manifest.display(),
                    summary.label_filters.join(", ")
                );
                let mut filters: Vec<String> = metadata
                    .get(LABEL_FILTERS_KEY)
                    .map(|f| f.split(',').map(str::to_owned).collect())
                    .unwrap_or_default();
                filters.extend(summary.label_filters.iter().cloned());
                metadata.insert(LABEL_FILTERS_KEY.to_owned(), filters.join(","));
            }
            m.write_with_metadata(&out, &metadata)?;
            summary::emit(&summary, summary_json.as_deref())?;
            Ok(())
        }
        Command::Merge {
            manifests,
            join,
            out,
            rejects,
            rejects_out,
        } => {
            let (merged, metadata) = if join {
                data_manifest::merge::join_corpora(&manifests)?
            } else {
                data_manifest::merge::merge_manifests(&manifests)?
            };
            merged.write_with_metadata(&out, &metadata)?;
            let mut text = format!(
                "Merged {} manifests into {} ({} utterances)",
                manifests.len(),
                out.display(),
                merged.utterances.len()
            );
            if let Some(rejects_out) = rejects_out {
                let all = data_manifest::merge::merge_rejects(&rejects)?;
                all.write(&rejects_out)?;
                text += &format!(
                    " and {} rejects into {}",
                    all.rejects.len(),
                    rejects_out.display()
                );
            }
            println!("{text}.");
            Ok(())
        }
        Command::Show { manifest, rows } => {
            let m = UtteranceManifest::read(&manifest)?;
            let mut text = format!(
                "{} utterances, corpus root {}",
                m.utterances.len(),
                m.corpus_root.display()
            );
            for u in m.utterances.iter().take(rows) {
                text += &format!("\n{u:?}");
            }
            Ok(stage_kit::stdout::print(&text)?)
        }
    }
}

fn scan(layout: &Layout, args: &ScanArgs) -> anyhow::Result<()> {
    let options = ScanOptions {
        threads: args.threads,
        shard: args.shard,
    };
    let outcome = data_manifest::scan::scan(layout, &args.root, &options)
        .with_context(|| format!("scanning {} as {}", args.root.display(), layout.name()))?;
    outcome.rejects.write(&args.rejects)?;
    summary::emit(&outcome.summary, args.summary_json.as_deref())?;
    let s = &outcome.summary;
    if s.reject_fraction > args.max_reject_fraction {
        bail!(
            "{} of {} files ({:.2} %) were rejected, above --max-reject-fraction {}; see {} \
             (no manifest written)",
            s.rejected,
            s.rejected + s.utterances,
            100.0 * s.reject_fraction,
            args.max_reject_fraction,
            args.rejects.display()
        );
    }
    if outcome.manifest.utterances.is_empty() {
        bail!("no utterance found under {}", args.root.display());
    }
    let metadata = ExtraMetadata::from([(SCANNER_KEY.to_owned(), layout.name())]);
    outcome.manifest.write_with_metadata(&args.out, &metadata)?;
    Ok(())
}

/// The `split` values of a manifest, for messages.
fn split_values(m: &UtteranceManifest) -> String {
    let splits: std::collections::BTreeSet<&str> =
        m.utterances.iter().map(|u| u.split.as_str()).collect();
    splits.into_iter().collect::<Vec<_>>().join(", ")
}

fn trials(
    list_path: &Path,
    manifest_path: &Path,
    out: &Path,
    drop_missing: bool,
    summary_json: Option<&Path>,
) -> anyhow::Result<()> {
    let mut list = trial_lists::read_text(list_path)?;
    let manifest = UtteranceManifest::read(manifest_path)?;
    let missing = trial_lists::missing_utterances(&list, &manifest);
    let mut dropped = 0;
    if !missing.is_empty() {
        if !drop_missing {
            return Err(trial_lists::missing_error(list_path, manifest_path, &missing).into());
        }
        let gone: std::collections::HashSet<&str> = missing.iter().map(String::as_str).collect();
        let before = list.trials.len();
        list.trials
            .retain(|t| !gone.contains(t.enroll.as_str()) && !gone.contains(t.test.as_str()));
        dropped = before - list.trials.len();
        tracing::warn!(
            "dropped {dropped} trials of {} whose utterances are missing from {}",
            list_path.display(),
            manifest_path.display()
        );
    }
    if list.trials.is_empty() {
        bail!("{}: no trials; no list written", list_path.display());
    }
    list.write(out)?;
    let summary = TrialsSummary::new(list_path, &list, dropped, missing.len());
    if let Some(expected) = summary.expected_trials
        && expected != summary.trials + dropped
    {
        tracing::warn!(
            "{} has {} trials; the official {} has {expected}",
            list_path.display(),
            summary.trials + dropped,
            summary.known_as.as_deref().unwrap_or("list")
        );
    }
    summary::emit(&summary, summary_json)?;
    Ok(())
}
