use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use data_manifest::utterances::{Utterance, UtteranceManifest};
use dino_core::encoder::EncoderConfig;
use dino_core::monitor::StepRecord;
use dino_core::pretrain::{self, PretrainConfig, PretrainPaths, StopAt};
use dino_core::training::{FINAL_MODEL, STEP_LOG};
use feature_extract::cache::AudioCache;
use feature_extract::synthetic::{self, Caches};
use pseudo_labeler::config::Init;
use pseudo_labeler::kmeans::{Batched, KMeansBackend, initial_centroids};
use pseudo_labeler::merge::merge_clusters;
use pseudo_labeler::nearest::Compute;
use stage_kit::DeviceSpec;
use tch::Device;

use crate::compare::planted;
use crate::summary::Row;

/// Generated training audio: the caches and a manifest of the speech cache's utterances.
pub struct Audio {
    pub caches: Caches,
    pub manifest: PathBuf,
}

/// Writes `speech_seconds` of speech plus noise and RIR caches, and the manifest, in `dir`.
pub fn generate_audio(dir: &Path, speech_seconds: u64) -> Result<Audio> {
    let rate = u64::from(synthetic::SAMPLE_RATE);
    let caches = synthetic::write_caches(dir, "check", speech_seconds * rate, false)?;
    let cache = AudioCache::open(&caches.speech)?;
    let manifest = UtteranceManifest {
        corpus_root: dir.to_path_buf(),
        utterances: cache
            .entries()
            .iter()
            .map(|e| Utterance {
                utt_id: e.utt_id.clone(),
                path: format!("{}.wav", e.utt_id),
                corpus: "synthetic".to_owned(),
                speaker: None,
                session: None,
                num_samples: e.length,
                sample_rate: synthetic::SAMPLE_RATE,
                channels: 1,
                codec: "pcm_s16le".to_owned(),
                channel: None,
                split: "train".to_owned(),
                emotion: None,
                fold: None,
            })
            .collect(),
    };
    let path = dir.join("train.parquet");
    manifest.write(&path)?;
    Ok(Audio {
        caches,
        manifest: path,
    })
}

/// A pretraining configuration of `preset` on `device`: `steps` steps of `batch`.
pub fn config(
    device: Device,
    preset: &str,
    batch: usize,
    steps: usize,
    workers: usize,
) -> Result<PretrainConfig> {
    let mut config = PretrainConfig {
        device: match device {
            Device::Cuda(i) => DeviceSpec::Cuda(Some(i)),
            _ => DeviceSpec::Cpu,
        },
        epochs: 1,
        batch_size: batch,
        max_steps_per_epoch: Some(steps),
        workers,
        prefetch: 2 * workers,
        checkpoint_every: steps,
        ..PretrainConfig::default()
    };
    config.model.encoder =
        EncoderConfig::preset(preset).with_context(|| format!("no encoder preset {preset}"))?;
    Ok(config)
}

fn paths(audio: &Audio, out_dir: &Path) -> PretrainPaths {
    PretrainPaths {
        manifest: audio.manifest.clone(),
        audio_cache: audio.caches.speech.clone(),
        noise_cache: Some(audio.caches.noise.clone()),
        rir_cache: Some(audio.caches.rir.clone()),
        out_dir: out_dir.to_path_buf(),
        validation: None,
    }
}

fn step_log(out_dir: &Path) -> Result<Vec<StepRecord>> {
    let text = std::fs::read_to_string(out_dir.join(STEP_LOG))?;
    Ok(text
        .lines()
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?)
}

/// `config.max_steps_per_epoch` steps with mixed precision (fp16 autocast and the dynamic loss
/// scaler on CUDA; fp32 elsewhere): overflowing steps are skipped, later ones are not, and the
/// loss stays finite.
pub fn fp16(mut config: PretrainConfig, audio: &Audio, out_dir: &Path) -> Result<Row> {
    config.mixed_precision = true;
    pretrain::run(&config, &paths(audio, out_dir), false, StopAt::default())?;
    let log = step_log(out_dir)?;
    let skipped = log.iter().filter(|r| r.skipped).count();
    let last_skip = log.iter().rposition(|r| r.skipped);
    let good_after = log.len() - last_skip.map_or(0, |i| i + 1);
    let last = log.last().context("no step logged")?;
    Ok(Row::holds(
        "fp16.dino",
        last.loss.is_finite() && good_after > 0 && skipped < log.len() / 2,
        last.loss,
        format!(
            "{} steps, {skipped} skipped (overflow), {good_after} good after the last skip, final loss {:.4}{}",
            log.len(),
            last.loss,
            if config.device.is_cuda() {
                ""
            } else {
                " (CPU: fp32, no autocast)"
            }
        ),
    ))
}

