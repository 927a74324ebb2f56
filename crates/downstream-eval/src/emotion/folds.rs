//! The labelled utterances of a manifest and how they are split: outer folds for testing
//! (the manifest's `fold` column, or its official `split`) and, inside each training part,
//! the splits on which the regularisation strength is chosen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use data_manifest::UtteranceManifest;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result, shorten_list};
use crate::inputs::EmbeddingFile;

/// Where the outer folds come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FoldSource {
    /// Leave-one-fold-out over the `fold` column (IEMOCAP sessions, speaker-disjoint
    /// CREMA-D / RAVDESS folds).
    Fold,
    /// The `split` column: train on `train`, choose on `development` (or `dev`,
    /// `validation`), test on `test` or `test1` (MSP-Podcast); see [`SplitNames`].
    Split,
}

/// Which `split` values make up the parts of `--folds split`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitNames {
    pub train: Vec<String>,
    /// Chooses the hyperparameter; without any, speaker splits of the training part do.
    pub development: Vec<String>,
    /// MSP-Podcast's scanner writes `test1` / `test2` (lower-cased `Split_Set`).
    pub test: Vec<String>,
}

impl Default for SplitNames {
    fn default() -> Self {
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect();
        SplitNames {
            train: names(&["train"]),
            development: names(&["development", "dev", "validation"]),
            test: names(&["test", "test1"]),
        }
    }
}

/// The labelled utterances of a manifest, resolved to embedding rows.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledSet {
    pub utt_ids: Vec<String>,
    /// Row of each utterance in the embeddings file.
    pub rows: Vec<usize>,
    /// Class index of each utterance, into `classes`.
    pub labels: Vec<usize>,
    /// Emotion names, sorted.
    pub classes: Vec<String>,
    pub speakers: Vec<Option<String>>,
    pub folds: Vec<Option<String>>,
    pub splits: Vec<String>,
    /// Utterances of the manifest without an emotion label (not evaluated).
    pub unlabelled: usize,
}

impl LabelledSet {
    /// Every utterance of `manifest` with an emotion; fails listing the ones `embeddings`
    /// lacks.
    pub fn new(
        manifest: &UtteranceManifest,
        manifest_path: &Path,
        embeddings: &EmbeddingFile,
    ) -> Result<Self> {
        let labelled: Vec<_> = manifest
            .utterances
            .iter()
            .filter(|u| u.emotion.is_some())
            .collect();
        if labelled.is_empty() {
            return Err(EvalError::invalid(
                manifest_path,
                "no utterance has an emotion label",
            ));
        }
        let classes: Vec<String> = labelled
            .iter()
            .filter_map(|u| u.emotion.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let class_index: BTreeMap<&str, usize> = classes
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i))
            .collect();
        let rows = embeddings.rows_of(
            labelled.iter().map(|u| u.utt_id.as_str()),
            &manifest_path.display().to_string(),
        )?;
        Ok(LabelledSet {
            utt_ids: labelled.iter().map(|u| u.utt_id.clone()).collect(),
            rows,
            labels: labelled
                .iter()
                .map(|u| class_index[u.emotion.as_deref().expect("labelled")])
                .collect(),
            speakers: labelled.iter().map(|u| u.speaker.clone()).collect(),
            folds: labelled.iter().map(|u| u.fold.clone()).collect(),
            splits: labelled.iter().map(|u| u.split.clone()).collect(),
            unlabelled: manifest.utterances.len() - labelled.len(),
            classes,
        })
    }

    /// Number of labelled utterances.
    pub fn len(&self) -> usize {
        self.utt_ids.len()
    }

    /// Whether there is no labelled utterance.
    pub fn is_empty(&self) -> bool {
        self.utt_ids.is_empty()
    }

    /// Examples per class among `indices`.
    pub fn class_counts(&self, indices: &[usize]) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        indices.iter().for_each(|&i| counts[self.labels[i]] += 1);
        counts
    }

    /// Fails if a class has no example among `train` (`context` names the split).
    pub fn check_classes(&self, train: &[usize], context: &str) -> Result<()> {
        match self.class_counts(train).iter().position(|&n| n == 0) {
            None => Ok(()),
            Some(c) => Err(EvalError::EmptyClass {
                context: context.to_owned(),
                class: self.classes[c].clone(),
            }),
        }
    }
}

