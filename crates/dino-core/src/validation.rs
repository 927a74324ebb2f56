//! Validation during training: every few epochs the model of the epoch just finished (DINO's
//! teacher, the fine-tuned encoder) embeds a validation set, and downstream-eval's own
//! scoring (`sv::run`, `emotion::run`) measures it: EER and minDCF on a trial list, or
//! micro-F1 on emotion folds. The numbers go into the step log (the epoch's last step), the
//! files of each validation into `validation/epoch-NNNN/`, and they drive
//! `select-model best-validation`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use data_manifest::{TrialList, UtteranceManifest};
use downstream_eval::emotion::{EmotionConfig, EmotionInputs};
use downstream_eval::sv::{SvConfig, SvInputs};
use serde::{Deserialize, Serialize};
use stage_kit::DeviceSpec;

use crate::embed::EmbedConfig;
use crate::error::{Error, Result};

/// `[pretrain.validation]` / `[finetune.validation]`: how often to validate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// Epochs between validations; the last epoch is always validated.
    pub every_epochs: usize,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig { every_epochs: 1 }
    }
}

impl ValidationConfig {
    /// Refuses a period of 0 epochs, naming the key.
    pub fn check(&self) -> std::result::Result<(), String> {
        stage_kit::config::at_least_one(&[("every_epochs", self.every_epochs as i64)])
    }
}

/// The validation data: utterances in an audio cache, scored on a trial list or, without
/// one, on the manifest's emotion labels and folds.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationSet {
    pub manifest: PathBuf,
    pub audio_cache: PathBuf,
    /// `trials.parquet`: speaker verification (EER, minDCF).
    pub trials: Option<PathBuf>,
}

/// The numbers of one validation (a field of the step record of the epoch's last step).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Epochs completed when the model was validated.
    pub epoch: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eer: Option<f64>,
    /// Normalised minDCF per target prior (`min_dcf_0.01`, ...).
    #[serde(default, flatten)]
    pub min_dcf: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub micro_f1: Option<f64>,
}

impl Validation {
    /// The number that ranks models, lower is better: EER, or 1 - micro-F1.
    pub fn error(&self) -> f64 {
        match (self.eer, self.micro_f1) {
            (Some(eer), _) => eer,
            (None, Some(f1)) => 1.0 - f1,
            (None, None) => f64::INFINITY,
        }
    }
}

/// Folder of a training run's validations.
pub const VALIDATION_DIR: &str = "validation";

/// Validates the models of a run: the set, the period and the embedding settings.
#[derive(Debug)]
pub struct Validator {
    set: ValidationSet,
    /// The utterances embedded: those of the trial list, or the whole manifest.
    manifest: PathBuf,
    every: usize,
    epochs: usize,
    dir: PathBuf,
    embed: EmbedConfig,
}

impl Validator {
    /// The validator of a run of `epochs` epochs writing into `out_dir`, when the
    /// configuration asks for one; a period without a set (or a set without a period) is a
    /// usage error. `device` and `workers` are the training's.
    pub fn new(
        config: Option<&ValidationConfig>,
        set: Option<&ValidationSet>,
        (out_dir, epochs): (&Path, usize),
        (device, workers): (DeviceSpec, usize),
    ) -> Result<Option<Self>> {
        let (config, set) = match (config, set) {
            (None, None) => return Ok(None),
            (Some(config), Some(set)) => (config, set.clone()),
            (Some(_), None) => {
                return Err(Error::Usage(
                    "[validation] is configured but no validation set was given \
                     (--validation-manifest, --validation-cache)"
                        .to_owned(),
                ));
            }
            (None, Some(set)) => {
                return Err(Error::Usage(format!(
                    "validation set {} given but the configuration has no [validation] section",
                    set.manifest.display()
                )));
            }
        };
        let dir = out_dir.join(VALIDATION_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| stage_kit::FileError::new(&dir, e))?;
        let manifest = match &set.trials {
            Some(trials) => {
                let subset = dir.join("utterances.parquet");
                trial_utterances(&set.manifest, trials)?.write(&subset)?;
                subset
            }
            None => set.manifest.clone(),
        };
        let embed = EmbedConfig {
            device,
            workers,
            ..EmbedConfig::default()
        };
        Ok(Some(Validator {
            set,
            manifest,
            every: config.every_epochs,
            epochs,
            dir,
            embed,
        }))
    }

    /// Whether the model after `epochs_done` epochs is validated.
    pub fn due(&self, epochs_done: usize) -> bool {
        epochs_done > 0 && (epochs_done.is_multiple_of(self.every) || epochs_done == self.epochs)
    }

