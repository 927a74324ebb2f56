//! Cosine scoring of a trial list: every utterance is resolved to a row once, the rows are
//! normalised once, and each trial is then one dot product, computed in parallel.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use data_manifest::TrialList;
use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::error::Result;
use crate::inputs::EmbeddingFile;

/// A trial list resolved to rows of an embeddings file.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexedTrials {
    /// Embeddings-file row of each distinct utterance of the list, in order of first use.
    pub rows: Vec<usize>,
    /// Per trial: (enrolment, test) as positions in `rows`.
    pub pairs: Vec<[u32; 2]>,
    pub targets: Vec<bool>,
}

impl IndexedTrials {
    /// Resolves every utterance of `trials`; fails listing the utterances `embeddings`
    /// lacks. `trials_name` names the trial list in that message.
    pub fn new(trials: &TrialList, embeddings: &EmbeddingFile, trials_name: &str) -> Result<Self> {
        let mut position: HashMap<&str, u32> = HashMap::new();
        let mut utterances: Vec<&str> = Vec::new();
        let pairs = trials
            .trials
            .iter()
            .map(|t| {
                [&t.enroll, &t.test].map(|id| match position.entry(id) {
                    Entry::Occupied(e) => *e.get(),
                    Entry::Vacant(e) => {
                        utterances.push(id);
                        *e.insert(utterances.len() as u32 - 1)
                    }
                })
            })
            .collect();
        let rows = embeddings.rows_of(utterances.iter().copied(), trials_name)?;
        Ok(IndexedTrials {
            rows,
            pairs,
            targets: trials.trials.iter().map(|t| t.target).collect(),
        })
    }
}

/// Score of every pair: the dot product of its two rows of `unit` (unit-length rows, so
/// the cosine similarity).
pub fn cosine_scores(unit: ArrayView2<f32>, pairs: &[[u32; 2]]) -> Vec<f32> {
    let row = |i: u32| unit.row(i as usize).to_slice().expect("standard layout");
    pairs
        .par_iter()
        .with_min_len(4096)
        .map(|&[e, t]| dot(row(e), row(t)))
        .collect()
}

/// Dot product with eight independent accumulators, so that the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::tests::write;
    use data_manifest::Trial;
    use ndarray::array;

    #[test]
    fn dot_matches_the_naive_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..19).map(|i| 1.0 - i as f32).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }

    #[test]
    fn trials_resolve_to_shared_rows_and_missing_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = write(
            dir.path(),
            "e.h5",
            &["a", "b", "c"],
            array![[1.0f32, 0.0], [0.0, 1.0], [1.0, 1.0]],
        );
        let trial = |enroll: &str, test: &str, target| Trial {
            enroll: enroll.into(),
            test: test.into(),
            target,
        };
        let list = TrialList {
            trials: vec![trial("c", "a", true), trial("c", "b", false)],
        };
        let indexed = IndexedTrials::new(&list, &e, "trials.parquet").unwrap();
        assert_eq!(indexed.rows, vec![2, 0, 1]);
        assert_eq!(indexed.pairs, vec![[0, 1], [0, 2]]);
        assert_eq!(indexed.targets, vec![true, false]);

        let list = TrialList {
            trials: vec![trial("a", "zz", true), trial("yy", "zz", false)],
        };
        let err = IndexedTrials::new(&list, &e, "trials.parquet").unwrap_err();
        assert!(
            err.to_string()
                .ends_with("2 utterance(s) of trials.parquet: zz, yy"),
            "{err}"
        );
    }
}
