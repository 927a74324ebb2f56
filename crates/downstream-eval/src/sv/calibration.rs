//! Score calibration of a verification system, written by `downstream-eval sv` beside its
//! report as `calibration.json`: the EER threshold on the evaluation trials, and a linear map
//! from scores to log-likelihood ratios fitted by prior-weighted logistic regression (the
//! linear calibration of BOSARIS and hyperion). `dino-core verify` decides with it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::sv::detection::Roc;

/// File name of the calibration in an `sv` output folder.
pub const CALIBRATION_FILE: &str = "calibration.json";
/// Format tag of the file.
pub const FORMAT: &str = "speech-dino/calibration/1";

/// What a score means on the evaluation set it was measured on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    pub format: String,
    /// The evaluation trial list (file name) the numbers come from.
    pub evaluation_set: String,
    pub num_targets: usize,
    pub num_nontargets: usize,
    /// The scoring the numbers hold for, in words (e.g. "mean of train.h5 subtracted, cosine").
    pub scoring: String,
    /// Whether embeddings were length-normalised before the mean was subtracted.
    pub length_norm: bool,
    /// Whether a training-set mean was subtracted.
    pub mean_subtracted: bool,
    /// EER (ROC convex hull) of the trials.
    pub eer: f64,
    /// Accepting scores above this gives equal miss and false-alarm rates on the trials.
    pub eer_threshold: f64,
    /// `llr = slope * score + offset`.
    pub llr: LinearCalibration,
}

/// A linear score-to-LLR map and how well it fits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearCalibration {
    pub slope: f64,
    pub offset: f64,
    /// Effective target prior of the logistic-regression objective.
    pub prior: f64,
    /// Cllr (bits) of the calibrated scores on the trials: 1 means no information, 0 perfect.
    pub cllr: f64,
}

impl LinearCalibration {
    /// The log-likelihood ratio of a score.
    pub fn llr(&self, score: f64) -> f64 {
        self.slope * score + self.offset
    }
}

impl Calibration {
    /// Calibration of `scores` (labels `targets`), described by `scoring`.
    pub fn fit(
        roc: &Roc,
        scores: &[f32],
        targets: &[bool],
        evaluation_set: &str,
        scoring: &str,
        (length_norm, mean_subtracted): (bool, bool),
        prior: f64,
    ) -> Self {
        Calibration {
            format: FORMAT.to_owned(),
            evaluation_set: evaluation_set.to_owned(),
            num_targets: roc.num_targets,
            num_nontargets: roc.num_nontargets,
            scoring: scoring.to_owned(),
            length_norm,
            mean_subtracted,
            eer: roc.eer_rocch(),
            eer_threshold: eer_threshold(roc),
            llr: fit_linear(scores, targets, prior),
        }
    }

    /// Reads a `calibration.json`, naming the file in errors.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| stage_kit::FileError::new(path, e))?;
        let calibration: Calibration = serde_json::from_str(&text)
            .map_err(|e| EvalError::invalid(path, format!("not a calibration file: {e}")))?;
        if calibration.format != FORMAT {
            return Err(EvalError::invalid(
                path,
                format!("format {:?}, expected {FORMAT:?}", calibration.format),
            ));
        }
        Ok(calibration)
    }

    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("calibration serialises");
        stage_kit::write_bytes_atomically(path, json.as_bytes())?;
        Ok(())
    }
}

/// The score threshold of the ROC point nearest to equal error rates: halfway between that
/// point's threshold (scores at or below it are rejected) and the next higher score.
pub fn eer_threshold(roc: &Roc) -> f64 {
    let gap = |k: usize| (roc.p_miss(k) - roc.p_fa(k)).abs();
    let best = (1..roc.len())
        .min_by(|&a, &b| gap(a).total_cmp(&gap(b)))
        .unwrap_or(0);
    match roc.thresholds.get(best + 1) {
        Some(&next) if best > 0 => 0.5 * (roc.thresholds[best] + next),
        _ => roc.thresholds[best.max(1).min(roc.len() - 1)],
    }
}

