//! Header-probe throughput (files/s) on a generated tree of 10,000 small WAV and 10,000
//! small AAC/M4A files, beside the reference tools run on the same files in the same run:
//! `soxi` (WAV; batched, as many processes as probe threads), `ffprobe` (one process per file,
//! as it takes one input, on a sample) when they are installed, and PyAV's in-process
//! `av.open` from the provisioned Python.
//!
//! The tree is generated once into `target/bench-data/probe` by the provisioned Python
//! (`wave` for WAV, PyAV's AAC encoder for M4A: a few hundred distinct files, copied to the
//! full count). Timings are with a warm page cache (each measurement follows a warm-up pass),
//! so they measure parsing, not the disk.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rayon::prelude::*;

const PER_FORMAT: usize = 10_000;
const DISTINCT: usize = 200;
const FFPROBE_SAMPLE: usize = 1_000;

const GENERATE: &str = r#"
import os, shutil, sys, wave, av, numpy as np
root, per_format, distinct = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(0)
def signal(n, rate):
    t = np.arange(n) / rate
    return 0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t) + 0.01 * rng.standard_normal(n)
def write_wav(path, n, rate):
    with wave.open(path, 'wb') as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(rate)
        w.writeframes((signal(n, rate) * 32767).astype('<i2').tobytes())
def write_m4a(path, n, rate):
    x = signal(n, rate).astype(np.float32)
    with av.open(path, 'w', format='mp4') as out:
        s = out.add_stream('aac', rate=rate, layout='mono')
        for i in range(0, n, 1024):
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[None, i:i + 1024]), format='fltp', layout='mono')
            f.sample_rate = rate; f.pts = i
            for p in s.encode(f): out.mux(p)
        for p in s.encode(None): out.mux(p)
for ext, write in (('wav', write_wav), ('m4a', write_m4a)):
    made = []
    for i in range(per_format):
        folder = os.path.join(root, ext, f'spk{i // 100:03d}')
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f'{i:05d}.{ext}')
        if i < distinct:
            write(path, int(rng.integers(8000, 48000)), 16000)
            made.append(path)
        else:
            shutil.copyfile(made[i % distinct], path)
open(os.path.join(root, 'complete'), 'w').write('ok\n')
"#;

const PYAV_PROBE: &str = r#"
import sys, time, av
paths = [l.strip() for l in open(sys.argv[1])]
start = time.perf_counter()
for p in paths:
    with av.open(p) as c:
        s = c.streams.audio[0]
        (s.duration, s.sample_rate, s.channels, s.codec_context.name)
print(len(paths) / (time.perf_counter() - start))
"#;

