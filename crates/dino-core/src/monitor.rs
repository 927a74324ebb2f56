//! Training telemetry: one JSON line per step in `train_log.jsonl`, and a warning when the
//! teacher's outputs show collapse (uniform, or every input on the same prototype).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::loss::TeacherStats;

/// One step of DINO pretraining or fine-tuning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct StepRecord {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    pub lr: f64,
    pub weight_decay: f64,
    /// Teacher EMA momentum (DINO) or margin (fine-tuning).
    pub momentum: f64,
    pub teacher_temp: f64,
    pub teacher_entropy: f64,
    pub kl_from_uniform: f64,
    pub batch_entropy: f64,
    pub center_norm: f64,
    pub grad_norm: f64,
    /// Classification accuracy on the batch (fine-tuning).
    pub accuracy: f64,
    pub crops_per_second: f64,
    /// Share of the step spent waiting for the loader.
    pub data_wait_share: f64,
    /// Whether the step was skipped because fp16 gradients overflowed.
    pub skipped: bool,
}

/// Collapse of the teacher, if its statistics show one.
pub fn collapse(stats: &TeacherStats, prototypes: i64) -> Option<&'static str> {
    let uniform = (prototypes as f64).ln();
    if stats.entropy > 0.98 * uniform {
        Some("uniform collapse: the teacher's outputs are nearly uniform over the prototypes")
    } else if stats.batch_entropy < 0.1 {
        Some("one-hot collapse: every input lands on the same prototype")
    } else {
        None
    }
}

/// `train_log.jsonl`, appended step by step.
pub struct StepLog {
    path: PathBuf,
    file: File,
}

impl StepLog {
    /// Opens the log; on resume (`keep_until = Some(step)`) lines after that step are dropped,
    /// since those steps are about to be run again.
    pub fn open(path: &Path, keep_until: Option<usize>) -> std::io::Result<Self> {
        let kept: Vec<String> = match (keep_until, File::open(path)) {
            (Some(step), Ok(existing)) => BufReader::new(existing)
                .lines()
                .map_while(|l| l.ok())
                .filter(|line| {
                    serde_json::from_str::<StepRecord>(line).is_ok_and(|r| r.step < step)
                })
                .collect(),
            _ => Vec::new(),
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        for line in kept {
            writeln!(file, "{line}")?;
        }
        Ok(StepLog {
            path: path.to_path_buf(),
            file,
        })
    }

    pub fn append(&mut self, record: &StepRecord) -> std::io::Result<()> {
        let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        writeln!(self.file, "{line}")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_both_collapses() {
        let k = 1000;
        let healthy = TeacherStats {
            entropy: 2.0,
            kl_from_uniform: 4.9,
            batch_entropy: 3.0,
            center_norm: 1.0,
        };
        assert!(collapse(&healthy, k).is_none());
        let uniform = TeacherStats {
            entropy: 6.9,
            ..healthy
        };
        assert!(collapse(&uniform, k).unwrap().starts_with("uniform"));
        let one_hot = TeacherStats {
            entropy: 0.01,
            batch_entropy: 0.01,
            ..healthy
        };
        assert!(collapse(&one_hot, k).unwrap().starts_with("one-hot"));
    }

    #[test]
    fn resume_drops_the_steps_that_will_be_redone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_log.jsonl");
        let mut log = StepLog::open(&path, None).unwrap();
        for step in 0..5 {
            log.append(&StepRecord {
                step,
                ..Default::default()
            })
            .unwrap();
        }
        drop(log);
        let _ = StepLog::open(&path, Some(3)).unwrap();
        let steps: Vec<usize> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<StepRecord>(l).unwrap().step)
            .collect();
        assert_eq!(steps, vec![0, 1, 2]);
    }
}
