//! Augmentation with noise and RIR caches prepared from the fixture's MUSAN and RIR folders:
//! reproducible from the generator state, SNRs as drawn, babble of 3-7 sources, reverberation
//! aligned on the direct path, probabilities as configured, usable from several threads.

mod common;

use std::path::{Path, PathBuf};

use feature_extract::augment::{AugmentConfig, Augmenter, NoiseCategory, RirCategory};
use feature_extract::cache::AudioCache;
use feature_extract::decode::Downmix;
use feature_extract::prepare::{PrepareConfig, PrepareRequest, prepare};
use stage_kit::Shard;

/// Noise and RIR caches of the fixture (categories in the manifests' `split`).
fn caches(dir: &Path) -> (PathBuf, PathBuf) {
    let root = common::fixture();
    let tagged = |sub: &str, split: &str| -> Vec<(PathBuf, String)> {
        common::files(&root.join(sub), "wav")
            .into_iter()
            .map(|p| (p, split.to_owned()))
            .collect()
    };
    let noise_files = [
        tagged("musan/noise", "noise"),
        tagged("musan/music", "music"),
        tagged("musan/speech", "speech"),
    ]
    .concat();
    let rir_files = [
        tagged("rirs/simulated_rirs/smallroom", "smallroom"),
        tagged("rirs/simulated_rirs/mediumroom", "mediumroom"),
        tagged("rirs/real_rirs_isotropic_noises", "real"),
    ]
    .concat();
    let mut out = Vec::new();
    for (name, files) in [("noise", noise_files), ("rir", rir_files)] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let manifest = common::write_manifest(&sub, &root, &files);
        let cache = sub.join("audio.h5");
        prepare(&PrepareRequest {
            manifest,
            audio_out: Some(cache.clone()),
            fbank_out: None,
            shard: Shard::WHOLE,
            threads: 2,
            // Kaldi takes the first microphone of multi-channel RIRs.
            config: PrepareConfig {
                downmix: if name == "rir" {
                    Downmix::First
                } else {
                    Downmix::Mean
                },
                ..PrepareConfig::default()
            },
        })
        .unwrap();
        out.push(cache);
    }
    (out[0].clone(), out[1].clone())
}

fn speech() -> Vec<f32> {
    let wav = &common::files(&common::fixture().join("wav"), "wav")[0];
    feature_extract::decode::load_mono(wav, 16000).unwrap()
}

fn snr_db(clean: &[f32], noisy: &[f32]) -> f64 {
    let p = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>();
    let ps = p(&mut clean.iter().map(|&v| f64::from(v)));
    let pn = p(&mut clean.iter().zip(noisy).map(|(&a, &b)| f64::from(b - a)));
    10.0 * (ps / pn).log10()
}

