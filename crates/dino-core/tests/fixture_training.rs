//! DINO pretraining on the fixture corpus through the library: a resumed run ends exactly
//! where an uninterrupted one does, the seed decides the weights, and a few minutes of
//! training on 2 CPU cores give embeddings clearly better than the same model untrained.

mod common;

use std::collections::HashMap;
use std::path::Path;

use dino_core::checkpoint;
use dino_core::curves;
use dino_core::embed::{self, EmbedConfig};
use dino_core::encoder::EncoderConfig;
use dino_core::head::HeadConfig;
use dino_core::model_selection::{self, Rule};
use dino_core::pretrain::{self, PretrainConfig, PretrainPaths, StopAt};
use dino_core::training;
use dino_core::validation::{self, ValidationConfig, ValidationSet};
use downstream_eval::sv::{self, SvConfig, SvInputs};
use stage_kit::Representation;
use tch::Tensor;

fn paths(out: &Path) -> PretrainPaths {
    let p = common::prepared();
    PretrainPaths {
        manifest: p.train.clone(),
        audio_cache: p.train_cache.clone(),
        noise_cache: Some(p.noise_cache.clone()),
        rir_cache: Some(p.rir_cache.clone()),
        out_dir: out.to_path_buf(),
        validation: None,
    }
}

/// A model small enough for a few steps in a test.
fn tiny(seed: u64) -> PretrainConfig {
    let mut c = PretrainConfig {
        seed,
        device: stage_kit::DeviceSpec::Cpu,
        epochs: 2,
        batch_size: 8,
        ..Default::default()
    };
    c.model.encoder = EncoderConfig::preset("tiny-ecapa").unwrap();
    c.model.head = HeadConfig {
        hidden_dim: 64,
        bottleneck_dim: 32,
        out_dim: 128,
        ..Default::default()
    };
    c.crops.global_seconds = 1.0;
    c.crops.local_seconds = 0.5;
    c.optim.warmup_epochs = 1.0;
    (
        c.max_steps_per_epoch,
        c.checkpoint_every,
        c.keep_checkpoints,
        c.workers,
        c.prefetch,
    ) = (Some(3), 2, 10, 2, 2);
    c
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    checkpoint::load(path).unwrap().tensors
}

fn losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join(training::STEP_LOG))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_killed_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one() {
    // With dither on: its noise comes from streams keyed by seed, step, rank and view, not
    // from libtorch's process-wide generator, which other tests of this binary share.
    let tiny = |seed| {
        let mut c = tiny(seed);
        c.features.fbank.dither = 1.0;
        c.validation = Some(ValidationConfig { every_epochs: 1 });
        c
    };
    let paths = |out: &Path| PretrainPaths {
        validation: Some(validation_set()),
        ..paths(out)
    };
    let dir = tempfile::tempdir().unwrap();
    let (whole, resumed, other) = (
        dir.path().join("whole"),
        dir.path().join("resumed"),
        dir.path().join("other"),
    );
    let report = pretrain::run(&tiny(7), &paths(&whole), false, StopAt::default())
        .unwrap()
        .unwrap();
    assert_eq!(report.steps, 6);

    // Stop after step 5, then lose the checkpoint written there, as a kill between two
    // checkpoints would: the resumed run restarts from step 4 and redoes step 5.
    assert!(
        pretrain::run(&tiny(7), &paths(&resumed), false, StopAt { step: Some(5) })
            .unwrap()
            .is_none()
    );
    std::fs::remove_file(resumed.join("checkpoints/step-00000005.safetensors")).unwrap();
    // How the run runs may change on resume (loader threads and depth, checkpoint cadence,
    // the collapse monitor) without changing a bit of the result.
    let mut how = tiny(7);
    (how.workers, how.prefetch, how.checkpoint_every) = (1, 1, 1);
    how.monitor.patience = 7;
    pretrain::run(&how, &paths(&resumed), true, StopAt::default())
        .unwrap()
        .unwrap();

    let (a, b) = (
        tensors(&whole.join(training::FINAL_MODEL)),
        tensors(&resumed.join(training::FINAL_MODEL)),
    );
    assert_eq!(a.len(), b.len());
    let mut differing: Vec<&String> = a.keys().filter(|name| !a[*name].equal(&b[*name])).collect();
    differing.sort();
    assert!(differing.is_empty(), "{differing:?} differ after resuming");
    assert!(a.keys().any(|k| k.starts_with("optim.")) && a.contains_key("loss.center"));
    assert_eq!(losses(&whole), losses(&resumed));
    // The validation of epoch 2 was redone after the resume, that of epoch 1 kept.
    let validated = |out: &Path| validation::validations(out).unwrap();
    assert_eq!(validated(&whole).len(), 2);
    assert_eq!(validated(&whole), validated(&resumed));

    pretrain::run(&tiny(8), &paths(&other), false, StopAt::default())
        .unwrap()
        .unwrap();
    let c = tensors(&other.join(training::FINAL_MODEL));
    assert!(!a["teacher.encoder.embedding.weight"].equal(&c["teacher.encoder.embedding.weight"]));

    // Resuming with another configuration is refused.
    let mut changed = tiny(7);
    changed.optim.lr *= 2.0;
    let err = pretrain::run(&changed, &paths(&resumed), true, StopAt::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("another configuration"), "{err}");
}