fn main() -> anyhow::Result<()> {
    let root = stage_kit::reference::workspace_root().join("target/bench-data/probe");
    if !root.join("complete").exists() {
        println!(
            "generating {PER_FORMAT} WAV and {PER_FORMAT} M4A files into {} ...",
            root.display()
        );
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        stage_kit::reference::run_python(
            GENERATE,
            &[
                root.display().to_string(),
                PER_FORMAT.to_string(),
                DISTINCT.to_string(),
            ],
        )?;
    }
    let wav = list(&root.join("wav"), "wav")?;
    let m4a = list(&root.join("m4a"), "m4a")?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "probe benchmark: {} WAV + {} M4A files (0.5-3 s, 16 kHz mono), warm page cache, {threads} cores",
        wav.len(),
        m4a.len()
    );

    let ours = |files: &[PathBuf], threads: usize| -> anyhow::Result<f64> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()?;
        let run = || {
            pool.install(|| {
                files
                    .par_iter()
                    .map(|f| data_manifest::probe::probe(f).map(|i| i.num_samples))
                    .collect::<Result<Vec<u64>, _>>()
            })
        };
        run()?;
        let start = Instant::now();
        let counts = run()?;
        let rate = files.len() as f64 / start.elapsed().as_secs_f64();
        std::hint::black_box(counts);
        Ok(rate)
    };
    let mut ours_rates = Vec::new();
    for t in [threads, 1] {
        let (w, m) = (ours(&wav, t)?, ours(&m4a, t)?);
        println!(
            "  data-manifest probe, {t} thread(s):      WAV {w:>8.0} files/s   M4A {m:>8.0} files/s"
        );
        ours_rates.push((t, w, m));
    }
    let (_, ours_wav, ours_m4a) = ours_rates[0];
    let (_, ours_wav_1, ours_m4a_1) = ours_rates[1];

    match which("soxi") {
        Some(soxi) => {
            let rate = batched(&soxi, &["-s"], &wav, threads)?;
            println!(
                "  soxi -s (batched, {threads} processes):     WAV {rate:>8.0} files/s   (data-manifest {:.1}x)",
                ours_wav / rate
            );
        }
        None => println!("  soxi: not installed, no comparison"),
    }
    match which("ffprobe") {
        Some(ffprobe) => {
            let args = [
                "-v",
                "error",
                "-select_streams",
                "a:0",
                "-show_entries",
                "stream=sample_rate,channels,duration_ts,codec_name",
                "-of",
                "csv=p=0",
            ];
            let sample = |files: &[PathBuf]| files[..FFPROBE_SAMPLE.min(files.len())].to_vec();
            let w = per_file(&ffprobe, &args, &sample(&wav), threads)?;
            let m = per_file(&ffprobe, &args, &sample(&m4a), threads)?;
            println!(
                "  ffprobe ({FFPROBE_SAMPLE}-file sample, 1 process per file, {threads} parallel):\n  \
                                                         WAV {w:>8.0} files/s   M4A {m:>8.0} files/s   (data-manifest {:.0}x / {:.0}x)",
                ours_wav / w,
                ours_m4a / m
            );
        }
        None => println!("  ffprobe: not installed, no comparison"),
    }
    let listing = root.join("pyav-files.txt");
    for (name, files, ours_1) in [("WAV", &wav, ours_wav_1), ("M4A", &m4a, ours_m4a_1)] {
        let text: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
        std::fs::write(&listing, text)?;
        let rate: f64 = stage_kit::reference::run_python(PYAV_PROBE, &[&listing])?
            .trim()
            .parse()?;
        println!(
            "  PyAV av.open in-process, 1 thread:    {name} {rate:>8.0} files/s   (data-manifest 1 thread {:.1}x)",
            ours_1 / rate
        );
    }
    Ok(())
}

fn list(dir: &Path, ext: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok().map(|e| e.into_path()))
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    Ok(files)
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Files/s of `program args <many files>` over `files`, split into `processes` batches run
/// at once.
fn batched(
    program: &Path,
    args: &[&str],
    files: &[PathBuf],
    processes: usize,
) -> anyhow::Result<f64> {
    let run = || -> anyhow::Result<()> {
        let chunk = files.len().div_ceil(processes);
        files.par_chunks(chunk).try_for_each(|batch| {
            let out = Command::new(program).args(args).args(batch).output()?;
            anyhow::ensure!(out.status.success(), "{} failed", program.display());
            Ok(())
        })
    };
    run()?;
    let start = Instant::now();
    run()?;
    Ok(files.len() as f64 / start.elapsed().as_secs_f64())
}

/// Files/s of one `program args <file>` process per file, `parallel` at once.
fn per_file(
    program: &Path,
    args: &[&str],
    files: &[PathBuf],
    parallel: usize,
) -> anyhow::Result<f64> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(parallel)
        .build()?;
    let start = Instant::now();
    pool.install(|| {
        files.par_iter().try_for_each(|f| -> anyhow::Result<()> {
            let out = Command::new(program).args(args).arg(f).output()?;
            anyhow::ensure!(
                out.status.success(),
                "{} failed on {}",
                program.display(),
                f.display()
            );
            Ok(())
        })
    })?;
    Ok(files.len() as f64 / start.elapsed().as_secs_f64())
}
