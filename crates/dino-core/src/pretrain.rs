//! DINO pretraining: the configuration, and the training loop from an audio cache to
//! checkpoints, a step log and a final model.
//!
//! Each step: the loader (background threads) cuts and augments the crops of a batch; the
//! features are computed on the training device; the teacher scores the global views, the
//! student all views; the DINO loss is back-propagated through the student (the last layer
//! is frozen during the first epoch(s)); the optimiser steps with the scheduled learning rate;
//! the teacher moves towards the student with the scheduled momentum. Schedules, crops and
//! initialisation all derive from the configuration's seed and the step, so that `--resume`
//! continues the uninterrupted run exactly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use data_manifest::UtteranceManifest;
use feature_extract::augment::AugmentConfig;
use feature_extract::cache::AudioCache;
use serde::{Deserialize, Serialize};
use stage_kit::DeviceSpec;
use tch::{Device, Kind, Tensor};

use crate::accumulation;
use crate::checkpoint::{self, CheckpointDir, CheckpointMeta, EmbeddingSpec};
use crate::crops::{CropBatch, CropConfig, CropSampler};
use crate::distributed::{self, GradSync, Replicated, global_row_mean};
use crate::error::{Error, Result};
use crate::features::{FeatureConfig, FeaturePipeline, dither_key};
use crate::head::LAST_LAYER;
use crate::loss::{DinoLoss, LossConfig, TeacherStats};
use crate::model::{Dino, ModelConfig};
use crate::monitor::{CollapseWatch, MonitorConfig, StepRecord};
use crate::optim::{LossScaler, OptimConfig, Optimizer, restore_training_state, training_state};
use crate::schedule::{Cosine, teacher_temperature};
use crate::training::{self, Plan, REPORT, Task};
use crate::validation::{ValidationConfig, ValidationSet, ValidationSummary};
use process_group::ProcessGroup;

/// Everything that defines a pretraining run; defaults are the authors' recipe (DESIGN.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PretrainConfig {
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    pub device: DeviceSpec,
    pub model: ModelConfig,
    pub features: FeatureConfig,
    pub crops: CropConfig,
    /// Used when noise and/or RIR caches are given.
    pub augment: AugmentConfig,
    pub loss: LossConfig,
    pub optim: OptimConfig,
    /// Teacher EMA momentum at the start and at the end (cosine schedule).
    pub teacher_momentum: (f64, f64),
    pub epochs: usize,
    /// Utterances per step, over all ranks (each of N ranks takes batch_size / N).
    pub batch_size: usize,
    /// Micro-batches per step on each rank, their gradients summed before one all-reduce
    /// (each rank processes batch_size / (ranks x accumulation_steps) utterances at a time).
    pub accumulation_steps: usize,
    /// Caps the steps of an epoch (an epoch is otherwise one pass over the utterances).
    pub max_steps_per_epoch: Option<usize>,
    /// Epochs during which the head's last layer is not updated.
    pub freeze_last_layer_epochs: usize,
    /// fp16 autocast with loss scaling (CUDA only).
    pub mixed_precision: bool,
    /// Loader threads and batches prepared ahead.
    pub workers: usize,
    pub prefetch: usize,
    /// Steps between checkpoints (and one at each epoch end).
    pub checkpoint_every: usize,
    pub keep_checkpoints: usize,
    /// Validation of the epoch models (`[pretrain.validation]`), with a validation set given.
    pub validation: Option<ValidationConfig>,
    /// The collapse monitor: warn only (default), or stop the run.
    pub monitor: MonitorConfig,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            seed: 1,
            device: DeviceSpec::Auto,
            model: ModelConfig::default(),
            features: FeatureConfig::default(),
            crops: CropConfig::default(),
            augment: AugmentConfig::default(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            teacher_momentum: (0.996, 1.0),
            epochs: 70,
            batch_size: 128,
            accumulation_steps: 1,
            max_steps_per_epoch: None,
            freeze_last_layer_epochs: 1,
            mixed_precision: true,
            workers: 4,
            prefetch: 8,
            checkpoint_every: 1000,
            keep_checkpoints: 3,
            validation: None,
            monitor: MonitorConfig::default(),
        }
    }
}

