//! Training telemetry: one JSON line per step in `train_log.jsonl`, and a warning when the
//! teacher's outputs show collapse (uniform, or every input on the same prototype), which
//! can also stop the run ([`MonitorConfig`]).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::loss::TeacherStats;
use crate::validation::Validation;

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
    /// The validation of the model after this step, on the last step of a validated epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Validation>,
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

/// `[pretrain.monitor]`: what the collapse monitor does besides warning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Stop the run with [`Error::Collapsed`] once the teacher has stayed collapsed for
    /// `patience` consecutive steps. Meanwhile no checkpoint is written, so the newest one on
    /// disk predates the collapse.
    pub stop_on_collapse: bool,
    /// Consecutive collapsed steps that stop the run (a healthy step starts the count again).
    pub patience: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            stop_on_collapse: false,
            patience: 200,
        }
    }
}

impl MonitorConfig {
    /// Refuses a patience of 0 (a run that would stop before it could recover).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.patience == 0 {
            return Err("patience = 0: must be at least 1 step".into());
        }
        Ok(())
    }
}

/// The collapse monitor over a run: counts collapsed steps, warns, and decides whether the
/// run may checkpoint or must stop.
#[derive(Debug)]
pub struct CollapseWatch {
    config: MonitorConfig,
    prototypes: i64,
    warnings: usize,
    first: Option<usize>,
    /// First step of the collapse under way.
    since: Option<usize>,
}

impl CollapseWatch {
    pub fn new(config: MonitorConfig, prototypes: i64) -> Self {
        CollapseWatch {
            config,
            prototypes,
            warnings: 0,
            first: None,
            since: None,
        }
    }

    /// Takes the teacher statistics of `step`; with `stop_on_collapse`, the error once the
    /// collapse has lasted `patience` steps.
    pub fn observe(&mut self, step: usize, stats: &TeacherStats) -> Result<()> {
        let Some(what) = collapse(stats, self.prototypes) else {
            self.since = None;
            return Ok(());
        };
        self.warnings += 1;
        self.first.get_or_insert(step);
        let since = *self.since.get_or_insert(step);
        if self.warnings == 1 || self.warnings.is_multiple_of(100) {
            tracing::warn!(
                "step {step}: {what} (entropy {:.3}, batch entropy {:.3})",
                stats.entropy,
                stats.batch_entropy
            );
        }
        if self.config.stop_on_collapse && step + 1 - since >= self.config.patience {
            return Err(Error::Collapsed {
                step,
                since,
                what,
                patience: self.config.patience,
            });
        }
        Ok(())
    }

    /// Whether a checkpoint may be written now: not during a collapse that may stop the run.
    pub fn checkpoint_allowed(&self) -> bool {
        !(self.config.stop_on_collapse && self.since.is_some())
    }

    /// Collapsed steps so far.
    pub fn warnings(&self) -> usize {
        self.warnings
    }

    /// The first collapsed step, if any.
    pub fn first_collapse(&self) -> Option<usize> {
        self.first
    }
}

/// `train_log.jsonl`, appended step by step.
pub struct StepLog {
    path: PathBuf,
    file: File,
}

/// Every record of the step log at `path`; a line that is not one is an error naming it.
pub fn read_log(path: &Path) -> Result<Vec<StepRecord>> {
    let text = std::fs::read_to_string(path).map_err(|e| stage_kit::FileError::new(path, e))?;
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                Error::Input(format!(
                    "{} line {}: not a step record: {e}",
                    path.display(),
                    n + 1
                ))
            })
        })
        .collect()
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
    fn a_collapse_that_lasts_patience_steps_stops_the_run_and_holds_checkpoints() {
        let healthy = TeacherStats {
            entropy: 2.0,
            kl_from_uniform: 4.9,
            batch_entropy: 3.0,
            center_norm: 1.0,
        };
        let uniform = TeacherStats {
            entropy: 6.9,
            ..healthy
        };
        let config = MonitorConfig {
            stop_on_collapse: true,
            patience: 3,
        };
        let mut watch = CollapseWatch::new(config.clone(), 1000);
        // Two collapsed steps, then a healthy one: the count starts again.
        for (step, stats) in [(0, &uniform), (1, &uniform), (2, &healthy), (3, &uniform)] {
            watch.observe(step, stats).unwrap();
        }
        assert!(!watch.checkpoint_allowed());
        watch.observe(4, &uniform).unwrap();
        match watch.observe(5, &uniform) {
            Err(Error::Collapsed { step, since, .. }) => assert_eq!((step, since), (5, 3)),
            other => panic!("expected a stop, got {other:?}"),
        }
        assert_eq!((watch.warnings(), watch.first_collapse()), (5, Some(0)));
        // Without stop_on_collapse it only counts, and checkpoints go on.
        let mut counting = CollapseWatch::new(
            MonitorConfig {
                stop_on_collapse: false,
                ..config
            },
            1000,
        );
        for step in 0..10 {
            counting.observe(step, &uniform).unwrap();
        }
        assert!(counting.checkpoint_allowed());
        assert!(
            MonitorConfig {
                patience: 0,
                ..Default::default()
            }
            .check()
            .is_err()
        );
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
