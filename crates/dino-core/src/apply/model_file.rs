//! Self-contained model files: a checkpoint's encoder together with everything applying it
//! to new audio needs and that otherwise lives in other stages' files: how audio was decoded
//! and VAD-trimmed for training (the training audio cache's `prepare` options), the
//! training-set embedding mean that `eval-sv` subtracts, and where the model came from.
//!
//! The file is an ordinary checkpoint (same format, so `embed` and `finetune --init` read it)
//! holding only the encoder's tensors, with an [`Application`] entry in its metadata. The
//! embed stage writes it (`dino-core bundle`) beside the training set's embeddings, whose
//! mean it records; checkpoints without the entry keep working with explicit options.

use std::path::{Path, PathBuf};

use downstream_eval::sv::preprocess::Preprocess;
use feature_extract::Embeddings;
use feature_extract::cache::AudioCache;
use feature_extract::prepare::PrepareConfig;
use ndarray::{Array1, ArrayView2};
use serde::{Deserialize, Serialize};
use tch::Device;
use tch::nn::VarStore;

use crate::checkpoint::{self, CheckpointMeta, EmbeddingSpec};
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::features::FeaturePipeline;
use crate::model::encoder_only;

/// Metadata key of the [`Application`] entry.
pub const APPLICATION_KEY: &str = "speech_dino_application";
/// Format tag of the entry.
pub const FORMAT: &str = "speech-dino/application/1";

/// What applying the model needs besides its weights and features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub format: String,
    /// How audio files became the samples the encoder was trained on: the `prepare` options
    /// of the training audio cache (sample rate, downmix, energy VAD and its options).
    pub audio: PrepareConfig,
    /// The training-set embedding mean (`eval-sv --mean-embeddings`).
    pub mean: EmbeddingMean,
    pub provenance: ModelProvenance,
}

/// Means of a set of embeddings, as `eval-sv` computes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingMean {
    /// The embeddings file the mean was taken from (file name) and its row count.
    pub source: String,
    pub count: usize,
    /// Mean of the embeddings.
    pub raw: Vec<f32>,
    /// Mean of the length-normalised embeddings (`eval-sv --length-norm`).
    pub length_normed: Vec<f32>,
}

impl EmbeddingMean {
    /// Both means of `vectors` with `eval-sv`'s own code.
    pub fn of(vectors: ArrayView2<f32>, source: &str) -> Self {
        let mean = |length_norm| -> Vec<f32> {
            Preprocess::new(length_norm, Some(vectors))
                .mean
                .expect("a mean source was given")
                .to_vec()
        };
        EmbeddingMean {
            source: source.to_owned(),
            count: vectors.nrows(),
            raw: mean(false),
            length_normed: mean(true),
        }
    }

    /// `eval-sv`'s preprocessing with this mean.
    pub fn preprocess(&self, length_norm: bool) -> Preprocess {
        let mean = if length_norm {
            &self.length_normed
        } else {
            &self.raw
        };
        Preprocess {
            length_norm,
            mean: Some(Array1::from(mean.clone())),
        }
    }
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProvenance {
    /// The pipeline that trained it (`cargo xtask pipeline NAME`), if any.
    pub pipeline: Option<String>,
    /// The training run's seed.
    pub seed: Option<u64>,
    /// SHA-256 of the training configuration (the checkpoint's `config`, as JSON).
    pub config_sha256: String,
    /// The checkpoint the encoder comes from (file name), its kind and step.
    pub checkpoint: String,
    pub kind: String,
    pub step: usize,
    /// Version of the tool that wrote the file.
    pub tool_version: String,
}

/// A model loaded for inference: the encoder on a device, how it embeds, and (for
/// self-contained files) how to apply it.
pub struct TrainedModel {
    pub path: PathBuf,
    pub vs: VarStore,
    pub encoder: Encoder,
    pub spec: EmbeddingSpec,
    pub meta: CheckpointMeta,
    pub application: Option<Application>,
}

impl TrainedModel {
    /// Loads the encoder of the checkpoint or model file at `path` onto `device`.
    pub fn load(path: &Path, device: Device) -> Result<Self> {
        let loaded = checkpoint::load(path)?;
        let spec = loaded.meta.embedding.clone();
        let (vs, encoder) = encoder_only(&spec.encoder, device);
        checkpoint::restore_vars(&vs, &loaded.tensors, &loaded.meta.embedding_prefix, path)?;
        let application = application_of(path, &loaded)?;
        Ok(TrainedModel {
            path: path.to_path_buf(),
            vs,
            encoder,
            spec,
            meta: loaded.meta,
            application,
        })
    }

