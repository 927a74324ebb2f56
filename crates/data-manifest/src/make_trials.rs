//! A balanced, deterministic trial list for a corpus that ships none (RAVDESS, the fixture's
//! emotion part, any generic corpus with speaker labels).
//!
//! For every speaker (in sorted order) up to `per_speaker` target pairs are drawn from all
//! pairs of its utterances; each target pair `(e, t)` gets a matched non-target pair `(e, t')`
//! with the same enrolment utterance and `t'` drawn from another speaker. With
//! `exclude_same_session`, no pair (target or not) shares a session; pairs of the `exclude`d
//! lists (an evaluation's, when a validation list is made from the same corpus) are never
//! drawn. One random stream of the seed drives every draw, so a seed always gives the same
//! list.

use std::collections::{BTreeMap, HashSet};

use rand::Rng;
use rand::seq::index;
use serde::Serialize;

use crate::summary::Summary;
use crate::trials::{Trial, TrialList};
use crate::utterances::{Utterance, UtteranceManifest};

/// Options of `make-trials`.
#[derive(Debug, Clone)]
pub struct MakeTrialsOptions {
    /// Most target trials per speaker (as many non-target trials again).
    pub per_speaker: usize,
    pub seed: u64,
    pub exclude_same_session: bool,
    /// Only utterances of these splits (all when empty).
    pub splits: Vec<String>,
    /// Pairs that may not be drawn, in either order.
    pub exclude: Vec<Trial>,
}

/// Tries at drawing a non-target test utterance before giving up on a pair.
const NONTARGET_TRIES: usize = 100;

/// Why no list could be made.
#[derive(Debug, thiserror::Error)]
pub enum MakeTrialsError {
    #[error(
        "the manifest has {0} speaker(s) with labels among the selected utterances; trials need at least 2"
    )]
    TooFewSpeakers(usize),
    #[error("no speaker has two utterances that may form a target pair")]
    NoTargets,
}

/// Builds the list from the utterances of `manifest` that have a speaker label.
pub fn make_trials(
    manifest: &UtteranceManifest,
    options: &MakeTrialsOptions,
) -> Result<(TrialList, MakeTrialsSummary), MakeTrialsError> {
    let selected: Vec<&Utterance> = manifest
        .utterances
        .iter()
        .filter(|u| u.speaker.is_some())
        .filter(|u| options.splits.is_empty() || options.splits.contains(&u.split))
        .collect();
    let mut by_speaker: BTreeMap<&str, Vec<&Utterance>> = BTreeMap::new();
    for u in &selected {
        by_speaker
            .entry(u.speaker.as_deref().expect("filtered"))
            .or_default()
            .push(u);
    }
    if by_speaker.len() < 2 {
        return Err(MakeTrialsError::TooFewSpeakers(by_speaker.len()));
    }
    for utterances in by_speaker.values_mut() {
        utterances.sort_by(|a, b| a.utt_id.cmp(&b.utt_id));
    }
    let same_session = |a: &Utterance, b: &Utterance| {
        options.exclude_same_session && a.session.is_some() && a.session == b.session
    };
    let excluded: HashSet<(&str, &str)> = options
        .exclude
        .iter()
        .flat_map(|t| {
            [
                (t.enroll.as_str(), t.test.as_str()),
                (t.test.as_str(), t.enroll.as_str()),
            ]
        })
        .collect();
    let is_excluded =
        |a: &Utterance, b: &Utterance| excluded.contains(&(a.utt_id.as_str(), b.utt_id.as_str()));
    let mut rng = stage_kit::rng::stream(options.seed, "make-trials");
    let mut trials = Vec::new();
    let mut taken = HashSet::new();
    for utterances in by_speaker.values() {
        let pairs: Vec<(usize, usize)> = (0..utterances.len())
            .flat_map(|i| (i + 1..utterances.len()).map(move |j| (i, j)))
            .filter(|&(i, j)| {
                let (a, b) = (utterances[i], utterances[j]);
                !same_session(a, b) && !is_excluded(a, b)
            })
            .collect();
        let amount = pairs.len().min(options.per_speaker);
        let mut chosen: Vec<usize> = index::sample(&mut rng, pairs.len(), amount).into_vec();
        chosen.sort_unstable();
        for k in chosen {
            let (e, t) = (utterances[pairs[k].0], utterances[pairs[k].1]);
            trials.push(Trial {
                enroll: e.utt_id.clone(),
                test: t.utt_id.clone(),
                target: true,
            });
            for _ in 0..NONTARGET_TRIES {
                let other = selected[rng.gen_range(0..selected.len())];
                if other.speaker == e.speaker
                    || same_session(e, other)
                    || is_excluded(e, other)
                    || !taken.insert((&e.utt_id, &other.utt_id))
                {
                    continue;
                }
                trials.push(Trial {
                    enroll: e.utt_id.clone(),
                    test: other.utt_id.clone(),
                    target: false,
                });
                break;
            }
        }
    }
    if !trials.iter().any(|t| t.target) {
        return Err(MakeTrialsError::NoTargets);
    }
    trials.sort();
    let list = TrialList { trials };
    let (targets, nontargets) = list.counts();
    let speaker_of: BTreeMap<&str, &str> = selected
        .iter()
        .map(|u| (u.utt_id.as_str(), u.speaker.as_deref().expect("filtered")))
        .collect();
    let utterances: HashSet<&str> = list
        .trials
        .iter()
        .flat_map(|t| [t.enroll.as_str(), t.test.as_str()])
        .collect();
    let speakers: HashSet<&str> = utterances.iter().map(|u| speaker_of[u]).collect();
    let summary = MakeTrialsSummary {
        trials: list.trials.len(),
        targets,
        nontargets,
        speakers: speakers.len(),
        utterances: utterances.len(),
        per_speaker: options.per_speaker,
        seed: options.seed,
        exclude_same_session: options.exclude_same_session,
        excluded_pairs: options.exclude.len(),
    };
    Ok((list, summary))
}

