//! `dino-core embed-audio`: embeddings of arbitrary audio files (files, folders walked
//! recursively, list files) with a trained model, in one command.
//!
//! It runs the pipeline's own three steps on the files, so the vectors are those that
//! `scan -> prepare -> embed` gives: the files are probed as a scan probes them (a
//! two-channel SPHERE call becomes one utterance per side), decoded, resampled and VAD-trimmed
//! by `prepare` with the options recorded in the model (the training audio cache's), and
//! embedded by `embed` with its batching. The intermediate manifest and audio cache live in a
//! work folder beside the output (resumable, removed at the end). Files that cannot be used
//! are listed with the reason in the rejects file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use data_manifest::scan::{self, AUDIO_EXTENSIONS, Candidate};
use data_manifest::trial_lists::utterance_id;
use data_manifest::{Reject, RejectList, UtteranceManifest};
use feature_extract::Embeddings;
use feature_extract::prepare::{PrepareConfig, PrepareRequest, prepare};
use serde::Serialize;

use crate::apply::embedding_formats::{self, OutputFormat};
use crate::apply::model_file;
use crate::embed::{self, EmbedConfig};
use crate::error::{Error, Result};

/// Extensions of list files (one `path` or `utt_id path` per line).
pub const LIST_EXTENSIONS: &[&str] = &["txt", "lst", "list", "scp"];

/// What to embed and how.
#[derive(Debug, Clone)]
pub struct EmbedAudioRequest {
    /// A model file (`dino-core bundle`) or any checkpoint.
    pub model: PathBuf,
    /// Audio files, folders (walked recursively) and list files.
    pub inputs: Vec<PathBuf>,
    /// Output: `.parquet` (utt_id, path, vector), `.npy` (+ `.index.tsv`) or `.h5`.
    pub out: PathBuf,
    /// Rejects (Parquet); default `<out>.rejects.parquet`.
    pub rejects: Option<PathBuf>,
    /// Decoding threads (0: one per core).
    pub threads: usize,
    /// Energy VAD on or off instead of the model's recorded choice (plain checkpoints
    /// record none: off unless given).
    pub vad: Option<bool>,
    pub embed: EmbedConfig,
}

/// Headline numbers of a run.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedAudioReport {
    pub files: usize,
    pub utterances: usize,
    pub embedded: usize,
    pub rejected: usize,
    pub dim: usize,
    pub audio_hours: f64,
    pub wall_seconds: f64,
    /// Utterances embedded per second of wall time (probing, decoding and embedding).
    pub utterances_per_second: f64,
    pub out: PathBuf,
    pub rejects: PathBuf,
}

/// Runs `embed-audio` (see the module documentation).
pub fn run(req: &EmbedAudioRequest) -> Result<EmbedAudioReport> {
    let started = std::time::Instant::now();
    let format = OutputFormat::of(&req.out)?;
    let (candidates, listing_rejects) = list_inputs(&req.inputs)?;
    let missing_inputs = listing_rejects.len();
    let options = EmbedOptions {
        model: req.model.clone(),
        threads: req.threads,
        vad: req.vad,
        embed: req.embed.clone(),
    };
    let mut done = embed_candidates(&options, candidates, &work_dir(&req.out))?;
    done.rejects.extend(listing_rejects);
    done.rejects.sort_by(|a, b| a.path.cmp(&b.path));
    let paths = done
        .paths
        .iter()
        .map(|(id, path)| (id.as_str(), path.clone()))
        .collect();
    embedding_formats::write(&done.embeddings, &paths, format, &req.out)?;
    let rejects_path = req
        .rejects
        .clone()
        .unwrap_or_else(|| sibling(&req.out, "rejects.parquet"));
    let rejected = done.rejects.len();
    RejectList {
        rejects: done.rejects,
    }
    .write(&rejects_path)?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let embedded = done.embeddings.utt_ids.len();
    Ok(EmbedAudioReport {
        files: done.files + missing_inputs,
        utterances: done.utterances,
        embedded,
        rejected,
        dim: done.embeddings.dim(),
        audio_hours: done.audio_hours,
        wall_seconds,
        utterances_per_second: embedded as f64 / wall_seconds.max(1e-9),
        out: req.out.clone(),
        rejects: rejects_path,
    })
}

/// The model and how to run it, for [`embed_candidates`].
#[derive(Debug, Clone)]
pub struct EmbedOptions {
    pub model: PathBuf,
    pub threads: usize,
    /// VAD override (see [`EmbedAudioRequest`]).
    pub vad: Option<bool>,
    pub embed: EmbedConfig,
}

/// Embeddings of probed files, with what could not be embedded.
pub struct Embedded {
    pub embeddings: Embeddings,
    /// Audio file (absolute) of each utterance id.
    pub paths: HashMap<String, String>,
    pub rejects: Vec<Reject>,
    /// Files probed and utterances found in them.
    pub files: usize,
    pub utterances: usize,
    pub audio_hours: f64,
}