    /// The model's feature transform on `device`.
    pub fn features(&self, device: Device) -> Result<FeaturePipeline> {
        FeaturePipeline::new(&self.spec.features, device)
    }
}

/// The [`Application`] entry of a loaded checkpoint (read from `path`), if it has one.
pub fn application_of(path: &Path, loaded: &checkpoint::Loaded) -> Result<Option<Application>> {
    loaded
        .entries
        .get(APPLICATION_KEY)
        .map(|json| parse_application(path, json))
        .transpose()
}

fn parse_application(path: &Path, json: &str) -> Result<Application> {
    let application: Application = serde_json::from_str(json)
        .map_err(|e| Error::checkpoint(path, format!("bad {APPLICATION_KEY} entry: {e}")))?;
    if application.format != FORMAT {
        return Err(Error::checkpoint(
            path,
            format!(
                "{APPLICATION_KEY} format {:?}, expected {FORMAT:?}",
                application.format
            ),
        ));
    }
    Ok(application)
}

/// What `dino-core bundle` combines.
#[derive(Debug, Clone)]
pub struct BundleRequest {
    /// Checkpoint whose encoder to take (pretrain's or finetune's `model.safetensors`).
    pub checkpoint: PathBuf,
    /// The audio cache the model was trained on (its `prepare` options are recorded).
    pub audio_cache: PathBuf,
    /// The training set's embeddings by this checkpoint (their mean is recorded).
    pub mean_embeddings: PathBuf,
    /// The pipeline's name, for the provenance.
    pub pipeline: Option<String>,
    pub out: PathBuf,
}

/// Writes the self-contained model file of `req` and returns its application entry.
pub fn bundle(req: &BundleRequest) -> Result<Application> {
    let loaded = checkpoint::load(&req.checkpoint)?;
    let meta = loaded.meta;
    let cache = AudioCache::open(&req.audio_cache)?;
    let audio: PrepareConfig = serde_json::from_str(cache.config()).map_err(|e| {
        Error::checkpoint(
            &req.audio_cache,
            format!("the audio cache's prepare options do not parse: {e}"),
        )
    })?;
    if audio.sample_rate != meta.embedding.features.fbank.sample_rate {
        return Err(Error::checkpoint(
            &req.audio_cache,
            format!(
                "audio cached at {} Hz, but the model's features expect {} Hz",
                audio.sample_rate, meta.embedding.features.fbank.sample_rate
            ),
        ));
    }
    let embeddings = Embeddings::read(&req.mean_embeddings)?;
    let dim = meta.embedding.encoder.embedding_dim() as usize;
    if embeddings.dim() != dim || embeddings.utt_ids.is_empty() {
        return Err(Error::checkpoint(
            &req.mean_embeddings,
            format!(
                "{} embeddings of dimension {}, expected at least one of the model's dimension {dim}",
                embeddings.utt_ids.len(),
                embeddings.dim()
            ),
        ));
    }
    let config_json = serde_json::to_string(&meta.config).expect("JSON values serialise");
    let application = Application {
        format: FORMAT.to_owned(),
        audio,
        mean: EmbeddingMean::of(embeddings.vectors.view(), &file_name(&req.mean_embeddings)),
        provenance: ModelProvenance {
            pipeline: req.pipeline.clone(),
            seed: meta.config.get("seed").and_then(|s| s.as_u64()),
            config_sha256: stage_kit::digest::sha256_hex(config_json.as_bytes()),
            checkpoint: file_name(&req.checkpoint),
            kind: meta.kind.clone(),
            step: meta.step,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
    };
    let mut tensors: Vec<(String, tch::Tensor)> = loaded
        .tensors
        .into_iter()
        .filter(|(name, _)| name.starts_with(&meta.embedding_prefix))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let json = serde_json::to_string(&application).expect("the entry serialises");
    checkpoint::save_with(&req.out, &meta, &[(APPLICATION_KEY, json)], &tensors)?;
    Ok(application)
}

/// The file name of a path (the whole path when it has none).
fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