/// A teacher temperature of 100 makes the teacher uniform from the first step: with
/// `stop_on_collapse` the run stops after `patience` steps with the named error and writes no
/// checkpoint of the collapsed state (one is due every step).
#[test]
fn a_lasting_collapse_stops_the_run_before_it_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny(7);
    (config.loss.teacher_temp, config.loss.warmup_teacher_temp) = (100.0, 100.0);
    (
        config.checkpoint_every,
        config.monitor.stop_on_collapse,
        config.monitor.patience,
    ) = (1, true, 2);
    let err = pretrain::run(&config, &paths(dir.path()), false, StopAt::default()).unwrap_err();
    match &err {
        dino_core::Error::Collapsed { step, since, .. } => assert_eq!((*step, *since), (1, 0)),
        other => panic!("expected the collapse to stop the run, got {other}"),
    }
    assert!(err.to_string().contains("uniform collapse"), "{err}");
    let checkpoints = dir.path().join(training::CHECKPOINTS);
    let written = std::fs::read_dir(&checkpoints).map_or(0, |d| d.count());
    assert_eq!(
        written,
        0,
        "checkpoints of a collapsed teacher in {}",
        checkpoints.display()
    );
}

#[test]
fn augmentation_on_the_device_trains_as_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny(3);
    (config.epochs, config.max_steps_per_epoch) = (1, Some(3));
    (config.augment.noise_prob, config.augment.rir_prob) = (0.8, 0.8);
    let run = |name: &str, config: &PretrainConfig| {
        let out = dir.path().join(name);
        pretrain::run(config, &paths(&out), false, StopAt::default())
            .unwrap()
            .unwrap();
        losses(&out)
    };
    let cpu = run("cpu", &config);
    config.augment.on_device = true;
    let device = run("device", &config);
    (config.augment.noise_prob, config.augment.rir_prob) = (0.0, 0.0);
    let clean = run("clean", &config);
    // Same draws, filtered and mixed as batched tensor operations: the losses agree to
    // float rounding (the CPU path also mixes in f32, in another order), and differ from
    // those of the same crops without augmentation.
    let close = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-3 * x.abs())
    };
    assert_eq!(cpu.len(), 3);
    assert!(close(&cpu, &device), "{cpu:?} vs {device:?}");
    assert!(
        !close(&cpu, &clean),
        "augmentation changed nothing: {cpu:?} vs {clean:?}"
    );
}

/// The fixture pipeline's pretraining configuration, without its validation (which names a
/// `[[validation]]` set of the pipeline, resolved by the runner).
fn pipeline_config() -> PretrainConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/fixture.toml");
    let pipeline: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut section = pipeline["pretrain"].as_table().unwrap().clone();
    section.remove("validation");
    section.try_into().unwrap()
}

fn eer(checkpoint: &Path, out: &Path) -> f64 {
    let p = common::prepared();
    let embeddings = out.join("embeddings.h5");
    let config = EmbedConfig {
        device: stage_kit::DeviceSpec::Cpu,
        ..Default::default()
    };
    embed::run(checkpoint, &p.test, &p.test_cache, &embeddings, &config).unwrap();
    let inputs = SvInputs {
        embeddings: Some(embeddings),
        scores: None,
        trials: p.trials.clone(),
        mean_embeddings: None,
        cohort_embeddings: None,
        plda: None,
    };
    sv::run(&inputs, &SvConfig::default(), &out.join("sv"))
        .unwrap()
        .eer
}

