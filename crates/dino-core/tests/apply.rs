//! Applying a model outside the pipeline: the self-contained model file, `embed-audio` on a
//! folder of mixed formats against scan -> prepare -> embed, `verify` and `score` against
//! the pipeline's scores and an independent numpy EER, and the TorchScript export and the
//! Python package (`python/speech_dino`) against the Rust embeddings.
//!
//! The model is a tiny ECAPA-TDNN with seeded random weights: every check here is an
//! equality between two ways of computing the same thing, which needs no training.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

use data_manifest::filter::{FilterOptions, filter};
use data_manifest::scan::{FixturePart, GenericOptions, Layout, ScanOptions, scan};
use data_manifest::{RejectList, UtteranceManifest};
use dino_core::apply::embed_audio::{self, EmbedAudioRequest};
use dino_core::apply::export::{self, ExportRequest};
use dino_core::apply::model_file::{self, BundleRequest, TrainedModel};
use dino_core::apply::score::{self, ScoreRequest, Utterances};
use dino_core::apply::verify::{self, VerifyRequest};
use dino_core::checkpoint::{self, CheckpointMeta, EmbeddingSpec, FORMAT};
use dino_core::embed::{self, EmbedConfig};
use dino_core::encoder::EncoderConfig;
use dino_core::features::FeatureConfig;
use dino_core::model::{encoder_only, seeded_init};
use downstream_eval::sv::{self, SvConfig, SvInputs};
use feature_extract::Embeddings;
use feature_extract::cache::AudioCache;
use feature_extract::prepare::{PrepareConfig, PrepareRequest, prepare};
use stage_kit::reference::run_python;
use tch::Device;
use tch::nn::ModuleT;

/// Tests share one fixture and the CPU: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    test_manifest: PathBuf,
    test_cache: PathBuf,
    trials: PathBuf,
    model: PathBuf,
    audio: PrepareConfig,
}

fn cpu() -> EmbedConfig {
    EmbedConfig {
        device: stage_kit::DeviceSpec::Cpu,
        ..Default::default()
    }
}

fn prepare_cache(manifest: &Path, out: &Path, config: &PrepareConfig) {
    prepare(&PrepareRequest {
        manifest: manifest.to_path_buf(),
        audio_out: Some(out.to_path_buf()),
        fbank_out: None,
        shard: stage_kit::Shard::WHOLE,
        threads: 0,
        config: config.clone(),
    })
    .unwrap();
}

/// The fixture's speech scanned and prepared (VAD on), a random tiny ECAPA checkpoint, the
/// training set embedded by it and the model file bundled from both.
fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let root = fixture_corpus::ensure(fixture_corpus::Size::Tiny, 1).expect("fixture");
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let p = |name: &str| dir.path().join(name);
        let audio = PrepareConfig {
            vad: true,
            ..Default::default()
        }
        .resolved();
        for split in ["train", "test"] {
            let mut outcome = scan(
                &Layout::Fixture(FixturePart::Speech),
                &root,
                &ScanOptions::default(),
            )
            .unwrap();
            filter(
                &mut outcome.manifest,
                &FilterOptions {
                    splits: vec![split.to_owned()],
                    ..Default::default()
                },
            );
            outcome
                .manifest
                .write(&p(&format!("{split}.parquet")))
                .unwrap();
            prepare_cache(
                &p(&format!("{split}.parquet")),
                &p(&format!("{split}.h5")),
                &audio,
            );
        }
        data_manifest::trial_lists::read_text(&root.join("trials.txt"))
            .unwrap()
            .write(&p("trials.parquet"))
            .unwrap();

        let spec = EmbeddingSpec {
            encoder: EncoderConfig::preset("tiny-ecapa").unwrap(),
            features: FeatureConfig::default(),
        };
        let (vs, _encoder) = seeded_init(15, || encoder_only(&spec.encoder, Device::Cpu));
        let meta = CheckpointMeta {
            format: FORMAT.into(),
            kind: "dino".into(),
            epoch: 1,
            step: 10,
            embedding_prefix: "teacher.encoder.".into(),
            embedding: spec,
            config: serde_json::json!({"seed": 15}),
        };
        checkpoint::save(
            &p("checkpoint.safetensors"),
            &meta,
            &checkpoint::var_tensors(&vs, "teacher.encoder."),
        )
        .unwrap();
        embed::run(
            &p("checkpoint.safetensors"),
            &p("train.parquet"),
            &p("train.h5"),
            &p("train-embeddings.h5"),
            &cpu(),
        )
        .unwrap();
        model_file::bundle(&BundleRequest {
            checkpoint: p("checkpoint.safetensors"),
            audio_cache: p("train.h5"),
            mean_embeddings: p("train-embeddings.h5"),
            pipeline: Some("test".into()),
            out: p("model.safetensors"),
        })
        .unwrap();
        Setup {
            root,
            test_manifest: p("test.parquet"),
            test_cache: p("test.h5"),
            trials: p("trials.parquet"),
            model: p("model.safetensors"),
            audio,
            _dir: dir,
        }
    })
}

