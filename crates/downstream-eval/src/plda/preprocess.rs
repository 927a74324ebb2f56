//! The preprocessing chain in front of PLDA (Kaldi / hyperion / wespeaker): centring on the
//! training mean, optional LDA to a given dimension, whitening with the training set's total
//! covariance, and length normalisation to radius sqrt(dim). Fitted on the training
//! embeddings, then applied to every vector that is scored.
//!
//! Whitening is the symmetric (ZCA) `C^(-1/2)` and the LDA basis is whitened by the
//! within-class `Sw^(-1/2)`, so the chain is unique up to the sign of each LDA axis, which
//! no PLDA score depends on.

use ndarray::{Array1, Array2, ArrayView2, Axis, s};
use serde::{Deserialize, Serialize};

use super::classes::Classes;
use super::linalg::{self, LinalgError};

/// A fitted chain: `length_norm(projection (x - mean))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    /// Training mean, subtracted first.
    pub mean: Vec<f64>,
    /// `out x in`: LDA (when asked for) followed by whitening.
    #[serde(with = "super::matrix_serde")]
    pub projection: Array2<f64>,
    /// Scale every projected vector to length sqrt(out).
    pub length_norm: bool,
}

impl Preprocessor {
    /// Fits the chain on the training rows `x` with their `classes` (needed for LDA only).
    pub fn fit(
        x: ArrayView2<f64>,
        classes: &Classes,
        lda_dim: Option<usize>,
        length_norm: bool,
    ) -> Result<Self, LinalgError> {
        let mean = x.mean_axis(Axis(0)).expect("training rows");
        let centred = &x - &mean;
        let mut projection = Array2::eye(x.ncols());
        if let Some(dim) = lda_dim {
            let within = classes.within_scatter(centred.view());
            let between = classes.between_scatter(centred.view());
            let w = linalg::inverse_sqrt(within.view(), "LDA within-class covariance")?;
            let (_, vectors) = linalg::eig_desc(w.dot(&between).dot(&w).view(), "LDA")?;
            projection = vectors.slice(s![.., ..dim]).t().dot(&w);
        }
        let projected = centred.dot(&projection.t());
        let total = linalg::scatter_around(projected.view(), &Array1::zeros(projection.nrows()));
        let whiten = linalg::inverse_sqrt(total.view(), "total covariance")?;
        Ok(Preprocessor {
            mean: mean.to_vec(),
            projection: whiten.dot(&projection),
            length_norm,
        })
    }

    /// Input dimension.
    pub fn input_dim(&self) -> usize {
        self.mean.len()
    }

    /// Output dimension.
    pub fn output_dim(&self) -> usize {
        self.projection.nrows()
    }

    /// Applies the chain to every row of `x`.
    pub fn apply(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let mean = Array1::from(self.mean.clone());
        let mut out = (&x - &mean).dot(&self.projection.t());
        if self.length_norm {
            let radius = (self.output_dim() as f64).sqrt();
            for mut row in out.rows_mut() {
                let norm = row.dot(&row).sqrt();
                if norm > 0.0 {
                    row *= radius / norm;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn whitened_training_data_has_identity_covariance() {
        let x = array![
            [1.0, 2.0, 0.5],
            [2.0, 1.0, 0.0],
            [0.0, 0.5, 1.0],
            [3.0, 2.5, 2.0],
            [1.5, 0.0, 0.7],
            [0.2, 1.1, 0.3]
        ];
        let classes = Classes::new(&[0, 0, 1, 1, 2, 2]);
        let p = Preprocessor::fit(x.view(), &classes, None, false).unwrap();
        let y = p.apply(x.view());
        let cov = linalg::scatter_around(y.view(), &Array1::zeros(3));
        for i in 0..3 {
            for j in 0..3 {
                let id = if i == j { 1.0 } else { 0.0 };
                assert!((cov[[i, j]] - id).abs() < 1e-10, "{cov}");
            }
        }
        let lda = Preprocessor::fit(x.view(), &classes, Some(2), true).unwrap();
        assert_eq!((lda.input_dim(), lda.output_dim()), (3, 2));
        let z = lda.apply(x.view());
        for row in z.rows() {
            assert!((row.dot(&row) - 2.0).abs() < 1e-10);
        }
    }
}
