//! The loop shared by DINO pretraining and supervised fine-tuning: an epoch is a permutation
//! of the training items drawn from the seed, cut into batches that background workers crop
//! and augment ahead of the optimiser; each step is handed to the task; checkpoints are
//! written every `checkpoint_every` steps and at each epoch end; every step is logged.
//! Because the order, the crops and the schedules are functions of (seed, epoch, step), a run
//! resumed from a checkpoint continues exactly as the uninterrupted run would have.
//!
//! Data-parallel (see [`crate::distributed`]): every rank draws the same epoch order and takes
//! its own disjoint slice of each global batch; variables are broadcast from rank 0 at the
//! start and buffers before each step; only rank 0 writes checkpoints, the step log and the
//! progress display. Checkpoints do not depend on the world size, so a run resumes at another.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use feature_extract::augment::AugmentConfig;
use feature_extract::cache::AudioCache;
use process_group::ProcessGroup;
use rand::seq::SliceRandom;
use tch::Tensor;

use crate::checkpoint::{self, CheckpointDir, CheckpointMeta, EpochModels};
use crate::crops::{CropBatch, CropConfig, CropSampler, open_augmenter};
use crate::distributed::{Replicated, mean_over_ranks};
use crate::error::{Error, Result};
use crate::features::FeaturePipeline;
use crate::monitor::{StepLog, StepRecord};
use crate::prefetch::{JobPanicked, Prefetcher};
use crate::validation::{Validation, ValidationConfig, ValidationSet, Validator};

/// One kind of training, step by step.
pub trait Task {
    /// Runs one optimisation step on this rank's share of a batch, as micro-batches (one
    /// unless gradients accumulate, see [`crate::accumulation`]); the loop fills in the
    /// timing fields.
    fn step(&mut self, step: usize, epoch: usize, micro: Vec<CropBatch>) -> Result<StepRecord>;
    /// The checkpoint of the state after `step` steps.
    fn checkpoint(&self, epoch: usize, step: usize) -> (CheckpointMeta, Vec<(String, Tensor)>);
    /// Restores a checkpoint of this task read from `path`; returns its step.
    fn restore(&mut self, loaded: &checkpoint::Loaded, path: &Path) -> Result<usize>;
    /// The variables that ranks keep identical.
    fn replicated(&self) -> &Replicated;
    /// Whether the state may be checkpointed now (not while the collapse monitor may stop
    /// the run, so that the newest checkpoint stays a good one).
    fn checkpoint_allowed(&self) -> bool {
        true
    }
}

/// The checks both trainings share, on the keys of section `section` (`pretrain` or
/// `finetune`): epochs and batch size of at least 1, crops that can be cut, optimiser and
/// augmentation options that can train, a validation period of at least one epoch. The
/// error names the section and the key.
pub fn check_common(
    section: &str,
    (epochs, batch_size): (usize, usize),
    crops: &CropConfig,
    (optim, augment): (&crate::optim::OptimConfig, &AugmentConfig),
    validation: Option<&ValidationConfig>,
) -> Result<()> {
    let at = |sub: &str, message: String| Error::Config(format!("[{section}{sub}] {message}"));
    let sizes = [("epochs", epochs as i64), ("batch_size", batch_size as i64)];
    stage_kit::config::at_least_one(&sizes).map_err(|m| at("", m))?;
    crops.check().map_err(|m| at("", m))?;
    optim.check().map_err(|m| at(".optim", m))?;
    augment.check().map_err(|m| at(".augment", m))?;
    match validation {
        Some(v) => v.check().map_err(|m| at(".validation", m)),
        None => Ok(()),
    }
}

/// Refuses a loss that is no longer a finite number: the run has diverged at `step`.
pub fn check_loss(loss: f64, step: usize) -> Result<()> {
    if loss.is_finite() {
        Ok(())
    } else {
        Err(Error::Diverged { step, loss })
    }
}

