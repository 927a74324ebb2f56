//! Multinomial logistic regression with an L2 penalty, fitted by L-BFGS: scikit-learn's
//! `LogisticRegression(C=c, class_weight=...)` objective (K weight vectors and K
//! unpenalised intercepts), divided by the total sample weight for conditioning:
//! `(sum_i s_i CE_i + ||W||^2 / (2 C)) / sum_i s_i`.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, ArrayView2, ArrayViewMut2, Axis};

use crate::emotion::lbfgs::Lbfgs;

/// A fitted model.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticRegression {
    /// [classes, features].
    pub weights: Array2<f64>,
    pub intercepts: Array1<f64>,
    /// Whether L-BFGS reached its gradient tolerance.
    pub converged: bool,
}

impl LogisticRegression {
    /// Fits `n_classes` classes to rows of `x` labelled `y`, example `i` weighted by
    /// `sample_weight[i]`, with inverse regularisation strength `c`, starting from `start`
    /// (a fit of the same shape, e.g. at a neighbouring `c`) or from zero.
    pub fn fit(
        x: ArrayView2<f64>,
        y: &[usize],
        sample_weight: &[f64],
        n_classes: usize,
        c: f64,
        optimiser: &Lbfgs,
        start: Option<&LogisticRegression>,
    ) -> Self {
        let (n, dim) = x.dim();
        assert!(
            y.len() == n && sample_weight.len() == n,
            "one label and weight per row"
        );
        let k = n_classes;
        let total_weight: f64 = sample_weight.iter().sum();
        let scale = 1.0 / total_weight;
        let objective = |params: &[f64], gradient: &mut [f64]| -> f64 {
            let w = ArrayView2::from_shape((k, dim), &params[..k * dim]).expect("shape");
            let b = &params[k * dim..];
            let mut z = x.dot(&w.t());
            let mut loss = 0.0;
            let logits = z.as_slice_mut().expect("standard layout");
            for ((row, &label), &s) in logits.chunks_exact_mut(k).zip(y).zip(sample_weight) {
                row.iter_mut().zip(b).for_each(|(z, b)| *z += b);
                let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                let log_sum = max + row.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                loss += s * (log_sum - row[label]);
                // The row becomes the gradient of the loss w.r.t. the logits: s (p - onehot).
                row.iter_mut().for_each(|v| *v = s * (*v - log_sum).exp());
                row[label] -= s;
            }
            let (gw, gb) = gradient.split_at_mut(k * dim);
            let mut gw = ArrayViewMut2::from_shape((k, dim), gw).expect("shape");
            gw.assign(&w);
            general_mat_mul(scale, &z.t(), &x, scale / c, &mut gw);
            gb.fill(0.0);
            for row in z.as_slice().expect("standard layout").chunks_exact(k) {
                gb.iter_mut().zip(row).for_each(|(g, v)| *g += v);
            }
            gb.iter_mut().for_each(|g| *g *= scale);
            (loss + 0.5 * params[..k * dim].iter().map(|v| v * v).sum::<f64>() / c) * scale
        };
        let initial = match start {
            Some(m) => m.weights.iter().chain(&m.intercepts).copied().collect(),
            None => vec![0.0; k * (dim + 1)],
        };
        let minimum = optimiser.minimize(initial, objective);
        let weights =
            Array2::from_shape_vec((k, dim), minimum.x[..k * dim].to_vec()).expect("shape");
        LogisticRegression {
            weights,
            intercepts: Array1::from(minimum.x[k * dim..].to_vec()),
            converged: minimum.converged,
        }
    }

    /// Class probabilities, [rows, classes].
    pub fn predict_proba(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let mut z = x.dot(&self.weights.t()) + &self.intercepts;
        for mut row in z.axis_iter_mut(Axis(0)) {
            let max = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
            row.mapv_inplace(|v| (v - max).exp());
            let sum = row.sum();
            row.mapv_inplace(|v| v / sum);
        }
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn gradient_matches_finite_differences_at_the_optimum() {
        // At the optimum the gradient of the (unscaled) objective vanishes; check it by
        // perturbing each weight and verifying the objective does not decrease.
        let x = array![
            [0.0, 1.0],
            [1.0, 0.5],
            [2.0, -1.0],
            [0.5, 0.5],
            [-1.0, 2.0],
            [1.5, 1.5]
        ];
        let y = [0, 1, 2, 0, 2, 1];
        let s = [1.0, 2.0, 1.0, 1.0, 0.5, 1.0];
        let lbfgs = Lbfgs {
            memory: 10,
            max_iterations: 1000,
            gradient_tolerance: 1e-12,
        };
        let model = LogisticRegression::fit(x.view(), &y, &s, 3, 0.7, &lbfgs, None);
        assert!(model.converged);
        let objective = |m: &LogisticRegression| {
            let p = m.predict_proba(x.view());
            let ce: f64 = y
                .iter()
                .zip(&s)
                .enumerate()
                .map(|(i, (&c, &w))| -w * p[[i, c]].ln())
                .sum();
            ce + 0.5 * m.weights.iter().map(|v| v * v).sum::<f64>() / 0.7
        };
        let best = objective(&model);
        for idx in 0..6 {
            for delta in [-1e-4, 1e-4] {
                let mut moved = model.clone();
                moved.weights.as_slice_mut().unwrap()[idx] += delta;
                assert!(objective(&moved) >= best - 1e-12);
            }
        }
        let p = model.predict_proba(x.view());
        for row in p.rows() {
            assert!((row.sum() - 1.0).abs() < 1e-12);
        }
    }
}
