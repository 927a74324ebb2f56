//! Embeddings without learning: per utterance, the mean and the standard deviation of each
//! log-mel filterbank bin over its frames (`[means..., stds...]`, 160 dimensions for 80
//! bins). Every report can then show what a learnt embedding adds.
//!
//! The fbank comes from an fbank cache, is computed from an audio cache, or is computed from
//! the manifest's audio files; the last two use `feature-extract`'s Kaldi fbank.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use data_manifest::{Reject, RejectList, Utterance, UtteranceManifest};
use feature_extract::Embeddings;
use feature_extract::cache::{AudioCache, CacheReject, FbankCache};
use feature_extract::decode;
use feature_extract::fbank::{Fbank, FbankOptions};
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_kit::progress::Progress;

use crate::error::{EvalError, Result};

/// Where the filterbank features come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureSource {
    /// A `feature-extract prepare` fbank cache (features as cached).
    FbankCache(PathBuf),
    /// A `feature-extract prepare` audio cache (fbank computed here).
    AudioCache(PathBuf),
    /// The manifest's audio files, decoded and resampled here.
    Decode,
}

/// Settings of `downstream-eval baseline` (used when the fbank is computed here).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineConfig {
    /// Sample rate decoded audio is resampled to (an audio cache keeps its own rate).
    pub sample_rate: u32,
    pub fbank: FbankOptions,
    /// Fail when more than this share of the utterances is rejected.
    pub max_reject_fraction: f64,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            sample_rate: 16000,
            fbank: FbankOptions::default(),
            max_reject_fraction: 0.01,
        }
    }
}

/// What a baseline run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineSummary {
    pub written: usize,
    pub dim: usize,
    pub rejects: Vec<Reject>,
}

