//! Supervised fine-tuning on pseudo-labels: the encoder of a DINO checkpoint (its teacher) or
//! of a previous round, and an additive-angular-margin softmax over the clusters the
//! pseudo-labeler kept, trained on single crops with the same augmentation as pretraining.
//! The output feeds `embed`, so that a round is embed -> cluster -> fine-tune -> embed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use data_manifest::PseudoLabels;
use feature_extract::augment::AugmentConfig;
use feature_extract::cache::AudioCache;
use serde::{Deserialize, Serialize};
use stage_kit::DeviceSpec;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Tensor};

use crate::aam::{AamConfig, AamSoftmax};
use crate::accumulation;
use crate::checkpoint::{self, CheckpointDir, CheckpointMeta, EmbeddingSpec};
use crate::crops::{CropBatch, CropConfig, CropSampler};
use crate::distributed::{self, GradSync, Replicated};
use crate::encoder::Encoder;
use crate::error::{Error, Result};
use crate::features::{FeaturePipeline, dither_key};
use crate::monitor::StepRecord;
use crate::optim::{LossScaler, OptimConfig, Optimizer, restore_training_state, training_state};
use crate::schedule::Cosine;
use crate::training::{self, Plan, REPORT, Task};
use crate::validation::{ValidationConfig, ValidationSet, ValidationSummary};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FinetuneConfig {
    pub seed: u64,
    pub device: DeviceSpec,
    pub aam: AamConfig,
    /// Length of the training crops.
    pub crop_seconds: f64,
    /// Used when noise and/or RIR caches are given.
    pub augment: AugmentConfig,
    pub optim: OptimConfig,
    pub epochs: usize,
    pub batch_size: usize,
    /// Micro-batches per step on each rank, their gradients summed before one all-reduce
    /// (each rank processes batch_size / (ranks x accumulation_steps) utterances at a time).
    pub accumulation_steps: usize,
    pub max_steps_per_epoch: Option<usize>,
    /// Epochs during which only the encoder's embedding layer (and the classifier) learn.
    pub embedding_layer_only_epochs: usize,
    pub mixed_precision: bool,
    pub workers: usize,
    pub prefetch: usize,
    pub checkpoint_every: usize,
    pub keep_checkpoints: usize,
    /// Validation of the epoch models (`[finetune.validation]`), with a validation set given.
    pub validation: Option<ValidationConfig>,
}

impl FinetuneConfig {
    /// The one global view of `crop_seconds` the classifier trains on.
    fn crops(&self) -> CropConfig {
        CropConfig {
            global_crops: 1,
            global_seconds: self.crop_seconds,
            local_crops: 0,
            local_seconds: 0.0,
        }
    }

    /// Refuses values that cannot train, naming the key (`[finetune] crop_seconds = 0: ...`).
    pub fn check(&self) -> Result<()> {
        let sizes = (self.epochs, self.batch_size);
        let seconds = self.crop_seconds;
        if !(seconds.is_finite() && seconds > 0.0) {
            return Err(Error::Config(format!(
                "[finetune] crop_seconds = {seconds}: must be a finite number of seconds > 0"
            )));
        }
        self.aam
            .check()
            .map_err(|m| Error::Config(format!("[finetune.aam] {m}")))?;
        let crops = self.crops();
        training::check_common(
            "finetune",
            sizes,
            &crops,
            (&self.optim, &self.augment),
            self.validation.as_ref(),
        )
    }
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            seed: 1,
            device: DeviceSpec::Auto,
            aam: AamConfig::default(),
            crop_seconds: 4.0,
            augment: AugmentConfig::default(),
            optim: OptimConfig {
                lr: 0.01,
                warmup_epochs: 1.0,
                ..OptimConfig::default()
            },
            epochs: 20,
            batch_size: 128,
            accumulation_steps: 1,
            max_steps_per_epoch: None,
            embedding_layer_only_epochs: 0,
            mixed_precision: true,
            workers: 4,
            prefetch: 8,
            checkpoint_every: 1000,
            keep_checkpoints: 3,
            validation: None,
        }
    }
}