/// Half the steps, a resume from the checkpoint, the rest, against all steps straight: the
/// largest difference of any parameter of the final models.
pub fn resume(mut config: PretrainConfig, audio: &Audio, dir: &Path) -> Result<Row> {
    let steps = config.max_steps_per_epoch.context("steps")?;
    ensure!(
        steps >= 2 && steps % 2 == 0,
        "resume needs an even number of steps"
    );
    config.checkpoint_every = steps / 2;
    let (straight, resumed) = (dir.join("straight"), dir.join("resumed"));
    pretrain::run(&config, &paths(audio, &straight), false, StopAt::default())?;
    pretrain::run(
        &config,
        &paths(audio, &resumed),
        false,
        StopAt {
            step: Some(steps / 2),
        },
    )?;
    pretrain::run(&config, &paths(audio, &resumed), true, StopAt::default())?;
    let read = |dir: &Path| -> Result<BTreeMap<String, tch::Tensor>> {
        Ok(tch::Tensor::read_safetensors(dir.join(FINAL_MODEL))?
            .into_iter()
            .collect())
    };
    let (a, b) = (read(&straight)?, read(&resumed)?);
    ensure!(
        a.keys().eq(b.keys()),
        "the two models hold different tensors"
    );
    let mut worst = 0.0f64;
    for (ta, tb) in a.values().zip(b.values()) {
        let d = (ta.to_kind(tch::Kind::Double) - tb.to_kind(tch::Kind::Double))
            .abs()
            .max()
            .double_value(&[]);
        worst = worst.max(d);
    }
    Ok(Row::measured(
        "resume",
        worst,
        "max |dw|",
        format!(
            "{} + {} steps against {steps}: {}",
            steps / 2,
            steps / 2,
            if worst == 0.0 {
                "bit-identical"
            } else {
                "non-deterministic kernels"
            }
        ),
    ))
}

/// The timed recipe step: samples/s and data-wait share over the steps after `warmup`.
pub fn pretrain_step(
    config: PretrainConfig,
    audio: &Audio,
    out_dir: &Path,
    warmup: usize,
) -> Result<Vec<Row>> {
    let crops = (config.crops.global_crops + config.crops.local_crops) as f64;
    pretrain::run(&config, &paths(audio, out_dir), false, StopAt::default())?;
    let log = step_log(out_dir)?;
    let timed: Vec<&StepRecord> = log.iter().skip(warmup).collect();
    ensure!(!timed.is_empty(), "no step after the warm-up");
    let rates: Vec<f64> = timed.iter().map(|r| r.crops_per_second / crops).collect();
    let wait: f64 = timed.iter().map(|r| r.data_wait_share).sum::<f64>() / timed.len() as f64;
    let note = format!(
        "batch {}, {} workers, {} timed steps, {}",
        config.batch_size,
        config.workers,
        timed.len(),
        if config.mixed_precision && config.device.is_cuda() {
            "fp16"
        } else {
            "fp32"
        }
    );
    Ok(vec![
        Row::measured(
            "time.pretrain",
            stage_kit::timings::median(&rates),
            "samples/s",
            note,
        ),
        Row::measured("time.data_wait", wait, "share", "mean loader wait per step"),
    ])
}

/// k-means iterations and the merge on `n` planted points (182 per speaker) of `dim` at `k`.
pub fn cluster(
    device: Device,
    n: usize,
    k: usize,
    dim: usize,
    iterations: usize,
) -> Result<Vec<Row>> {
    let compute = match device {
        Device::Cpu => Compute::Cpu,
        d => Compute::Torch(d),
    };
    let points = planted(n.div_ceil(182), 182, dim, 7);
    let mut rng = stage_kit::rng::stream(8, "device-check-kmeans");
    let mut centroids = initial_centroids(points.view(), k, Init::Random, &mut rng);
    let engine = compute.engine(points.view())?;
    let mut backend = Batched::new(points.view(), engine.as_ref());
    let mut seconds = Vec::new();
    for _ in 0..iterations {
        let t = Instant::now();
        centroids = backend.step(&centroids)?.centroids;
        seconds.push(t.elapsed().as_secs_f64());
    }
    let labels = backend.labels()?;
    let t = Instant::now();
    let merged = merge_clusters(points.view(), &labels, k, Some(0.8), compute)?;
    let merge_seconds = t.elapsed().as_secs_f64();
    let size = format!("{} x {dim}, k = {k}, {}", points.nrows(), compute.name());
    Ok(vec![
        Row::measured(
            "time.kmeans",
            stage_kit::timings::median(&seconds),
            "s/iter",
            format!("{size}, median of {iterations}"),
        ),
        Row::measured(
            "time.merge",
            merge_seconds,
            "s",
            format!(
                "{} -> {} clusters in {} rounds",
                merged.summary.clusters_before,
                merged.summary.clusters_after,
                merged.summary.rounds
            ),
        ),
    ])
}
