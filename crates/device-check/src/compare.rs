use std::path::Path;

use anyhow::{Context, Result};
use dino_core::encoder::{Encoder, EncoderConfig};
use feature_extract::augment::{AugmentConfig, Augmenter};
use feature_extract::fbank::{Fbank, FbankOptions};
use feature_extract::fbank_tch::TchFbank;
use feature_extract::normalize::{StmnOptions, stmn, stmn_tch};
use ndarray::{Array2, ArrayView2};
use pseudo_labeler::merge::merge_clusters;
use pseudo_labeler::nearest::Compute;
use rand::Rng;
use tch::nn::ModuleT;
use tch::{Device, Kind, Tensor};

use crate::summary::Row;

/// `max |a - b| / max |b|`: the error relative to the reference's scale.
pub fn relative_error(a: &[f32], reference: &[f32]) -> f64 {
    let err = a
        .iter()
        .zip(reference)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max);
    let scale = reference
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max);
    err / scale.max(f64::MIN_POSITIVE)
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1),
    )?)
}

/// Random int16-scale waveforms `[b, len]`.
fn waveforms(b: usize, len: usize, seed: u64) -> Vec<f32> {
    let mut rng = stage_kit::rng::stream(seed, "device-check-waves");
    let mut y = 0.0f32;
    (0..b * len)
        .map(|_| {
            y = 0.8 * y + rng.gen_range(-3000.0..3000.0f32);
            y
        })
        .collect()
}

/// The Kaldi fbank of 3 s waveforms on `device` against the Rust transform.
pub fn fbank(device: Device) -> Result<Row> {
    let opts = FbankOptions {
        dither: 0.0,
        ..FbankOptions::default()
    };
    let (b, len) = (4, 48_000);
    let x = waveforms(b, len, 1);
    let rust = Fbank::new(&opts)?;
    let expected: Vec<f32> = x
        .chunks(len)
        .flat_map(|w| rust.compute(w).into_raw_vec_and_offset().0)
        .collect();
    let t = Tensor::from_slice(&x)
        .view([b as i64, len as i64])
        .to_device(device);
    let ours = host(&TchFbank::new(&opts, device)?.forward(&t))?;
    Ok(Row::at_most(
        "fbank",
        relative_error(&ours, &expected),
        1e-3,
        "4 x 3 s",
    ))
}

/// STMN (150 frames) of random features on `device` against Rust.
pub fn stmn_check(device: Device) -> Result<Row> {
    let opts = StmnOptions::default();
    let (b, frames, bins) = (3usize, 420usize, 80usize);
    let mut rng = stage_kit::rng::stream(2, "device-check-stmn");
    let feats: Vec<f32> = (0..b * frames * bins)
        .map(|_| rng.gen_range(-5.0..15.0))
        .collect();
    let expected: Vec<f32> = feats
        .chunks(frames * bins)
        .flat_map(|f| {
            let a = Array2::from_shape_vec((frames, bins), f.to_vec()).expect("shape");
            stmn(&a, &opts).into_raw_vec_and_offset().0
        })
        .collect();
    let t = Tensor::from_slice(&feats)
        .view([b as i64, frames as i64, bins as i64])
        .to_device(device);
    let ours = host(&stmn_tch(&t, &opts))?;
    Ok(Row::at_most(
        "stmn",
        relative_error(&ours, &expected),
        1e-3,
        "3 x 420 frames",
    ))
}

/// The encoder `preset` in eval mode on `device` against the same weights on the CPU.
pub fn encoder(device: Device, preset: &str, check: &str) -> Result<Row> {
    let config = EncoderConfig::preset(preset).with_context(|| format!("no preset {preset}"))?;
    tch::manual_seed(3);
    let cpu_vs = tch::nn::VarStore::new(Device::Cpu);
    let cpu = Encoder::new(&cpu_vs.root(), &config);
    let mut dev_vs = tch::nn::VarStore::new(device);
    let dev = Encoder::new(&dev_vs.root(), &config);
    dev_vs.copy(&cpu_vs)?;
    let feats = Tensor::randn([4, 200, config.feat_dim()], (Kind::Float, Device::Cpu));
    let expected = tch::no_grad(|| host(&cpu.forward_t(&feats, false)))?;
    let ours = tch::no_grad(|| host(&dev.forward_t(&feats.to_device(device), false)))?;
    Ok(Row::at_most(
        check,
        relative_error(&ours, &expected),
        1e-3,
        format!("{preset}, 4 x 200 frames"),
    ))
}

/// Augmentation of 32 crops on `device` (batched tch) against the CPU path, same draws.
pub fn augment(device: Device, noise: &Path, rir: &Path) -> Result<Row> {
    let aug = Augmenter::open(Some(noise), Some(rir), &AugmentConfig::default())?;
    let (crops, len) = (32usize, 32_000usize);
    let x = waveforms(crops, len, 4);
    let mut rng = stage_kit::rng::stream(5, "device-check-augment");
    let draws = (0..crops)
        .map(|_| aug.draw(len, &mut rng))
        .collect::<feature_extract::Result<Vec<_>>>()?;
    let mut expected = x.clone();
    for (crop, draw) in expected.chunks_mut(len).zip(&draws) {
        aug.apply_draw(crop, draw);
    }
    let t = Tensor::from_slice(&x)
        .view([crops as i64, len as i64])
        .to_device(device);
    let ours = host(&feature_extract::augment_tch::apply_draws(&aug, &t, &draws))?;
    Ok(Row::at_most(
        "augment",
        relative_error(&ours, &expected),
        1e-4,
        "32 x 2 s crops",
    ))
}

/// Unit-length points of `speakers` planted blobs, `per` each, in `dim` dimensions.
pub fn planted(speakers: usize, per: usize, dim: usize, seed: u64) -> Array2<f32> {
    let mut rng = stage_kit::rng::stream(seed, "device-check-points");
    let (mut points, _) = pseudo_labeler::synthetic::blobs(speakers, per, dim, 1.0, &mut rng);
    pseudo_labeler::preprocess::normalize_rows(&mut points);
    points
}

/// Nearest-centroid labels on `device` against the CPU engine, and the merge of the clusters
/// they give on both.
pub fn kmeans(device: Device) -> Result<Vec<Row>> {
    let points = planted(200, 50, 64, 6);
    let centroids = points.slice(ndarray::s![..2500;4, ..]).to_owned();
    let on = |compute: Compute, c: ArrayView2<f32>| -> Result<Vec<u32>> {
        Ok(compute.engine(points.view())?.nearest(c)?.labels)
    };
    let cpu = on(Compute::Cpu, centroids.view())?;
    let dev = on(Compute::Torch(device), centroids.view())?;
    let agree = cpu.iter().zip(&dev).filter(|(a, b)| a == b).count() as f64 / cpu.len() as f64;
    let k = centroids.nrows();
    let merge = |compute| merge_clusters(points.view(), &cpu, k, Some(0.8), compute);
    let (a, b) = (merge(Compute::Cpu)?, merge(Compute::Torch(device))?);
    Ok(vec![
        Row::at_most(
            "kmeans.assign",
            1.0 - agree,
            1e-3,
            format!("share of {} labels that differ", cpu.len()),
        ),
        Row::holds(
            "kmeans.merge",
            a.cluster_of == b.cluster_of && a.summary.rounds == b.summary.rounds,
            b.summary.clusters_after as f64,
            format!(
                "{k} -> {} clusters in {} rounds (CPU: {} in {})",
                b.summary.clusters_after,
                b.summary.rounds,
                a.summary.clusters_after,
                a.summary.rounds
            ),
        ),
    ])
}