/// Inputs and outputs of a fine-tuning run.
#[derive(Debug, Clone)]
pub struct FinetunePaths {
    /// Checkpoint whose encoder is the starting point.
    pub init: PathBuf,
    pub pseudo_labels: PathBuf,
    pub audio_cache: PathBuf,
    pub noise_cache: Option<PathBuf>,
    pub rir_cache: Option<PathBuf>,
    pub out_dir: PathBuf,
    /// The validation set, for `validation`.
    pub validation: Option<ValidationSet>,
}

/// Headline numbers (`report.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FinetuneReport {
    pub steps: usize,
    pub epochs: usize,
    pub utterances: usize,
    pub classes: usize,
    pub final_loss: f64,
    pub final_accuracy: f64,
    pub mean_data_wait_share: f64,
    pub wall_seconds: f64,
    /// The best and the last validation, when the run validated.
    pub validation: Option<ValidationSummary>,
}

/// Fine-tunes; with `resume` continues from the newest checkpoint of `out_dir/checkpoints`.
/// `stop_after` ends the run early (for time-boxed runs and tests).
pub fn run(
    config: &FinetuneConfig,
    paths: &FinetunePaths,
    resume: bool,
    stop_after: Option<usize>,
) -> Result<Option<FinetuneReport>> {
    let started = Instant::now();
    config.check()?;
    let device = distributed::device(config.device)?;
    let group = distributed::world(device)?;
    let init = checkpoint::load(&paths.init)?;
    let spec = init.meta.embedding.clone();
    let cache = AudioCache::open(&paths.audio_cache)?;
    let (labels, classes) = class_labels(&paths.pseudo_labels)?;
    let items = training::cache_items(labels.keys().map(String::as_str), &cache)?;
    let targets: HashMap<usize, i64> = items
        .iter()
        .map(|&i| (i, labels[&cache.entries()[i].utt_id]))
        .collect();
    let crops = config.crops();
    let features = FeaturePipeline::new(&spec.features, device)?;
    let sampler = training::crop_sampler(
        cache,
        (paths.noise_cache.as_deref(), paths.rir_cache.as_deref()),
        &config.augment,
        crops,
        config.seed,
        &features,
    )?;
    let utterances = items.len();
    let mut plan = Plan::new(
        config.seed,
        config.epochs,
        config.batch_size,
        config.max_steps_per_epoch,
        items,
        CheckpointDir {
            dir: paths.out_dir.join(training::CHECKPOINTS),
            keep: config.keep_checkpoints,
        },
        "finetune",
    )?;
    (plan.workers, plan.prefetch, plan.checkpoint_every) =
        (config.workers, config.prefetch, config.checkpoint_every);
    plan.distribute(group.clone(), config.accumulation_steps)?;
    plan.with_epoch_models(
        &paths.out_dir,
        (config.validation.as_ref(), paths.validation.as_ref()),
        (config.device, config.workers),
    )?;
    let config_json =
        // The initial model by its content, not its path: a moved run folder resumes, a
        // retrained initial model is another run.
        serde_json::json!({ "finetune": config, "init_sha256": stage_kit::digest::file_sha256(&paths.init)? });
    let mut task = FinetuneTask::new(
        config,
        config_json.clone(),
        spec,
        classes as i64,
        targets,
        (features, sampler.clone()),
        &plan,
        device,
    )?;
    checkpoint::restore_vars(
        &task.encoder_vs(),
        &init.tensors,
        &init.meta.embedding_prefix,
        &paths.init,
    )?;
    drop(init);
    let Some(outcome) = training::resume_and_run(
        &plan,
        &sampler,
        &mut task,
        &paths.out_dir,
        &config_json,
        resume,
        stop_after.unwrap_or(usize::MAX),
    )?
    else {
        return Ok(None);
    };
    let report = FinetuneReport {
        steps: outcome.step,
        epochs: config.epochs,
        utterances,
        classes,
        final_loss: outcome.last.loss,
        final_accuracy: outcome.last.accuracy,
        mean_data_wait_share: outcome.mean_data_wait_share,
        wall_seconds: started.elapsed().as_secs_f64(),
        validation: None,
    };
    if !group.is_main() {
        return Ok(Some(report));
    }
    let report = FinetuneReport {
        validation: ValidationSummary::of_run(&paths.out_dir)?,
        ..report
    };
    let json = serde_json::to_string_pretty(&report)?;
    stage_kit::write_bytes_atomically(&paths.out_dir.join(REPORT), json.as_bytes())?;
    Ok(Some(report))
}

