//! Which model of a training run goes downstream (`[embed] checkpoint`): the last one, the
//! epoch model that validated best, or the average of the last N epoch models' weights
//! (wespeaker's model averaging).

use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::{Kind, Tensor};

use crate::checkpoint::{self, EpochModels};
use crate::error::{Error, Result};
use crate::training::{FINAL_MODEL, STEP_LOG};
use crate::validation::{Validation, best, validations};

pub use stage_kit::CheckpointRule as Rule;

/// What [`select`] chose.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selected {
    pub rule: String,
    /// The model files the written model comes from.
    pub from: Vec<PathBuf>,
    /// The validation of the chosen epoch (`best-validation`).
    pub validation: Option<Validation>,
}

/// Writes the model of the training run in `run_dir` that `rule` picks to `out`.
pub fn select(run_dir: &Path, rule: Rule, out: &Path) -> Result<Selected> {
    let epochs = EpochModels::of_run(run_dir);
    let selected = match rule {
        Rule::Last => {
            let last = run_dir.join(FINAL_MODEL);
            copy(&last, out)?;
            Selected {
                rule: rule.to_string(),
                from: vec![last],
                validation: None,
            }
        }
        Rule::BestValidation => {
            let best = best(&validations(run_dir)?).ok_or_else(|| {
                Error::Input(format!(
                    "{}: the run has no validation ([validation] in its configuration) to \
                         pick the best epoch by",
                    run_dir.join(STEP_LOG).display()
                ))
            })?;
            let path = epochs.path_for(best.epoch);
            copy(&path, out)?;
            Selected {
                rule: rule.to_string(),
                from: vec![path],
                validation: Some(best),
            }
        }
        Rule::Average(n) => {
            let all = epochs.list();
            if all.len() < n {
                return Err(Error::Input(format!(
                    "{}: average:{n} needs {n} epoch models, the run has {}",
                    epochs.dir.display(),
                    all.len()
                )));
            }
            let from: Vec<PathBuf> = all[all.len() - n..]
                .iter()
                .map(|(_, p)| p.clone())
                .collect();
            average(&from, out)?;
            Selected {
                rule: rule.to_string(),
                from,
                validation: None,
            }
        }
    };
    tracing::info!(
        "{rule}: {} from {}",
        out.display(),
        selected
            .from
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(selected)
}

/// Writes the model file `from` to `out` (checked on the way, written atomically).
fn copy(from: &Path, out: &Path) -> Result<()> {
    let loaded = checkpoint::load(from)?;
    let tensors: Vec<(String, Tensor)> = loaded.tensors.into_iter().collect();
    checkpoint::save(out, &loaded.meta, &tensors)
}

/// Writes the element-wise mean of the models `paths` (same tensors) to `out`, with the last
/// one's metadata. Floating-point tensors (weights, batch-norm statistics) are averaged;
/// integer ones (batch-norm step counters) are the last model's.
pub fn average(paths: &[PathBuf], out: &Path) -> Result<()> {
    let last_path = paths
        .last()
        .ok_or_else(|| Error::Usage("no model files to average".to_owned()))?;
    let last = checkpoint::load(last_path)?;
    let mut names: Vec<&String> = last.tensors.keys().collect();
    names.sort();
    let mut sums: Vec<Tensor> = names
        .iter()
        .map(|name| last.tensors[*name].to_kind(Kind::Double))
        .collect();
    for path in &paths[..paths.len() - 1] {
        let other = checkpoint::load(path)?;
        if other.tensors.len() != names.len() {
            return Err(Error::Input(format!(
                "{} has {} tensors, {} has {}: not models of one run",
                path.display(),
                other.tensors.len(),
                last_path.display(),
                names.len()
            )));
        }
        for (sum, name) in sums.iter_mut().zip(&names) {
            let t = other
                .tensors
                .get(*name)
                .ok_or_else(|| Error::Input(format!("{} has no tensor {name}", path.display())))?;
            if t.size() != sum.size() {
                return Err(Error::Input(format!(
                    "{name} is {:?} in {} but {:?} in {}",
                    t.size(),
                    path.display(),
                    sum.size(),
                    last_path.display()
                )));
            }
            *sum += t.to_kind(Kind::Double);
        }
    }
    let count = paths.len() as f64;
    let tensors: Vec<(String, Tensor)> = names
        .iter()
        .zip(sums)
        .map(|(name, sum)| {
            let original = &last.tensors[*name];
            let value = if original.is_floating_point() {
                (sum / count).to_kind(original.kind())
            } else {
                original.shallow_clone()
            };
            ((*name).clone(), value)
        })
        .collect();
    checkpoint::save(out, &last.meta, &tensors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::StepRecord;

    fn model(dir: &Path, epoch: usize, weight: [f32; 2], counter: i64) -> PathBuf {
        let meta = checkpoint::CheckpointMeta {
            format: checkpoint::FORMAT.into(),
            kind: "dino".into(),
            epoch,
            step: 10 * epoch,
            embedding_prefix: "teacher.encoder.".into(),
            embedding: checkpoint::EmbeddingSpec {
                encoder: crate::encoder::EncoderConfig::preset("tiny-ecapa").unwrap(),
                features: Default::default(),
            },
            config: serde_json::json!({}),
        };
        let tensors = vec![
            ("teacher.encoder.w".to_owned(), Tensor::from_slice(&weight)),
            (
                "teacher.encoder.n".to_owned(),
                Tensor::from_slice(&[counter]),
            ),
        ];
        let path = EpochModels::of_run(dir).path_for(epoch);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        checkpoint::save(&path, &meta, &tensors).unwrap();
        path
    }

    #[test]
    fn averaging_takes_the_mean_of_floats_and_the_last_counters() {
        let dir = tempfile::tempdir().unwrap();
        model(dir.path(), 1, [0.0, 10.0], 5);
        model(dir.path(), 2, [1.0, 2.0], 6);
        model(dir.path(), 3, [3.0, 4.0], 7);
        let out = dir.path().join("avg.safetensors");
        let selected = select(dir.path(), Rule::Average(2), &out).unwrap();
        assert_eq!(selected.from.len(), 2);
        let loaded = checkpoint::load(&out).unwrap();
        let w: Vec<f32> = Vec::try_from(&loaded.tensors["teacher.encoder.w"]).unwrap();
        let n: Vec<i64> = Vec::try_from(&loaded.tensors["teacher.encoder.n"]).unwrap();
        assert_eq!((w, n), (vec![2.0, 3.0], vec![7]));
        assert_eq!(loaded.meta.epoch, 3);
        let err = select(dir.path(), Rule::Average(4), &out)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("average:4 needs 4 epoch models, the run has 3"),
            "{err}"
        );
    }

    #[test]
    fn best_validation_picks_the_lowest_error_and_needs_a_validation() {
        let dir = tempfile::tempdir().unwrap();
        model(dir.path(), 1, [0.0, 1.0], 1);
        model(dir.path(), 2, [5.0, 5.0], 2);
        model(dir.path(), 3, [9.0, 9.0], 3);
        let log = dir.path().join(STEP_LOG);
        std::fs::write(&log, "").unwrap();
        let out = dir.path().join("best.safetensors");
        let err = select(dir.path(), Rule::BestValidation, &out)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no validation"), "{err}");
        let line = |step, epoch, eer: Option<f64>| {
            let record = StepRecord {
                step,
                epoch,
                validation: eer.map(|eer| Validation {
                    epoch: epoch + 1,
                    eer: Some(eer),
                    ..Default::default()
                }),
                ..Default::default()
            };
            serde_json::to_string(&record).unwrap() + "\n"
        };
        let text = [
            line(9, 0, Some(0.3)),
            line(10, 1, None),
            line(19, 1, Some(0.1)),
            line(29, 2, Some(0.2)),
        ];
        std::fs::write(&log, text.concat()).unwrap();
        let selected = select(dir.path(), Rule::BestValidation, &out).unwrap();
        assert_eq!(selected.validation.unwrap().epoch, 2);
        let w: Vec<f32> =
            Vec::try_from(&checkpoint::load(&out).unwrap().tensors["teacher.encoder.w"]).unwrap();
        assert_eq!(w, vec![5.0, 5.0]);
    }
}
