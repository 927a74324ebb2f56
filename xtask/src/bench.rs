//! `cargo xtask bench <name>`: benchmarks are cargo bench targets (harness = false) beside the
//! code they measure; each runs its Python/CLI reference in the same process run and prints
//! ratios. They are never part of the test suite.

use std::process::Command;

use crate::{command, setup, workspace};

/// A benchmark: its name on the command line, its bench target, and what it measures.
pub struct Bench {
    pub name: &'static str,
    pub target: &'static str,
    pub about: &'static str,
}

pub const BENCHES: &[Bench] = &[
    Bench {
        name: "probe",
        target: "probe",
        about: "header-probe throughput (files/s) on >= 20k small WAV and m4a files, beside soxi/ffprobe",
    },
    Bench {
        name: "features",
        target: "features",
        about: "fbank real-time factor against torchaudio; prepare throughput for WAV and m4a",
    },
    Bench {
        name: "score",
        target: "score",
        about: "cosine scoring of a VoxCeleb1-H-sized trial list on synthetic embeddings",
    },
    Bench {
        name: "kmeans",
        target: "kmeans",
        about: "k-means iteration time of the batched backend and linfa against faiss-cpu",
    },
    Bench {
        name: "cluster",
        target: "cluster",
        about: "k-means (k = 25,000) and the centroid merge on 100,000 x 256 planted speakers: seconds, rounds, peak memory",
    },
    Bench {
        name: "train",
        target: "train",
        about: "DINO step and embedding extraction against a PyTorch reference",
    },
    Bench {
        name: "loader",
        target: "loader",
        about: "pretraining loader crops/s (1 and 2 workers, cold and warm) on a 4 GiB cache, both layouts",
    },
    Bench {
        name: "allreduce",
        target: "allreduce",
        about: "gradient sync of 2 Gloo ranks (bucketed all-reduce) against PyTorch DDP's",
    },
];

/// Runs the benchmark `name` (after setup), or lists them when `name` is unknown.
pub fn run(name: &str) -> anyhow::Result<()> {
    let Some(bench) = BENCHES.iter().find(|b| b.name == name) else {
        let known: Vec<String> = BENCHES
            .iter()
            .map(|b| format!("  {:<9} {}", b.name, b.about))
            .collect();
        anyhow::bail!("unknown benchmark {name:?}; known:\n{}", known.join("\n"));
    };
    setup::ensure()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // The whole workspace selected, so that dependencies get the features of the test and
    // pipeline builds: the bench reuses that build and leaves the stage binaries as they are.
    command::run(Command::new(cargo).current_dir(workspace::root()).args([
        "bench",
        "--workspace",
        "--bench",
        bench.target,
    ]))
}
