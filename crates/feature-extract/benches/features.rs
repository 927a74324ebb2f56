//! `cargo xtask bench features`: the fbank's real-time factor on one thread against
//! torchaudio's `kaldi.fbank` on the same audio, and `prepare` throughput (hours of audio per
//! minute on 2 worker threads) for WAV and m4a input against a Python pipeline doing the same
//! decode + fbank work (PyAV + torchaudio, 2 processes, no HDF5 writing). Both references run
//! in this process run; the ratios are printed at the end.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::files;
use std::time::Instant;

use data_manifest::{Utterance, UtteranceManifest};
use feature_extract::decode;
use feature_extract::fbank::{Fbank, FbankOptions};
use feature_extract::prepare::{PrepareConfig, PrepareRequest, prepare};
use stage_kit::Shard;
use stage_kit::reference::{ravdess_root, run_python};

/// Seconds of measurement per side of the fbank comparison.
const MIN_SECONDS: f64 = 3.0;

/// torchaudio kaldi.fbank on one thread over the utterances (raw f32, lengths in argv),
/// repeated for at least MIN_SECONDS; prints wall and thread CPU seconds per pass.
const TORCHAUDIO_FBANK: &str = r#"
import sys, time
import numpy as np, torch
from torchaudio.compliance.kaldi import fbank
torch.set_num_threads(1)
x = np.fromfile(sys.argv[1], dtype=np.float32)
lengths = [int(n) for n in sys.argv[3:]]
utts, at = [], 0
for n in lengths:
    utts.append(torch.from_numpy(x[at:at + n]).unsqueeze(0))
    at += n
for u in utts[:3]:
    fbank(u, num_mel_bins=80)
passes, start, cpu = 0, time.perf_counter(), time.thread_time()
while passes == 0 or time.perf_counter() - start < float(sys.argv[2]):
    for u in utts:
        fbank(u, num_mel_bins=80)
    passes += 1
print((time.perf_counter() - start) / passes, (time.thread_time() - cpu) / passes)
"#;

/// Decode (PyAV) + resample to 16 kHz (PyAV's resampler) + kaldi.fbank for every file, in 2
/// processes of one thread each; prints the wall seconds.
const PYTHON_PIPELINE: &str = r#"
import sys, time
from multiprocessing import Pool

def work(path):
    import av, numpy as np, torch
    from torchaudio.compliance.kaldi import fbank
    torch.set_num_threads(1)
    with av.open(path) as c:
        s = c.streams.audio[0]
        r = av.AudioResampler(format="s16", layout="mono", rate=16000)
        chunks = []
        for frame in c.decode(s):
            for f in r.resample(frame):
                chunks.append(f.to_ndarray().reshape(-1))
        for f in r.resample(None):
            chunks.append(f.to_ndarray().reshape(-1))
    x = torch.from_numpy(np.concatenate(chunks).astype(np.float32)).unsqueeze(0)
    return fbank(x, num_mel_bins=80).shape[0]

if __name__ == "__main__":
    files = sys.argv[1:]
    start = time.perf_counter()
    with Pool(2) as pool:
        frames = sum(pool.map(work, files, chunksize=4))
    print(time.perf_counter() - start)
"#;

/// Real-time factors of one fbank side, from wall time and from thread CPU time.
struct Rtf {
    wall: f64,
    cpu: f64,
}

/// The fbank comparison: (audio seconds, ours, torchaudio).
fn fbank_rtf(utterances: &[Vec<f32>], dir: &Path) -> (f64, Rtf, Rtf) {
    let audio_seconds = utterances.iter().map(|u| u.len()).sum::<usize>() as f64 / 16000.0;
    let fbank = Fbank::new(&FbankOptions::default()).expect("default options");
    for u in utterances.iter().take(3) {
        std::hint::black_box(fbank.compute(u));
    }
    let (start, cpu_start) = (Instant::now(), stage_kit::cpu_time::thread_seconds());
    let mut passes = 0usize;
    while passes == 0 || start.elapsed().as_secs_f64() < MIN_SECONDS {
        for u in utterances {
            std::hint::black_box(fbank.compute(u));
        }
        passes += 1;
    }
    let wall = start.elapsed().as_secs_f64() / passes as f64;
    let cpu = match (cpu_start, stage_kit::cpu_time::thread_seconds()) {
        (Some(a), Some(b)) => (b - a) / passes as f64,
        _ => wall,
    };
    let ours = Rtf {
        wall: audio_seconds / wall,
        cpu: audio_seconds / cpu,
    };

    let raw = dir.join("fbank-input.f32");
    let bytes: Vec<u8> = utterances
        .iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(&raw, bytes).expect("writing the benchmark input");
    let mut args = vec![raw.display().to_string(), MIN_SECONDS.to_string()];
    args.extend(utterances.iter().map(|u| u.len().to_string()));
    let out = run_python(TORCHAUDIO_FBANK, &args).expect("torchaudio reference");
    let times: Vec<f64> = out
        .split_whitespace()
        .map(|t| t.parse().expect("seconds"))
        .collect();
    let theirs = Rtf {
        wall: audio_seconds / times[0],
        cpu: audio_seconds / times[1],
    };
    (audio_seconds, ours, theirs)
}