impl PretrainConfig {
    /// Refuses values that cannot train, naming the key (`[pretrain.optim] lr = -1: ...`).
    pub fn check(&self) -> Result<()> {
        let sizes = (self.epochs, self.batch_size);
        training::check_common(
            "pretrain",
            sizes,
            &self.crops,
            (&self.optim, &self.augment),
            self.validation.as_ref(),
        )?;
        self.monitor
            .check()
            .map_err(|m| Error::Config(format!("[pretrain.monitor] {m}")))?;
        let model = [
            ("encoder", self.model.encoder.check()),
            ("head", self.model.head.check()),
        ];
        for (sub, checked) in model {
            checked.map_err(|m| Error::Config(format!("[pretrain.model.{sub}] {m}")))?;
        }
        let (start, end) = self.teacher_momentum;
        if !((0.0..=1.0).contains(&start) && (0.0..=1.0).contains(&end)) {
            return Err(Error::Config(format!(
                "[pretrain] teacher_momentum = ({start}, {end}): both must be in [0, 1]"
            )));
        }
        Ok(())
    }
}

/// Inputs and outputs of a run.
#[derive(Debug, Clone)]
pub struct PretrainPaths {
    /// Unlabelled training utterances (only `utt_id` is used).
    pub manifest: PathBuf,
    pub audio_cache: PathBuf,
    pub noise_cache: Option<PathBuf>,
    pub rir_cache: Option<PathBuf>,
    pub out_dir: PathBuf,
    /// The validation set, for `validation`.
    pub validation: Option<ValidationSet>,
}

/// Headline numbers of a finished run (`report.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PretrainReport {
    pub steps: usize,
    pub epochs: usize,
    pub utterances: usize,
    pub final_loss: f64,
    pub final_teacher_entropy: f64,
    pub mean_data_wait_share: f64,
    pub collapse_warnings: usize,
    /// The first step whose teacher statistics showed a collapse.
    pub first_collapse_step: Option<usize>,
    pub wall_seconds: f64,
    pub device: String,
    pub model: String,
    /// The best and the last validation, when the run validated.
    pub validation: Option<ValidationSummary>,
}

/// Where the run stops: all steps, or (for tests and time-boxed runs) earlier.
#[derive(Debug, Clone, Copy, Default)]
pub struct StopAt {
    pub step: Option<usize>,
}

