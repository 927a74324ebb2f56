//! Kaldi / VoxCeleb score files: `enroll test score` per line, one line per trial, the form
//! `downstream-eval sv` writes (`scores.txt`) and reads (`--scores`) so that scores from any
//! system get the same EER / minDCF / DET report.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;

use data_manifest::TrialList;
use data_manifest::trial_lists::utterance_id;

use crate::error::{EvalError, Result};

/// `enroll test score` lines, one per trial in list order.
pub fn to_text(trials: &TrialList, scores: &[f32]) -> String {
    let mut text = String::with_capacity(trials.trials.len() * 48);
    for (trial, score) in trials.trials.iter().zip(scores) {
        writeln!(text, "{} {} {score}", trial.enroll, trial.test).expect("writing to a String");
    }
    text
}

/// The score of every trial of `trials` from the score file at `path` (in trial-list order).
/// Utterance names may carry an audio extension; a trial without a score, a pair scored
/// twice with different values, or a malformed line is an error naming the file.
pub fn read(path: &Path, trials: &TrialList) -> Result<Vec<f32>> {
    let text = std::fs::read_to_string(path).map_err(|e| stage_kit::FileError::new(path, e))?;
    let scores = parse(&text).map_err(|message| EvalError::invalid(path, message))?;
    let mut missing = Vec::new();
    let out: Vec<f32> = trials
        .trials
        .iter()
        .map(|t| {
            scores
                .get(&(t.enroll.as_str(), t.test.as_str()))
                .copied()
                .unwrap_or_else(|| {
                    missing.push(format!("{} {}", t.enroll, t.test));
                    f32::NAN
                })
        })
        .collect();
    if !missing.is_empty() {
        return Err(EvalError::invalid(
            path,
            format!(
                "no score for {} of the {} trials, e.g. {}",
                missing.len(),
                trials.trials.len(),
                missing[..missing.len().min(3)].join(", ")
            ),
        ));
    }
    if scores.len() > trials.trials.len() {
        tracing::warn!(
            "{}: {} scored pairs are not in the trial list and are ignored",
            path.display(),
            scores.len() - trials.trials.len()
        );
    }
    Ok(out)
}

/// Parses `enroll test score` lines into a map from (enroll, test) ids to scores.
fn parse(text: &str) -> std::result::Result<HashMap<(&str, &str), f32>, String> {
    let mut scores = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [enroll, test, score] = fields[..] else {
            if fields.is_empty() {
                continue;
            }
            return Err(format!(
                "line {}: expected `enroll test score`, got {line:?}",
                number + 1
            ));
        };
        let score: f32 = score
            .parse()
            .map_err(|_| format!("line {}: score {score:?} is not a number", number + 1))?;
        if score.is_nan() {
            return Err(format!("line {}: the score is NaN", number + 1));
        }
        let key = (utterance_id(enroll), utterance_id(test));
        if let Some(old) = scores.insert(key, score)
            && old != score
        {
            return Err(format!(
                "line {}: {enroll} {test} is scored twice ({old} and {score})",
                number + 1
            ));
        }
    }
    Ok(scores)
}

/// Distinct utterances of a trial list.
pub fn utterance_count(trials: &TrialList) -> usize {
    let ids: HashSet<&str> = trials
        .trials
        .iter()
        .flat_map(|t| [t.enroll.as_str(), t.test.as_str()])
        .collect();
    ids.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use data_manifest::Trial;

    fn trials() -> TrialList {
        let t = |e: &str, s: &str, target| Trial {
            enroll: e.into(),
            test: s.into(),
            target,
        };
        TrialList {
            trials: vec![t("a/1", "a/2", true), t("a/1", "b/1", false)],
        }
    }

    #[test]
    fn written_scores_read_back_in_trial_order_with_extensions_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.txt");
        let list = trials();
        assert_eq!(
            to_text(&list, &[0.5, -0.25]),
            "a/1 a/2 0.5\na/1 b/1 -0.25\n"
        );
        std::fs::write(&path, "a/1.wav b/1.wav -0.25\n\na/1 a/2 0.5\nx y 1\n").unwrap();
        assert_eq!(read(&path, &list).unwrap(), vec![0.5, -0.25]);
        assert_eq!(utterance_count(&list), 3);
    }

    #[test]
    fn missing_and_malformed_scores_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.txt");
        std::fs::write(&path, "a/1 a/2 0.5\n").unwrap();
        let err = read(&path, &trials()).unwrap_err().to_string();
        assert!(
            err.contains("scores.txt")
                && err.contains("no score for 1 of the 2 trials, e.g. a/1 b/1"),
            "{err}"
        );
        std::fs::write(&path, "a/1 a/2 high\n").unwrap();
        let err = read(&path, &trials()).unwrap_err().to_string();
        assert!(
            err.contains("line 1: score \"high\" is not a number"),
            "{err}"
        );
        std::fs::write(&path, "a/1 a/2 0.5\na/1 a/2 0.7\n").unwrap();
        let err = read(&path, &trials()).unwrap_err().to_string();
        assert!(err.contains("scored twice"), "{err}");
    }
}
