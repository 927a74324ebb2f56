//! `feature-extract prepare`: a manifest's audio into the packed caches, resumably.
//!
//! The utterances this shard owns (manifest order, `--shard i/N`) are cut into parts of
//! `part_size`. Parallel workers (rayon) decode, resample, optionally VAD-trim and compute
//! fbank features for a part; one writer thread writes each finished part as small caches
//! `<output>.parts/part-NNNNNN.{audio,fbank}.h5`, each atomically. A rerun skips the parts that
//! exist, so a killed run resumes where it stopped and never holds half-written entries. When
//! every part is there they are concatenated in order into the final caches (atomically), and
//! the parts folder is removed: the result is identical however often the run was interrupted.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use half::f16;
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_kit::Shard;
use stage_kit::progress::Progress;

use data_manifest::{Reject, RejectList, Utterance, UtteranceManifest};

use crate::cache::{self, CacheKind, CacheReject, CacheWriter, FbankDtype};
use crate::decode::{self, Downmix};
use crate::error::{Error, Result};
use crate::fbank::{Fbank, FbankOptions};
use crate::vad::{self, VadOptions};

/// Options of `prepare` (TOML `--config`; command-line flags override).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrepareConfig {
    /// Sample rate of the audio cache and of the fbank (which follows it).
    pub sample_rate: u32,
    /// How multi-channel files become mono (`first` for multi-microphone RIR sets).
    pub downmix: Downmix,
    /// Drop unvoiced frames (energy VAD) before caching.
    pub vad: bool,
    /// Energy VAD options (used when `vad` is on).
    pub vad_options: VadOptions,
    /// Filterbank options (`sample_rate` follows the cache's).
    pub fbank: FbankOptions,
    /// Storage type of the fbank cache.
    pub fbank_dtype: FbankDtype,
    /// Utterances per resumable part.
    pub part_size: usize,
}

impl Default for PrepareConfig {
    fn default() -> Self {
        PrepareConfig {
            sample_rate: 16000,
            downmix: Downmix::Mean,
            vad: false,
            vad_options: VadOptions::default(),
            fbank: FbankOptions::default(),
            fbank_dtype: FbankDtype::F32,
            part_size: 64,
        }
    }
}

impl PrepareConfig {
    /// Refuses values that cannot work, naming the key: a 0 Hz rate, parts of 0 utterances,
    /// filterbank options the fbank refuses.
    pub fn check(&self) -> Result<()> {
        if self.sample_rate == 0 {
            return Err(Error::Options(
                "[prepare] sample_rate = 0: must be at least 1 Hz".into(),
            ));
        }
        if self.part_size == 0 {
            return Err(Error::Options(
                "[prepare] part_size = 0: must be at least 1".into(),
            ));
        }
        Fbank::new(&self.clone().resolved().fbank)
            .map(drop)
            .map_err(|e| Error::Options(format!("[prepare.fbank] {e}")))
    }

    /// The config as it is applied: the fbank runs at the cache's sample rate.
    pub fn resolved(mut self) -> Self {
        self.fbank.sample_rate = self.sample_rate;
        self.part_size = self.part_size.max(1);
        self
    }
}

/// What to prepare and where.
#[derive(Debug, Clone)]
pub struct PrepareRequest {
    /// utterances.parquet to read.
    pub manifest: PathBuf,
    /// Audio cache to write.
    pub audio_out: Option<PathBuf>,
    /// Fbank cache to write.
    pub fbank_out: Option<PathBuf>,
    /// Which utterances this process does.
    pub shard: Shard,
    /// Worker threads (0: rayon's default, one per core).
    pub threads: usize,
    /// Options (resolved before use).
    pub config: PrepareConfig,
}