/// Shape of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub epochs: usize,
    pub batch: usize,
    pub steps_per_epoch: usize,
    /// Cache indices of the training items.
    pub items: Vec<usize>,
    pub workers: usize,
    pub prefetch: usize,
    pub checkpoint_every: usize,
    /// Where checkpoints go.
    pub checkpoints: CheckpointDir,
    /// Name of the progress display.
    pub label: &'static str,
    /// The ranks that share each batch (a world of one unless [`Plan::distribute`] said).
    pub group: Arc<ProcessGroup>,
    /// Micro-batches per step on each rank (gradient accumulation).
    pub accumulation: usize,
    /// Where the embedding network of every finished epoch is kept (none in tests that do
    /// not need them).
    pub epoch_models: Option<EpochModels>,
    /// Validation of the epoch models, when the run validates.
    pub validator: Option<Arc<Validator>>,
}

impl Plan {
    /// A plan over `items` with batches of at most `batch_size` and at most
    /// `max_steps_per_epoch` steps per epoch.
    pub fn new(
        seed: u64,
        epochs: usize,
        batch_size: usize,
        max_steps_per_epoch: Option<usize>,
        items: Vec<usize>,
        checkpoints: CheckpointDir,
        label: &'static str,
    ) -> Result<Self> {
        let batch = batch_size.min(items.len()).max(1);
        let mut steps_per_epoch = items.len() / batch;
        if let Some(cap) = max_steps_per_epoch {
            steps_per_epoch = steps_per_epoch.min(cap);
        }
        if steps_per_epoch == 0 {
            return Err(Error::Input(format!(
                "{} training utterances make no batch",
                items.len()
            )));
        }
        Ok(Plan {
            seed,
            epochs,
            batch,
            steps_per_epoch,
            items,
            workers: 2,
            prefetch: 4,
            checkpoint_every: 1000,
            checkpoints,
            label,
            group: Arc::new(ProcessGroup::single()),
            accumulation: 1,
            epoch_models: None,
            validator: None,
        })
    }

    /// Shares each (global) batch among the ranks of `group`, each processing its share as
    /// `accumulation` micro-batches; the batch must divide into world x accumulation.
    pub fn distribute(&mut self, group: Arc<ProcessGroup>, accumulation: usize) -> Result<()> {
        let world = group.world_size();
        if accumulation == 0 || !self.batch.is_multiple_of(world * accumulation) {
            return Err(Error::Config(format!(
                "batch_size {} (the global batch) does not divide into {world} rank(s) x \
                 {accumulation} accumulation_steps",
                self.batch
            )));
        }
        self.group = group;
        self.accumulation = accumulation;
        Ok(())
    }

    /// Keeps the embedding network of every epoch in `out_dir` and, with a validation
    /// `config` and `set`, validates it every `config.every_epochs` (see [`Validator::new`]
    /// for the combinations refused).
    pub fn with_epoch_models(
        &mut self,
        out_dir: &Path,
        (config, set): (Option<&ValidationConfig>, Option<&ValidationSet>),
        (device, workers): (stage_kit::DeviceSpec, usize),
    ) -> Result<()> {
        self.epoch_models = Some(EpochModels::of_run(out_dir));
        let validator = Validator::new(config, set, (out_dir, self.epochs), (device, workers))?;
        self.validator = validator.map(Arc::new);
        Ok(())
    }

    /// The items of each micro-batch that this rank processes.
    pub fn local_batch(&self) -> usize {
        self.batch / (self.group.world_size() * self.accumulation)
    }

    /// Whether this process writes checkpoints, logs and reports (rank 0).
    pub fn is_main(&self) -> bool {
        self.group.is_main()
    }

    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch
    }

    /// The item order of an epoch.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order = self.items.clone();
        order.shuffle(&mut stage_kit::rng::stream(
            self.seed,
            &format!("order/epoch{epoch}"),
        ));
        order
    }
}

/// What the loop did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Steps completed (in total, including those before a resume).
    pub step: usize,
    pub last: StepRecord,
    pub mean_data_wait_share: f64,
}

