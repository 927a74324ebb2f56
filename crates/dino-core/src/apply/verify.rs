//! `dino-core verify A B`: are two recordings the same speaker? The cosine score of their
//! embeddings (scored as `eval-sv` scores: the model's training-set mean subtracted), and a
//! decision from the evaluation stage's `calibration.json` (the calibrated log-likelihood
//! ratio against the Bayes threshold of the calibration's target prior), or from
//! `--threshold` on the raw score.

use std::path::{Path, PathBuf};

use downstream_eval::sv::calibration::Calibration;
use downstream_eval::sv::preprocess::Preprocess;
use downstream_eval::sv::scoring::dot;
use ndarray::ArrayView2;
use serde::Serialize;
use stage_kit::DeviceSpec;

use crate::apply::embed_audio::{EmbedOptions, embed_candidates, list_inputs, sibling};
use crate::apply::model_file::{self, Application};
use crate::checkpoint;
use crate::embed::EmbedConfig;
use crate::error::{Error, Result};

/// What to compare.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub model: PathBuf,
    pub a: PathBuf,
    pub b: PathBuf,
    /// `calibration.json` of an `eval-sv` run with this model.
    pub calibration: Option<PathBuf>,
    /// Accept scores above this instead of the calibration's decision.
    pub threshold: Option<f64>,
    pub threads: usize,
    pub vad: Option<bool>,
    pub device: DeviceSpec,
}

/// The outcome, printed (or written as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub a: String,
    pub b: String,
    /// Cosine score after the model's preprocessing.
    pub score: f64,
    /// Calibrated log-likelihood ratio, with a calibration.
    pub llr: Option<f64>,
    /// Same speaker? (`None` without a calibration or threshold.)
    pub same_speaker: Option<bool>,
    /// How the decision was taken, in words.
    pub decided_by: String,
    /// The evaluation trials the calibration comes from.
    pub evaluation_set: Option<String>,
    /// The EER threshold on those trials (for reference).
    pub eer_threshold: Option<f64>,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "score {:.6}", self.score)?;
        if let Some(llr) = self.llr {
            writeln!(f, "llr {llr:.4}")?;
        }
        let decision = match self.same_speaker {
            Some(true) => "same speaker",
            Some(false) => "different speakers",
            None => "no decision",
        };
        writeln!(f, "decision {decision} ({})", self.decided_by)
    }
}

/// Embeds both recordings whole and compares them.
pub fn run(req: &VerifyRequest) -> Result<Verdict> {
    let loaded = checkpoint::load(&req.model)?;
    let application = model_file::application_of(&req.model, &loaded)?;
    drop(loaded);
    let calibration = req
        .calibration
        .as_deref()
        .map(Calibration::read)
        .transpose()?;
    let (candidates, missing) = list_inputs(&[req.a.clone(), req.b.clone()])?;
    if let Some(m) = missing.first() {
        return Err(Error::Input(format!("{}: {}", m.path, m.reason)));
    }
    if candidates.len() != 2 || candidates[0].utt_id == candidates[1].utt_id {
        return Err(Error::Usage(
            "verify compares two different audio files".to_owned(),
        ));
    }
    let options = EmbedOptions {
        model: req.model.clone(),
        threads: req.threads,
        vad: req.vad,
        // Each recording whole: no trimming to a batch partner's length.
        embed: EmbedConfig {
            device: req.device,
            length_tolerance: 0.0,
            ..EmbedConfig::default()
        },
    };
    let ids = [candidates[0].utt_id.clone(), candidates[1].utt_id.clone()];
    let work = sibling(
        &std::env::temp_dir().join(format!("verify-{}", std::process::id())),
        "work",
    );
    let embedded = embed_candidates(&options, candidates, &work)?;
    if let Some(r) = embedded.rejects.first() {
        return Err(Error::Config(format!("{}: {}", r.path, r.reason)));
    }
    let index = embedded.embeddings.index();
    let rows: Vec<usize> = ids
        .iter()
        .map(|id| {
            index.get(id.as_str()).copied().ok_or_else(|| {
                Error::Input(format!(
                    "{id}: not one utterance (a multi-channel recording? verify takes one channel)"
                ))
            })
        })
        .collect::<Result<_>>()?;
    let length_norm = calibration.as_ref().is_some_and(|c| c.length_norm);
    let score = cosine(
        &preprocess(application.as_ref(), length_norm, &req.model),
        embedded.embeddings.vectors.view(),
        [rows[0], rows[1]],
    );
    if let Some(c) = &calibration
        && c.mean_subtracted != application.is_some()
    {
        tracing::warn!(
            "the calibration was measured {} mean subtraction, this model file {} a mean: \
             the decision may be off",
            if c.mean_subtracted { "with" } else { "without" },
            if application.is_some() {
                "records"
            } else {
                "has no"
            }
        );
    }
    Ok(decide(
        score,
        calibration.as_ref(),
        req.threshold,
        [display(&req.a), display(&req.b)],
    ))
}

