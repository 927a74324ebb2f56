//! Decoding checked against ffmpeg's decoders (through PyAV, in the provisioned Python) on
//! RAVDESS: WAV and FLAC bit-exact, AAC-in-MP4 aligned with SNR >= 60 dB.

mod common;

use std::path::PathBuf;

use feature_extract::decode;
use serde_json::Value;

/// Decodes each input with PyAV to raw f32 (int16 range, interleaved) and prints
/// `{"rate":..,"channels":..}` per file.
const PYAV_DECODE: &str = r#"
import json, sys
import av, numpy as np
out = []
for src, dst in zip(sys.argv[1::2], sys.argv[2::2]):
    with av.open(src) as c:
        s = c.streams.audio[0]
        frames = [f.to_ndarray() for f in c.decode(s)]
        fmt = s.codec_context.format
    x = np.concatenate(frames, axis=1)
    if fmt.is_planar:
        x = x.T  # (samples, channels)
    else:
        x = x.reshape(-1, s.codec_context.channels)
    if x.dtype.kind == "f":
        x = x.astype(np.float64) * 32768.0
    x.astype(np.float32).tofile(dst)
    out.append({"rate": s.codec_context.sample_rate, "channels": x.shape[1]})
print(json.dumps(out))
"#;

struct Reference {
    samples: Vec<f32>,
    rate: u32,
    channels: usize,
}

fn pyav(files: &[PathBuf], dir: &std::path::Path) -> Vec<Reference> {
    let outs: Vec<PathBuf> = (0..files.len())
        .map(|i| dir.join(format!("{i}.f32")))
        .collect();
    let args: Vec<&std::ffi::OsStr> = files
        .iter()
        .zip(&outs)
        .flat_map(|(a, b)| [a.as_os_str(), b.as_os_str()])
        .collect();
    let stdout = stage_kit::reference::run_python(PYAV_DECODE, &args).unwrap();
    let meta: Vec<Value> = serde_json::from_str(&stdout).unwrap();
    meta.iter()
        .zip(&outs)
        .map(|(m, out)| Reference {
            samples: common::read_f32(out),
            rate: m["rate"].as_u64().unwrap() as u32,
            channels: m["channels"].as_u64().unwrap() as usize,
        })
        .collect()
}

fn snr_db(signal: &[f32], test: &[f32]) -> f64 {
    let (s, e) = signal
        .iter()
        .zip(test)
        .fold((0.0f64, 0.0f64), |(s, e), (&a, &b)| {
            (s + f64::from(a).powi(2), e + f64::from(a - b).powi(2))
        });
    10.0 * (s / e.max(1e-12)).log10()
}

#[test]
fn wav_and_flac_decode_bit_exact_like_ffmpeg() {
    let Some(root) = stage_kit::reference::ravdess_root() else {
        return;
    };
    let mut files = common::files(&root.join("original48k"), "wav");
    // Two FLAC files per actor.
    for actor in 1..=24 {
        let dir = root.join(format!("flac16k/Actor_{actor:02}"));
        files.extend(common::files(&dir, "flac").into_iter().take(2));
    }
    let dir = tempfile::tempdir().unwrap();
    let reference = pyav(&files, dir.path());
    for (path, r) in files.iter().zip(&reference) {
        let (ours, channels, rate) = decode::decode_interleaved(path).unwrap();
        assert_eq!((channels, rate), (r.channels, r.rate), "{}", path.display());
        assert_eq!(ours.len(), r.samples.len(), "{}", path.display());
        assert!(ours == r.samples, "{} differs from ffmpeg", path.display());
    }
    eprintln!("{} WAV/FLAC files decode bit-exact", files.len());
}

