//! Principal component analysis keeping a share of the variance: the covariance in f64
//! (accumulated over row blocks in parallel), its symmetric eigendecomposition
//! (linfa-linalg), and the fewest leading axes whose explained variance exceeds the share,
//! the rule of scikit-learn's `PCA(n_components=share)`.

use ndarray::{Array1, Array2, ArrayView2, Axis, s};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};

/// Rows per block when accumulating the covariance.
const ROW_BLOCK: usize = 4096;

/// A fitted projection onto the leading principal axes.
#[derive(Debug, Clone)]
pub struct Pca {
    /// Mean of the fitted points.
    pub mean: Array1<f64>,
    /// The kept axes as columns (input dim x kept), by decreasing variance; each axis is
    /// signed so that its largest-magnitude component is positive (as scikit-learn does).
    pub components: Array2<f64>,
    /// Share of the total variance along every axis (all of them, decreasing).
    pub explained_variance_ratio: Vec<f64>,
}

/// What the report says about a PCA.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PcaSummary {
    pub input_dim: usize,
    pub components: usize,
    /// Variance share the kept components explain.
    pub explained_variance: f64,
}

impl Pca {
    /// Fits the axes of `points` and keeps the fewest whose cumulative explained variance
    /// exceeds `variance_share` (all of them for a share of 1).
    pub fn fit(points: ArrayView2<'_, f32>, variance_share: f64) -> Result<Pca> {
        let (n, dim) = points.dim();
        let mean = points
            .map(|&v| f64::from(v))
            .mean_axis(Axis(0))
            .unwrap_or_else(|| Array1::zeros(dim));
        let scatter = (0..n.div_ceil(ROW_BLOCK))
            .into_par_iter()
            .map(|b| {
                let rows = points.slice(s![b * ROW_BLOCK..((b + 1) * ROW_BLOCK).min(n), ..]);
                let centred = rows.map(|&v| f64::from(v)) - &mean;
                centred.t().dot(&centred)
            })
            .reduce(|| Array2::zeros((dim, dim)), |a, b| a + b);
        let covariance = scatter / (n.saturating_sub(1).max(1) as f64);

        let (values, vectors) =
            linfa_linalg::eigh::Eigh::eigh(&covariance).map_err(|e| Error::Pca(e.to_string()))?;
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let variances: Vec<f64> = order.iter().map(|&i| values[i].max(0.0)).collect();
        let total: f64 = variances.iter().sum();
        let explained_variance_ratio: Vec<f64> = variances
            .iter()
            .map(|v| if total > 0.0 { v / total } else { 0.0 })
            .collect();
        let kept = components_for(&explained_variance_ratio, variance_share);
        let mut components = vectors.select(Axis(1), &order[..kept]);
        for mut axis in components.columns_mut() {
            let largest = axis
                .iter()
                .copied()
                .fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
            if largest < 0.0 {
                axis.mapv_inplace(|v| -v);
            }
        }
        Ok(Pca {
            mean,
            components,
            explained_variance_ratio,
        })
    }

    /// Number of kept axes.
    pub fn kept(&self) -> usize {
        self.components.ncols()
    }

    /// For the report.
    pub fn summary(&self) -> PcaSummary {
        PcaSummary {
            input_dim: self.components.nrows(),
            components: self.kept(),
            explained_variance: self.explained_variance_ratio[..self.kept()].iter().sum(),
        }
    }

    /// `(x - mean) W` for every row, in f32.
    pub fn transform(&self, points: ArrayView2<'_, f32>) -> Array2<f32> {
        let w = self.components.mapv(|v| v as f32);
        let offset = self.mean.dot(&self.components).mapv(|v| v as f32);
        let mut out = Array2::zeros((points.nrows(), self.kept()));
        out.axis_chunks_iter_mut(Axis(0), ROW_BLOCK)
            .into_par_iter()
            .zip(points.axis_chunks_iter(Axis(0), ROW_BLOCK))
            .for_each(|(mut out, rows)| {
                out.assign(&rows.dot(&w));
                out -= &offset;
            });
        out
    }
}

/// The fewest leading axes whose cumulative ratio exceeds `share`; all for a share of 1.
fn components_for(ratios: &[f64], share: f64) -> usize {
    if share >= 1.0 {
        return ratios.len();
    }
    let mut cumulative = 0.0;
    let at_most = ratios
        .iter()
        .take_while(|&&r| {
            cumulative += r;
            cumulative <= share
        })
        .count();
    (at_most + 1).min(ratios.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_count_follows_scikit_learn() {
        let ratios = [0.6, 0.3, 0.09, 0.01];
        assert_eq!(components_for(&ratios, 0.5), 1);
        assert_eq!(components_for(&ratios, 0.6), 2);
        assert_eq!(components_for(&ratios, 0.95), 3);
        assert_eq!(components_for(&ratios, 0.999), 4);
        assert_eq!(components_for(&ratios, 1.0), 4);
    }
}