/// The validation set of the tests: the held-out speakers' trial list.
fn validation_set() -> ValidationSet {
    let p = common::prepared();
    ValidationSet {
        manifest: p.test.clone(),
        audio_cache: p.test_cache.clone(),
        trials: Some(p.trials.clone()),
    }
}

/// Validated every 4 epochs, the run's last validation is the EER that embedding and
/// scoring its final model afterwards give; the curves are drawn; `select-model` writes
/// the best epoch's model and the average of the last two.
#[test]
fn a_few_minutes_of_dino_on_two_cores_beat_random_initialisation() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = pipeline_config();
    config.epochs = 16;
    let (untrained, trained) = (dir.path().join("untrained"), dir.path().join("trained"));
    pretrain::run(&config, &paths(&untrained), false, StopAt { step: Some(0) }).unwrap();
    config.validation = Some(ValidationConfig { every_epochs: 4 });
    let validated = PretrainPaths {
        validation: Some(validation_set()),
        ..paths(&trained)
    };
    let report = pretrain::run(&config, &validated, false, StopAt::default())
        .unwrap()
        .unwrap();
    let before = eer(
        &untrained.join("checkpoints/step-00000000.safetensors"),
        &untrained,
    );
    let after = eer(&trained.join(training::FINAL_MODEL), &trained);
    eprintln!(
        "fixture trials: EER {:.2} % at random initialisation, {:.2} % after {} DINO steps ({:.0} s)",
        100.0 * before,
        100.0 * after,
        report.steps,
        report.wall_seconds
    );
    assert!(
        after < before - 0.05,
        "EER {after:.4} after training, {before:.4} untrained"
    );

    let curve = validation::validations(&trained).unwrap();
    let epochs: Vec<usize> = curve.iter().map(|v| v.epoch).collect();
    eprintln!(
        "validation EER by epoch: {:?}",
        curve
            .iter()
            .map(|v| (v.epoch, v.eer.unwrap()))
            .collect::<Vec<_>>()
    );
    assert_eq!(epochs, [4, 8, 12, 16]);
    assert_eq!(
        curve[3].eer,
        Some(after),
        "the last validation is the final model's EER"
    );
    assert!(
        curve[3].min_dcf.contains_key("min_dcf_0.01"),
        "{:?}",
        curve[3]
    );
    let summary = report.validation.unwrap();
    assert_eq!((summary.validations, summary.last.epoch), (4, 16));
    for file in [curves::CURVES_SVG, curves::CURVES_PNG] {
        assert!(trained.join(file).is_file(), "{file}");
    }
    assert_eq!(checkpoint::EpochModels::of_run(&trained).list().len(), 16);

    let best = dir.path().join("best.safetensors");
    let selected = model_selection::select(&trained, Rule::BestValidation, &best).unwrap();
    let chosen = selected.validation.unwrap();
    assert_eq!(chosen.eer, summary.best.eer);
    let best_dir = dir.path().join("best");
    assert_eq!(
        Some(eer(&best, &best_dir)),
        chosen.eer,
        "the selected model scores as validated"
    );
    let averaged = dir.path().join("average.safetensors");
    model_selection::select(&trained, Rule::Average(2), &averaged).unwrap();
    let average_eer = eer(&averaged, &dir.path().join("average"));
    eprintln!(
        "average of the last 2 epoch models: EER {:.2} %",
        100.0 * average_eer
    );
    assert!(average_eer < before - 0.05, "averaged EER {average_eer}");
}