/// prepare on 2 threads over `files` (utterance ids made unique so files may repeat):
/// (audio hours, ours hours/min, Python pipeline hours/min).
fn prepare_throughput(root: &Path, files: &[PathBuf], dir: &Path) -> (f64, f64, f64) {
    let utterances: Vec<Utterance> = files
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let (x, channels, rate) = decode::decode_interleaved(p).expect("decodable input");
            Utterance {
                utt_id: format!("u{i:06}"),
                path: p
                    .strip_prefix(root)
                    .expect("under the root")
                    .display()
                    .to_string(),
                corpus: "bench".into(),
                speaker: None,
                session: None,
                num_samples: (x.len() / channels) as u64,
                sample_rate: rate,
                channels: channels as u16,
                codec: String::new(),
                split: "train".into(),
                emotion: None,
                fold: None,
                channel: None,
            }
        })
        .collect();
    let hours: f64 = utterances.iter().map(|u| u.duration_seconds()).sum::<f64>() / 3600.0;
    let manifest = dir.join("utterances.parquet");
    UtteranceManifest {
        corpus_root: root.to_path_buf(),
        utterances,
    }
    .write(&manifest)
    .expect("writing the benchmark manifest");
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let start = Instant::now();
    prepare(&PrepareRequest {
        manifest,
        audio_out: Some(out.join("audio.h5")),
        fbank_out: Some(out.join("fbank.h5")),
        shard: Shard::WHOLE,
        threads: 2,
        config: PrepareConfig::default(),
    })
    .expect("prepare");
    let ours = hours / (start.elapsed().as_secs_f64() / 60.0);
    let args: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    let theirs: f64 = run_python(PYTHON_PIPELINE, &args)
        .expect("Python pipeline")
        .trim()
        .parse()
        .expect("seconds");
    (hours, ours, hours / (theirs / 60.0))
}

fn main() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let fixture = fixture_corpus::ensure(fixture_corpus::Size::Tiny, 1).expect("fixture corpus");
    let ravdess = ravdess_root();

    // fbank: RAVDESS speech when present, else the fixture's utterances.
    let sources: Vec<PathBuf> = match &ravdess {
        Some(root) => files(&root.join("flac16k"), "flac")
            .into_iter()
            .step_by(12)
            .collect(),
        None => files(&fixture.join("wav"), "wav")
            .into_iter()
            .take(120)
            .collect(),
    };
    let utterances: Vec<Vec<f32>> = sources
        .iter()
        .map(|p| decode::load_mono(p, 16000).expect("decodable"))
        .collect();
    let (seconds, ours, theirs) = fbank_rtf(&utterances, dir.path());
    println!(
        "fbank, 80 bins, 1 thread, {} utterances ({seconds:.0} s of audio), real-time factor \
         by thread CPU time (wall time): feature-extract {:.0}x ({:.0}x), torchaudio \
         kaldi.fbank {:.0}x ({:.0}x)",
        utterances.len(),
        ours.cpu,
        ours.wall,
        theirs.cpu,
        theirs.wall
    );

    let wav_dir = dir.path().join("wav");
    std::fs::create_dir_all(&wav_dir).expect("folder");
    let wavs = files(&fixture.join("wav"), "wav");
    let (h, ours_wav, py_wav) = prepare_throughput(&fixture, &wavs, &wav_dir);
    println!(
        "prepare, WAV (fixture, mixed rates), {h:.2} h: {ours_wav:.1} h/min on 2 threads, \
         Python PyAV+torchaudio {py_wav:.1} h/min on 2 processes"
    );
    let m4a = ravdess.as_ref().map(|root| {
        // The 24 RAVDESS m4a files, each listed 20 times.
        let m4as: Vec<PathBuf> = files(&root.join("m4a"), "m4a")
            .into_iter()
            .cycle()
            .take(24 * 20)
            .collect();
        let m4a_dir = dir.path().join("m4a");
        std::fs::create_dir_all(&m4a_dir).expect("folder");
        let (h, ours, py) = prepare_throughput(root, &m4as, &m4a_dir);
        println!(
            "prepare, m4a (RAVDESS AAC), {h:.2} h: {ours:.1} h/min on 2 threads, \
             Python PyAV+torchaudio {py:.1} h/min on 2 processes"
        );
        ours / py
    });

    println!("\nratios (feature-extract / reference, higher is better):");
    println!(
        "  fbank real-time factor vs torchaudio (goal >= 2.5): {:.2} by CPU time, {:.2} by wall time",
        ours.cpu / theirs.cpu,
        ours.wall / theirs.wall
    );
    println!(
        "  prepare throughput, WAV: {ours_wav:.1} h/min, {:.2}x the Python pipeline",
        ours_wav / py_wav
    );
    match m4a {
        Some(r) => println!("  prepare throughput, m4a: {r:.2}x the Python pipeline"),
        None => println!("  prepare throughput, m4a: skipped (no RAVDESS corpus)"),
    }
}
