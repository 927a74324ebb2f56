//! `device-check`: runs every check of [`device_check::CHECKS`] on the best device (CUDA when
//! libtorch sees one), prints the summary table and writes it as JSON.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use device_check::{CHECKS, Row, Summary, compare, timing};
use stage_kit::DeviceSpec;

#[derive(Parser)]
#[command(about = "CUDA against CPU checks and VoxCeleb-sized timings")]
struct Args {
    /// List the checks and exit.
    #[arg(long)]
    list: bool,
    /// Where the JSON summary goes.
    #[arg(long, default_value = "device-check.json")]
    out: PathBuf,
    /// Small sizes everywhere (a smoke run of the whole check on a CPU).
    #[arg(long)]
    quick: bool,
    /// `auto` (CUDA when present), `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
}

/// Sizes of the run.
struct Sizes {
    speech_seconds: u64,
    big: &'static str,
    fp16: (&'static str, usize, usize),
    resume: (&'static str, usize, usize),
    pretrain: (&'static str, usize, usize, usize),
    cluster: (usize, usize, usize),
}

const FULL: Sizes = Sizes {
    speech_seconds: 16_000,
    big: "lresnet34",
    fp16: ("lresnet34", 32, 50),
    resume: ("lresnet34", 32, 10),
    pretrain: ("lresnet34", 128, 15, 16),
    cluster: (1_092_009, 273_000, 2),
};

const QUICK: Sizes = Sizes {
    speech_seconds: 120,
    big: "tiny-resnet",
    fp16: ("tiny-resnet", 4, 6),
    resume: ("tiny-resnet", 4, 4),
    pretrain: ("tiny-resnet", 4, 4, 2),
    cluster: (20_000, 5_000, 2),
};

fn main() -> Result<()> {
    let args = Args::parse();
    if args.list {
        for (name, what) in CHECKS {
            println!("{name:<20} {what}");
        }
        return Ok(());
    }
    let started = Instant::now();
    let device = feature_extract::device::resolve(args.device)?;
    let sizes = if args.quick { QUICK } else { FULL };
    let work = tempfile::tempdir()?;
    let mut rows: Vec<Row> = Vec::new();
    let mut record = |name: &str, result: Result<Vec<Row>>| {
        let got = result.unwrap_or_else(|e| vec![Row::failed(name, &e)]);
        for r in &got {
            println!(
                "{:<20} {:>14.6} {:<10} {}",
                r.check, r.value, r.unit, r.note
            );
        }
        rows.extend(got);
    };
    record("fbank", compare::fbank(device).map(|r| vec![r]));
    record("stmn", compare::stmn_check(device).map(|r| vec![r]));
    record(
        "encoder.lresnet34",
        compare::encoder(device, sizes.big, "encoder.lresnet34").map(|r| vec![r]),
    );
    record(
        "encoder.ecapa-512",
        compare::encoder(
            device,
            if args.quick {
                "tiny-ecapa"
            } else {
                "ecapa-512"
            },
            "encoder.ecapa-512",
        )
        .map(|r| vec![r]),
    );
    let audio = timing::generate_audio(work.path(), sizes.speech_seconds);
    match &audio {
        Ok(audio) => {
            record(
                "augment",
                compare::augment(device, &audio.caches.noise, &audio.caches.rir).map(|r| vec![r]),
            );
            record("kmeans", compare::kmeans(device));
            let (preset, batch, steps) = sizes.fp16;
            record(
                "fp16.dino",
                timing::config(device, preset, batch, steps, 4)
                    .and_then(|c| timing::fp16(c, audio, &work.path().join("fp16")))
                    .map(|r| vec![r]),
            );
            let (preset, batch, steps) = sizes.resume;
            record(
                "resume",
                timing::config(device, preset, batch, steps, 4)
                    .and_then(|c| timing::resume(c, audio, &work.path().join("resume")))
                    .map(|r| vec![r]),
            );
            let (preset, batch, steps, workers) = sizes.pretrain;
            record(
                "time.pretrain",
                timing::config(device, preset, batch, steps, workers).and_then(|c| {
                    timing::pretrain_step(c, audio, &work.path().join("time"), 3.min(steps - 1))
                }),
            );
        }
        Err(e) => record("audio", Err(anyhow::anyhow!("generating audio: {e:#}"))),
    }
    let (n, k, iterations) = sizes.cluster;
    record(
        "time.kmeans",
        timing::cluster(device, n, k, 256, iterations),
    );
    let summary = Summary {
        device: format!("{device:?}"),
        libtorch: env!("LIBTORCH_BUILD_VERSION").to_owned(),
        wall_seconds: started.elapsed().as_secs_f64(),
        rows,
    };
    println!("\n{}", summary.table());
    let json = serde_json::to_string_pretty(&summary)?;
    stage_kit::write_bytes_atomically(&args.out, json.as_bytes())?;
    println!("summary written to {}", args.out.display());
    if !summary.passed() {
        anyhow::bail!("some checks failed (see the table)");
    }
    Ok(())
}
