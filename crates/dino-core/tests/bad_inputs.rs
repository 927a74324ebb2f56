//! Inputs that must be refused before any work, with the numbers and names that say why:
//! configurations that cannot train, crops longer than the data, and embedding with a cache
//! at another sample rate than the model's or that holds none of the manifest's utterances.

#[allow(dead_code)]
mod common;

use std::path::Path;

use dino_core::embed::{self, EmbedConfig};
use dino_core::encoder::{EcapaConfig, EncoderConfig};
use dino_core::finetune::FinetuneConfig;
use dino_core::head::HeadConfig;
use dino_core::pretrain::{self, PretrainConfig, PretrainPaths, StopAt};
use feature_extract::prepare::{PrepareConfig, PrepareRequest, prepare};

fn tiny() -> PretrainConfig {
    let mut c = PretrainConfig {
        device: stage_kit::DeviceSpec::Cpu,
        epochs: 1,
        batch_size: 4,
        max_steps_per_epoch: Some(1),
        ..Default::default()
    };
    c.model.encoder = EncoderConfig::preset("tiny-ecapa").unwrap();
    c.model.head = HeadConfig {
        hidden_dim: 32,
        bottleneck_dim: 16,
        out_dim: 32,
        ..Default::default()
    };
    c
}

fn paths(out: &Path) -> PretrainPaths {
    let p = common::prepared();
    PretrainPaths {
        manifest: p.train.clone(),
        audio_cache: p.train_cache.clone(),
        noise_cache: None,
        rir_cache: None,
        out_dir: out.to_path_buf(),
        validation: None,
    }
}

fn refusal(config: &PretrainConfig) -> String {
    config.check().unwrap_err().to_string()
}

#[test]
fn configurations_that_cannot_train_are_refused_by_key() {
    assert!(tiny().check().is_ok());
    let mut c = tiny();
    c.epochs = 0;
    assert!(
        refusal(&c).contains("[pretrain] epochs = 0"),
        "{}",
        refusal(&c)
    );
    let mut c = tiny();
    c.batch_size = 0;
    assert!(refusal(&c).contains("[pretrain] batch_size = 0"));
    for lr in [-1.0, 0.0, f64::NAN, f64::INFINITY] {
        let mut c = tiny();
        c.optim.lr = lr;
        let err = refusal(&c);
        assert!(
            err.contains(&format!("[pretrain.optim] lr = {lr}")),
            "{err}"
        );
    }
    let mut c = tiny();
    c.crops.local_seconds = 0.0;
    assert!(refusal(&c).contains("[pretrain] local_seconds = 0"));
    let mut c = tiny();
    c.augment.rir_prob = 1.5;
    assert!(refusal(&c).contains("[pretrain.augment] rir_prob 1.5"));
    // Network sizes that panic in libtorch (or divide by zero) when the model is built.
    for (set, expected) in [
        (
            (|e: &mut EcapaConfig| e.scale = 0) as fn(&mut EcapaConfig),
            "[pretrain.model.encoder] scale = 0: must be at least 1",
        ),
        (|e| e.channels = 0, "[pretrain.model.encoder] channels = 0"),
        (
            |e| e.scale = 3,
            "channels = 32: must be a multiple of scale = 3",
        ),
        (|e| e.dilations.clear(), "dilations.len() = 0"),
    ] {
        let mut c = tiny();
        let EncoderConfig::Ecapa(ecapa) = &mut c.model.encoder else {
            unreachable!("tiny-ecapa")
        };
        set(ecapa);
        assert!(refusal(&c).contains(expected), "{}", refusal(&c));
    }
    let mut c = tiny();
    c.model.head.out_dim = 0;
    assert!(refusal(&c).contains("[pretrain.model.head] out_dim = 0"));

    let mut f = FinetuneConfig {
        crop_seconds: 0.0,
        ..Default::default()
    };
    let err = f.check().unwrap_err().to_string();
    assert!(err.contains("[finetune] crop_seconds = 0"), "{err}");
    f.crop_seconds = 2.0;
    f.optim.lr = -0.1;
    let err = f.check().unwrap_err().to_string();
    assert!(err.contains("[finetune.optim] lr = -0.1"), "{err}");
    f.optim.lr = 0.1;
    f.aam.sub_centres = 0;
    let err = f.check().unwrap_err().to_string();
    assert!(err.contains("[finetune.aam] sub_centres = 0"), "{err}");
    f.aam.sub_centres = 2;
    f.aam.scale = 0.0;
    let err = f.check().unwrap_err().to_string();
    assert!(
        err.contains("[finetune.aam] scale = 0: must be a finite number > 0"),
        "{err}"
    );

    // The run itself refuses them before writing anything.
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny();
    c.epochs = 0;
    let out = dir.path().join("run");
    assert!(pretrain::run(&c, &paths(&out), false, StopAt::default()).is_err());
    assert!(!out.exists());
}