/// Counts and timing of a run (the `--summary-json` content).
#[derive(Debug, Clone, Serialize)]
pub struct PrepareSummary {
    /// The manifest read.
    pub manifest: PathBuf,
    /// The shard done, `i/N`.
    pub shard: String,
    /// Utterances of the shard.
    pub utterances: usize,
    /// Utterances cached.
    pub written: usize,
    /// Utterances rejected.
    pub rejected: usize,
    /// Parts found complete from an earlier, interrupted run.
    pub parts_resumed: usize,
    /// Parts of the shard.
    pub parts: usize,
    /// Audio of the shard's utterances as the manifest gives it, in hours.
    pub input_hours: f64,
    /// Audio kept in the caches, in hours.
    pub kept_hours: f64,
    /// Seconds the whole run took.
    pub wall_seconds: f64,
    /// Hours of audio decoded per minute of decoding, features and part writing in this run
    /// (resumed parts and the final merge excluded; `wall_seconds` has everything).
    pub hours_per_minute: f64,
    /// The resolved options.
    pub config: PrepareConfig,
    /// The rejected files and reasons (written to `--rejects`).
    #[serde(skip)]
    pub rejects: Vec<Reject>,
}

impl PrepareSummary {
    /// Share of the shard's utterances rejected.
    pub fn reject_fraction(&self) -> f64 {
        self.rejected as f64 / self.utterances.max(1) as f64
    }
}

/// One utterance after the workers: cache rows, or why it was left out.
enum Processed {
    Kept {
        utt_id: String,
        group: String,
        audio: Vec<i16>,
        fbank: Option<Array2<f32>>,
        input_samples: usize,
    },
    Rejected {
        reject: CacheReject,
        input_samples: usize,
    },
}