/// A training part and the part it is evaluated on, as indices into a [`LabelledSet`].
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    pub name: String,
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// An outer fold and the inner splits that choose its hyperparameter.
#[derive(Debug, Clone, PartialEq)]
pub struct OuterFold {
    pub split: Split,
    pub selection: Vec<Split>,
}

/// How the evaluation is split into folds.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldPlan {
    pub source: FoldSource,
    pub split_names: SplitNames,
    /// Most inner splits per outer fold; groups are merged (seeded) when there are more.
    pub inner_folds: usize,
    pub seed: u64,
}

impl FoldPlan {
    /// Outer folds with their selection splits. Every split's training part must hold
    /// every class, and there must be two classes at least (with one, every prediction is
    /// right and the scores say nothing).
    pub fn folds(&self, set: &LabelledSet, manifest_path: &Path) -> Result<Vec<OuterFold>> {
        if set.classes.len() < 2 {
            return Err(EvalError::invalid(
                manifest_path,
                format!(
                    "the labelled utterances have {} emotion class(es) ({:?}); recognition needs at least 2",
                    set.classes.len(),
                    set.classes
                ),
            ));
        }
        let folds = match self.source {
            FoldSource::Fold => self.by_fold_column(set, manifest_path)?,
            FoldSource::Split => vec![self.by_split_column(set, manifest_path)?],
        };
        for fold in &folds {
            set.check_classes(
                &fold.split.train,
                &format!("fold {}: training part", fold.split.name),
            )?;
            for inner in &fold.selection {
                set.check_classes(
                    &inner.train,
                    &format!(
                        "fold {}, selection split holding out {}: training part",
                        fold.split.name, inner.name
                    ),
                )?;
            }
            let absent: Vec<&str> = set
                .class_counts(&fold.split.test)
                .iter()
                .zip(&set.classes)
                .filter(|(n, _)| **n == 0)
                .map(|(_, c)| c.as_str())
                .collect();
            if !absent.is_empty() {
                tracing::warn!(
                    "fold {}: no test example of {}",
                    fold.split.name,
                    absent.join(", ")
                );
            }
        }
        Ok(folds)
    }

    fn by_fold_column(&self, set: &LabelledSet, manifest_path: &Path) -> Result<Vec<OuterFold>> {
        let missing: Vec<&str> = set
            .folds
            .iter()
            .zip(&set.utt_ids)
            .filter(|(f, _)| f.is_none())
            .map(|(_, id)| id.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(EvalError::invalid(
                manifest_path,
                format!(
                    "no fold for {} labelled utterance(s): {} (use --folds split, or assign folds \
                     with `data-manifest split`)",
                    missing.len(),
                    shorten_list(&missing, 10)
                ),
            ));
        }
        let fold_of = |i: usize| set.folds[i].as_deref().expect("checked above");
        let names = natural_sorted((0..set.len()).map(fold_of));
        if names.len() < 2 {
            return Err(EvalError::invalid(
                manifest_path,
                format!(
                    "the fold column has {} distinct value(s); at least 2 are needed",
                    names.len()
                ),
            ));
        }
        names
            .iter()
            .map(|name| {
                let (test, train): (Vec<usize>, Vec<usize>) =
                    (0..set.len()).partition(|&i| fold_of(i) == name);
                // Choose on the other folds; with a single other fold, on its speakers.
                let selection = if names.len() > 2 {
                    self.group_splits(&train, fold_of, &format!("fold {name}"), manifest_path)?
                } else {
                    self.speaker_splits(set, &train, name, manifest_path)?
                };
                Ok(OuterFold {
                    split: Split {
                        name: name.clone(),
                        train,
                        test,
                    },
                    selection,
                })
            })
            .collect()
    }