/// Trains; with `resume` continues from the newest checkpoint in `out_dir/checkpoints`.
/// Returns the report when the run completed (not when `stop` cut it short).
pub fn run(
    config: &PretrainConfig,
    paths: &PretrainPaths,
    resume: bool,
    stop: StopAt,
) -> Result<Option<PretrainReport>> {
    let started = Instant::now();
    config.check()?;
    let device = distributed::device(config.device)?;
    let group = distributed::world(device)?;
    let cache = AudioCache::open(&paths.audio_cache)?;
    let manifest = UtteranceManifest::read(&paths.manifest)?;
    refuse_label_filtered(&paths.manifest)?;
    let items = training::cache_items(
        manifest.utterances.iter().map(|u| u.utt_id.as_str()),
        &cache,
    )?;
    let features = FeaturePipeline::new(&config.features, device)?;
    let sampler = training::crop_sampler(
        cache,
        (paths.noise_cache.as_deref(), paths.rir_cache.as_deref()),
        &config.augment,
        config.crops.clone(),
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
        "pretrain",
    )?;
    (plan.workers, plan.prefetch, plan.checkpoint_every) =
        (config.workers, config.prefetch, config.checkpoint_every);
    plan.distribute(group.clone(), config.accumulation_steps)?;
    plan.with_epoch_models(
        &paths.out_dir,
        (config.validation.as_ref(), paths.validation.as_ref()),
        (config.device, config.workers),
    )?;
    let config_json = serde_json::to_value(config)?;
    let mut task = DinoTask::new(
        config,
        config_json.clone(),
        &plan,
        (features, sampler.clone()),
        device,
    )?;
    let end = stop.step.unwrap_or(usize::MAX);
    let Some(outcome) = training::resume_and_run(
        &plan,
        &sampler,
        &mut task,
        &paths.out_dir,
        &config_json,
        resume,
        end,
    )?
    else {
        return Ok(None);
    };
    let report = PretrainReport {
        steps: outcome.step,
        epochs: config.epochs,
        utterances,
        final_loss: outcome.last.loss,
        final_teacher_entropy: outcome.last.teacher_entropy,
        mean_data_wait_share: outcome.mean_data_wait_share,
        collapse_warnings: task.collapse.warnings(),
        first_collapse_step: task.collapse.first_collapse(),
        wall_seconds: started.elapsed().as_secs_f64(),
        device: format!("{device:?}"),
        model: serde_json::to_string(&config.model.encoder).unwrap_or_default(),
        validation: None,
    };
    if !group.is_main() {
        return Ok(Some(report));
    }
    let report = PretrainReport {
        validation: ValidationSummary::of_run(&paths.out_dir)?,
        ..report
    };
    let json = serde_json::to_string_pretty(&report)?;
    stage_kit::write_bytes_atomically(&paths.out_dir.join(REPORT), json.as_bytes())?;
    Ok(Some(report))
}

/// Self-supervised training must not see speaker labels: refuse manifests that went through
/// a label-using filter.
fn refuse_label_filtered(path: &Path) -> Result<()> {
    let metadata = UtteranceManifest::read_metadata(path)?;
    if let Some(filters) = metadata.get(data_manifest::utterances::LABEL_FILTERS_KEY) {
        return Err(Error::Input(format!(
            "{} was filtered with speaker labels ({filters}); self-supervised pretraining must not use labels",
            path.display()
        )));
    }
    Ok(())
}

/// The DINO step and its state.
struct DinoTask<'a> {
    config: &'a PretrainConfig,
    config_json: serde_json::Value,
    features: FeaturePipeline,
    /// The loader's sampler, for augmentation on the device.
    sampler: Arc<CropSampler>,
    dino: Dino,
    optimizer: Optimizer,
    loss: DinoLoss,
    scaler: LossScaler,
    group: Arc<ProcessGroup>,
    grads: GradSync,
    replicated: Replicated,
    schedules: Schedules,
    steps_per_epoch: usize,
    mixed: bool,
    collapse: CollapseWatch,
}

impl<'a> DinoTask<'a> {
    fn new(
        config: &'a PretrainConfig,
        config_json: serde_json::Value,
        plan: &Plan,
        (features, sampler): (FeaturePipeline, Arc<CropSampler>),
        device: Device,
    ) -> Result<Self> {
        let seed = stage_kit::rng::stream_seed(config.seed, "init");
        let dino = crate::model::seeded_init(seed, || Dino::new(&config.model, device));
        let optimizer = Optimizer::new(&dino.student.vs, config.optim.clone());
        let group = plan.group.clone();
        Ok(DinoTask {
            config,
            config_json,
            features,
            sampler,
            grads: GradSync::new(group.clone(), optimizer.parameters())?,
            replicated: Replicated::new(group.clone(), &dino.student.vs, &[&dino.teacher.vs]),
            group,
            optimizer,
            loss: DinoLoss::new(config.loss.clone(), config.model.head.out_dim, device),
            scaler: LossScaler::new(),
            schedules: Schedules::new(config, plan.batch, plan.steps_per_epoch, plan.total_steps()),
            steps_per_epoch: plan.steps_per_epoch,
            mixed: config.mixed_precision && device != Device::Cpu,
            collapse: CollapseWatch::new(config.monitor.clone(), config.model.head.out_dim),
            dino,
        })
    }
}