/// Runs steps `start..end` of `plan`, logging to `log` (rank 0's; `None` on the others).
/// With `end == start` (nothing to run) the state at `start` is checkpointed, which gives the
/// untrained model of a fresh run.
pub fn run(
    plan: &Plan,
    sampler: &Arc<CropSampler>,
    task: &mut impl Task,
    mut log: Option<&mut StepLog>,
    start: usize,
    end: usize,
) -> Result<Outcome> {
    let end = end.min(plan.total_steps());
    task.replicated().broadcast_all()?;
    if end <= start && plan.is_main() {
        let (meta, tensors) = task.checkpoint(start / plan.steps_per_epoch, start);
        plan.checkpoints.save(&meta, &tensors)?;
    }
    let mut progress = plan
        .is_main()
        .then(|| stage_kit::progress::Progress::new(plan.label, plan.total_steps(), "step"));
    if let Some(p) = &mut progress {
        p.update(start);
    }
    let mut outcome = Outcome {
        step: start,
        ..Default::default()
    };
    let (mut wait_sum, mut done) = (0.0, 0usize);
    while outcome.step < end {
        let step = outcome.step;
        let epoch = step / plan.steps_per_epoch;
        let first = step % plan.steps_per_epoch;
        let order = plan.epoch_order(epoch);
        let last = plan.steps_per_epoch.min(first + end - step);
        // This rank's slice of each micro-batch of each global batch (job `s * acc + m` is
        // micro-batch `m` of the `s`-th step here).
        let (batch, local, acc) = (plan.batch, plan.local_batch(), plan.accumulation);
        let (rank, world) = (plan.group.rank(), plan.group.world_size());
        let jobs: Vec<Vec<(usize, usize)>> = (first..last)
            .flat_map(|b| (0..acc).map(move |m| b * batch + (m * world + rank) * local))
            .map(|from| (from..from + local).map(|p| (p, order[p])).collect())
            .collect();
        let (loader_sampler, loader_jobs) = (sampler.clone(), Arc::new(jobs));
        let jobs = loader_jobs.clone();
        let mut loader = Prefetcher::start(jobs.len(), plan.workers, plan.prefetch, move |j| {
            loader_sampler.batch(epoch, &loader_jobs[j])
        });
        let mut step_started = Instant::now();
        let mut waited_before = loader.waited();
        // A panicked loader job ends the training with its message and the utterances it read.
        let entries = sampler.cache().entries();
        let unwrap_job = |item: std::result::Result<Result<CropBatch>, JobPanicked>| {
            item.map_err(|failed| {
                let items = &jobs[failed.job];
                Error::loader(
                    failed,
                    items.iter().map(|&(_, i)| entries[i].utt_id.as_str()),
                )
            })?
        };
        while let Some(first_micro) = loader.next() {
            let mut micro = vec![unwrap_job(first_micro)?];
            for _ in 1..acc {
                let next = loader
                    .next()
                    .ok_or_else(|| Error::Config("the loader ended inside a step".to_owned()))?;
                micro.push(unwrap_job(next)?);
            }
            let wait = (loader.waited() - waited_before).as_secs_f64();
            let count: usize = micro.iter().map(CropBatch::count).sum();
            task.replicated().broadcast_buffers()?;
            let mut record = task.step(outcome.step, epoch, micro)?;
            // The logged loss and accuracy are those of the global batch.
            let means = mean_over_ranks(&plan.group, &[record.loss, record.accuracy])?;
            (record.loss, record.accuracy) = (means[0], means[1]);
            let elapsed = step_started.elapsed().as_secs_f64().max(1e-9);
            step_started = Instant::now();
            waited_before = loader.waited();
            record.data_wait_share = (wait / elapsed).min(1.0);
            record.crops_per_second = (count * plan.group.world_size()) as f64 / elapsed;
            wait_sum += record.data_wait_share;
            done += 1;
            outcome.step += 1;
            if plan.is_main() && outcome.step.is_multiple_of(plan.steps_per_epoch) {
                record.validation = end_of_epoch(plan, task, outcome.step)?;
            }
            if let Some(log) = log.as_deref_mut() {
                log.append(&record)
                    .map_err(|e| stage_kit::FileError::new(log.path(), e))?;
                if record.validation.is_some() {
                    crate::curves::draw(log.path())?;
                }
            }
            outcome.last = record;
            if let Some(p) = &mut progress {
                p.update(1);
            }
            let s = outcome.step;
            let due = s.is_multiple_of(plan.checkpoint_every.max(1))
                || s.is_multiple_of(plan.steps_per_epoch);
            if plan.is_main() && ((due && task.checkpoint_allowed()) || s == end) {
                let (meta, tensors) = task.checkpoint(s / plan.steps_per_epoch, s);
                plan.checkpoints.save(&meta, &tensors)?;
            }
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    outcome.mean_data_wait_share = wait_sum / done.max(1) as f64;
    Ok(outcome)
}

/// At the end of an epoch (`step` steps done): keeps the epoch's embedding network and,
/// when one is due, validates it (before the epoch's checkpoint, so that a run interrupted
/// in between redoes the validation when it resumes).
fn end_of_epoch(plan: &Plan, task: &impl Task, step: usize) -> Result<Option<Validation>> {
    let Some(models) = &plan.epoch_models else {
        return Ok(None);
    };
    let epochs_done = step / plan.steps_per_epoch;
    let (meta, tensors) = task.checkpoint(epochs_done, step);
    let model = models.save(&meta, &tensors)?;
    match &plan.validator {
        Some(validator) if validator.due(epochs_done) => {
            Ok(Some(validator.validate(&model, epochs_done)?))
        }
        _ => Ok(None),
    }
}

/// Cache indices of `utt_ids`; utterances the cache lacks (rejected by `prepare`) are
/// reported and left out.
pub fn cache_items<'a>(
    utt_ids: impl Iterator<Item = &'a str>,
    cache: &AudioCache,
) -> Result<Vec<usize>> {
    let mut items = Vec::new();
    let mut missing = Vec::new();
    for id in utt_ids {
        match cache.position(id) {
            Some(i) if cache.entries()[i].length > 0 => items.push(i),
            _ => missing.push(id),
        }
    }
    if !missing.is_empty() {
        tracing::warn!(
            "{} training utterance(s) are not in {} (rejected by prepare?), e.g. {}",
            missing.len(),
            cache.path().display(),
            missing
                .iter()
                .take(5)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if items.is_empty() {
        return Err(Error::Input(format!(
            "no training utterance is in {}",
            cache.path().display()
        )));
    }
    Ok(items)
}

/// The newest checkpoint of `ckpts` if it was written with the same defining configuration
/// as `config` (how-it-runs settings may differ, and are logged); an error if not.
fn resumable(
    ckpts: &CheckpointDir,
    config: &serde_json::Value,
) -> Result<Option<checkpoint::Loaded>> {
    let Some(latest) = ckpts.latest() else {
        return Ok(None);
    };
    let loaded = checkpoint::load(&latest)?;
    let defining = stage_kit::how_it_runs::defining;
    if defining(&loaded.meta.config) != defining(config) {
        return Err(Error::checkpoint(
            &latest,
            "was written with another configuration; remove the output folder or run without --resume",
        ));
    }
    tracing::info!(
        "resuming from {} (step {})",
        latest.display(),
        loaded.meta.step
    );
    for change in stage_kit::how_it_runs::changes(&loaded.meta.config, config) {
        tracing::info!("resuming with another setting of how the run runs: {change}");
    }
    Ok(Some(loaded))
}

/// The crop sampler of a run over `cache`, augmenting with the noise and RIR caches when
/// given; refuses a cache whose sample rate is not the one `features` computes fbank at.
pub fn crop_sampler(
    cache: AudioCache,
    (noise, rirs): (Option<&Path>, Option<&Path>),
    augment: &AugmentConfig,
    crops: CropConfig,
    seed: u64,
    features: &FeaturePipeline,
) -> Result<Arc<CropSampler>> {
    if features.sample_rate() != cache.sample_rate() {
        return Err(Error::Input(format!(
            "fbank sample_rate {} differs from the audio cache's {}",
            features.sample_rate(),
            cache.sample_rate()
        )));
    }
    let rate = f64::from(cache.sample_rate());
    let longest = cache.entries().iter().map(|e| e.length).max().unwrap_or(0);
    let longest_crop = crops.global_seconds.max(crops.local_seconds);
    if longest_crop * rate > longest as f64 {
        return Err(Error::Input(format!(
            "crops of {longest_crop} s are longer than every utterance of {} (the longest has \
             {:.2} s): shorten the crops",
            cache.path().display(),
            longest as f64 / rate
        )));
    }
    let augmenter = open_augmenter(noise, rirs, augment)?;
    Ok(Arc::new(
        CropSampler::new(cache, augmenter, crops, seed)
            .with_augmentation_on_device(augment.on_device),
    ))
}

/// File names inside a training run's output folder (those the runner reads are
/// [`stage_kit::run_folder`]'s).
pub use stage_kit::run_folder::{MODEL as FINAL_MODEL, REPORT};
/// The training's step log, one JSON object per step.
pub const STEP_LOG: &str = "train_log.jsonl";
/// The folder of the run's checkpoints.
pub const CHECKPOINTS: &str = "checkpoints";

/// Continues from the newest checkpoint of `plan` when `resume` asks (refusing one written
/// with another `config`), then runs up to step `end`, appending to [`STEP_LOG`] in
/// `out_dir`; a run that reaches its last step saves the task as [`FINAL_MODEL`] there.
/// `None` when the run stopped before its last step. Every rank restores the same
/// checkpoint (the output folder is shared); only rank 0 writes.
pub fn resume_and_run(
    plan: &Plan,
    sampler: &Arc<CropSampler>,
    task: &mut impl Task,
    out_dir: &Path,
    config: &serde_json::Value,
    resume: bool,
    end: usize,
) -> Result<Option<Outcome>> {
    let mut start = 0;
    if resume && let Some(loaded) = resumable(&plan.checkpoints, config)? {
        start = task.restore(&loaded, &plan.checkpoints.path_for(loaded.meta.step))?;
    }
    let mut log = match plan.is_main() {
        true => Some(open_log(out_dir, start)?),
        false => None,
    };
    let outcome = run(plan, sampler, task, log.as_mut(), start, end)?;
    // No rank leaves before the others are done with their collectives.
    plan.group
        .barrier()
        .map_err(|e| Error::Distributed(e.to_string()))?;
    if outcome.step < plan.total_steps() {
        tracing::info!(
            "stopped at step {} of {} as asked",
            outcome.step,
            plan.total_steps()
        );
        return Ok(None);
    }
    if plan.is_main() {
        let (meta, tensors) = task.checkpoint(plan.epochs, outcome.step);
        checkpoint::save(&out_dir.join(FINAL_MODEL), &meta, &tensors)?;
        crate::curves::draw(&out_dir.join(STEP_LOG))?;
    }
    Ok(Some(outcome))
}

/// Opens the step log of `out_dir`, keeping the steps before `step`.
fn open_log(out_dir: &Path, step: usize) -> Result<StepLog> {
    std::fs::create_dir_all(out_dir).map_err(|e| stage_kit::FileError::new(out_dir, e))?;
    let path = out_dir.join(STEP_LOG);
    StepLog::open(&path, Some(step)).map_err(|e| stage_kit::FileError::new(&path, e).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(batch: usize) -> Plan {
        let checkpoints = CheckpointDir {
            dir: std::env::temp_dir().join("unused"),
            keep: 1,
        };
        Plan::new(1, 1, batch, None, (0..40).collect(), checkpoints, "test").unwrap()
    }

    #[test]
    fn accumulation_divides_the_batch_or_names_the_numbers() {
        let mut p = plan(12);
        p.distribute(Arc::new(ProcessGroup::single()), 3).unwrap();
        assert_eq!(p.local_batch(), 4);
        let err = plan(10)
            .distribute(Arc::new(ProcessGroup::single()), 3)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch_size 10") && err.contains("1 rank(s) x 3 accumulation_steps"),
            "{err}"
        );
        assert!(
            plan(10)
                .distribute(Arc::new(ProcessGroup::single()), 0)
                .is_err()
        );
    }
}
