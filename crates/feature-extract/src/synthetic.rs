//! Generated audio caches for benchmarks and device checks, where no corpus is at hand:
//! speech-like signals (AR(1)-coloured noise under a syllable-rate envelope), noises in the
//! MUSAN categories and RIR-like impulse responses (a direct path, then decaying noise), in
//! either cache layout. Sizes and seeds fix the content.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::cache::{self, CacheKind, CacheWriter};
use crate::error::Result;

/// Sample rate of the generated audio.
pub const SAMPLE_RATE: u32 = 16_000;

/// The three caches augmented pretraining reads.
#[derive(Debug, Clone)]
pub struct Caches {
    pub speech: PathBuf,
    pub noise: PathBuf,
    pub rir: PathBuf,
}

/// `len` samples of speech-like int16 audio.
pub fn speech_like(rng: &mut ChaCha8Rng, len: usize) -> Vec<i16> {
    let (mut y, mut phase) = (0.0f32, rng.gen_range(0.0..std::f32::consts::TAU));
    let rate = rng.gen_range(2.0..6.0f32) * std::f32::consts::TAU / SAMPLE_RATE as f32;
    (0..len)
        .map(|_| {
            y = 0.9 * y + rng.gen_range(-600.0..600.0f32);
            phase += rate;
            (y * (0.55 + 0.45 * phase.sin())).clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

/// `len` taps of an RIR-like response: silence, a direct path, exponentially decaying noise.
pub fn rir_like(rng: &mut ChaCha8Rng, len: usize) -> Vec<i16> {
    let direct = rng.gen_range(10..200).min(len.saturating_sub(1));
    (0..len)
        .map(|t| match t {
            t if t < direct => 0,
            t if t == direct => 20_000,
            t => {
                let decay = (-((t - direct) as f32) / (0.08 * SAMPLE_RATE as f32)).exp();
                (rng.gen_range(-6000.0..6000.0f32) * decay) as i16
            }
        })
        .collect()
}

/// Utterances `(id, group, samples)` totalling at least `total` samples, lengths uniform in
/// `seconds`, groups taken in turn.
pub fn utterances(
    seed: u64,
    total: u64,
    seconds: (f32, f32),
    groups: &[&str],
) -> impl Iterator<Item = (String, String, Vec<i16>)> {
    let mut rng = stage_kit::rng::stream(seed, "synthetic-audio");
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    let (mut made, mut i) = (0u64, 0usize);
    std::iter::from_fn(move || {
        if made >= total {
            return None;
        }
        let len = (rng.gen_range(seconds.0..seconds.1) * SAMPLE_RATE as f32) as usize;
        made += len as u64;
        i += 1;
        let group = groups[i % groups.len()].clone();
        Some((format!("utt{i:07}"), group, speech_like(&mut rng, len)))
    })
}

/// Writes an audio cache of `items`: schema 2, or schema 1 (the old chunked layout).
pub fn write_audio(
    path: &Path,
    schema1: bool,
    items: impl Iterator<Item = (String, String, Vec<i16>)>,
) -> Result<()> {
    let column = |x: Vec<i16>| Array2::from_shape_vec((x.len(), 1), x).expect("one column");
    if schema1 {
        return cache::write_schema1(
            path,
            CacheKind::Audio,
            1,
            SAMPLE_RATE,
            items.map(|(id, g, x)| (id, g, column(x))),
        );
    }
    let mut w = CacheWriter::<i16>::create(path, CacheKind::Audio, 1)?;
    for (id, g, x) in items {
        w.append(&id, &g, column(x).view())?;
    }
    w.finish(SAMPLE_RATE, "{}", &[])
}

/// Speech (`speech_samples` samples of 4-12 s utterances, group `train`), 10 minutes of noise
/// in the MUSAN categories and 60 RIRs in the RIR categories, as `<prefix>-{speech,noise,rir}.h5`
/// in `dir`.
pub fn write_caches(
    dir: &Path,
    prefix: &str,
    speech_samples: u64,
    schema1: bool,
) -> Result<Caches> {
    let caches = Caches {
        speech: dir.join(format!("{prefix}-speech.h5")),
        noise: dir.join(format!("{prefix}-noise.h5")),
        rir: dir.join(format!("{prefix}-rir.h5")),
    };
    write_audio(
        &caches.speech,
        schema1,
        utterances(1, speech_samples, (4.0, 12.0), &["train"]),
    )?;
    write_audio(
        &caches.noise,
        schema1,
        utterances(
            2,
            600 * u64::from(SAMPLE_RATE),
            (3.0, 20.0),
            &["noise", "music", "speech"],
        ),
    )?;
    let mut rng = stage_kit::rng::stream(3, "synthetic-rir");
    let rirs: Vec<_> = (0..60)
        .map(|i| {
            let group = ["smallroom", "mediumroom", "real"][i % 3].to_owned();
            let len = rng.gen_range(2000..16000);
            (format!("rir{i:03}"), group, rir_like(&mut rng, len))
        })
        .collect();
    write_audio(&caches.rir, schema1, rirs.into_iter())?;
    Ok(caches)
}