/// Runs `prepare` (see the module documentation).
pub fn prepare(req: &PrepareRequest) -> Result<PrepareSummary> {
    let started = Instant::now();
    req.config.check()?;
    let config = req.config.clone().resolved();
    let outputs: Vec<&Path> = [&req.audio_out, &req.fbank_out]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect();
    let Some(&first_output) = outputs.first() else {
        return Err(Error::invalid(
            &req.manifest,
            "prepare needs --audio-out and/or --fbank-out",
        ));
    };
    let fbank = Fbank::new(&config.fbank)?;
    let manifest = UtteranceManifest::read(&req.manifest)?;
    let owned: Vec<&Utterance> = manifest
        .utterances
        .iter()
        .enumerate()
        .filter(|(i, _)| req.shard.owns(*i))
        .map(|(_, u)| u)
        .collect();
    let parts_dir = parts_dir(first_output);
    for dir in outputs
        .iter()
        .filter_map(|p| p.parent())
        .chain([parts_dir.as_path()])
    {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        stage_kit::atomic::remove_stale_partials(dir)?;
    }
    let config_json = serde_json::to_string(&config).expect("config serialises");
    check_or_start_parts(&parts_dir, &req.manifest, req.shard, &config_json)?;

    let chunks: Vec<&[&Utterance]> = owned.chunks(config.part_size).collect();
    let part_files = |k: usize| PartFiles::new(&parts_dir, k, req);
    let todo: Vec<usize> = (0..chunks.len())
        .filter(|&k| !part_files(k).complete())
        .collect();
    let parts_resumed = chunks.len() - todo.len();
    if parts_resumed > 0 {
        tracing::info!(
            "resuming: {parts_resumed} of {} parts already written in {}",
            chunks.len(),
            parts_dir.display()
        );
    }
    let seconds = |us: &[&Utterance]| us.iter().map(|u| u.duration_seconds()).sum::<f64>();
    let todo_seconds: f64 = todo.iter().map(|&k| seconds(chunks[k])).sum();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(req.threads)
        .build()
        .map_err(|e| Error::invalid(&req.manifest, format!("worker threads: {e}")))?;

    let work_started = Instant::now();
    let mut decoded_samples_this_run = 0usize;
    std::thread::scope(|scope| -> Result<()> {
        let (sender, receiver) = mpsc::sync_channel::<(usize, Vec<Processed>)>(1);
        let writer = scope.spawn(|| -> Result<()> {
            for (k, processed) in receiver {
                part_files(k).write(&processed, &config, &config_json)?;
            }
            Ok(())
        });
        let mut progress = Progress::new("prepare", todo_seconds.round() as usize, "audio-s");
        for &k in &todo {
            let processed: Vec<Processed> = pool.install(|| {
                chunks[k]
                    .par_iter()
                    .map(|u| process(&manifest, u, &config, &fbank, req.fbank_out.is_some()))
                    .collect()
            });
            decoded_samples_this_run += processed
                .iter()
                .map(Processed::input_samples)
                .sum::<usize>();
            progress.update(seconds(chunks[k]).round() as usize);
            if sender.send((k, processed)).is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        drop(sender);
        progress.finish();
        writer.join().expect("writer thread panicked")
    })?;
    let work_seconds = work_started.elapsed().as_secs_f64();

    // Every part is on disk: concatenate them in order.
    let mut summary = PrepareSummary {
        manifest: req.manifest.clone(),
        shard: req.shard.to_string(),
        utterances: owned.len(),
        written: 0,
        rejected: 0,
        parts_resumed,
        parts: chunks.len(),
        input_hours: 0.0,
        kept_hours: 0.0,
        wall_seconds: 0.0,
        hours_per_minute: decoded_samples_this_run as f64
            / f64::from(config.sample_rate)
            / 3600.0
            / (work_seconds / 60.0).max(1e-9),
        config: config.clone(),
        rejects: Vec::new(),
    };
    let parts: Vec<PartFiles> = (0..chunks.len()).map(part_files).collect();
    for (out, kind) in [
        (&req.audio_out, CacheKind::Audio),
        (&req.fbank_out, CacheKind::Fbank),
    ] {
        if let Some(out) = out {
            let inputs: Vec<PathBuf> = parts.iter().map(|p| p.path(kind)).collect();
            if inputs.is_empty() {
                write_empty(out, kind, &config, &config_json)?;
            } else {
                cache::merge(&inputs, out)?;
            }
        }
    }
    // Counts from the merged index (so resumed parts count too).
    if let Some(audio_out) = &req.audio_out {
        let audio = cache::AudioCache::open(audio_out)?;
        summary.kept_hours = audio.entries().iter().map(|e| e.length).sum::<u64>() as f64
            / f64::from(config.sample_rate)
            / 3600.0;
        summary.written = audio.len();
        summary.rejects = to_rejects(audio.rejects());
    } else if let Some(fbank_out) = &req.fbank_out {
        let fb = cache::FbankCache::open(fbank_out)?;
        // Without the audio, frames times the shift.
        let frames: u64 = fb.entries().iter().map(|e| e.length).sum();
        summary.kept_hours = (frames * fbank.geometry().window_shift as u64) as f64
            / f64::from(config.sample_rate)
            / 3600.0;
        summary.written = fb.len();
        summary.rejects = to_rejects(fb.rejects());
    }
    summary.rejected = summary.rejects.len();
    summary.input_hours = seconds(&owned) / 3600.0;
    std::fs::remove_dir_all(&parts_dir).map_err(|source| Error::Io {
        path: parts_dir.clone(),
        source,
    })?;
    summary.wall_seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

fn to_rejects(rejects: &[CacheReject]) -> Vec<Reject> {
    rejects
        .iter()
        .map(|r| Reject {
            path: r.path.clone(),
            reason: r.reason.clone(),
        })
        .collect()
}

/// Fails when more than `max_fraction` of the utterances were rejected, removing the caches
/// `outputs` first: a run that failed its bound leaves nothing under the final names that a
/// later stage could take for a good cache.
pub fn refuse_above_reject_bound(
    summary: &PrepareSummary,
    max_fraction: f64,
    outputs: &[&Path],
) -> Result<()> {
    if summary.reject_fraction() <= max_fraction {
        return Ok(());
    }
    for out in outputs {
        std::fs::remove_file(out).map_err(|source| Error::Io {
            path: out.to_path_buf(),
            source,
        })?;
    }
    Err(Error::invalid(
        &summary.manifest,
        format!(
            "{} of {} utterances rejected ({:.1} %), above --max-reject-fraction {}; no cache written",
            summary.rejected,
            summary.utterances,
            100.0 * summary.reject_fraction(),
            max_fraction
        ),
    ))
}

/// Writes the rejects of a run as `rejects.parquet`.
pub fn write_rejects(summary: &PrepareSummary, path: &Path) -> Result<()> {
    RejectList {
        rejects: summary.rejects.clone(),
    }
    .write(path)
    .map_err(Error::from)
}

impl Processed {
    fn input_samples(&self) -> usize {
        match self {
            Processed::Kept { input_samples, .. } | Processed::Rejected { input_samples, .. } => {
                *input_samples
            }
        }
    }
}

/// Decode, resample, round to int16, VAD-trim, and compute features for one utterance.
fn process(
    manifest: &UtteranceManifest,
    u: &Utterance,
    config: &PrepareConfig,
    fbank: &Fbank,
    with_fbank: bool,
) -> Processed {
    let reject = |reason: String, input_samples: usize| Processed::Rejected {
        reject: CacheReject {
            path: u.path.clone(),
            reason,
        },
        input_samples,
    };
    let path = manifest.audio_path(u);
    let decoded = match decode::decode_channel(&path, config.downmix, u.channel) {
        Ok(a) => a,
        Err(e) => return reject(e.to_string(), 0),
    };
    if let Err(reason) = check_length(u, decoded.samples.len(), decoded.sample_rate) {
        return reject(reason, decoded.samples.len());
    }
    let samples = match decode::resample(&decoded.samples, decoded.sample_rate, config.sample_rate)
    {
        Ok(s) => s,
        Err(e) => return reject(e.to_string(), 0),
    };
    let input_samples = samples.len();
    let mut audio: Vec<f32> = samples
        .iter()
        .map(|&s| s.round().clamp(-32768.0, 32767.0))
        .collect();
    if config.vad {
        let decisions = match vad::frame_decisions(&audio, &config.fbank, &config.vad_options) {
            Ok(d) => d,
            Err(e) => return reject(e.to_string(), input_samples),
        };
        audio = vad::trim(&audio, &decisions, &fbank.geometry());
        if audio.is_empty() {
            return reject("no voiced frames (energy VAD)".into(), input_samples);
        }
    }
    if fbank.geometry().num_frames(audio.len()) == 0 {
        return reject(
            format!(
                "{} samples are shorter than one {} ms frame",
                audio.len(),
                config.fbank.frame_length_ms
            ),
            input_samples,
        );
    }
    let feats = with_fbank.then(|| fbank.compute(&audio));
    Processed::Kept {
        utt_id: u.utt_id.clone(),
        group: u.split.clone(),
        audio: audio.iter().map(|&s| s as i16).collect(),
        fbank: feats,
        input_samples,
    }
}

/// How far the decoded length may be from the manifest's `num_samples`: the larger of this
/// share of the length and [`LENGTH_TOLERANCE_SECONDS`] (encoder delay and padding of lossy
/// codecs stay well inside; a decoder that skipped corrupt frames does not).
pub const LENGTH_TOLERANCE_SHARE: f64 = 0.005;
/// The smallest length difference tolerated, in seconds (see [`LENGTH_TOLERANCE_SHARE`]).
pub const LENGTH_TOLERANCE_SECONDS: f64 = 0.05;

/// Why the decoded audio (`decoded` samples per channel at `rate`) does not match what the
/// manifest says of `u`, if it does not: an empty entry, another rate, or a length off by
/// more than the tolerance.
fn check_length(u: &Utterance, decoded: usize, rate: u32) -> std::result::Result<(), String> {
    if u.num_samples == 0 {
        return Err("the manifest gives num_samples = 0".into());
    }
    if u.sample_rate != rate {
        return Err(format!(
            "decoded at {rate} Hz, the manifest says {} Hz",
            u.sample_rate
        ));
    }
    let expected = u.num_samples as f64;
    let allowed =
        (expected * LENGTH_TOLERANCE_SHARE).max(LENGTH_TOLERANCE_SECONDS * f64::from(rate));
    let off = decoded as f64 - expected;
    if off.abs() > allowed {
        return Err(format!(
            "decoded {decoded} samples where the manifest says {} ({:+.1} %; more than the {} % \
             or {} s tolerated): corrupt or truncated file?",
            u.num_samples,
            100.0 * off / expected,
            100.0 * LENGTH_TOLERANCE_SHARE,
            LENGTH_TOLERANCE_SECONDS
        ));
    }
    Ok(())
}

/// `<output>.parts` beside the first output.
fn parts_dir(first_output: &Path) -> PathBuf {
    let name = first_output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    first_output.with_file_name(format!("{name}.parts"))
}

/// The parts folder remembers what it was started for (manifest content, shard, config);
/// resuming with anything else would mix incompatible parts.
fn check_or_start_parts(dir: &Path, manifest: &Path, shard: Shard, config: &str) -> Result<()> {
    let digest = stage_kit::digest::file_sha256(manifest).map_err(|e| Error::Io {
        path: manifest.to_path_buf(),
        source: e.source,
    })?;
    let stamp = serde_json::json!({
        "manifest_sha256": digest,
        "shard": shard.to_string(),
        "config": config,
    })
    .to_string();
    let stamp_path = dir.join("prepare.json");
    match std::fs::read_to_string(&stamp_path) {
        Ok(existing) if existing == stamp => Ok(()),
        Ok(_) => Err(Error::invalid(
            dir,
            "holds parts of a prepare run with another manifest, shard or config; \
             remove the folder to start over",
        )),
        Err(_) => {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            stage_kit::write_bytes_atomically(&stamp_path, stamp.as_bytes())?;
            Ok(())
        }
    }
}

/// The files of part `k`.
struct PartFiles {
    audio: Option<PathBuf>,
    fbank: Option<PathBuf>,
}

impl PartFiles {
    fn new(dir: &Path, k: usize, req: &PrepareRequest) -> Self {
        let file = |suffix: &str| dir.join(format!("part-{k:06}.{suffix}.h5"));
        PartFiles {
            audio: req.audio_out.as_ref().map(|_| file("audio")),
            fbank: req.fbank_out.as_ref().map(|_| file("fbank")),
        }
    }

    fn path(&self, kind: CacheKind) -> PathBuf {
        match kind {
            CacheKind::Audio => self.audio.clone(),
            CacheKind::Fbank => self.fbank.clone(),
        }
        .expect("asked only for configured outputs")
    }

    /// The fbank part is written last, so it marks a complete part.
    fn complete(&self) -> bool {
        [&self.audio, &self.fbank]
            .into_iter()
            .flatten()
            .all(|p| p.exists())
    }

    fn write(&self, processed: &[Processed], config: &PrepareConfig, json: &str) -> Result<()> {
        let rejects: Vec<CacheReject> = processed
            .iter()
            .filter_map(|p| match p {
                Processed::Rejected { reject, .. } => Some(reject.clone()),
                Processed::Kept { .. } => None,
            })
            .collect();
        let kept = processed.iter().filter_map(|p| match p {
            Processed::Kept {
                utt_id,
                group,
                audio,
                fbank,
                ..
            } => Some((utt_id, group, audio, fbank)),
            Processed::Rejected { .. } => None,
        });
        if let Some(path) = &self.audio {
            stage_kit::write_atomically(path, |partial| {
                let mut w = CacheWriter::<i16>::create(partial, CacheKind::Audio, 1)?;
                for (id, group, audio, _) in kept.clone() {
                    let rows = ArrayView2::from_shape((audio.len(), 1), audio).expect("one column");
                    w.append(id, group, rows)?;
                }
                w.finish(config.sample_rate, json, &rejects)
            })?;
        }
        if let Some(path) = &self.fbank {
            stage_kit::write_atomically(path, |partial| {
                let dim = config.fbank.num_mel_bins + usize::from(config.fbank.use_energy);
                match config.fbank_dtype {
                    FbankDtype::F32 => {
                        let mut w = CacheWriter::<f32>::create(partial, CacheKind::Fbank, dim)?;
                        for (id, group, _, feats) in kept.clone() {
                            w.append(id, group, feats.as_ref().expect("computed").view())?;
                        }
                        w.finish(config.sample_rate, json, &rejects)
                    }
                    FbankDtype::F16 => {
                        let mut w = CacheWriter::<f16>::create(partial, CacheKind::Fbank, dim)?;
                        for (id, group, _, feats) in kept.clone() {
                            let half = feats.as_ref().expect("computed").mapv(f16::from_f32);
                            w.append(id, group, half.view())?;
                        }
                        w.finish(config.sample_rate, json, &rejects)
                    }
                }
            })?;
        }
        Ok(())
    }
}

/// An output with no utterances (every part empty), still a valid cache.
fn write_empty(out: &Path, kind: CacheKind, config: &PrepareConfig, json: &str) -> Result<()> {
    stage_kit::write_atomically(out, |partial| match kind {
        CacheKind::Audio => {
            CacheWriter::<i16>::create(partial, kind, 1)?.finish(config.sample_rate, json, &[])
        }
        CacheKind::Fbank => {
            let dim = config.fbank.num_mel_bins + usize::from(config.fbank.use_energy);
            match config.fbank_dtype {
                FbankDtype::F32 => CacheWriter::<f32>::create(partial, kind, dim)?,
                FbankDtype::F16 => {
                    return CacheWriter::<f16>::create(partial, kind, dim)?.finish(
                        config.sample_rate,
                        json,
                        &[],
                    );
                }
            }
            .finish(config.sample_rate, json, &[])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utterance(num_samples: u64, sample_rate: u32) -> Utterance {
        Utterance {
            utt_id: "a".into(),
            path: "a.flac".into(),
            corpus: "c".into(),
            speaker: None,
            session: None,
            num_samples,
            sample_rate,
            channels: 1,
            codec: "flac".into(),
            channel: None,
            split: "train".into(),
            emotion: None,
            fold: None,
        }
    }

    #[test]
    fn decoded_length_must_match_the_manifest_within_the_tolerance() {
        let u = utterance(160_000, 16000);
        // 0.5 % of 10 s is 800 samples, more than 0.05 s (800 samples too): the bound.
        assert!(check_length(&u, 160_800, 16000).is_ok());
        assert!(check_length(&u, 159_200, 16000).is_ok());
        let err = check_length(&u, 137_600, 16000).unwrap_err();
        assert!(
            err.contains("decoded 137600 samples where the manifest says 160000 (-14.0 %"),
            "{err}"
        );
        assert!(
            check_length(&u, 160_000, 8000)
                .unwrap_err()
                .contains("8000 Hz")
        );
        // Short files: 0.05 s is tolerated (AAC priming and padding).
        assert!(check_length(&utterance(8000, 16000), 8700, 16000).is_ok());
        assert!(check_length(&utterance(8000, 16000), 9000, 16000).is_err());
        let err = check_length(&utterance(0, 16000), 0, 16000).unwrap_err();
        assert!(err.contains("num_samples = 0"), "{err}");
    }
}