/// The three representations of one model: the pooled statistics (2 x 96 for tiny-ecapa),
/// the embedding (64), and both side by side.
#[test]
fn representations_are_the_pooled_statistics_the_embedding_and_both() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    pretrain::run(&tiny(3), &paths(&out), false, StopAt { step: Some(0) }).unwrap();
    let model = out.join("checkpoints/step-00000000.safetensors");
    let p = common::prepared();
    let rows = |representation| {
        let file = dir.path().join(format!("{representation:?}.h5"));
        let config = EmbedConfig {
            device: stage_kit::DeviceSpec::Cpu,
            representation,
            ..Default::default()
        };
        embed::run(&model, &p.test, &p.test_cache, &file, &config).unwrap();
        feature_extract::Embeddings::read(&file).unwrap().vectors
    };
    let (embedding, pooled, concat) = (
        rows(Representation::Embedding),
        rows(Representation::Pooled),
        rows(Representation::Concat),
    );
    assert_eq!(
        (embedding.ncols(), pooled.ncols(), concat.ncols()),
        (64, 192, 256)
    );
    assert_eq!(concat.slice(ndarray::s![.., ..192]), pooled);
    assert_eq!(concat.slice(ndarray::s![.., 192..]), embedding);

    // A validation set without trials is scored on its labels and folds with emotion::run
    // (here two arbitrary classes, and folds of whole speakers).
    let mut labelled = data_manifest::UtteranceManifest::read(&p.test).unwrap();
    let mut speakers: Vec<String> = labelled
        .utterances
        .iter()
        .filter_map(|u| u.speaker.clone())
        .collect();
    speakers.sort();
    speakers.dedup();
    for (i, u) in labelled.utterances.iter_mut().enumerate() {
        let s = speakers
            .iter()
            .position(|s| Some(s) == u.speaker.as_ref())
            .unwrap();
        (u.emotion, u.fold) = (Some(format!("c{}", i % 2)), Some(format!("f{}", s % 2)));
    }
    let manifest = dir.path().join("labelled.parquet");
    labelled.write(&manifest).unwrap();
    let set = ValidationSet {
        manifest,
        audio_cache: p.test_cache.clone(),
        trials: None,
    };
    let validator = validation::Validator::new(
        Some(&ValidationConfig { every_epochs: 1 }),
        Some(&set),
        (&out, 1),
        (stage_kit::DeviceSpec::Cpu, 1),
    )
    .unwrap()
    .unwrap();
    let scored = validator.validate(&model, 1).unwrap();
    let f1 = scored.micro_f1.unwrap();
    assert!(scored.eer.is_none() && f1 > 0.0 && f1 <= 1.0, "{scored:?}");
    assert!(out.join("validation/epoch-0001/report.json").is_file());
}

/// Runs `dino-core pretrain` on the fixture with `config` as `nproc` local ranks (the
/// launcher) into `out`, with extra arguments; panics unless it succeeds.
fn pretrain_ranks(config: &PretrainConfig, out: &Path, nproc: usize, extra: &[&str]) {
    let p = paths(out);
    std::fs::create_dir_all(out).unwrap();
    let config_path = out.with_extension("toml");
    std::fs::write(&config_path, toml::to_string(config).unwrap()).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_dino-core"))
        .arg("pretrain")
        .arg("--manifest")
        .arg(&p.manifest)
        .arg("--audio-cache")
        .arg(&p.audio_cache)
        .arg("--noise-cache")
        .arg(p.noise_cache.as_ref().unwrap())
        .arg("--rir-cache")
        .arg(p.rir_cache.as_ref().unwrap())
        .arg("--config")
        .arg(&config_path)
        .arg("--out-dir")
        .arg(out)
        .args([
            "--nproc-per-node",
            &nproc.to_string(),
            "--dist-timeout",
            "120",
        ])
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "pretraining at world {nproc}: {status}");
}

#[test]
fn a_world_of_two_resumes_exactly_and_continues_at_a_world_of_one() {
    let dir = tempfile::tempdir().unwrap();
    let (whole, resumed) = (dir.path().join("whole"), dir.path().join("resumed"));
    let config = tiny(7);
    pretrain_ranks(&config, &whole, 2, &[]);

    // Both ranks stop after step 5 (as a kill would), the checkpoint of step 5 is lost, and
    // the world of two resumes from step 4: it ends bit-identical to the uninterrupted run.
    pretrain_ranks(&config, &resumed, 2, &["--stop-after", "5"]);
    std::fs::remove_file(resumed.join("checkpoints/step-00000005.safetensors")).unwrap();
    pretrain_ranks(&config, &resumed, 2, &["--resume"]);
    let (a, b) = (
        tensors(&whole.join(training::FINAL_MODEL)),
        tensors(&resumed.join(training::FINAL_MODEL)),
    );
    let mut differing: Vec<&String> = a.keys().filter(|name| !a[*name].equal(&b[*name])).collect();
    differing.sort();
    assert!(
        differing.is_empty(),
        "{differing:?} differ after resuming at world 2"
    );
    assert_eq!(losses(&whole), losses(&resumed));

    // A run checkpointed at world 2 continues at world 1 from the same step, keeping its log.
    let moved = dir.path().join("moved");
    pretrain_ranks(&config, &moved, 2, &["--stop-after", "2"]);
    let before = losses(&moved);
    assert_eq!(before, losses(&whole)[..2]);
    let report = pretrain::run(&config, &paths(&moved), true, StopAt::default())
        .unwrap()
        .unwrap();
    assert_eq!(report.steps, 6);
    let after = losses(&moved);
    assert_eq!((after.len(), &after[..2]), (6, &before[..]));
    assert!(after.iter().all(|l| l.is_finite()));
}