#[test]
fn m4a_decodes_aligned_with_ffmpeg() {
    let Some(root) = stage_kit::reference::ravdess_root() else {
        return;
    };
    let files = common::files(&root.join("m4a"), "m4a");
    assert_eq!(files.len(), 24);
    let dir = tempfile::tempdir().unwrap();
    let reference = pyav(&files, dir.path());
    let mut worst = f64::INFINITY;
    for (path, r) in files.iter().zip(&reference) {
        let audio = decode::decode_mono(path).unwrap();
        assert_eq!((r.channels, r.rate), (1, audio.sample_rate));
        // The manifest's length is the cache's: one MP4 timing rule on both sides.
        let probed = data_manifest::probe::probe(path).unwrap().num_samples;
        assert_eq!(audio.samples.len() as u64, probed, "{}", path.display());
        // ffmpeg keeps the last frame's padding; we stop at the track duration.
        assert!(audio.samples.len() <= r.samples.len());
        assert!(r.samples.len() - audio.samples.len() < 1024);
        let snr = snr_db(&r.samples[..audio.samples.len()], &audio.samples);
        // No other alignment is as good as ours.
        for lag in [1usize, 2, 1024, 2048] {
            let shifted = snr_db(&r.samples[lag..audio.samples.len()], &audio.samples);
            assert!(shifted < snr - 20.0, "{}: lag {lag}", path.display());
        }
        assert!(snr >= 60.0, "{}: SNR {snr:.1} dB", path.display());
        worst = worst.min(snr);

        // The same utterance as lossless FLAC starts at the same sample: the priming is gone.
        let name = path.file_stem().unwrap().to_str().unwrap();
        let actor = &name[name.len() - 2..];
        let flac = root.join(format!("flac16k/Actor_{actor}/{name}.flac"));
        let lossless = decode::decode_mono(&flac).unwrap().samples;
        let n = lossless.len().min(audio.samples.len());
        let aligned = snr_db(&lossless[..n], &audio.samples[..n]);
        let early = snr_db(&lossless[..n - 1024], &audio.samples[1024..n]);
        let late = snr_db(&lossless[1024..n], &audio.samples[..n - 1024]);
        assert!(
            aligned > 10.0 && aligned > early + 10.0 && aligned > late + 10.0,
            "{}: {aligned:.1} dB aligned, {early:.1}/{late:.1} dB shifted",
            path.display()
        );
    }
    eprintln!("AAC: worst aligned SNR against ffmpeg {worst:.1} dB over 24 files");
}

#[test]
fn resampled_original_matches_the_corpus_16k_flac() {
    let Some(root) = stage_kit::reference::ravdess_root() else {
        return;
    };
    let wav = root.join("original48k/03-01-01-01-01-01-01.wav");
    let ours = decode::load_mono(&wav, 16000).unwrap();
    let flac = decode::decode_mono(&root.join("flac16k/Actor_01/03-01-01-01-01-01-01.flac"))
        .unwrap()
        .samples;
    assert!((ours.len() as isize - flac.len() as isize).abs() <= 1);
    let n = ours.len().min(flac.len());
    let snr = snr_db(&flac[..n], &ours[..n]);
    eprintln!("48 kHz original resampled by rubato vs the corpus's 16 kHz FLAC: {snr:.1} dB");
    assert!(snr > 30.0, "{snr:.1} dB");
}

#[test]
fn sphere_decodes_bit_exact_like_ffmpeg() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
    let dir = tempfile::tempdir().unwrap();
    // 16-bit PCM in both byte orders, mu-law, a-law; one and two channels; 8 and 16 kHz.
    let cases = [
        ("pcm", "2", Some("01"), "1", "16000"),
        ("pcm", "2", Some("10"), "2", "8000"),
        ("ulaw", "1", None, "2", "8000"),
        ("mu-law", "1", None, "1", "8000"),
        ("alaw", "1", None, "1", "16000"),
        ("alaw", "1", None, "2", "8000"),
    ];
    let mut files = Vec::new();
    for (i, (coding, bytes, order, channels, rate)) in cases.iter().enumerate() {
        let frames = 1500 + 37 * i;
        let n = frames * channels.parse::<usize>().unwrap() * bytes.parse::<usize>().unwrap();
        let data: Vec<u8> = (0..n).map(|_| rng.r#gen()).collect();
        let count = frames.to_string();
        let mut fields = vec![
            ("sample_count", count.as_str()),
            ("sample_rate", *rate),
            ("channel_count", *channels),
            ("sample_n_bytes", *bytes),
            ("sample_coding", *coding),
        ];
        if let Some(order) = order {
            fields.push(("sample_byte_format", order));
        }
        let path = dir.path().join(format!("{i}-{coding}.sph"));
        std::fs::write(&path, data_manifest::probe::sphere::write(&fields, &data)).unwrap();
        files.push(path);
    }
    let reference = pyav(&files, dir.path());
    for (path, r) in files.iter().zip(&reference) {
        let (ours, channels, rate) = decode::decode_interleaved(path).unwrap();
        assert_eq!((channels, rate), (r.channels, r.rate), "{}", path.display());
        assert!(ours == r.samples, "{} differs from ffmpeg", path.display());
        // One channel alone is every other sample of the interleaved signal.
        if channels == 2 {
            let second = decode::decode_channel(path, decode::Downmix::Mean, Some(1)).unwrap();
            let expected: Vec<f32> = r.samples.iter().skip(1).step_by(2).copied().collect();
            assert_eq!(second.samples, expected);
        }
    }
    let shorten = dir.path().join("shorten.sph");
    let fields = [
        ("sample_count", "100"),
        ("sample_rate", "8000"),
        ("sample_coding", "pcm,embedded-shorten-v2.00"),
    ];
    std::fs::write(
        &shorten,
        data_manifest::probe::sphere::write(&fields, &[0; 64]),
    )
    .unwrap();
    let err = decode::decode_mono(&shorten).unwrap_err().to_string();
    assert!(
        err.contains("shorten.sph") && err.contains("shorten"),
        "{err}"
    );
    eprintln!("{} SPHERE files decode bit-exact", files.len());
}