/// Prior-weighted logistic regression `llr = a s + b` (BOSARIS `train_llr_fusion`): minimises
/// `prior * mean_t log(1 + e^-(llr + logit prior)) + (1 - prior) * mean_n log(1 +
/// e^(llr + logit prior))` by Newton's method with step halving.
pub fn fit_linear(scores: &[f32], targets: &[bool], prior: f64) -> LinearCalibration {
    let n_t = targets.iter().filter(|&&t| t).count().max(1) as f64;
    let n_n = targets.iter().filter(|&&t| !t).count().max(1) as f64;
    let logit_prior = (prior / (1.0 - prior)).ln();
    // Sign and weight of each trial: targets pull the log-odds up, non-targets down.
    let weight = |t: bool| if t { prior / n_t } else { (1.0 - prior) / n_n };
    let objective = |a: f64, b: f64| -> f64 {
        scores
            .iter()
            .zip(targets)
            .map(|(&s, &t)| {
                let z = a * f64::from(s) + b + logit_prior;
                weight(t) * softplus(if t { -z } else { z })
            })
            .sum()
    };
    let (mut a, mut b) = (1.0f64, 0.0f64);
    let mut current = objective(a, b);
    for _ in 0..100 {
        // Gradient and Hessian of the objective in (a, b).
        let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for (&s, &t) in scores.iter().zip(targets) {
            let s = f64::from(s);
            let p = sigmoid(a * s + b + logit_prior);
            let w = weight(t);
            let r = w * (p - if t { 1.0 } else { 0.0 });
            let h = w * p * (1.0 - p);
            ga += r * s;
            gb += r;
            haa += h * s * s;
            hab += h * s;
            hbb += h;
        }
        let det = haa * hbb - hab * hab;
        if det.abs() < 1e-300 {
            break;
        }
        let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
        let mut step = 1.0;
        let improved = loop {
            let (na, nb) = (a - step * da, b - step * db);
            let value = objective(na, nb);
            if value <= current {
                break Some((na, nb, value));
            }
            step *= 0.5;
            if step < 1e-10 {
                break None;
            }
        };
        let Some((na, nb, value)) = improved else {
            break;
        };
        let converged = (current - value).abs() <= 1e-14 * current.max(1e-300);
        (a, b, current) = (na, nb, value);
        if converged {
            break;
        }
    }
    LinearCalibration {
        slope: a,
        offset: b,
        prior,
        cllr: cllr(scores, targets, |s| a * s + b),
    }
}

/// Cllr in bits of scores mapped to LLRs by `llr`.
pub fn cllr(scores: &[f32], targets: &[bool], llr: impl Fn(f64) -> f64) -> f64 {
    let (mut sum_t, mut n_t, mut sum_n, mut n_n) = (0.0, 0usize, 0.0, 0usize);
    for (&s, &t) in scores.iter().zip(targets) {
        let l = llr(f64::from(s));
        if t {
            sum_t += softplus(-l);
            n_t += 1;
        } else {
            sum_n += softplus(l);
            n_n += 1;
        }
    }
    (sum_t / n_t.max(1) as f64 + sum_n / n_n.max(1) as f64) / (2.0 * std::f64::consts::LN_2)
}

/// `ln(1 + e^x)` without overflow.
fn softplus(x: f64) -> f64 {
    if x > 30.0 { x } else { x.exp().ln_1p() }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Box-Muller normal deviates.
    fn normals(rng: &mut rand::rngs::StdRng, n: usize, mean: f64, sd: f64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let (u, v): (f64, f64) = (rng.r#gen::<f64>().max(1e-300), rng.r#gen());
                (mean + sd * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn gaussian_scores_recover_the_true_llr_line() {
        // Targets ~ N(0.6, 0.1^2), non-targets ~ N(0.1, 0.1^2): the true LLR is linear,
        // llr = (m1 - m0) / sd^2 * s - (m1^2 - m0^2) / (2 sd^2) = 50 s - 17.5.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut scores = normals(&mut rng, 20000, 0.6, 0.1);
        let n_targets = scores.len();
        scores.extend(normals(&mut rng, 20000, 0.1, 0.1));
        let targets: Vec<bool> = (0..scores.len()).map(|i| i < n_targets).collect();
        let fit = fit_linear(&scores, &targets, 0.5);
        assert!((fit.slope - 50.0).abs() < 2.0, "{fit:?}");
        assert!((fit.offset + 17.5).abs() < 0.8, "{fit:?}");
        // Another prior changes the weighting, not the (well-specified) line much.
        let other = fit_linear(&scores, &targets, 0.1);
        assert!((other.slope - 50.0).abs() < 3.0, "{other:?}");
        // Calibrated Cllr is below the raw scores' and far below 1 bit.
        assert!(fit.cllr < cllr(&scores, &targets, |s| s), "{fit:?}");
        assert!(fit.cllr < 0.2, "{fit:?}");
    }

    #[test]
    fn eer_threshold_separates_at_the_crossing() {
        // Sorted: n0.1 t0.2 n0.3 t0.4 n0.5 t0.6; rejecting <= 0.3 misses 1/3, accepts 1/3.
        let scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        let targets = [false, true, false, true, false, true];
        let roc = Roc::new(&scores, &targets).unwrap();
        let t = eer_threshold(&roc);
        assert!((t - 0.35).abs() < 1e-6, "{t}");
        let c = Calibration::fit(&roc, &scores, &targets, "x", "cosine", (false, true), 0.5);
        assert_eq!(c.num_targets, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CALIBRATION_FILE);
        c.write(&path).unwrap();
        // serde_json may differ in the last bit of a float: compare with a tolerance.
        let back = Calibration::read(&path).unwrap();
        assert_eq!(
            (back.num_targets, &back.evaluation_set),
            (3, &c.evaluation_set)
        );
        assert!((back.llr.slope - c.llr.slope).abs() < 1e-12, "{back:?}");
        assert!((back.llr.cllr - c.llr.cllr).abs() < 1e-12, "{back:?}");
        std::fs::write(&path, "{}").unwrap();
        let err = Calibration::read(&path).unwrap_err().to_string();
        assert!(err.contains("not a calibration file"), "{err}");
    }
}