#[test]
fn augmentation_is_reproducible_and_does_what_it_draws() {
    let dir = tempfile::tempdir().unwrap();
    let (noise, rir) = caches(dir.path());
    let clean = speech();

    // Defaults: reproducible from the generator state, probabilities as configured.
    let aug = Augmenter::open(Some(&noise), Some(&rir), &AugmentConfig::default()).unwrap();
    let run = |seed: u64| {
        let mut rng = stage_kit::rng::stream(seed, "augment");
        let mut x = clean[..16000].to_vec();
        let applied = aug.apply(&mut x, &mut rng).unwrap();
        (x, applied)
    };
    assert_eq!(run(3), run(3));
    let mut rng = stage_kit::rng::stream(4, "augment");
    let (mut with_noise, mut with_rir, mut babble_sources) = (0, 0, Vec::new());
    let trials = 600;
    for _ in 0..trials {
        let mut x = clean[..8000].to_vec();
        let applied = aug.apply(&mut x, &mut rng).unwrap();
        with_rir += usize::from(applied.rir.is_some());
        if let Some((group, snr, sources)) = applied.noise {
            with_noise += 1;
            let min = if group == "noise" { 0.0 } else { 3.0 };
            assert!((min..=18.0).contains(&snr), "{group} at {snr} dB");
            if group == "speech" {
                babble_sources.push(sources.len());
            } else {
                assert_eq!(sources.len(), 1);
            }
        }
    }
    let (p_noise, p_rir) = (
        with_noise as f64 / trials as f64,
        with_rir as f64 / trials as f64,
    );
    assert!(
        (p_noise - 0.7).abs() < 0.06 && (p_rir - 0.45).abs() < 0.06,
        "{p_noise} {p_rir}"
    );
    assert!(babble_sources.iter().all(|n| (3..=7).contains(n)));
    assert!(babble_sources.contains(&3) && babble_sources.contains(&7));

    // Noise only, fixed SNR per category: the added signal sits exactly at that SNR.
    for (group, sources) in [("noise", 1), ("music", 1), ("speech", 5)] {
        let config = AugmentConfig {
            noise_prob: 1.0,
            noise: vec![NoiseCategory {
                group: group.into(),
                weight: 1.0,
                min_snr_db: 7.5,
                max_snr_db: 7.5,
                min_sources: sources,
                max_sources: sources,
            }],
            rir_prob: 0.0,
            rir: vec![],
            on_device: false,
        };
        let aug = Augmenter::open(Some(&noise), None, &config).unwrap();
        let mut x = clean.clone();
        let applied = aug
            .apply(&mut x, &mut stage_kit::rng::stream(1, "a"))
            .unwrap();
        assert_eq!(applied.noise.as_ref().unwrap().2.len(), sources);
        let snr = snr_db(&clean, &x);
        assert!((snr - 7.5).abs() < 1e-3, "{group}: {snr}");
    }

    // Reverberation only: the output is the convolution aligned on the RIR's direct path.
    let config = AugmentConfig {
        noise_prob: 0.0,
        noise: vec![],
        rir_prob: 1.0,
        rir: vec![RirCategory {
            group: "smallroom".into(),
            weight: 1.0,
        }],
        on_device: false,
    };
    let aug = Augmenter::open(None, Some(&rir), &config).unwrap();
    let x: Vec<f32> = clean[..4000].to_vec();
    let mut y = x.clone();
    let applied = aug
        .apply(&mut y, &mut stage_kit::rng::stream(2, "a"))
        .unwrap();
    let (_, entry) = applied.rir.unwrap();
    let h: Vec<f64> = AudioCache::open(&rir)
        .unwrap()
        .read_all(entry)
        .unwrap()
        .iter()
        .map(|&s| f64::from(s))
        .collect();
    let d = (0..h.len())
        .max_by(|&a, &b| h[a].abs().total_cmp(&h[b].abs()))
        .unwrap();
    let direct: Vec<f32> = (0..x.len())
        .map(|n| {
            let m = n + d;
            (0..h.len())
                .filter(|&k| k <= m && m - k < x.len())
                .map(|k| h[k] / h[d] * f64::from(x[m - k]))
                .sum::<f64>() as f32
        })
        .collect();
    let err = direct
        .iter()
        .zip(&y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let peak = x.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(err < 1e-3 * peak, "max error {err} for peak {peak}");

    // A missing category is named.
    let bad = AugmentConfig {
        noise: vec![NoiseCategory {
            group: "babble".into(),
            weight: 1.0,
            min_snr_db: 0.0,
            max_snr_db: 1.0,
            min_sources: 1,
            max_sources: 1,
        }],
        ..AugmentConfig::default()
    };
    let err = Augmenter::open(Some(&noise), Some(&rir), &bad)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no entries of group \"babble\""), "{err}");

    // Shared by threads: each thread's result depends only on its generator.
    let aug = Augmenter::open(Some(&noise), Some(&rir), &AugmentConfig::default()).unwrap();
    let results: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|seed| {
                let (aug, clean) = (&aug, &clean);
                s.spawn(move || {
                    let mut rng = stage_kit::rng::stream(seed % 2, "t");
                    let mut x = clean[..8000].to_vec();
                    aug.apply(&mut x, &mut rng).unwrap();
                    x
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results[0], results[2]);
    assert_eq!(results[1], results[3]);
}

#[test]
fn an_rir_category_of_silent_responses_is_refused_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rirs");
    std::fs::create_dir_all(&root).unwrap();
    let mut files = Vec::new();
    for (name, group, value) in [
        ("a", "silent", 0.0),
        ("b", "silent", 0.0),
        ("c", "live", 0.5),
    ] {
        let path = root.join(format!("{name}.wav"));
        let mut h = vec![0.0; 800];
        h[10] = value;
        fixture_corpus::wav::write(&path, &[h], 16000).unwrap();
        files.push((path, group.to_owned()));
    }
    let manifest = common::write_manifest(dir.path(), &root, &files);
    let cache = dir.path().join("rir.h5");
    prepare(&PrepareRequest {
        manifest,
        audio_out: Some(cache.clone()),
        fbank_out: None,
        shard: Shard::WHOLE,
        threads: 1,
        config: PrepareConfig::default(),
    })
    .unwrap();
    let config = |group: &str| AugmentConfig {
        noise_prob: 0.0,
        noise: vec![],
        rir_prob: 1.0,
        rir: vec![RirCategory {
            group: group.into(),
            weight: 1.0,
        }],
        on_device: false,
    };
    assert!(Augmenter::open(None, Some(&cache), &config("live")).is_ok());
    let err = Augmenter::open(None, Some(&cache), &config("silent"))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("rir.h5") && err.contains("\"silent\": all 2 response(s) are zero"),
        "{err}"
    );
}

