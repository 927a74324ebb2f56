//! What turns two embeddings into a trial score: cosine similarity (after the optional
//! centring and length normalisation of [`Preprocess`]) or a PLDA log-likelihood ratio.
//! Both are written as bilinear forms `score(i, j) = left_i . right_j`, so that the same
//! matrix products score trials and AS-norm cohorts.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::plda::{LinalgError, PldaModel};
use crate::sv::preprocess::Preprocess;
use crate::sv::scoring;

/// The scoring back-end of `downstream-eval sv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Cosine similarity.
    #[default]
    Cosine,
    /// Log-likelihood ratio of a PLDA model (`downstream-eval plda-train`).
    Plda,
}

/// A back-end ready to score: its preprocessing (cosine) or model (PLDA).
pub enum Scoring<'a> {
    Cosine(&'a Preprocess),
    Plda(&'a PldaModel),
}

/// Both sides of the bilinear form for a set of utterances.
pub struct Sides {
    /// Left factors (f32, for matrix products against a cohort).
    pub left: Array2<f32>,
    /// Right factors; `None` when equal to `left` (cosine).
    right: Option<Array2<f32>>,
    /// The PLDA factors in f64, which trial scores use.
    exact: Option<(Array2<f64>, Array2<f64>)>,
}

impl Sides {
    /// Right factors.
    pub fn right(&self) -> ArrayView2<'_, f32> {
        self.right.as_ref().unwrap_or(&self.left).view()
    }

    /// Score of every pair (positions in these sides).
    pub fn trial_scores(&self, pairs: &[[u32; 2]]) -> Vec<f32> {
        match &self.exact {
            None => scoring::cosine_scores(self.left.view(), pairs),
            Some((left, right)) => pairs
                .par_iter()
                .with_min_len(4096)
                .map(|&[e, t]| left.row(e as usize).dot(&right.row(t as usize)) as f32)
                .collect(),
        }
    }
}

impl Scoring<'_> {
    /// The sides of rows `rows` of `vectors`.
    pub fn sides(&self, vectors: ArrayView2<f32>, rows: &[usize]) -> Result<Sides, LinalgError> {
        match self {
            Scoring::Cosine(preprocess) => Ok(Sides {
                left: preprocess.unit_rows(vectors, rows),
                right: None,
                exact: None,
            }),
            Scoring::Plda(model) => {
                let selected = vectors.select(ndarray::Axis(0), rows);
                let (scorer, eta) = model.project(selected.view())?;
                let (left, right) = scorer.bilinear(eta.view());
                Ok(Sides {
                    left: left.mapv(|v| v as f32),
                    right: Some(right.mapv(|v| v as f32)),
                    exact: Some((left, right)),
                })
            }
        }
    }

    /// The sides of every row of `vectors`.
    pub fn sides_all(&self, vectors: ArrayView2<f32>) -> Result<Sides, LinalgError> {
        let rows: Vec<usize> = (0..vectors.nrows()).collect();
        self.sides(vectors, &rows)
    }
}