#[test]
fn the_model_file_records_audio_options_mean_and_provenance() {
    let _serial = serial();
    let s = setup();
    let model = TrainedModel::load(&s.model, Device::Cpu).unwrap();
    let application = model.application.expect("a model file");
    assert_eq!(application.audio, s.audio);
    assert_eq!(application.provenance.pipeline.as_deref(), Some("test"));
    assert_eq!(application.provenance.seed, Some(15));
    assert_eq!(application.provenance.config_sha256.len(), 64);
    assert_eq!(application.mean.source, "train-embeddings.h5");
    // The mean is eval-sv's: that of the embeddings file it came from.
    let train = Embeddings::read(&s.model.with_file_name("train-embeddings.h5")).unwrap();
    assert_eq!(application.mean.count, train.utt_ids.len());
    let mean = train.vectors.mean_axis(ndarray::Axis(0)).unwrap();
    for (a, b) in application.mean.raw.iter().zip(mean.iter()) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Only the encoder's tensors are kept; the plain checkpoint has no application entry.
    let loaded = checkpoint::load(&s.model).unwrap();
    assert!(
        loaded
            .tensors
            .keys()
            .all(|k| k.starts_with("teacher.encoder."))
    );
    let plain = s.model.with_file_name("checkpoint.safetensors");
    assert!(
        TrainedModel::load(&plain, Device::Cpu)
            .unwrap()
            .application
            .is_none()
    );
}

/// A SPHERE file of 16-bit big-endian PCM samples (`channels` interleaved).
fn sphere_pcm(samples: &[i16], channels: usize, rate: u32) -> Vec<u8> {
    let (count, rate, channels) = (
        (samples.len() / channels).to_string(),
        rate.to_string(),
        channels.to_string(),
    );
    let fields = [
        ("sample_count", count.as_str()),
        ("sample_rate", rate.as_str()),
        ("channel_count", channels.as_str()),
        ("sample_n_bytes", "2"),
        ("sample_byte_format", "10"),
        ("sample_coding", "pcm"),
    ];
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_be_bytes()).collect();
    data_manifest::probe::sphere::write(&fields, &data)
}

/// Re-encodes WAV files with PyAV (ffmpeg): argv pairs of (source, destination).
const ENCODE_PY: &str = r#"
import sys, av
for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):
    codec = "flac" if dst.endswith(".flac") else "aac"
    with av.open(src) as i, av.open(dst, "w") as o:
        s = i.streams.audio[0]
        out = o.add_stream(codec, rate=s.codec_context.sample_rate)
        for frame in i.decode(s):
            frame.pts = None
            for packet in out.encode(frame):
                o.mux(packet)
        for packet in out.encode(None):
            o.mux(packet)
"#;

/// Reads embed-audio's Parquet and .npy outputs and prints them as JSON {utt_id: vector}.
const READ_OUTPUTS_PY: &str = r#"
import json, sys
import numpy as np, pyarrow.parquet as pq
t = pq.read_table(sys.argv[1]).to_pydict()
parquet = {u: v for u, v in zip(t["utt_id"], t["vector"])}
paths = dict(zip(t["utt_id"], t["path"]))
x = np.load(sys.argv[2])
ids = [l.split("\t")[0] for l in open(sys.argv[3]).read().splitlines()]
npy = {u: x[i].tolist() for i, u in enumerate(ids)}
print(json.dumps({"parquet": parquet, "npy": npy, "paths": paths}))
"#;

