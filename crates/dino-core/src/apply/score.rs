//! `dino-core score`: cosine scores of a Kaldi / VoxCeleb trial list (`label enroll test` or
//! `enroll test` lines) with a trained model, written as a Kaldi score file (`enroll test
//! score`) that external tools and `downstream-eval sv --scores` read. The utterances come
//! from an embeddings file, or are embedded from audio files under a root folder (names with
//! or without their audio extension).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use data_manifest::scan::{AUDIO_EXTENSIONS, Candidate};
use data_manifest::trial_lists::{parse_text, utterance_id};
use data_manifest::{Trial, TrialList};
use downstream_eval::EmbeddingFile;
use downstream_eval::sv::calibration::Calibration;
use downstream_eval::sv::score_file;
use downstream_eval::sv::scoring::{IndexedTrials, cosine_scores};

use crate::apply::embed_audio::{EmbedOptions, embed_candidates, sibling};
use crate::apply::model_file;
use crate::apply::verify::preprocess;
use crate::checkpoint;
use crate::error::{Error, Result};

/// Where the trial list's utterances come from.
#[derive(Debug, Clone)]
pub enum Utterances {
    /// An `embeddings.h5` holding them (computed by this model).
    Embeddings(PathBuf),
    /// Audio files named by the trial list, relative to this folder.
    Audio(PathBuf),
}

/// What to score.
#[derive(Debug, Clone)]
pub struct ScoreRequest {
    pub model: PathBuf,
    pub trials: PathBuf,
    pub utterances: Utterances,
    pub out: PathBuf,
    /// `calibration.json` whose scoring (length normalisation) to follow.
    pub calibration: Option<PathBuf>,
    pub embed: EmbedOptions,
}

/// Scores every trial and writes the score file; returns the number of trials.
pub fn run(req: &ScoreRequest) -> Result<usize> {
    let text = std::fs::read_to_string(&req.trials)
        .map_err(|e| stage_kit::FileError::new(&req.trials, e))?;
    let trials =
        parse_trials(&text).map_err(|m| Error::Input(format!("{}: {m}", req.trials.display())))?;
    if trials.trials.is_empty() {
        return Err(Error::Input(format!("{}: no trials", req.trials.display())));
    }
    let embeddings = match &req.utterances {
        Utterances::Embeddings(path) => EmbeddingFile::read(path)?,
        Utterances::Audio(root) => {
            let candidates = trial_candidates(&trials, root)?;
            let work = sibling(&req.out, "work");
            let embedded = embed_candidates(&req.embed, candidates, &work)?;
            if !embedded.rejects.is_empty() {
                return Err(Error::Input(format!(
                    "{} file(s) of the trial list could not be embedded, e.g. {}: {}",
                    embedded.rejects.len(),
                    embedded.rejects[0].path,
                    embedded.rejects[0].reason
                )));
            }
            EmbeddingFile {
                path: req.out.clone(),
                embeddings: embedded.embeddings,
            }
        }
    };
    let loaded = checkpoint::load(&req.model)?;
    let application = model_file::application_of(&req.model, &loaded)?;
    drop(loaded);
    let length_norm = match &req.calibration {
        Some(path) => Calibration::read(path)?.length_norm,
        None => false,
    };
    let indexed = IndexedTrials::new(&trials, &embeddings, &req.trials.display().to_string())?;
    let unit = preprocess(application.as_ref(), length_norm, &req.model)
        .unit_rows(embeddings.embeddings.vectors.view(), &indexed.rows);
    let scores = cosine_scores(unit.view(), &indexed.pairs);
    stage_kit::write_bytes_atomically(&req.out, score_file::to_text(&trials, &scores).as_bytes())?;
    Ok(scores.len())
}

/// A trial list with labels (`label enroll test`, `enroll test target|nontarget`) or
/// without (`enroll test`: every trial marked non-target, the labels being unknown).
pub fn parse_trials(text: &str) -> std::result::Result<TrialList, String> {
    let labelled = parse_text(text);
    if labelled.is_ok() {
        return labelled;
    }
    let mut trials = Vec::new();
    for line in text.lines() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [] => {}
            [enroll, test] => trials.push(Trial {
                enroll: utterance_id(enroll).to_owned(),
                test: utterance_id(test).to_owned(),
                target: false,
            }),
            _ => return labelled,
        }
    }
    Ok(TrialList { trials })
}

/// The audio file of every utterance the trials name, under `root`: the name as a path, or
/// with an audio extension added.
fn trial_candidates(trials: &TrialList, root: &Path) -> Result<Vec<Candidate>> {
    let names: BTreeSet<&str> = trials
        .trials
        .iter()
        .flat_map(|t| [t.enroll.as_str(), t.test.as_str()])
        .collect();
    let mut candidates = Vec::new();
    let mut missing = Vec::new();
    for name in names {
        let found = std::iter::once(root.join(name))
            .chain(
                AUDIO_EXTENSIONS
                    .iter()
                    .map(|e| root.join(format!("{name}.{e}"))),
            )
            .find(|p| p.is_file());
        match found {
            Some(path) => {
                let absolute =
                    std::path::absolute(&path).map_err(|e| stage_kit::FileError::new(&path, e))?;
                let text = absolute.to_string_lossy();
                candidates.push(Candidate::new(text.trim_start_matches('/'), name, "all"));
            }
            None => missing.push(name),
        }
    }
    if !missing.is_empty() {
        return Err(Error::Input(format!(
            "{}: no audio file for {} utterance(s) of the trial list, e.g. {}",
            root.display(),
            missing.len(),
            missing[..missing.len().min(3)].join(", ")
        )));
    }
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labelled_and_unlabelled_lists_parse() {
        let labelled = parse_trials("1 a/1.wav a/2.wav\n0 a/1.wav b/1.wav\n").unwrap();
        assert_eq!(labelled.trials[0].enroll, "a/1");
        assert!(labelled.trials[0].target && !labelled.trials[1].target);
        let pairs = parse_trials("a/1 a/2\n\na/1 b/1\n").unwrap();
        assert_eq!(pairs.trials.len(), 2);
        assert_eq!(pairs.trials[1].test, "b/1");
        let err = parse_trials("a b c d\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }
}