/// What `make-trials` made, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct MakeTrialsSummary {
    pub trials: usize,
    pub targets: usize,
    pub nontargets: usize,
    pub speakers: usize,
    pub utterances: usize,
    pub per_speaker: usize,
    pub seed: u64,
    pub exclude_same_session: bool,
    /// Pairs of other lists that were not to be drawn.
    pub excluded_pairs: usize,
}

impl Summary for MakeTrialsSummary {
    fn paragraph(&self) -> String {
        format!(
            "Made {} trials ({} target, {} non-target) over {} utterances of {} speakers: up to \
             {} target pairs per speaker, each with a non-target pair sharing its enrolment \
             utterance; same-session pairs {}; {} pairs of other lists excluded; seed {}.",
            self.trials,
            self.targets,
            self.nontargets,
            self.utterances,
            self.speakers,
            self.per_speaker,
            if self.exclude_same_session {
                "excluded"
            } else {
                "allowed"
            },
            self.excluded_pairs,
            self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(speakers: usize, per_speaker: usize) -> UtteranceManifest {
        let utterances = (0..speakers)
            .flat_map(|s| {
                (0..per_speaker).map(move |u| Utterance {
                    utt_id: format!("s{s}/u{u}"),
                    path: format!("s{s}/u{u}.wav"),
                    corpus: "test".into(),
                    speaker: Some(format!("s{s}")),
                    session: None,
                    num_samples: 16000,
                    sample_rate: 16000,
                    channels: 1,
                    codec: "pcm_s16le".into(),
                    split: "all".into(),
                    emotion: None,
                    fold: None,
                    channel: None,
                })
            })
            .collect();
        UtteranceManifest {
            corpus_root: "/c".into(),
            utterances,
        }
    }

    /// A validation list made from an evaluation's corpus with the evaluation's list
    /// excluded shares no pair with it, in either order.
    #[test]
    fn excluded_pairs_are_never_drawn() {
        let m = manifest(6, 6);
        let options = MakeTrialsOptions {
            per_speaker: 8,
            seed: 1,
            exclude_same_session: false,
            splits: Vec::new(),
            exclude: Vec::new(),
        };
        let (evaluation, _) = make_trials(&m, &options).unwrap();
        let mut reversed: Vec<Trial> = evaluation
            .trials
            .iter()
            .map(|t| Trial {
                enroll: t.test.clone(),
                test: t.enroll.clone(),
                target: t.target,
            })
            .collect();
        reversed.truncate(evaluation.trials.len() / 2);
        let mut exclude = evaluation.trials[evaluation.trials.len() / 2..].to_vec();
        exclude.extend(reversed);
        let (validation, summary) = make_trials(
            &m,
            &MakeTrialsOptions {
                exclude,
                ..options.clone()
            },
        )
        .unwrap();
        let pair = |t: &Trial| {
            let mut p = [t.enroll.clone(), t.test.clone()];
            p.sort();
            p
        };
        let evaluated: HashSet<[String; 2]> = evaluation.trials.iter().map(pair).collect();
        assert!(
            validation
                .trials
                .iter()
                .all(|t| !evaluated.contains(&pair(t)))
        );
        assert!(validation.counts().0 >= 6 * 6, "{summary:?}");
        assert_eq!(summary.excluded_pairs, evaluation.trials.len());
    }
}