#[test]
fn embed_audio_gives_the_pipeline_embeddings_for_mixed_formats_and_rejects_a_corrupt_file() {
    let _serial = serial();
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("audio");
    std::fs::create_dir_all(folder.join("mixed")).unwrap();
    // Test-speaker utterances at the fixture's mixed rates, in four formats.
    let manifest = UtteranceManifest::read(&s.test_manifest).unwrap();
    let mut by_rate: HashMap<u32, usize> = HashMap::new();
    let mut chosen = Vec::new();
    for u in &manifest.utterances {
        let n = by_rate.entry(u.sample_rate).or_default();
        if *n < 3 {
            *n += 1;
            chosen.push(u.clone());
        }
    }
    assert!(by_rate.len() >= 3, "{by_rate:?}");
    let mut encode = Vec::new();
    for (i, u) in chosen.iter().enumerate() {
        let source = manifest.audio_path(u);
        let stem = format!("mixed/u{i:02}");
        match i % 4 {
            0 => {
                std::fs::copy(&source, folder.join(format!("{stem}.wav"))).unwrap();
            }
            1 => encode.extend([source, folder.join(format!("{stem}.flac"))]),
            2 => encode.extend([source, folder.join(format!("{stem}.m4a"))]),
            _ => {
                let (x, channels, rate) =
                    feature_extract::decode::decode_interleaved(&source).unwrap();
                let pcm: Vec<i16> = x.iter().map(|&v| v as i16).collect();
                std::fs::write(
                    folder.join(format!("{stem}.sph")),
                    sphere_pcm(&pcm, channels, rate),
                )
                .unwrap();
            }
        }
    }
    run_python(ENCODE_PY, &encode).unwrap();
    std::fs::write(folder.join("mixed/broken.wav"), b"RIFF\x10\0\0\0WAVEjunk").unwrap();

    // The three-command path: scan (generic layout) -> prepare (the model's options) -> embed.
    let outcome = scan(
        &Layout::Generic(GenericOptions {
            speaker_component: None,
            session_component: None,
            regex: None,
            split: "all".into(),
        }),
        &folder,
        &ScanOptions::default(),
    )
    .unwrap();
    let d = |name: &str| dir.path().join(name);
    outcome.manifest.write(&d("manifest.parquet")).unwrap();
    prepare_cache(&d("manifest.parquet"), &d("cache.h5"), &s.audio);
    embed::run(
        &s.model,
        &d("manifest.parquet"),
        &d("cache.h5"),
        &d("pipeline.h5"),
        &cpu(),
    )
    .unwrap();
    let pipeline = Embeddings::read(&d("pipeline.h5")).unwrap();

    let request = |out: &str| EmbedAudioRequest {
        model: s.model.clone(),
        inputs: vec![folder.clone()],
        out: d(out),
        rejects: None,
        threads: 0,
        vad: None,
        embed: cpu(),
    };
    let report = embed_audio::run(&request("ours.h5")).unwrap();
    // A stereo source became a two-channel SPHERE file: one utterance per side.
    assert_eq!(report.embedded, outcome.manifest.utterances.len());
    assert!(report.embedded >= chosen.len());
    assert_eq!(report.rejected, 1);
    let ours = Embeddings::read(&d("ours.h5")).unwrap();
    assert_eq!(ours.utt_ids, pipeline.utt_ids);
    let worst = (&ours.vectors - &pipeline.vectors)
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(worst <= 1e-5, "max abs difference {worst}");
    let rejects = RejectList::read(&d("ours.h5.rejects.parquet")).unwrap();
    assert_eq!(rejects.rejects.len(), 1);
    assert!(rejects.rejects[0].path.ends_with("mixed/broken.wav"));
    assert!(!rejects.rejects[0].reason.is_empty());
    assert!(!d("ours.h5.work").exists(), "the work folder is removed");

    // The same vectors as Parquet and .npy (+ index), read back by pyarrow and numpy.
    embed_audio::run(&request("ours.parquet")).unwrap();
    embed_audio::run(&request("ours.npy")).unwrap();
    let read: serde_json::Value = serde_json::from_str(
        &run_python(
            READ_OUTPUTS_PY,
            &[d("ours.parquet"), d("ours.npy"), d("ours.npy.index.tsv")],
        )
        .unwrap(),
    )
    .unwrap();
    let index = ours.index();
    for kind in ["parquet", "npy"] {
        let table = read[kind].as_object().unwrap();
        assert_eq!(table.len(), ours.utt_ids.len(), "{kind}");
        for (id, vector) in table {
            let row = ours.row(index[id.as_str()]);
            for (a, b) in row.iter().zip(vector.as_array().unwrap()) {
                assert_eq!(*a, b.as_f64().unwrap() as f32, "{kind} {id}");
            }
        }
    }
    let path = read["paths"]["mixed/u01"].as_str().unwrap();
    assert!(path.ends_with("mixed/u01.flac"), "{path}");
}

