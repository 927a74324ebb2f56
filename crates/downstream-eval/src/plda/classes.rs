//! Training labels as dense class indices with the per-class statistics PLDA, LDA and
//! their initialisation need.

use std::collections::HashMap;
use std::hash::Hash;

use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Class of every training row, numbered 0.. in order of first appearance.
#[derive(Debug, Clone, PartialEq)]
pub struct Classes {
    pub of_row: Vec<usize>,
    pub sizes: Vec<usize>,
}

impl Classes {
    /// Dense classes of arbitrary labels.
    pub fn new<L: Eq + Hash>(labels: &[L]) -> Self {
        let mut number: HashMap<&L, usize> = HashMap::new();
        let mut sizes = Vec::new();
        let of_row = labels
            .iter()
            .map(|l| {
                let next = number.len();
                let c = *number.entry(l).or_insert(next);
                if c == sizes.len() {
                    sizes.push(0);
                }
                sizes[c] += 1;
                c
            })
            .collect();
        Classes { of_row, sizes }
    }

    /// Number of classes.
    pub fn count(&self) -> usize {
        self.sizes.len()
    }

    /// Per class, the sum of its rows of `x` (`classes x dim`).
    pub fn sums(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let mut sums = Array2::zeros((self.count(), x.ncols()));
        for (row, &c) in x.rows().into_iter().zip(&self.of_row) {
            let mut s = sums.row_mut(c);
            s += &row;
        }
        sums
    }

    /// Per class, the mean of its rows of `x`.
    pub fn means(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let sizes = Array1::from_iter(self.sizes.iter().map(|&n| n as f64));
        self.sums(x) / &sizes.insert_axis(Axis(1))
    }

    /// Within-class covariance: scatter of the rows around their class means, over the rows.
    pub fn within_scatter(&self, x: ArrayView2<f64>) -> Array2<f64> {
        let means = self.means(x);
        let mut centred = x.to_owned();
        for (mut row, &c) in centred.rows_mut().into_iter().zip(&self.of_row) {
            row -= &means.row(c);
        }
        centred.t().dot(&centred) / x.nrows() as f64
    }

    /// Between-class covariance of centred rows: scatter of the class means, each weighted
    /// by its size, over the rows.
    pub fn between_scatter(&self, centred: ArrayView2<f64>) -> Array2<f64> {
        let means = self.means(centred);
        let weights = Array1::from_iter(self.sizes.iter().map(|&n| (n as f64).sqrt()));
        let weighted = &means * &weights.insert_axis(Axis(1));
        weighted.t().dot(&weighted) / centred.nrows() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn classes_are_dense_and_scatters_add_up() {
        let classes = Classes::new(&["b", "a", "b", "c", "a"]);
        assert_eq!(classes.of_row, [0, 1, 0, 2, 1]);
        assert_eq!(classes.sizes, [2, 2, 1]);
        let x = array![[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [1.0, 1.0], [0.0, 0.0]];
        let mean = x.mean_axis(Axis(0)).unwrap();
        let centred = &x - &mean;
        let total = centred.t().dot(&centred) / 5.0;
        let sum = classes.within_scatter(centred.view()) + classes.between_scatter(centred.view());
        assert!((total - sum).iter().all(|v| v.abs() < 1e-12));
        assert_eq!(classes.means(x.view()).row(0), array![2.0, 0.0]);
    }
}
