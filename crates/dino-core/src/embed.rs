//! Embedding extraction: the encoder of a checkpoint (DINO's teacher, or the fine-tuned
//! network) applied to every utterance of a manifest, written to `embeddings.h5`.
//!
//! Utterances are embedded whole, batched by length: sorted by duration, a batch holds
//! utterances within `length_tolerance` of its shortest one, each trimmed to that length
//! (so at most that share of an utterance's end is left out), up to `max_batch_seconds` of
//! audio. With `chunk_seconds`, longer utterances are cut into chunks of that length whose
//! embeddings are averaged.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use data_manifest::UtteranceManifest;
use feature_extract::Embeddings;
use feature_extract::cache::AudioCache;
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use stage_kit::{CheckpointRule, DeviceSpec, Representation, Shard};
use tch::{Kind, Tensor};

use crate::apply::model_file::TrainedModel;
use crate::encoder::Layers;
use crate::error::{Error, Result};
use crate::prefetch::Prefetcher;

/// `representation` of a batch's layers, `[B, dim]`.
pub fn layer(representation: Representation, layers: &Layers) -> Tensor {
    match representation {
        Representation::Embedding => layers.embedding.shallow_clone(),
        Representation::Pooled => layers.pooled.shallow_clone(),
        Representation::Concat => Tensor::cat(&[&layers.pooled, &layers.embedding], 1),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbedConfig {
    pub device: DeviceSpec,
    /// The layer written: the embedding (default), the pooled statistics before it, or both.
    pub representation: Representation,
    /// Which model of the training run the pipeline embeds with (`dino-core select-model
    /// --config` reads it; `embed` itself takes the model file it is given).
    pub checkpoint: CheckpointRule,
    /// Average the embeddings of chunks of this length for longer utterances.
    pub chunk_seconds: Option<f64>,
    /// Largest share of an utterance left out so that it can share a batch.
    pub length_tolerance: f64,
    /// Audio per batch.
    pub max_batch_seconds: f64,
    pub workers: usize,
    /// Fail when more than this share of the manifest's utterances is not in the cache.
    pub max_missing_fraction: f64,
}

impl Default for EmbedConfig {
    fn default() -> Self {
        EmbedConfig {
            device: DeviceSpec::Auto,
            representation: Representation::Embedding,
            checkpoint: CheckpointRule::Last,
            chunk_seconds: None,
            length_tolerance: 0.02,
            max_batch_seconds: 300.0,
            workers: 2,
            max_missing_fraction: 0.05,
        }
    }
}

impl EmbedConfig {
    /// Refuses values that cannot embed, naming the key (`[embed] max_batch_seconds = 0: ...`).
    pub fn check(&self) -> Result<()> {
        let chunk = self.chunk_seconds.unwrap_or(1.0);
        let checks = [
            (
                "chunk_seconds",
                chunk,
                chunk.is_finite() && chunk > 0.0,
                "a finite number of seconds > 0",
            ),
            (
                "length_tolerance",
                self.length_tolerance,
                (0.0..1.0).contains(&self.length_tolerance),
                "in [0, 1)",
            ),
            (
                "max_batch_seconds",
                self.max_batch_seconds,
                self.max_batch_seconds.is_finite() && self.max_batch_seconds > 0.0,
                "a finite number of seconds > 0",
            ),
            (
                "max_missing_fraction",
                self.max_missing_fraction,
                (0.0..=1.0).contains(&self.max_missing_fraction),
                "in [0, 1]",
            ),
        ];
        match checks.into_iter().find(|(_, _, ok, _)| !ok) {
            Some((key, value, _, want)) => Err(Error::Config(format!(
                "[embed] {key} = {value}: must be {want}"
            ))),
            None => Ok(()),
        }
    }
}

/// Headline numbers of an extraction (`report.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EmbedReport {
    pub utterances: usize,
    pub missing: usize,
    pub dim: usize,
    pub audio_hours: f64,
    pub wall_seconds: f64,
    /// Seconds spent computing features and embeddings: the wall time less loading the model,
    /// waiting for audio and writing the file.
    pub encode_seconds: f64,
    /// Seconds of audio embedded per second.
    pub speed: f64,
}

/// A piece of audio to embed: cache entry, start and length (samples), owner utterance.
#[derive(Debug, Clone, Copy)]
struct Segment {
    index: usize,
    start: usize,
    len: usize,
    owner: usize,
}

/// Embeds the utterances of `manifest` found in `audio_cache` with the checkpoint's encoder.
pub fn run(
    checkpoint_path: &Path,
    manifest: &Path,
    audio_cache: &Path,
    out: &Path,
    config: &EmbedConfig,
) -> Result<EmbedReport> {
    run_shard(
        checkpoint_path,
        manifest,
        audio_cache,
        out,
        config,
        Shard::WHOLE,
    )
}

/// As [`run`], for the batches that `shard` owns (batches are planned over the whole
/// manifest, so every utterance is embedded in the batch it has unsharded and
/// [`merge_shards`] gives back the unsharded file bit for bit). Sharding needs whole
/// utterances (no `chunk_seconds`), whose embedding comes from one batch.
pub fn run_shard(
    checkpoint_path: &Path,
    manifest: &Path,
    audio_cache: &Path,
    out: &Path,
    config: &EmbedConfig,
    shard: Shard,
) -> Result<EmbedReport> {
    if shard.count > 1 && config.chunk_seconds.is_some() {
        return Err(Error::Usage(format!(
            "--shard {shard} with chunk_seconds: a chunked utterance spans batches of several \
             shards; embed it unsharded"
        )));
    }
    let started = Instant::now();
    config.check()?;
    let device = feature_extract::device::resolve(config.device)?;
    let model = TrainedModel::load(checkpoint_path, device)?;
    let (encoder, spec) = (&model.encoder, &model.spec);
    let features = model.features(device)?;
    let cache = Arc::new(AudioCache::open(audio_cache)?);
    if features.sample_rate() != cache.sample_rate() {
        return Err(Error::Input(format!(
            "{} holds audio at {} Hz but the model of {} computes its features at {} Hz",
            audio_cache.display(),
            cache.sample_rate(),
            checkpoint_path.display(),
            features.sample_rate()
        )));
    }
    let manifest_path = manifest;
    let manifest = UtteranceManifest::read(manifest)?;
    let mut utt_ids = Vec::new();
    let mut indices = Vec::new();
    for u in &manifest.utterances {
        match cache.position(&u.utt_id) {
            Some(i) if cache.entries()[i].length > 0 => {
                utt_ids.push(u.utt_id.clone());
                indices.push(i);
            }
            _ => {}
        }
    }
    let missing = manifest.utterances.len() - utt_ids.len();
    let missing_fraction = missing as f64 / manifest.utterances.len().max(1) as f64;
    if utt_ids.is_empty() || missing_fraction > config.max_missing_fraction {
        return Err(Error::Input(format!(
            "{missing} of the {} utterance(s) of {} are not in {} ({:.1} %, above \
             max_missing_fraction {}): another manifest's cache?",
            manifest.utterances.len(),
            manifest_path.display(),
            audio_cache.display(),
            100.0 * missing_fraction,
            config.max_missing_fraction
        )));
    }
    if missing > 0 {
        tracing::warn!(
            "{missing} utterance(s) of the manifest are not in {} and get no embedding",
            audio_cache.display()
        );
    }
    let rate = f64::from(cache.sample_rate());
    let chunk = config.chunk_seconds.map(|s| (s * rate) as usize);
    let segments = segments(&cache, &indices, chunk);
    let batches = batches(
        &segments,
        config.length_tolerance,
        (config.max_batch_seconds * rate) as usize,
    );
    let batches: Arc<Vec<Vec<Segment>>> = Arc::new(
        batches
            .iter()
            .enumerate()
            .filter(|(b, _)| shard.owns(*b))
            .map(|(_, batch)| batch.clone())
            .collect(),
    );
    // The width of the representation, from one second of silence.
    let probe = vec![0f32; rate as usize];
    let dim = tch::no_grad(|| {
        let layers = encoder.layers(&features.forward(&probe, 1), false);
        layer(config.representation, &layers).size()[1] as usize
    });
    let mut sums = Array2::<f32>::zeros((utt_ids.len(), dim));
    let mut counts = vec![0usize; utt_ids.len()];
    let total_samples: usize = batches.iter().flatten().map(|s| s.len).sum();
    let mut progress = stage_kit::progress::Progress::new("embed", batches.len(), "batch");
    let reader_cache = cache.clone();
    let reader_batches = batches.clone();
    let loader = Prefetcher::start(
        batches.len(),
        config.workers,
        4,
        move |b| -> Result<Vec<f32>> {
            let batch = &reader_batches[b];
            let len = batch.iter().map(|s| s.len).min().unwrap_or(0);
            let mut audio = Vec::with_capacity(batch.len() * len);
            for s in batch {
                audio.extend(
                    reader_cache
                        .read(s.index, s.start, len)?
                        .into_iter()
                        .map(f32::from),
                );
            }
            Ok(audio)
        },
    );
    let mut encode_seconds = 0.0;
    for (batch, audio) in batches.iter().zip(loader) {
        let audio = audio.map_err(|failed| {
            let owners = batch.iter().map(|s| utt_ids[s.owner].as_str());
            Error::loader(failed, owners)
        })??;
        let encode_started = Instant::now();
        let layers = tch::no_grad(|| encoder.layers(&features.forward(&audio, batch.len()), false));
        let embeddings = layer(config.representation, &layers)
            .to_kind(Kind::Float)
            .to_device(tch::Device::Cpu);
        let rows: Vec<f32> =
            Vec::try_from(embeddings.view([-1])).map_err(Error::torch("copying embeddings"))?;
        for (segment, row) in batch.iter().zip(rows.chunks(dim)) {
            let mut target = sums.row_mut(segment.owner);
            target.iter_mut().zip(row).for_each(|(t, v)| *t += v);
            counts[segment.owner] += 1;
        }
        encode_seconds += encode_started.elapsed().as_secs_f64();
        progress.update(1);
    }
    progress.finish();
    for (mut row, &n) in sums.rows_mut().into_iter().zip(&counts) {
        row.mapv_inplace(|v| v / n.max(1) as f32);
    }
    let description = serde_json::json!({
        "checkpoint": checkpoint_path.display().to_string(),
        "encoder": spec.encoder,
        "representation": config.representation.name(),
        "chunk_seconds": config.chunk_seconds,
    });
    // This shard's utterances (all of them unsharded), in manifest order.
    let kept: Vec<usize> = (0..utt_ids.len()).filter(|&i| counts[i] > 0).collect();
    let embeddings = Embeddings {
        utt_ids: kept.iter().map(|&i| utt_ids[i].clone()).collect(),
        vectors: sums.select(ndarray::Axis(0), &kept),
        description: description.to_string(),
    };
    // Finite weights can still give NaN (an overflow in fp16): the model is to blame.
    embeddings.check_finite(checkpoint_path)?;
    embeddings.write(out)?;
    let wall_seconds = started.elapsed().as_secs_f64();
    Ok(EmbedReport {
        utterances: embeddings.utt_ids.len(),
        missing,
        dim,
        audio_hours: total_samples as f64 / rate / 3600.0,
        wall_seconds,
        encode_seconds,
        speed: total_samples as f64 / rate / wall_seconds.max(1e-9),
    })
}

/// Joins the embeddings files of the shards of one extraction into one, in the order of
/// `manifest` (as the unsharded extraction writes it), at `out`.
pub fn merge_shards(manifest: &Path, shards: &[std::path::PathBuf], out: &Path) -> Result<usize> {
    let manifest = UtteranceManifest::read(manifest)?;
    let parts: Vec<Embeddings> = shards
        .iter()
        .map(|p| Embeddings::read(p))
        .collect::<std::result::Result<_, _>>()?;
    let Some(first) = parts.first() else {
        return Err(Error::Usage(
            "merge-embeddings: no shard files given".to_owned(),
        ));
    };
    let mut rows = std::collections::HashMap::new();
    for (part, path) in parts.iter().zip(shards) {
        if part.description != first.description || part.dim() != first.dim() {
            return Err(Error::Input(format!(
                "{}: not a shard of the same extraction as {} (model or dimension differ)",
                path.display(),
                shards[0].display()
            )));
        }
        for (i, id) in part.utt_ids.iter().enumerate() {
            if rows.insert(id.as_str(), part.row(i)).is_some() {
                return Err(Error::Input(format!(
                    "{}: utterance {id} is in another shard too",
                    path.display()
                )));
            }
        }
    }
    let mut utt_ids = Vec::with_capacity(rows.len());
    let mut vectors = Array2::<f32>::zeros((rows.len(), first.dim()));
    for u in &manifest.utterances {
        if let Some(row) = rows.get(u.utt_id.as_str()) {
            vectors.row_mut(utt_ids.len()).assign(row);
            utt_ids.push(u.utt_id.clone());
        }
    }
    if utt_ids.len() != rows.len() {
        return Err(Error::Input(format!(
            "{} shard utterance(s) are not in the manifest",
            rows.len() - utt_ids.len()
        )));
    }
    let merged = Embeddings {
        utt_ids,
        vectors,
        description: first.description.clone(),
    };
    merged.write(out)?;
    Ok(merged.utt_ids.len())
}

/// The pieces to embed: whole utterances, or chunks of `chunk` samples.
fn segments(cache: &AudioCache, indices: &[usize], chunk: Option<usize>) -> Vec<Segment> {
    let mut out = Vec::new();
    for (owner, &index) in indices.iter().enumerate() {
        let length = cache.entries()[index].length as usize;
        let mut start = 0;
        for len in chunk_lengths(length, chunk) {
            out.push(Segment {
                index,
                start,
                len,
                owner,
            });
            start += len;
        }
    }
    out
}

/// Lengths of the chunks covering `length` samples: chunks of `chunk` samples, a remainder
/// shorter than half a chunk joining the last one; the whole length without `chunk`.
fn chunk_lengths(length: usize, chunk: Option<usize>) -> Vec<usize> {
    let Some(c) = chunk.filter(|&c| c > 0 && length > c) else {
        return vec![length];
    };
    let mut out = Vec::new();
    let mut rest = length;
    while rest > 0 {
        let len = if rest < c + c / 2 { rest } else { c };
        out.push(len);
        rest -= len;
    }
    out
}

/// Groups segments of similar length (within `tolerance` of the batch's shortest), at most
/// `max_samples` of audio per batch.
fn batches(segments: &[Segment], tolerance: f64, max_samples: usize) -> Arc<Vec<Vec<Segment>>> {
    let mut sorted = segments.to_vec();
    sorted.sort_by_key(|s| (s.len, s.owner, s.start));
    let mut out: Vec<Vec<Segment>> = Vec::new();
    for s in sorted {
        match out.last_mut() {
            Some(batch)
                if (s.len as f64) <= batch[0].len as f64 * (1.0 + tolerance)
                    && (batch.len() + 1) * batch[0].len <= max_samples.max(batch[0].len) =>
            {
                batch.push(s)
            }
            _ => out.push(vec![s]),
        }
    }
    Arc::new(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_tolerance_and_size() {
        let seg = |len, owner| Segment {
            index: owner,
            start: 0,
            len,
            owner,
        };
        let segments = vec![
            seg(100, 0),
            seg(101, 1),
            seg(150, 2),
            seg(102, 3),
            seg(300, 4),
        ];
        let b = batches(&segments, 0.02, 250);
        let lens: Vec<Vec<usize>> = b
            .iter()
            .map(|batch| batch.iter().map(|s| s.len).collect())
            .collect();
        assert_eq!(lens, vec![vec![100, 101], vec![102], vec![150], vec![300]]);
    }

    #[test]
    fn chunks_cover_the_utterance_and_a_short_remainder_joins_the_last_chunk() {
        assert_eq!(chunk_lengths(1000, Some(300)), vec![300, 300, 400]);
        assert_eq!(chunk_lengths(1100, Some(300)), vec![300, 300, 300, 200]);
        assert_eq!(chunk_lengths(250, Some(300)), vec![250]);
        assert_eq!(chunk_lengths(1000, None), vec![1000]);
    }
}