#[test]
fn verify_and_score_reproduce_the_pipeline_scores() {
    let _serial = serial();
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name);
    // The pipeline: embed (every utterance whole) and eval-sv with the training mean.
    let whole = EmbedConfig {
        length_tolerance: 0.0,
        ..cpu()
    };
    embed::run(
        &s.model,
        &s.test_manifest,
        &s.test_cache,
        &d("test.h5"),
        &whole,
    )
    .unwrap();
    let report = sv::run(
        &SvInputs {
            embeddings: Some(d("test.h5")),
            scores: None,
            trials: s.trials.clone(),
            mean_embeddings: Some(s.model.with_file_name("train-embeddings.h5")),
            cohort_embeddings: None,
            plda: None,
        },
        &SvConfig::default(),
        &d("eval"),
    )
    .unwrap();
    let scores = std::fs::read_to_string(d("eval/scores.txt")).unwrap();
    let trials = data_manifest::TrialList::read(&s.trials).unwrap();
    let manifest = UtteranceManifest::read(&s.test_manifest).unwrap();
    let path_of = |id: &str| {
        let u = manifest.utterances.iter().find(|u| u.utt_id == id).unwrap();
        manifest.audio_path(u)
    };
    let target = trials.trials.iter().position(|t| t.target).unwrap();
    let nontarget = trials.trials.iter().position(|t| !t.target).unwrap();
    for k in [target, nontarget] {
        let t = &trials.trials[k];
        let verdict = verify::run(&VerifyRequest {
            model: s.model.clone(),
            a: path_of(&t.enroll),
            b: path_of(&t.test),
            calibration: Some(d("eval/calibration.json")),
            threshold: None,
            threads: 0,
            vad: None,
            device: stage_kit::DeviceSpec::Cpu,
        })
        .unwrap();
        let line = scores.lines().nth(k).unwrap();
        let pipeline: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            (verdict.score - pipeline).abs() < 1e-4,
            "verify {} vs pipeline {line}",
            verdict.score
        );
        assert!(verdict.same_speaker.is_some());
        assert_eq!(verdict.evaluation_set.as_deref(), Some("trials.parquet"));
    }

    // score on the text trial list with audio under the fixture root; eval-sv --scores and
    // numpy agree on its EER.
    let scored = score::run(&ScoreRequest {
        model: s.model.clone(),
        trials: s.root.join("trials.txt"),
        utterances: Utterances::Audio(s.root.join("wav")),
        out: d("kaldi-scores.txt"),
        calibration: None,
        embed: embed_audio::EmbedOptions {
            model: s.model.clone(),
            threads: 0,
            vad: None,
            embed: cpu(),
        },
    })
    .unwrap();
    assert_eq!(scored, trials.trials.len());
    let from_file = sv::run(
        &SvInputs {
            embeddings: None,
            scores: Some(d("kaldi-scores.txt")),
            trials: s.trials.clone(),
            mean_embeddings: None,
            cohort_embeddings: None,
            plda: None,
        },
        &SvConfig::default(),
        &d("eval-file"),
    )
    .unwrap();
    let mut labelled = String::new();
    let text = std::fs::read_to_string(d("kaldi-scores.txt")).unwrap();
    for (line, t) in text.lines().zip(&trials.trials) {
        writeln!(
            labelled,
            "{} {}",
            u8::from(t.target),
            line.rsplit(' ').next().unwrap()
        )
        .unwrap();
    }
    std::fs::write(d("labelled.txt"), labelled).unwrap();
    let numpy: f64 = run_python(NUMPY_EER_PY, &[d("labelled.txt")])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (from_file.eer_interpolated - numpy).abs() < 1e-6,
        "downstream-eval {} vs numpy {numpy}",
        from_file.eer_interpolated
    );
    // The pipeline's own embeddings give about the same EER (embed trims batches).
    assert!((from_file.eer - report.eer).abs() < 0.05);
}