    fn by_split_column(&self, set: &LabelledSet, manifest_path: &Path) -> Result<OuterFold> {
        let part = |names: &[String]| -> Vec<usize> {
            (0..set.len())
                .filter(|&i| names.contains(&set.splits[i]))
                .collect()
        };
        let names = &self.split_names;
        let (train, development, test) = (
            part(&names.train),
            part(&names.development),
            part(&names.test),
        );
        let other = set.len() - train.len() - development.len() - test.len();
        if other > 0 {
            tracing::warn!(
                "{other} labelled utterance(s) are in none of train/development/test: left out"
            );
        }
        if train.is_empty() || test.is_empty() {
            return Err(EvalError::invalid(
                manifest_path,
                format!(
                    "--folds split needs training ({}) and test ({}) utterances, found {} and {}",
                    names.train.join("/"),
                    names.test.join("/"),
                    train.len(),
                    test.len()
                ),
            ));
        }
        let selection = if development.is_empty() {
            self.speaker_splits(set, &train, "test", manifest_path)?
        } else {
            vec![Split {
                name: "development".into(),
                train: train.clone(),
                test: development,
            }]
        };
        Ok(OuterFold {
            split: Split {
                name: "test".into(),
                train,
                test,
            },
            selection,
        })
    }

    /// Selection splits of `train` grouped by speaker.
    fn speaker_splits(
        &self,
        set: &LabelledSet,
        train: &[usize],
        fold: &str,
        path: &Path,
    ) -> Result<Vec<Split>> {
        if let Some(&i) = train.iter().find(|&&i| set.speakers[i].is_none()) {
            return Err(EvalError::invalid(
                path,
                format!(
                    "fold {fold}: choosing the regularisation needs speakers or more folds, but {} \
                     has no speaker",
                    set.utt_ids[i]
                ),
            ));
        }
        let speaker_of = |i: usize| set.speakers[i].as_deref().expect("checked");
        self.group_splits(train, speaker_of, &format!("fold {fold}"), path)
    }

    /// Leave-one-group-out splits of `train`, groups merged (shuffled with the seed) into
    /// at most `inner_folds` splits.
    fn group_splits<'a>(
        &self,
        train: &[usize],
        group_of: impl Fn(usize) -> &'a str,
        context: &str,
        path: &Path,
    ) -> Result<Vec<Split>> {
        let mut groups = natural_sorted(train.iter().map(|&i| group_of(i)));
        if groups.len() < 2 {
            return Err(EvalError::invalid(
                path,
                format!(
                    "{context}: the training part is a single group, so no selection split is possible"
                ),
            ));
        }
        let n_splits = self.inner_folds.clamp(2, groups.len());
        if n_splits < groups.len() {
            groups.shuffle(&mut stage_kit::rng::stream(
                self.seed,
                &format!("inner splits {context}"),
            ));
        }
        let split_of: BTreeMap<&str, usize> = groups
            .iter()
            .enumerate()
            .map(|(k, g)| (g.as_str(), k % n_splits))
            .collect();
        Ok((0..n_splits)
            .map(|k| {
                let (test, train): (Vec<usize>, Vec<usize>) =
                    train.iter().partition(|&&i| split_of[group_of(i)] == k);
                let members: Vec<&str> = groups
                    .iter()
                    .filter(|g| split_of[g.as_str()] == k)
                    .map(String::as_str)
                    .collect();
                Split {
                    name: members.join("+"),
                    train,
                    test,
                }
            })
            .collect())
    }
}