#[test]
fn accumulated_micro_batches_train_and_an_indivisible_batch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny(3);
    config.epochs = 1;
    config.accumulation_steps = 2;
    let out = dir.path().join("accumulated");
    let report = pretrain::run(&config, &paths(&out), false, StopAt::default())
        .unwrap()
        .unwrap();
    assert_eq!(report.steps, 3);
    let logged = losses(&out);
    assert_eq!(logged.len(), 3);
    assert!(logged.iter().all(|l| l.is_finite()), "{logged:?}");

    config.accumulation_steps = 3;
    let err = pretrain::run(
        &config,
        &paths(&dir.path().join("refused")),
        false,
        StopAt::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("batch_size 8") && err.contains("3 accumulation_steps"),
        "{err}"
    );
}

#[test]
fn two_embedding_shards_merge_into_the_unsharded_file_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    pretrain::run(&tiny(5), &paths(&model), false, StopAt { step: Some(0) }).unwrap();
    let checkpoint = model.join("checkpoints/step-00000000.safetensors");
    let p = common::prepared();
    // Small batches, so that each shard gets several.
    let config = EmbedConfig {
        device: stage_kit::DeviceSpec::Cpu,
        max_batch_seconds: 8.0,
        ..Default::default()
    };
    let embed_shard = |shard: &str, out: &Path| {
        embed::run_shard(
            &checkpoint,
            &p.test,
            &p.test_cache,
            out,
            &config,
            shard.parse().unwrap(),
        )
        .unwrap()
    };
    let whole = dir.path().join("whole.h5");
    embed_shard("0/1", &whole);
    let shards = [dir.path().join("s0.h5"), dir.path().join("s1.h5")];
    let (a, b) = (
        embed_shard("0/2", &shards[0]),
        embed_shard("1/2", &shards[1]),
    );
    assert!(a.utterances > 0 && b.utterances > 0, "{a:?} {b:?}");
    let merged = dir.path().join("merged.h5");
    embed::merge_shards(&p.test, &shards, &merged).unwrap();
    let (whole, joined) = (
        feature_extract::Embeddings::read(&whole).unwrap(),
        feature_extract::Embeddings::read(&merged).unwrap(),
    );
    assert_eq!(whole.utt_ids, joined.utt_ids);
    assert_eq!(whole.description, joined.description);
    let bits = |e: &feature_extract::Embeddings| -> Vec<u32> {
        e.vectors.iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(bits(&whole), bits(&joined));

    // `embed --nproc-per-node 2`: two ranks, each a shard, joined in manifest order.
    let config_path = dir.path().join("embed.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let launched = dir.path().join("launched.h5");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_dino-core"))
        .arg("embed")
        .arg("--checkpoint")
        .arg(&checkpoint)
        .arg("--manifest")
        .arg(&p.test)
        .arg("--audio-cache")
        .arg(&p.test_cache)
        .arg("--config")
        .arg(&config_path)
        .arg("--out")
        .arg(&launched)
        .args(["--nproc-per-node", "2"])
        .status()
        .unwrap();
    assert!(status.success(), "embed --nproc-per-node 2: {status}");
    let launched = feature_extract::Embeddings::read(&launched).unwrap();
    assert_eq!(whole.utt_ids, launched.utt_ids);
    // The ranks run with their share of the cores, and other intra-op thread counts sum in
    // another order: equal to float rounding, not bit for bit.
    let diff = (&whole.vectors - &launched.vectors)
        .iter()
        .fold(0f32, |m, d| m.max(d.abs()));
    let scale = whole.vectors.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        diff <= 1e-4 * scale,
        "max |launched - whole| = {diff} (scale {scale})"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".part-"))
        .collect();
    assert!(left.is_empty(), "parts left behind: {left:?}");
    // A shard of the same file twice is refused.
    let twice = [shards[0].clone(), shards[0].clone()];
    assert!(embed::merge_shards(&p.test, &twice, &merged).is_err());
}