/// `eval-sv`'s preprocessing with the model's training-set mean (none for checkpoints
/// without one, with a warning).
pub fn preprocess(
    application: Option<&Application>,
    length_norm: bool,
    model: &Path,
) -> Preprocess {
    match application {
        Some(a) => a.mean.preprocess(length_norm),
        None => {
            tracing::warn!(
                "{} records no training-set mean (not a `dino-core bundle` model file): \
                 scoring without mean subtraction",
                model.display()
            );
            Preprocess {
                length_norm,
                mean: None,
            }
        }
    }
}

/// Cosine score of two rows of `vectors` after `preprocess`.
fn cosine(preprocess: &Preprocess, vectors: ArrayView2<f32>, rows: [usize; 2]) -> f64 {
    let unit = preprocess.unit_rows(vectors, &rows);
    let row = |i: usize| unit.row(i).to_slice().expect("standard layout").to_vec();
    f64::from(dot(&row(0), &row(1)))
}

/// The decision for `score`: `--threshold` first, else the calibration.
fn decide(
    score: f64,
    calibration: Option<&Calibration>,
    threshold: Option<f64>,
    [a, b]: [String; 2],
) -> Verdict {
    let llr = calibration.map(|c| c.llr.llr(score));
    let (same_speaker, decided_by) = match (threshold, calibration) {
        (Some(t), _) => (Some(score > t), format!("score above --threshold {t}")),
        (None, Some(c)) => {
            let prior = c.llr.prior;
            let bayes = ((1.0 - prior) / prior).ln();
            (
                Some(llr.expect("calibrated") > bayes),
                format!(
                    "calibrated LLR above {bayes:.3}, the Bayes threshold at target prior \
                     {prior}; calibration fitted on {} ({} target / {} non-target trials, \
                     EER {:.2} %)",
                    c.evaluation_set,
                    c.num_targets,
                    c.num_nontargets,
                    100.0 * c.eer
                ),
            )
        }
        (None, None) => (None, "no --calibration or --threshold given".to_owned()),
    };
    Verdict {
        a,
        b,
        score,
        llr,
        same_speaker,
        decided_by,
        evaluation_set: calibration.map(|c| c.evaluation_set.clone()),
        eer_threshold: calibration.map(|c| c.eer_threshold),
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use downstream_eval::sv::calibration::{FORMAT, LinearCalibration};

    fn calibration() -> Calibration {
        Calibration {
            format: FORMAT.to_owned(),
            evaluation_set: "trials.parquet".into(),
            num_targets: 10,
            num_nontargets: 90,
            scoring: "cosine".into(),
            length_norm: false,
            mean_subtracted: true,
            eer: 0.1,
            eer_threshold: 0.4,
            llr: LinearCalibration {
                slope: 10.0,
                offset: -4.0,
                prior: 0.5,
                cllr: 0.3,
            },
        }
    }

    #[test]
    fn decisions_follow_the_calibration_unless_a_threshold_is_given() {
        let names = || ["a".to_owned(), "b".to_owned()];
        let c = calibration();
        let v = decide(0.45, Some(&c), None, names());
        assert_eq!((v.llr, v.same_speaker), (Some(0.5), Some(true)));
        assert!(v.decided_by.contains("trials.parquet"), "{}", v.decided_by);
        let v = decide(0.35, Some(&c), None, names());
        assert_eq!(v.same_speaker, Some(false));
        let v = decide(0.35, Some(&c), Some(0.3), names());
        assert_eq!(v.same_speaker, Some(true));
        let v = decide(0.35, None, None, names());
        assert_eq!(v.same_speaker, None);
        assert!(v.to_string().contains("no decision"));
        // A target prior of 0.1 asks for more evidence: LLR above ln 9.
        let mut rare = calibration();
        rare.llr.prior = 0.1;
        assert_eq!(
            decide(0.6, Some(&rare), None, names()).same_speaker,
            Some(false)
        );
        assert_eq!(
            decide(0.7, Some(&rare), None, names()).same_speaker,
            Some(true)
        );
    }
}