#[test]
fn crops_longer_than_every_utterance_are_refused_with_the_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny();
    c.crops.global_seconds = 100.0;
    let err = pretrain::run(&c, &paths(dir.path()), false, StopAt::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("crops of 100 s are longer than every utterance of")
            && err.contains("train.h5 (the longest has"),
        "{err}"
    );
}

#[test]
fn a_diverging_run_stops_with_the_step_it_diverged_at() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny();
    c.max_steps_per_epoch = Some(4);
    (c.optim.lr, c.optim.min_lr) = (1e30, 1e30);
    let err = pretrain::run(&c, &paths(dir.path()), false, StopAt::default()).unwrap_err();
    match err {
        dino_core::Error::Diverged { step, loss } => {
            assert!(
                (1..4).contains(&step) && !loss.is_finite(),
                "step {step}, loss {loss}"
            )
        }
        other => panic!("not a divergence: {other}"),
    }
}

#[test]
fn embed_refuses_a_cache_at_another_rate_and_a_cache_without_the_utterances() {
    let p = common::prepared();
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    pretrain::run(&tiny(), &paths(&run), false, StopAt { step: Some(0) }).unwrap();
    let model = run.join("checkpoints/step-00000000.safetensors");
    let config = EmbedConfig {
        device: stage_kit::DeviceSpec::Cpu,
        ..Default::default()
    };
    let out = dir.path().join("embeddings.h5");

    // The held-out speakers are in none of the training cache's entries.
    let err = embed::run(&model, &p.test, &p.train_cache, &out, &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("of the") && err.contains("are not in") && err.contains("100.0 %"),
        "{err}"
    );
    assert!(!out.exists());

    // The same audio cached at 8 kHz, for a model of 16 kHz features.
    let slow = dir.path().join("test-8k.h5");
    prepare(&PrepareRequest {
        manifest: p.test.clone(),
        audio_out: Some(slow.clone()),
        fbank_out: None,
        shard: stage_kit::Shard::WHOLE,
        threads: 0,
        config: PrepareConfig {
            sample_rate: 8000,
            ..Default::default()
        },
    })
    .unwrap();
    let err = embed::run(&model, &p.test, &slow, &out, &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("test-8k.h5 holds audio at 8000 Hz")
            && err.contains("computes its features at 16000 Hz"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn check_config_refuses_unknown_keys_and_bad_values_without_running() {
    let dir = tempfile::tempdir().unwrap();
    let check = |kind: &str, text: &str| {
        let file = dir.path().join(format!("{kind}.toml"));
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_dino-core"))
            .args(["check-config", kind])
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(check("pretrain", "epochs = 2\n[optim]\nlr = 0.01\n").0);
    let (ok, err) = check("pretrain", "[optim]\nlrr = 0.01\n");
    assert!(!ok && err.contains("unknown field `lrr`"), "{err}");
    let (ok, err) = check("finetune", "[optim]\nlr = -1.0\n");
    assert!(!ok && err.contains("[finetune.optim] lr = -1"), "{err}");
    let (ok, err) = check("embed", "max_batch_seconds = 0.0\n");
    assert!(
        !ok && err.contains("[embed] max_batch_seconds = 0"),
        "{err}"
    );
}