/// wespeaker's interpolated EER on `label score` lines (per-trial error rates).
const NUMPY_EER_PY: &str = r#"
import sys
import numpy as np
data = np.loadtxt(sys.argv[1], ndmin=2)
labels, scores = data[:, 0].astype(int), data[:, 1]
order = np.argsort(scores, kind="stable")
l = labels[order]
fnr = np.cumsum(l == 1) / np.sum(l == 1)
fpr = 1.0 - np.cumsum(l == 0) / np.sum(l == 0)
d = fnr - fpr
x1 = np.flatnonzero(d >= 0)[0]
x2 = np.flatnonzero(d < 0)[-1]
a = (fnr[x1] - fpr[x1]) / (fpr[x2] - fpr[x1] - (fnr[x2] - fnr[x1]))
print(repr(float(fnr[x1] + a * (fnr[x2] - fnr[x1]))))
"#;

/// Embeds the int16 waveforms `argv[3:]` (raw little-endian files) with the TorchScript
/// export (after the package's front-end) and with the package's own encoder; prints both.
const PYTORCH_PY: &str = r#"
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from speech_dino import load_model
model = load_model(sys.argv[2])
traced = torch.jit.load(sys.argv[3])
out = {"traced": [], "python": []}
with torch.no_grad():
    for path in sys.argv[4:]:
        w = torch.from_numpy(np.fromfile(path, dtype="<i2").astype(np.float32))
        out["traced"].append(traced(model.features(w).unsqueeze(0))[0].tolist())
        out["python"].append(model.embed(w).tolist())
print(json.dumps(out))
"#;

#[test]
fn torchscript_export_and_the_python_package_reproduce_the_rust_embeddings() {
    let _serial = serial();
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.pt");
    let report = export::run(&ExportRequest {
        model: s.model.clone(),
        out: out.clone(),
    })
    .unwrap();
    assert!(report.max_abs_difference <= export::TOLERANCE);
    // Cached (VAD-trimmed) audio of a few utterances, embedded one at a time in Rust.
    let cache = AudioCache::open(&s.test_cache).unwrap();
    let model = TrainedModel::load(&s.model, Device::Cpu).unwrap();
    let features = model.features(Device::Cpu).unwrap();
    let mut files = Vec::new();
    let mut rust = Vec::new();
    for i in [0, 7, 13] {
        let samples = cache.read_all(i).unwrap();
        let path = dir.path().join(format!("{i}.i16"));
        let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(&path, bytes).unwrap();
        files.push(path);
        let wave: Vec<f32> = samples.iter().map(|&v| f32::from(v)).collect();
        let embedding =
            tch::no_grad(|| model.encoder.forward_t(&features.forward(&wave, 1), false));
        rust.push(Vec::<f32>::try_from(embedding.view([-1])).unwrap());
    }
    let mut args = vec![
        stage_kit::reference::workspace_root().join("python"),
        s.model.clone(),
        out,
    ];
    args.extend(files);
    let result: serde_json::Value =
        serde_json::from_str(&run_python(PYTORCH_PY, &args).unwrap()).unwrap();
    for kind in ["traced", "python"] {
        for (ours, theirs) in rust.iter().zip(result[kind].as_array().unwrap()) {
            let theirs: Vec<f32> = theirs
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let diff = ours
                .iter()
                .zip(&theirs)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let dot: f32 = ours.iter().zip(&theirs).map(|(a, b)| a * b).sum();
            let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            let cosine = dot / (norm(ours) * norm(&theirs));
            eprintln!("{kind}: max abs difference {diff:.2e}, cosine {cosine:.6}");
            assert!(
                diff <= 1e-4 && cosine >= 0.9999,
                "{kind}: {diff} / {cosine}"
            );
        }
    }
}
