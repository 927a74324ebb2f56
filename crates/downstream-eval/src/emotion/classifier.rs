//! The classifiers on standardised embeddings behind one interface: which one, its
//! regularisation grid, class weights, and training + prediction on one split.

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::emotion::lbfgs::Lbfgs;
use crate::emotion::logistic::LogisticRegression;
use crate::emotion::mlp::{Mlp, MlpConfig};
use crate::error::Result;

/// Which classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierKind {
    /// Multinomial logistic regression (L2, L-BFGS).
    Logistic,
    /// One-hidden-layer MLP (libtorch).
    Mlp,
}

/// How classes are weighted in the loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ClassWeight {
    /// `n / (classes * n_c)`, as scikit-learn's `class_weight="balanced"`.
    Balanced,
    /// Every example weighs 1.
    None,
}

/// Logistic-regression settings; C is chosen from `c_grid` on the selection splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogisticConfig {
    /// Inverse L2 strengths tried (scikit-learn's C), strongest regularisation chosen on ties.
    pub c_grid: Vec<f64>,
    pub max_iterations: usize,
    /// Largest gradient component at convergence, of the objective per unit sample weight
    /// (scikit-learn's `tol` for lbfgs, whose default this is).
    pub gradient_tolerance: f64,
}

impl LogisticConfig {
    /// Why these settings cannot fit, if they cannot (names the key).
    pub fn check(&self) -> std::result::Result<(), String> {
        let positive = |v: f64| v > 0.0;
        stage_kit::config::at_least_one(&[
            ("c_grid.len()", self.c_grid.len() as i64),
            ("max_iterations", self.max_iterations as i64),
        ])?;
        let grid: Vec<_> = self.c_grid.iter().map(|&c| ("c_grid[_]", c)).collect();
        stage_kit::config::finite_in(&grid, positive, "> 0")?;
        let tolerance = [("gradient_tolerance", self.gradient_tolerance)];
        stage_kit::config::finite_in(&tolerance, positive, "> 0")
    }
}

impl Default for LogisticConfig {
    fn default() -> Self {
        LogisticConfig {
            c_grid: vec![1e-3, 1e-2, 1e-1, 1.0, 10.0],
            max_iterations: 1000,
            gradient_tolerance: 1e-4,
        }
    }
}

/// The classifier of an evaluation, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Classifier<'a> {
    pub kind: ClassifierKind,
    pub class_weight: ClassWeight,
    pub logistic: &'a LogisticConfig,
    pub mlp: &'a MlpConfig,
    /// Where the MLP trains (logistic regression runs on the CPU).
    pub device: tch::Device,
}

impl Classifier<'_> {
    /// Name of the hyperparameter chosen on the selection splits, and its grid from the
    /// strongest regularisation to the weakest.
    pub fn grid(&self) -> (&'static str, Vec<f64>) {
        let sorted = |grid: &[f64], descending: bool| {
            let mut grid = grid.to_vec();
            grid.sort_by(|a, b| {
                if descending {
                    b.total_cmp(a)
                } else {
                    a.total_cmp(b)
                }
            });
            grid.dedup();
            grid
        };
        match self.kind {
            ClassifierKind::Logistic => ("C", sorted(&self.logistic.c_grid, false)),
            ClassifierKind::Mlp => ("weight_decay", sorted(&self.mlp.weight_decay_grid, true)),
        }
    }

    /// Weight of each class given the training labels.
    pub fn class_weights(&self, labels: &[usize], n_classes: usize) -> Vec<f64> {
        let mut counts = vec![0usize; n_classes];
        labels.iter().for_each(|&c| counts[c] += 1);
        counts
            .iter()
            .map(|&n| match self.class_weight {
                ClassWeight::None => 1.0,
                ClassWeight::Balanced if n == 0 => 0.0,
                ClassWeight::Balanced => labels.len() as f64 / (n_classes * n) as f64,
            })
            .collect()
    }

    /// Trains on (`x_train`, `y_train`) once per hyperparameter value of `path` (in order)
    /// and returns the class probabilities of `x_test` for each. Logistic regression starts
    /// each fit from the previous solution (a regularisation path, as scikit-learn's
    /// `warm_start`); MLPs train from scratch with `seed(value)`.
    pub fn fit_predict_path(
        &self,
        x_train: ArrayView2<f64>,
        y_train: &[usize],
        x_test: ArrayView2<f64>,
        n_classes: usize,
        path: &[f64],
        seed: impl Fn(f64) -> u64,
    ) -> Result<Vec<Array2<f64>>> {
        let class_weights = self.class_weights(y_train, n_classes);
        match self.kind {
            ClassifierKind::Logistic => {
                let sample_weight: Vec<f64> = y_train.iter().map(|&c| class_weights[c]).collect();
                let optimiser = Lbfgs {
                    memory: 10,
                    max_iterations: self.logistic.max_iterations,
                    gradient_tolerance: self.logistic.gradient_tolerance,
                };
                let mut previous: Option<LogisticRegression> = None;
                let mut out = Vec::with_capacity(path.len());
                for &c in path {
                    let model = LogisticRegression::fit(
                        x_train,
                        y_train,
                        &sample_weight,
                        n_classes,
                        c,
                        &optimiser,
                        previous.as_ref(),
                    );
                    if !model.converged {
                        tracing::debug!("logistic regression (C = {c}) stopped before converging");
                    }
                    out.push(model.predict_proba(x_test));
                    previous = Some(model);
                }
                Ok(out)
            }
            ClassifierKind::Mlp => path
                .iter()
                .map(|&value| {
                    Mlp::fit(
                        x_train,
                        y_train,
                        &class_weights,
                        value,
                        (self.mlp, self.device),
                        seed(value),
                    )?
                    .predict_proba(x_test)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_weights_and_grid_order() {
        let (logistic, mlp) = (LogisticConfig::default(), MlpConfig::default());
        let c = Classifier {
            kind: ClassifierKind::Logistic,
            class_weight: ClassWeight::Balanced,
            logistic: &logistic,
            mlp: &mlp,
            device: tch::Device::Cpu,
        };
        // 4 examples, 2 classes: class 0 x3, class 1 x1.
        assert_eq!(c.class_weights(&[0, 0, 0, 1], 2), vec![4.0 / 6.0, 2.0]);
        assert_eq!(c.grid().1, vec![1e-3, 1e-2, 1e-1, 1.0, 10.0]);
        let m = Classifier {
            kind: ClassifierKind::Mlp,
            ..c
        };
        assert_eq!(m.grid().1, vec![1e-1, 1e-2, 1e-3]);
    }
}