/// Distinct values in natural order: numbers numerically, then text.
fn natural_sorted<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut distinct: Vec<String> = values
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(str::to_owned)
        .collect();
    distinct.sort_by_key(|v| {
        (
            v.parse::<u64>().map_or(1, |_| 0),
            v.parse::<u64>().unwrap_or(0),
            v.clone(),
        )
    });
    distinct
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(folds: &[&str], labels: &[usize], speakers: &[&str]) -> LabelledSet {
        let n = folds.len();
        LabelledSet {
            utt_ids: (0..n).map(|i| format!("u{i}")).collect(),
            rows: (0..n).collect(),
            labels: labels.to_vec(),
            classes: vec!["ang".into(), "hap".into()],
            speakers: speakers.iter().map(|s| Some(s.to_string())).collect(),
            folds: folds.iter().map(|f| Some(f.to_string())).collect(),
            splits: vec!["train".into(); n],
            unlabelled: 0,
        }
    }

    #[test]
    fn leave_one_fold_out_with_inner_splits_over_the_other_folds() {
        let s = set(
            &["2", "10", "1", "2", "10", "1"],
            &[0, 1, 0, 1, 0, 1],
            &["a", "b", "c", "d", "e", "f"],
        );
        let plan = FoldPlan {
            split_names: SplitNames::default(),
            source: FoldSource::Fold,
            inner_folds: 5,
            seed: 0,
        };
        let folds = plan.folds(&s, Path::new("m.parquet")).unwrap();
        let names: Vec<&str> = folds.iter().map(|f| f.split.name.as_str()).collect();
        assert_eq!(names, ["1", "2", "10"]);
        assert_eq!(folds[0].split.test, vec![2, 5]);
        assert_eq!(folds[0].split.train, vec![0, 1, 3, 4]);
        let inner: Vec<(&str, &[usize])> = folds[0]
            .selection
            .iter()
            .map(|s| (s.name.as_str(), &s.test[..]))
            .collect();
        assert_eq!(inner, [("2", &[0, 3][..]), ("10", &[1, 4][..])]);
    }

    #[test]
    fn empty_classes_and_missing_folds_are_errors() {
        let s = set(
            &["1", "1", "2", "2", "3", "3"],
            &[0, 0, 1, 1, 0, 1],
            &["a"; 6],
        );
        let plan = FoldPlan {
            split_names: SplitNames::default(),
            source: FoldSource::Fold,
            inner_folds: 5,
            seed: 0,
        };
        let err = plan
            .folds(&s, Path::new("m.parquet"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("selection split holding out 3: training part: class \"ang\" has no training example"),
            "{err}"
        );

        let mut one = set(&["1", "2", "1", "2"], &[0, 0, 0, 0], &["a", "b", "c", "d"]);
        one.classes = vec!["neu".into()];
        let err = plan
            .folds(&one, Path::new("m.parquet"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.parquet: the labelled utterances have 1 emotion class(es) ([\"neu\"])"),
            "{err}"
        );

        let mut s = set(&["1", "2", "3"], &[0, 1, 0], &["a", "b", "c"]);
        s.folds[1] = None;
        let err = plan
            .folds(&s, Path::new("m.parquet"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no fold for 1 labelled utterance(s): u1"),
            "{err}"
        );
    }

    #[test]
    fn official_split_selects_on_development_or_speakers() {
        let mut s = set(
            &["x"; 6],
            &[0, 1, 0, 1, 0, 1],
            &["a", "b", "c", "d", "a", "b"],
        );
        s.splits = ["train", "train", "dev", "dev", "test", "test"]
            .map(String::from)
            .into();
        let plan = FoldPlan {
            split_names: SplitNames::default(),
            source: FoldSource::Split,
            inner_folds: 5,
            seed: 0,
        };
        let folds = plan.folds(&s, Path::new("m.parquet")).unwrap();
        assert_eq!(folds.len(), 1);
        assert_eq!(folds[0].split.test, vec![4, 5]);
        assert_eq!(folds[0].selection[0].test, vec![2, 3]);

        s.splits = ["train", "train", "train", "train", "test", "test"]
            .map(String::from)
            .into();
        let folds = plan.folds(&s, Path::new("m.parquet")).unwrap();
        assert_eq!(
            folds[0].selection.len(),
            4,
            "one split per training speaker"
        );
    }
}
