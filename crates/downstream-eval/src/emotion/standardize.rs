//! Z-scoring of embeddings with statistics of the training part only (as scikit-learn's
//! `StandardScaler`: population standard deviation, constant features left unscaled).

use ndarray::{Array1, Array2, ArrayView2};

/// Per-dimension mean and 1 / standard deviation.
#[derive(Debug, Clone, PartialEq)]
pub struct Standardizer {
    pub mean: Array1<f64>,
    pub inverse_std: Array1<f64>,
}

impl Standardizer {
    /// Statistics of the rows `rows` of `x`.
    pub fn fit(x: ArrayView2<f32>, rows: &[usize]) -> Self {
        let dim = x.ncols();
        let n = rows.len().max(1) as f64;
        let mut mean = Array1::<f64>::zeros(dim);
        for &r in rows {
            mean.zip_mut_with(&x.row(r), |m, &v| *m += f64::from(v));
        }
        mean /= n;
        let mut var = Array1::<f64>::zeros(dim);
        for &r in rows {
            for ((s, &v), m) in var.iter_mut().zip(x.row(r)).zip(&mean) {
                *s += (f64::from(v) - m).powi(2);
            }
        }
        let inverse_std = var.mapv(|v| {
            let std = (v / n).sqrt();
            if std > 1e-12 { 1.0 / std } else { 1.0 }
        });
        Standardizer { mean, inverse_std }
    }

    /// The rows `rows` of `x`, standardised, as f64.
    pub fn transform(&self, x: ArrayView2<f32>, rows: &[usize]) -> Array2<f64> {
        let mut out = Array2::zeros((rows.len(), x.ncols()));
        for (mut target, &r) in out.rows_mut().into_iter().zip(rows) {
            for (((t, &v), m), s) in target
                .iter_mut()
                .zip(x.row(r))
                .zip(&self.mean)
                .zip(&self.inverse_std)
            {
                *t = (f64::from(v) - m) * s;
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
    fn training_rows_get_zero_mean_and_unit_variance() {
        let x = array![[1.0f32, 5.0], [3.0, 5.0], [100.0, -7.0]];
        let s = Standardizer::fit(x.view(), &[0, 1]);
        assert_eq!(s.mean, array![2.0, 5.0]);
        assert_eq!(s.inverse_std, array![1.0, 1.0]);
        let z = s.transform(x.view(), &[1, 0, 2]);
        assert_eq!(z, array![[1.0, 0.0], [-1.0, 0.0], [98.0, -12.0]]);
    }
}
