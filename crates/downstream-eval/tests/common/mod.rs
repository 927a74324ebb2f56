//! Helpers shared by the integration tests: synthetic embeddings and trial lists, and
//! running the binary.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};

use data_manifest::{Trial, TrialList};
use feature_extract::Embeddings;
use ndarray::Array2;
use rand::Rng;

/// Serialises the tests of one binary. HDF5 opens files without close-on-exec and locks
/// them, so a CLI child spawned by one test thread can inherit, and hold, the lock of a
/// file another thread is writing at that moment; its later readers then fail with EAGAIN.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    let v: f64 = rng.r#gen();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Writes an embeddings file.
pub fn write_embeddings(path: &Path, ids: Vec<String>, vectors: Array2<f32>) {
    Embeddings {
        utt_ids: ids,
        vectors,
        description: r#"{"producer":"test"}"#.into(),
    }
    .write(path)
    .unwrap();
}

/// Writes a trial list.
pub fn write_trials(path: &Path, trials: &[(String, String, bool)]) {
    TrialList {
        trials: trials
            .iter()
            .map(|(e, t, target)| Trial {
                enroll: e.clone(),
                test: t.clone(),
                target: *target,
            })
            .collect(),
    }
    .write(path)
    .unwrap();
}

/// Runs `downstream-eval` with `args`.
pub fn run_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_downstream-eval"))
        .args(args)
        .output()
        .expect("starting downstream-eval")
}

/// Runs the CLI and panics with its stderr when it fails.
pub fn run_ok(args: &[&str]) {
    let out = run_cli(args);
    assert!(
        out.status.success(),
        "downstream-eval {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}