/// Kept pseudo-labels as contiguous class indices (clusters renumbered in order).
fn class_labels(path: &Path) -> Result<(BTreeMap<String, i64>, usize)> {
    let labels = PseudoLabels::read(path)?;
    let mut classes: Vec<i64> = labels
        .labels
        .iter()
        .filter(|l| l.kept)
        .map(|l| l.cluster)
        .collect();
    classes.sort_unstable();
    classes.dedup();
    if classes.len() < 2 {
        return Err(Error::Input(format!(
            "{}: {} kept cluster(s); need at least 2 classes",
            path.display(),
            classes.len()
        )));
    }
    let index: HashMap<i64, i64> = classes
        .iter()
        .enumerate()
        .map(|(i, &c)| (c, i as i64))
        .collect();
    let map = labels
        .labels
        .iter()
        .filter(|l| l.kept)
        .map(|l| (l.utt_id.clone(), index[&l.cluster]))
        .collect();
    Ok((map, classes.len()))
}

/// Whether a variable belongs to the encoder's embedding layer.
fn in_embedding_layer(name: &str) -> bool {
    name.starts_with("model.encoder.embedding")
}

struct FinetuneTask<'a> {
    config: &'a FinetuneConfig,
    config_json: serde_json::Value,
    spec: EmbeddingSpec,
    vs: VarStore,
    encoder: Encoder,
    classifier: AamSoftmax,
    targets: HashMap<usize, i64>,
    features: FeaturePipeline,
    /// The loader's sampler, for augmentation on the device.
    sampler: Arc<CropSampler>,
    optimizer: Optimizer,
    scaler: LossScaler,
    grads: GradSync,
    replicated: Replicated,
    /// This process's rank (its dither stream).
    rank: usize,
    lr: Cosine,
    steps_per_epoch: usize,
    mixed: bool,
}

impl<'a> FinetuneTask<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        config: &'a FinetuneConfig,
        config_json: serde_json::Value,
        spec: EmbeddingSpec,
        classes: i64,
        targets: HashMap<usize, i64>,
        (features, sampler): (FeaturePipeline, Arc<CropSampler>),
        plan: &Plan,
        device: Device,
    ) -> Result<Self> {
        let vs = VarStore::new(device);
        let model = vs.root() / "model";
        let seed = stage_kit::rng::stream_seed(config.seed, "finetune-init");
        let (encoder, classifier) = crate::model::seeded_init(seed, || {
            let encoder = Encoder::new(&(&model / "encoder"), &spec.encoder);
            let classifier = AamSoftmax::new(
                &(&model / "classifier"),
                spec.encoder.embedding_dim(),
                classes,
                config.aam.clone(),
            );
            (encoder, classifier)
        });
        let optimizer = Optimizer::new(&vs, config.optim.clone());
        let warmup = (config.optim.warmup_epochs * plan.steps_per_epoch as f64).round() as usize;
        let lr = Cosine::new(
            config.optim.scaled_lr(plan.batch),
            config.optim.min_lr,
            plan.total_steps(),
        )
        .with_warmup(0.0, warmup);
        Ok(FinetuneTask {
            config,
            config_json,
            spec,
            grads: GradSync::new(plan.group.clone(), optimizer.parameters())?,
            replicated: Replicated::new(plan.group.clone(), &vs, &[]),
            rank: plan.group.rank(),
            vs,
            encoder,
            classifier,
            targets,
            features,
            sampler,
            optimizer,
            scaler: LossScaler::new(),
            lr,
            steps_per_epoch: plan.steps_per_epoch,
            mixed: config.mixed_precision && device != Device::Cpu,
        })
    }

    /// A var store view of the encoder alone (for loading the initial weights).
    fn encoder_vs(&self) -> EncoderVars<'_> {
        EncoderVars(&self.vs)
    }
}