/// The batched tch path (`augment_tch`) on the same crops and draws as the CPU path: within
/// 1e-4 of the waveform scale, on CPU tensors, and on CUDA when there is a device.
#[test]
fn device_augmentation_matches_the_cpu_on_the_same_draws() {
    let dir = tempfile::tempdir().unwrap();
    let (noise, rir) = caches(dir.path());
    let clean = speech();
    let config = AugmentConfig {
        noise_prob: 0.6,
        rir_prob: 0.6,
        ..AugmentConfig::default()
    };
    let aug = Augmenter::open(Some(&noise), Some(&rir), &config).unwrap();
    let (crops, len) = (24, 12_000);
    let mut rng = stage_kit::rng::stream(9, "device-augment");
    let mut x = Vec::with_capacity(crops * len);
    let mut draws = Vec::new();
    for i in 0..crops {
        let start = (i * 3_001) % (clean.len() - len);
        x.extend_from_slice(&clean[start..start + len]);
        draws.push(aug.draw(len, &mut rng).unwrap());
    }
    let both = draws
        .iter()
        .filter(|d| d.rir.is_some() && d.noise.is_some())
        .count();
    let neither = draws
        .iter()
        .filter(|d| d.rir.is_none() && d.noise.is_none())
        .count();
    assert!(both > 0 && neither > 0, "{both} {neither}");
    let mut cpu = x.clone();
    for (crop, draw) in cpu.chunks_mut(len).zip(&draws) {
        aug.apply_draw(crop, draw);
    }
    let scale = cpu.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    let mut devices = vec![tch::Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(tch::Device::Cuda(0));
    }
    for device in devices {
        let batch = tch::Tensor::from_slice(&x)
            .view([crops as i64, len as i64])
            .to_device(device);
        let out = feature_extract::augment_tch::apply_draws(&aug, &batch, &draws);
        let ours = Vec::<f32>::try_from(out.to_device(tch::Device::Cpu).flatten(0, -1)).unwrap();
        let err = ours
            .iter()
            .zip(&cpu)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            err <= 1e-4 * scale,
            "{device:?}: max error {err} for scale {scale}"
        );
    }
}