impl DinoTask<'_> {
    /// The DINO loss of one micro-batch, its teacher statistics and the (detached) teacher
    /// outputs of its global views.
    /// `(step, micro)` places the micro-batch in the run (its dither stream).
    fn micro_loss(
        &self,
        crops: &CropBatch,
        temp: f64,
        (step, micro): (usize, usize),
    ) -> (Tensor, TeacherStats, Tensor) {
        let c = self.config;
        let device = self.features.device();
        let rank = self.group.rank();
        let views = |buffer: &[f32], n: usize, draws: &[_], view: &str| {
            let x = self
                .sampler
                .to_device(buffer, n * crops.batch, draws, device);
            let key = dither_key(c.seed, step, rank, micro, view);
            self.features.of_training(&x, key)
        };
        let globals = views(
            &crops.globals,
            c.crops.global_crops,
            &crops.global_draws,
            "global",
        );
        let locals = views(
            &crops.locals,
            c.crops.local_crops,
            &crops.local_draws,
            "local",
        );
        let (teacher_out, student_out) = tch::autocast(self.mixed, || {
            let teacher_out = self.dino.teacher_forward(&globals);
            let mut outs = vec![self.dino.student.forward(&globals, true)];
            if c.crops.local_crops > 0 {
                outs.push(self.dino.student.forward(&locals, true));
            }
            (teacher_out, Tensor::cat(&outs, 0))
        });
        let views = (c.crops.global_crops + c.crops.local_crops) as i64;
        let (loss, stats) = self.loss.loss_and_stats(
            &student_out.to_kind(Kind::Float),
            &teacher_out,
            views,
            c.crops.global_crops as i64,
            temp,
        );
        (loss, stats, teacher_out.detach())
    }
}