/// Mean and standard deviation (population) of each column of `frames`, as one vector.
pub fn mean_std(frames: ArrayView2<f32>) -> Vec<f32> {
    let n = frames.nrows() as f64;
    let mut mean = vec![0f64; frames.ncols()];
    for row in frames.axis_iter(Axis(0)) {
        mean.iter_mut()
            .zip(row)
            .for_each(|(m, &v)| *m += f64::from(v));
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; frames.ncols()];
    for row in frames.axis_iter(Axis(0)) {
        for ((s, &v), m) in var.iter_mut().zip(row).zip(&mean) {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    mean.iter()
        .map(|&m| m as f32)
        .chain(var.iter().map(|&v| (v / n).sqrt() as f32))
        .collect()
}

/// Statistics of one utterance's frames, or why there are none.
fn statistics(frames: ArrayView2<f32>) -> std::result::Result<Vec<f32>, String> {
    if frames.nrows() == 0 {
        Err("too short for a single fbank frame".to_owned())
    } else {
        Ok(mean_std(frames))
    }
}

/// Utterances handled per batch of parallel work (caches are read by one thread).
const BATCH: usize = 256;

/// Computes the baseline embeddings of every utterance of the manifest at
/// `manifest_path` and writes them to `out` (atomically). Utterances without features are
/// rejected with the reason; the caller weighs [`BaselineSummary::reject_fraction`] against
/// `config.max_reject_fraction`.
pub fn run(
    manifest_path: &Path,
    source: &FeatureSource,
    config: &BaselineConfig,
    out: &Path,
) -> Result<BaselineSummary> {
    let manifest = UtteranceManifest::read(manifest_path)?;
    let utterances = &manifest.utterances;
    let mut progress = Progress::new("baseline embeddings", utterances.len(), "utt");
    let mut results: Vec<std::result::Result<Vec<f32>, String>> =
        Vec::with_capacity(utterances.len());
    let description;
    match source {
        FeatureSource::FbankCache(path) => {
            let cache = FbankCache::open(path)?;
            description = format!("fbank cache {} ({})", path.display(), cache.config());
            let rejected = cache_rejects(cache.rejects());
            for u in utterances {
                results.push(match cache.position(&u.utt_id) {
                    Some(i) => statistics(cache.read_all(i)?.view()),
                    None => Err(absent(u, path, &rejected)),
                });
                progress.update(1);
            }
        }
        FeatureSource::AudioCache(path) => {
            let cache = AudioCache::open(path)?;
            let options = FbankOptions {
                sample_rate: cache.sample_rate(),
                ..config.fbank.clone()
            };
            let fbank =
                Fbank::new(&options).map_err(|e| EvalError::invalid(path, e.to_string()))?;
            description = format!(
                "fbank of audio cache {} ({})",
                path.display(),
                serde_json::json!(options)
            );
            let rejected = cache_rejects(cache.rejects());
            for batch in utterances.chunks(BATCH) {
                let audio = batch
                    .iter()
                    .map(|u| match cache.position(&u.utt_id) {
                        Some(i) => Ok(Ok(cache
                            .read_all(i)?
                            .into_iter()
                            .map(f32::from)
                            .collect::<Vec<f32>>())),
                        None => Ok(Err(absent(u, path, &rejected))),
                    })
                    .collect::<Result<Vec<_>>>()?;
                results.par_extend(
                    audio
                        .into_par_iter()
                        .map(|samples| samples.and_then(|s| statistics(fbank.compute(&s).view()))),
                );
                progress.update(batch.len());
            }
        }
        FeatureSource::Decode => {
            let options = FbankOptions {
                sample_rate: config.sample_rate,
                ..config.fbank.clone()
            };
            let fbank = Fbank::new(&options)
                .map_err(|e| EvalError::invalid(manifest_path, e.to_string()))?;
            description = format!("fbank of decoded audio ({})", serde_json::json!(options));
            for batch in utterances.chunks(BATCH) {
                results.par_extend(batch.par_iter().map(|u| {
                    decode::load_channel(
                        &manifest.audio_path(u),
                        config.sample_rate,
                        decode::Downmix::Mean,
                        u.channel,
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|samples| statistics(fbank.compute(&samples).view()))
                }));
                progress.update(batch.len());
            }
        }
    }
    progress.finish();

    let mut ids = Vec::new();
    let mut rows = Vec::new();
    let mut rejects = Vec::new();
    for (u, result) in utterances.iter().zip(results) {
        match result {
            Ok(v) => {
                ids.push(u.utt_id.clone());
                rows.push(v);
            }
            Err(reason) => rejects.push(Reject {
                path: u.path.clone(),
                reason,
            }),
        }
    }
    let dim = rows.first().map_or(0, Vec::len);
    let summary = BaselineSummary {
        written: ids.len(),
        dim,
        rejects,
    };
    if !ids.is_empty() {
        let vectors =
            Array2::from_shape_vec((ids.len(), dim), rows.into_iter().flatten().collect())
                .expect("every utterance has the same dimension");
        Embeddings {
            utt_ids: ids,
            vectors,
            description: serde_json::json!({
                "producer": crate::report::TOOL_VERSION,
                "embedding": "per-bin mean and standard deviation of log-mel fbank frames",
                "features": description,
                "manifest": manifest_path,
                "config": config,
            })
            .to_string(),
        }
        .write(out)?;
    }
    Ok(summary)
}

impl BaselineSummary {
    /// Share of the manifest's utterances that got no embedding.
    pub fn reject_fraction(&self) -> f64 {
        self.rejects.len() as f64 / (self.rejects.len() + self.written).max(1) as f64
    }

    /// Writes the rejects as a rejects table.
    pub fn write_rejects(&self, path: &Path) -> Result<()> {
        Ok(RejectList {
            rejects: self.rejects.clone(),
        }
        .write(path)?)
    }
}

fn cache_rejects(rejects: &[CacheReject]) -> HashMap<&str, &str> {
    rejects
        .iter()
        .map(|r| (r.path.as_str(), r.reason.as_str()))
        .collect()
}

/// Why an utterance is not in a cache: the cache's own reject reason when it has one.
fn absent(u: &Utterance, cache: &Path, rejected: &HashMap<&str, &str>) -> String {
    match rejected.get(u.path.as_str()) {
        Some(reason) => format!("rejected when {} was prepared: {reason}", cache.display()),
        None => format!("not in {}", cache.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn statistics_per_bin() {
        let frames = array![[1.0f32, 10.0], [3.0, 10.0], [5.0, 10.0]];
        let v = mean_std(frames.view());
        let std0 = (8.0f32 / 3.0).sqrt();
        assert_eq!(v[..3], [3.0, 10.0, std0]);
        assert_eq!(v[3], 0.0);
        assert!(statistics(Array2::<f32>::zeros((0, 2)).view()).is_err());
    }
}