/// Probes, prepares and embeds `candidates` (absolute paths without the leading `/`) in the
/// work folder `work`, which is removed afterwards.
pub fn embed_candidates(
    options: &EmbedOptions,
    candidates: Vec<Candidate>,
    work: &Path,
) -> Result<Embedded> {
    if candidates.is_empty() {
        return Err(Error::Usage(format!(
            "no audio files ({}) to embed",
            AUDIO_EXTENSIONS.join(", ")
        )));
    }
    let audio = audio_options(options)?;
    let files = candidates.len();
    let (utterances, mut rejects) =
        scan::probe_candidates(Path::new("/"), "audio", candidates, options.threads)?;
    let manifest = UtteranceManifest {
        corpus_root: PathBuf::from("/"),
        utterances,
    };
    std::fs::create_dir_all(work).map_err(|e| stage_kit::FileError::new(work, e))?;
    let manifest_path = work.join("utterances.parquet");
    let cache_path = work.join("audio.h5");
    let embeddings_path = work.join("embeddings.h5");
    manifest.write(&manifest_path)?;
    let summary = prepare(&PrepareRequest {
        manifest: manifest_path.clone(),
        audio_out: Some(cache_path.clone()),
        fbank_out: None,
        shard: stage_kit::Shard::WHOLE,
        threads: options.threads,
        config: audio,
    })?;
    rejects.extend(summary.rejects.iter().cloned());
    if summary.written == 0 {
        for r in &rejects {
            tracing::warn!("rejected {}: {}", r.path, r.reason);
        }
        return Err(Error::Input(format!(
            "none of the {} utterance(s) could be decoded",
            manifest.utterances.len()
        )));
    }
    embed::run(
        &options.model,
        &manifest_path,
        &cache_path,
        &embeddings_path,
        &options.embed,
    )?;
    let embeddings = Embeddings::read(&embeddings_path)?;
    std::fs::remove_dir_all(work).map_err(|e| stage_kit::FileError::new(work, e))?;
    for r in rejects.iter().take(20) {
        tracing::warn!("rejected {}: {}", r.path, r.reason);
    }
    Ok(Embedded {
        paths: manifest
            .utterances
            .iter()
            .map(|u| (u.utt_id.clone(), format!("/{}", u.path)))
            .collect(),
        files,
        utterances: manifest.utterances.len(),
        audio_hours: manifest
            .utterances
            .iter()
            .map(|u| u.duration_seconds())
            .sum::<f64>()
            / 3600.0,
        embeddings,
        rejects,
    })
}

/// The model's recorded audio options (the model's sample rate without VAD for checkpoints
/// that record none), with `vad` overridden when asked.
fn audio_options(req: &EmbedOptions) -> Result<PrepareConfig> {
    let loaded = crate::checkpoint::load(&req.model)?;
    let recorded = model_file::application_of(&req.model, &loaded)?.map(|a| a.audio);
    let fbank_rate = loaded.meta.embedding.features.fbank.sample_rate;
    let mut config = recorded.unwrap_or_else(|| {
        tracing::warn!(
            "{} records no audio options (not a `dino-core bundle` model file): decoding at \
             {fbank_rate} Hz, VAD {}",
            req.model.display(),
            if req.vad == Some(true) {
                "on"
            } else {
                "off (--vad on if the model was trained on VAD-trimmed audio)"
            }
        );
        PrepareConfig {
            sample_rate: fbank_rate,
            ..Default::default()
        }
    });
    if let Some(vad) = req.vad {
        config.vad = vad;
    }
    if config.sample_rate != fbank_rate {
        return Err(Error::Input(format!(
            "audio at {} Hz, but the model's features expect {fbank_rate} Hz",
            config.sample_rate
        )));
    }
    Ok(config)
}

/// Candidates (absolute paths without the leading `/`, ids as described in the README) of
/// every input, and the inputs that are neither audio, folder nor list.
pub fn list_inputs(inputs: &[PathBuf]) -> Result<(Vec<Candidate>, Vec<Reject>)> {
    let mut candidates = Vec::new();
    let mut rejects = Vec::new();
    let candidate = |path: &Path, id: &str| -> Result<Candidate> {
        let absolute = std::path::absolute(path).map_err(|e| stage_kit::FileError::new(path, e))?;
        let text = absolute.to_string_lossy();
        Ok(Candidate::new(
            text.trim_start_matches('/'),
            utterance_id(id),
            "all",
        ))
    };
    for input in inputs {
        if input.is_dir() {
            for rel in scan::audio_files(input, "")? {
                candidates.push(candidate(&input.join(&rel), &rel)?);
            }
        } else if has_extension(input, LIST_EXTENSIONS) {
            let text =
                std::fs::read_to_string(input).map_err(|e| stage_kit::FileError::new(input, e))?;
            let base = input.parent().unwrap_or(Path::new(""));
            for (number, line) in text.lines().enumerate() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (id, path) = match fields[..] {
                    [] => continue,
                    [first, ..] if first.starts_with('#') => continue,
                    [path] => (path, path),
                    [id, path] => (id, path),
                    _ => {
                        return Err(Error::Input(format!(
                            "{} line {}: expected `path` or `utt_id path`, got {line:?}",
                            input.display(),
                            number + 1
                        )));
                    }
                };
                candidates.push(candidate(&base.join(path), id)?);
            }
        } else if input.is_file() {
            candidates.push(candidate(input, &input.to_string_lossy())?);
        } else {
            rejects.push(Reject {
                path: input.display().to_string(),
                reason: "unreadable: no such file or folder".to_owned(),
            });
        }
    }
    Ok((candidates, rejects))
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// `<out>.<suffix>` beside the output.
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.with_file_name(format!("{name}.{suffix}"))
}

/// The work folder of an output: `<out>.work`.
fn work_dir(out: &Path) -> PathBuf {
    sibling(out, "work")
}