impl Task for DinoTask<'_> {
    fn replicated(&self) -> &Replicated {
        &self.replicated
    }

    fn checkpoint_allowed(&self) -> bool {
        self.collapse.checkpoint_allowed()
    }

    fn restore(&mut self, loaded: &checkpoint::Loaded, path: &Path) -> Result<usize> {
        checkpoint::restore_vars(&self.dino.student.vs, &loaded.tensors, "student.", path)?;
        checkpoint::restore_vars(&self.dino.teacher.vs, &loaded.tensors, "teacher.", path)?;
        restore_training_state(&loaded.tensors, &mut self.optimizer, &mut self.scaler)
            .map_err(|m| Error::checkpoint(path, m))?;
        let center = loaded
            .tensors
            .get("loss.center")
            .ok_or_else(|| Error::checkpoint(path, "tensor loss.center is missing"))?;
        self.loss.center = center.to_device(self.loss.center.device());
        Ok(loaded.meta.step)
    }

    fn step(&mut self, step: usize, epoch: usize, micro: Vec<CropBatch>) -> Result<StepRecord> {
        let c = self.config;
        let temp = teacher_temperature(
            c.loss.warmup_teacher_temp,
            c.loss.teacher_temp,
            c.loss.warmup_teacher_temp_epochs,
            step as f64 / self.steps_per_epoch as f64,
        );
        let count = micro.len();
        let mut loss_value = 0.0;
        let mut stats = TeacherStats::default();
        let mut teacher_outs = Vec::with_capacity(count);
        for (m, crops) in micro.iter().enumerate() {
            let (loss, micro_stats, teacher_out) = self.micro_loss(crops, temp, (step, m));
            let value = loss.double_value(&[]);
            training::check_loss(value, step)?;
            // Logged values are means over the micro-batches.
            let w = 1.0 / count as f64;
            loss_value += w * value;
            stats.entropy += w * micro_stats.entropy;
            stats.kl_from_uniform += w * micro_stats.kl_from_uniform;
            stats.batch_entropy += w * micro_stats.batch_entropy;
            stats.center_norm += w * micro_stats.center_norm;
            teacher_outs.push(teacher_out);
            accumulation::backward_micro(
                &self.optimizer,
                &self.scaler,
                &self.grads,
                &loss,
                self.mixed,
                (m, count),
            )?;
        }
        // The centre follows the teacher outputs of the global batch (every micro-batch
        // scored with the centre of the step's start, as without accumulation).
        let batch_center = global_row_mean(&self.group, &Tensor::cat(&teacher_outs, 0))?;
        self.loss.update_center(&batch_center);
        let (lr, momentum) = (self.schedules.lr.at(step), self.schedules.momentum.at(step));
        let (grad_norm, skipped) = accumulation::finish(
            &self.optimizer,
            &mut self.scaler,
            self.mixed,
            c.optim.clip_grad,
        );
        if !skipped {
            let frozen_last = epoch < c.freeze_last_layer_epochs;
            let last_layer = format!("head.{LAST_LAYER}");
            self.optimizer.step(lr, c.optim.weight_decay, |name| {
                frozen_last && name.starts_with(&last_layer)
            });
            self.dino.update_teacher(momentum);
        }
        self.collapse.observe(step, &stats)?;
        Ok(StepRecord {
            step,
            epoch,
            loss: loss_value,
            lr,
            weight_decay: c.optim.weight_decay,
            momentum,
            teacher_temp: temp,
            teacher_entropy: stats.entropy,
            kl_from_uniform: stats.kl_from_uniform,
            batch_entropy: stats.batch_entropy,
            center_norm: stats.center_norm,
            grad_norm,
            skipped,
            ..Default::default()
        })
    }

    fn checkpoint(&self, epoch: usize, step: usize) -> (CheckpointMeta, Vec<(String, Tensor)>) {
        let c = self.config;
        let meta = CheckpointMeta {
            format: checkpoint::FORMAT.to_owned(),
            kind: "dino".to_owned(),
            epoch,
            step,
            embedding_prefix: "teacher.encoder.".to_owned(),
            embedding: EmbeddingSpec {
                encoder: c.model.encoder.clone(),
                features: c.features.clone(),
            },
            config: self.config_json.clone(),
        };
        let mut tensors = checkpoint::var_tensors(&self.dino.student.vs, "student.");
        tensors.extend(checkpoint::var_tensors(&self.dino.teacher.vs, "teacher."));
        tensors.extend(training_state(&self.optimizer, &self.scaler));
        tensors.push(("loss.center".to_owned(), self.loss.center.shallow_clone()));
        (meta, tensors)
    }
}

/// The schedules of a run, as functions of the global step.
struct Schedules {
    lr: Cosine,
    momentum: Cosine,
}

impl Schedules {
    fn new(config: &PretrainConfig, batch: usize, steps_per_epoch: usize, total: usize) -> Self {
        let warmup = (config.optim.warmup_epochs * steps_per_epoch as f64).round() as usize;
        Schedules {
            lr: Cosine::new(config.optim.scaled_lr(batch), config.optim.min_lr, total)
                .with_warmup(0.0, warmup),
            momentum: Cosine::new(config.teacher_momentum.0, config.teacher_momentum.1, total),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PretrainReport;
    use stage_kit::metrics;

    #[test]
    fn report_keys_are_the_ones_the_runner_reads() {
        let report = PretrainReport {
            steps: 3,
            epochs: 1,
            utterances: 4,
            final_loss: 1.5,
            final_teacher_entropy: 2.5,
            mean_data_wait_share: 0.0,
            collapse_warnings: 1,
            first_collapse_step: Some(2),
            wall_seconds: 0.1,
            device: "cpu".into(),
            model: "tiny".into(),
            validation: None,
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json[metrics::STEPS], 3);
        assert_eq!(json[metrics::FINAL_LOSS], 1.5);
        assert_eq!(json[metrics::FINAL_TEACHER_ENTROPY], 2.5);
        assert_eq!(json[metrics::COLLAPSE_WARNINGS], 1);
        assert_eq!(json[metrics::FIRST_COLLAPSE_STEP], 2);
    }
}