    /// Embeds the set with the model file `model` (after `epoch` epochs) and scores it.
    pub fn validate(&self, model: &Path, epoch: usize) -> Result<Validation> {
        let dir = self.dir.join(format!("epoch-{epoch:04}"));
        let embeddings = dir.join(stage_kit::run_folder::h5("embeddings"));
        std::fs::create_dir_all(&dir).map_err(|e| stage_kit::FileError::new(&dir, e))?;
        crate::embed::run(
            model,
            &self.manifest,
            &self.set.audio_cache,
            &embeddings,
            &self.embed,
        )?;
        let mut validation = Validation {
            epoch,
            ..Default::default()
        };
        match &self.set.trials {
            Some(trials) => {
                let inputs = SvInputs {
                    embeddings: Some(embeddings),
                    scores: None,
                    trials: trials.clone(),
                    mean_embeddings: None,
                    cohort_embeddings: None,
                    plda: None,
                };
                let report = downstream_eval::sv::run(&inputs, &SvConfig::default(), &dir)?;
                validation.eer = Some(report.eer);
                validation.min_dcf = report.min_dcf_by_prior;
            }
            None => {
                let inputs = EmotionInputs {
                    embeddings,
                    manifest: self.manifest.clone(),
                };
                let config = EmotionConfig {
                    device: self.embed.device,
                    ..EmotionConfig::default()
                };
                let report = downstream_eval::emotion::run(&inputs, &config, &dir)?;
                validation.micro_f1 = Some(report.micro_f1);
            }
        }
        tracing::info!("validation after epoch {epoch}: {}", describe(&validation));
        Ok(validation)
    }
}

/// Every validation in the step log of the run in `run_dir`, in epoch order.
pub fn validations(run_dir: &Path) -> Result<Vec<Validation>> {
    let records = crate::monitor::read_log(&run_dir.join(crate::training::STEP_LOG))?;
    Ok(records.into_iter().filter_map(|r| r.validation).collect())
}

/// The validation with the lowest error, the earliest of equally good ones.
pub fn best(validations: &[Validation]) -> Option<Validation> {
    validations
        .iter()
        .min_by(|a, b| a.error().total_cmp(&b.error()).then(a.epoch.cmp(&b.epoch)))
        .cloned()
}

/// The validations of a finished run, for its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationSummary {
    pub validations: usize,
    pub best: Validation,
    pub last: Validation,
}

impl ValidationSummary {
    /// The summary of the step log of the run in `run_dir`; `None` when it never validated.
    pub fn of_run(run_dir: &Path) -> Result<Option<Self>> {
        let all = validations(run_dir)?;
        Ok(match (best(&all), all.last()) {
            (Some(best), Some(last)) => Some(ValidationSummary {
                validations: all.len(),
                best,
                last: last.clone(),
            }),
            _ => None,
        })
    }
}

/// `EER 12.345 %, min_dcf_0.01 0.7000` or `micro-F1 55.00 %`.
pub fn describe(v: &Validation) -> String {
    let mut parts = Vec::new();
    if let Some(eer) = v.eer {
        parts.push(format!("EER {:.3} %", 100.0 * eer));
    }
    parts.extend(v.min_dcf.iter().map(|(k, x)| format!("{k} {x:.4}")));
    if let Some(f1) = v.micro_f1 {
        parts.push(format!("micro-F1 {:.2} %", 100.0 * f1));
    }
    parts.join(", ")
}

/// The utterances of `manifest` that the trial list names (the only ones scored).
fn trial_utterances(manifest: &Path, trials: &Path) -> Result<UtteranceManifest> {
    let list = TrialList::read(trials)?;
    let wanted: HashSet<&str> = list
        .trials
        .iter()
        .flat_map(|t| [t.enroll.as_str(), t.test.as_str()])
        .collect();
    let mut all = UtteranceManifest::read(manifest)?;
    all.utterances
        .retain(|u| wanted.contains(u.utt_id.as_str()));
    if all.utterances.len() < wanted.len() {
        return Err(Error::Input(format!(
            "{} names {} utterance(s), {} of them not in {}",
            trials.display(),
            wanted.len(),
            wanted.len() - all.utterances.len(),
            manifest.display()
        )));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validations_fall_on_the_period_and_the_last_epoch() {
        let validator = Validator {
            set: ValidationSet {
                manifest: "m".into(),
                audio_cache: "c".into(),
                trials: None,
            },
            manifest: "m".into(),
            every: 4,
            epochs: 10,
            dir: "v".into(),
            embed: EmbedConfig::default(),
        };
        let due: Vec<usize> = (0..=10).filter(|&e| validator.due(e)).collect();
        assert_eq!(due, [4, 8, 10]);
    }

    #[test]
    fn the_error_ranks_by_eer_then_by_micro_f1() {
        let sv = Validation {
            eer: Some(0.2),
            ..Default::default()
        };
        let emotion = Validation {
            micro_f1: Some(0.6),
            ..Default::default()
        };
        assert_eq!(sv.error(), 0.2);
        assert!((emotion.error() - 0.4).abs() < 1e-12);
        let json = serde_json::to_value(&sv).unwrap();
        assert_eq!(json, serde_json::json!({"epoch": 0, "eer": 0.2}));
    }

    #[test]
    fn a_period_without_a_set_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = Validator::new(
            Some(&ValidationConfig::default()),
            None,
            (dir.path(), 3),
            (DeviceSpec::Cpu, 1),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no validation set"), "{err}");
    }
}
