//! `split`: speaker- or session-disjoint cross-validation folds, written into the `fold`
//! column, for emotion evaluation (CREMA-D, RAVDESS) where the corpus defines none.
//!
//! Groups (speakers or sessions) are shuffled by the seed, then taken largest first and
//! each given to the fold with the fewest utterances so far (lowest index on ties): folds
//! are disjoint by construction, balanced in utterances, and the same for the same seed.

use std::collections::BTreeMap;

use clap::ValueEnum;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::summary::Summary;
use crate::utterances::{Utterance, UtteranceManifest};

/// What folds are disjoint in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FoldUnit {
    Speaker,
    Session,
}

impl FoldUnit {
    pub fn name(self) -> &'static str {
        match self {
            FoldUnit::Speaker => "speaker",
            FoldUnit::Session => "session",
        }
    }

    fn key(self, u: &Utterance) -> Option<&str> {
        match self {
            FoldUnit::Speaker => u.speaker.as_deref(),
            FoldUnit::Session => u.session.as_deref(),
        }
    }
}

/// Why folds could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FoldError {
    #[error("{count} utterance(s) have no {} label (e.g. {example}); folds by {} need one on every utterance", unit.name(), unit.name())]
    Unlabelled {
        unit: FoldUnit,
        count: usize,
        example: String,
    },
    #[error("{groups} {} group(s) cannot fill {folds} folds", unit.name())]
    TooFewGroups {
        unit: FoldUnit,
        groups: usize,
        folds: usize,
    },
}

/// The fold name of fold `index` (`0`, `1`, ...).
pub fn fold_name(index: usize) -> String {
    index.to_string()
}

/// Assigns every utterance of `manifest` to one of `folds` folds disjoint in `unit`.
pub fn assign_folds(
    manifest: &mut UtteranceManifest,
    unit: FoldUnit,
    folds: usize,
    seed: u64,
) -> Result<FoldSummary, FoldError> {
    let unlabelled: Vec<&Utterance> = manifest
        .utterances
        .iter()
        .filter(|u| unit.key(u).is_none())
        .collect();
    if let Some(first) = unlabelled.first() {
        return Err(FoldError::Unlabelled {
            unit,
            count: unlabelled.len(),
            example: first.utt_id.clone(),
        });
    }
    let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
    for u in &manifest.utterances {
        *sizes.entry(unit.key(u).expect("checked")).or_default() += 1;
    }
    if sizes.len() < folds || folds == 0 {
        return Err(FoldError::TooFewGroups {
            unit,
            groups: sizes.len(),
            folds,
        });
    }
    let mut groups: Vec<(&str, usize)> = sizes.into_iter().collect();
    groups.shuffle(&mut stage_kit::rng::stream(seed, "folds"));
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    let mut load = vec![0usize; folds];
    let mut group_count = vec![0usize; folds];
    let mut fold_of: BTreeMap<String, usize> = BTreeMap::new();
    for (group, size) in groups {
        let fold = (0..folds).min_by_key(|&f| (load[f], f)).expect("folds > 0");
        load[fold] += size;
        group_count[fold] += 1;
        fold_of.insert(group.to_owned(), fold);
    }
    for u in &mut manifest.utterances {
        let fold = fold_of[unit.key(u).expect("checked")];
        u.fold = Some(fold_name(fold));
    }
    Ok(FoldSummary {
        unit,
        folds,
        seed,
        utterances_per_fold: load,
        groups_per_fold: group_count,
    })
}

/// What `split` did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FoldSummary {
    pub unit: FoldUnit,
    pub folds: usize,
    pub seed: u64,
    pub utterances_per_fold: Vec<usize>,
    pub groups_per_fold: Vec<usize>,
}

impl Summary for FoldSummary {
    fn paragraph(&self) -> String {
        let folds: Vec<String> = self
            .utterances_per_fold
            .iter()
            .zip(&self.groups_per_fold)
            .enumerate()
            .map(|(i, (u, g))| format!("fold {} {u} utt / {g} {}s", fold_name(i), self.unit.name()))
            .collect();
        format!(
            "Assigned {} {}-disjoint folds (seed {}): {}.",
            self.folds,
            self.unit.name(),
            self.seed,
            folds.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn manifest() -> UtteranceManifest {
        let utterances = (0..40)
            .map(|i| Utterance {
                session: Some(format!("sess{}", i % 3)),
                ..Utterance::for_test(&format!("u{i:02}"), Some(&format!("s{}", i % 7)), 1.0)
            })
            .collect();
        UtteranceManifest {
            corpus_root: "/c".into(),
            utterances,
        }
    }

    #[test]
    fn folds_are_disjoint_balanced_and_deterministic() {
        let mut a = manifest();
        let summary = assign_folds(&mut a, FoldUnit::Speaker, 3, 7).unwrap();
        let mut fold_of_speaker: HashMap<String, String> = HashMap::new();
        for u in &a.utterances {
            let previous =
                fold_of_speaker.insert(u.speaker.clone().unwrap(), u.fold.clone().unwrap());
            assert!(previous.is_none_or(|p| Some(p) == u.fold));
        }
        assert_eq!(summary.utterances_per_fold.iter().sum::<usize>(), 40);
        let (min, max) = (
            summary.utterances_per_fold.iter().min().unwrap(),
            summary.utterances_per_fold.iter().max().unwrap(),
        );
        assert!(max - min <= 6, "{summary:?}");
        let mut b = manifest();
        assign_folds(&mut b, FoldUnit::Speaker, 3, 7).unwrap();
        assert_eq!(a, b);
        assert!(assign_folds(&mut b, FoldUnit::Session, 4, 7).is_err());
    }
}