/// The encoder's variables of a fine-tuning var store, named as in an encoder-only store.
struct EncoderVars<'a>(&'a VarStore);

impl<'a> checkpoint::VarSource for EncoderVars<'a> {
    fn variables(&self) -> HashMap<String, Tensor> {
        self.0
            .variables()
            .into_iter()
            .filter_map(|(k, t)| k.strip_prefix("model.encoder.").map(|k| (k.to_owned(), t)))
            .collect()
    }
}

impl Task for FinetuneTask<'_> {
    fn replicated(&self) -> &Replicated {
        &self.replicated
    }

    fn restore(&mut self, loaded: &checkpoint::Loaded, path: &Path) -> Result<usize> {
        checkpoint::restore_vars(&self.vs, &loaded.tensors, "", path)?;
        restore_training_state(&loaded.tensors, &mut self.optimizer, &mut self.scaler)
            .map_err(|m| Error::checkpoint(path, m))?;
        Ok(loaded.meta.step)
    }

    fn step(&mut self, step: usize, epoch: usize, micro: Vec<CropBatch>) -> Result<StepRecord> {
        let margin = self
            .config
            .aam
            .margin_at(step as f64 / self.steps_per_epoch as f64);
        let count = micro.len();
        let (mut loss_value, mut accuracy) = (0.0, 0.0);
        for (m, crops) in micro.iter().enumerate() {
            let x = self.sampler.to_device(
                &crops.globals,
                crops.batch,
                &crops.global_draws,
                self.features.device(),
            );
            let key = dither_key(self.config.seed, step, self.rank, m, "global");
            let feats = self.features.of_training(&x, key);
            let labels: Vec<i64> = crops.items.iter().map(|i| self.targets[i]).collect();
            let labels = Tensor::from_slice(&labels).to_device(feats.device());
            let (loss, micro_accuracy) = tch::autocast(self.mixed, || {
                let embeddings = self.encoder.forward_t(&feats, true).to_kind(Kind::Float);
                self.classifier.loss(&embeddings, &labels, margin)
            });
            let value = loss.double_value(&[]);
            training::check_loss(value, step)?;
            loss_value += value / count as f64;
            accuracy += micro_accuracy / count as f64;
            accumulation::backward_micro(
                &self.optimizer,
                &self.scaler,
                &self.grads,
                &loss,
                self.mixed,
                (m, count),
            )?;
        }
        let lr = self.lr.at(step);
        let (grad_norm, skipped) = accumulation::finish(
            &self.optimizer,
            &mut self.scaler,
            self.mixed,
            self.config.optim.clip_grad,
        );
        if !skipped {
            let embedding_only = epoch < self.config.embedding_layer_only_epochs;
            self.optimizer
                .step(lr, self.config.optim.weight_decay, |name| {
                    embedding_only
                        && name.starts_with("model.encoder.")
                        && !in_embedding_layer(name)
                });
        }
        Ok(StepRecord {
            step,
            epoch,
            loss: loss_value,
            lr,
            weight_decay: self.config.optim.weight_decay,
            momentum: margin,
            grad_norm,
            accuracy,
            skipped,
            ..Default::default()
        })
    }

    fn checkpoint(&self, epoch: usize, step: usize) -> (CheckpointMeta, Vec<(String, Tensor)>) {
        let meta = CheckpointMeta {
            format: checkpoint::FORMAT.to_owned(),
            kind: "finetune".to_owned(),
            epoch,
            step,
            embedding_prefix: "model.encoder.".to_owned(),
            embedding: self.spec.clone(),
            config: self.config_json.clone(),
        };
        let mut tensors = checkpoint::var_tensors(&self.vs, "");
        tensors.extend(training_state(&self.optimizer, &self.scaler));
        (meta, tensors)
    }
}
