//! Simplified PLDA (SPLDA; Kenny's PLDA without the channel subspace, as in hyperion and
//! Kaldi): `x = mu + V y + e`, speaker factor `y ~ N(0, I)` of dimension `y_dim`, residual
//! `e ~ N(0, Sw)` with a full within-class covariance. With `y_dim` equal to the dimension
//! it is the two-covariance model with between-class covariance `V V^T`.
//!
//! Trained by EM with the minimum-divergence step (Kaldi, hyperion), starting from the
//! class-mean scatter (`V V^T` its rank-`y_dim` part) and the within-class scatter; every
//! quantity of the trajectory depends on `V` only through `V V^T`, so the result is unique.

use std::collections::HashMap;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, s};
use serde::{Deserialize, Serialize};

use super::classes::Classes;
use super::linalg::{self, LinalgError};

/// A trained SPLDA model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Splda {
    /// Global mean `mu`.
    pub mean: Vec<f64>,
    /// Speaker loading matrix `V` (`dim x y_dim`).
    #[serde(with = "super::matrix_serde")]
    pub loading: Array2<f64>,
    /// Within-class covariance `Sw` (`dim x dim`).
    #[serde(with = "super::matrix_serde")]
    pub within: Array2<f64>,
}

impl Splda {
    /// EM training on the rows of `x` labelled by `classes`: `iterations` E+M steps.
    pub fn train(
        x: ArrayView2<f64>,
        classes: &Classes,
        y_dim: usize,
        iterations: usize,
    ) -> Result<Self, LinalgError> {
        let (n, dim) = x.dim();
        let y_dim = y_dim.clamp(1, dim);
        let mean = x.mean_axis(Axis(0)).expect("training rows");
        let centred = &x - &mean;
        let first_order = classes.sums(centred.view());
        let second_order = centred.t().dot(&centred);

        let class_means = classes.means(centred.view());
        let between = linalg::scatter_around(
            class_means.view(),
            &class_means.mean_axis(Axis(0)).expect("classes"),
        );
        let (values, vectors) = linalg::eig_desc(between.view(), "between-class scatter")?;
        let mut loading = vectors.slice(s![.., ..y_dim]).to_owned();
        for (mut column, &v) in loading.columns_mut().into_iter().zip(&values) {
            column *= v.max(0.0).sqrt();
        }
        let mut within = classes.within_scatter(centred.view());

        for _ in 0..iterations {
            let precision = linalg::inverse(within.view(), "within-class covariance")?;
            let vtw = loading.t().dot(&precision);
            let vtwv = vtw.dot(&loading);
            // Posterior covariance of y for each class size (classes often share sizes).
            let mut covariance_of: HashMap<usize, Array2<f64>> = HashMap::new();
            let mut r = Array2::<f64>::zeros((y_dim, y_dim));
            let mut ryy = Array2::<f64>::zeros((y_dim, y_dim));
            let mut c = Array2::<f64>::zeros((dim, y_dim));
            for (class, &size) in classes.sizes.iter().enumerate() {
                if let std::collections::hash_map::Entry::Vacant(slot) = covariance_of.entry(size) {
                    let l = Array2::eye(y_dim) + &vtwv * size as f64;
                    slot.insert(linalg::inverse(l.view(), "posterior precision")?);
                }
                let cov = &covariance_of[&size];
                let f = first_order.row(class);
                let y = cov.dot(&vtw.dot(&f));
                let eyy = cov + &outer(y.view(), y.view());
                r += &(&eyy * size as f64);
                ryy += &eyy;
                c += &outer(f, y.view());
            }
            loading = c.dot(&linalg::inverse(r.view(), "E[y y^T]")?);
            within = linalg::symmetrised((&second_order - &loading.dot(&c.t())).view()) / n as f64;
            // Minimum divergence: rescale y to a standard normal prior.
            ryy /= classes.count() as f64;
            loading = loading.dot(&linalg::sqrt(ryy.view(), "E[y y^T] per class")?);
        }
        Ok(Splda {
            mean: mean.to_vec(),
            loading,
            within,
        })
    }

    /// Between-class covariance `V V^T`.
    pub fn between(&self) -> Array2<f64> {
        self.loading.dot(&self.loading.t())
    }

    /// Data dimension.
    pub fn dim(&self) -> usize {
        self.mean.len()
    }
}

/// `a b^T`.
fn outer(a: ArrayView1<f64>, b: ArrayView1<f64>) -> Array2<f64> {
    let a = a.insert_axis(Axis(1));
    let b = b.insert_axis(Axis(0));
    a.dot(&b)
}

/// SPLDA in the coordinates that make scoring per-dimension: `eta = P (x - mu)` with
/// `V^T Sw^-1 V = diag(lambda)` in them, so that for a set of `n` vectors with summed
/// `eta`, `log p(set | one speaker) - sum log p(x)` up to set-independent terms is
/// `g(n, eta) = sum_k eta_k^2 / (2 (1 + n lambda_k)) - log(1 + n lambda_k) / 2`, and the
/// log-likelihood ratio that two sets share a speaker is
/// `g(n1 + n2, eta1 + eta2) - g(n1, eta1) - g(n2, eta2)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorer {
    mean: Array1<f64>,
    projection: Array2<f64>,
    lambda: Array1<f64>,
}

impl Scorer {
    /// The scoring form of `model`.
    pub fn new(model: &Splda) -> Result<Self, LinalgError> {
        let precision = linalg::inverse(model.within.view(), "within-class covariance")?;
        let vtw = model.loading.t().dot(&precision);
        let (lambda, u) = linalg::eig_desc(vtw.dot(&model.loading).view(), "V^T Sw^-1 V")?;
        Ok(Scorer {
            mean: Array1::from(model.mean.clone()),
            projection: u.t().dot(&vtw),
            lambda: lambda.mapv(|l| l.max(0.0)),
        })
    }

    /// `eta` of every row of `x`.
    pub fn project(&self, x: ArrayView2<f64>) -> Array2<f64> {
        (&x - &self.mean).dot(&self.projection.t())
    }

    /// `g(n, eta)` of a set of `n` vectors whose projections sum to `eta`.
    pub fn set_term(&self, n: f64, eta: ArrayView1<f64>) -> f64 {
        eta.iter()
            .zip(&self.lambda)
            .map(|(&e, &l)| {
                let s = 1.0 + n * l;
                0.5 * e * e / s - 0.5 * s.ln()
            })
            .sum()
    }

    /// Log-likelihood ratio that two sets (sizes and summed projections) share a speaker.
    pub fn set_llr(&self, n1: f64, eta1: ArrayView1<f64>, n2: f64, eta2: ArrayView1<f64>) -> f64 {
        let joint = &eta1 + &eta2;
        self.set_term(n1 + n2, joint.view()) - self.set_term(n1, eta1) - self.set_term(n2, eta2)
    }

    /// Single-vector scoring as a bilinear form: `llr(i, j) = left_i . right_j`, with
    /// `left = [eta * a2, q + c, 1]` and `right = [eta, 1, q]`, where `a_n = 1 / (1 + n
    /// lambda)`, `q = sum eta^2 (a2 - a1) / 2` and `c = sum ln(1 + lambda) - sum ln(1 + 2
    /// lambda) / 2`. Matrix products of these give whole score matrices (AS-norm cohorts).
    pub fn bilinear(&self, eta: ArrayView2<f64>) -> (Array2<f64>, Array2<f64>) {
        let a = |n: f64| self.lambda.mapv(|l| 1.0 / (1.0 + n * l));
        let (a1, a2) = (a(1.0), a(2.0));
        let half_diff = (&a2 - &a1) * 0.5;
        let c: f64 = self
            .lambda
            .iter()
            .map(|&l| (1.0 + l).ln() - 0.5 * (1.0 + 2.0 * l).ln())
            .sum();
        let r = self.lambda.len();
        let mut left = Array2::zeros((eta.nrows(), r + 2));
        let mut right = Array2::zeros((eta.nrows(), r + 2));
        for (i, e) in eta.rows().into_iter().enumerate() {
            let q: f64 = e.iter().zip(&half_diff).map(|(&v, &h)| v * v * h).sum();
            left.slice_mut(s![i, ..r]).assign(&(&e * &a2));
            left[[i, r]] = q + c;
            left[[i, r + 1]] = 1.0;
            right.slice_mut(s![i, ..r]).assign(&e);
            right[[i, r]] = 1.0;
            right[[i, r + 1]] = q;
        }
        (left, right)
    }

    /// Dimension of the speaker factor.
    pub fn y_dim(&self) -> usize {
        self.lambda.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn normal(rng: &mut impl Rng) -> f64 {
        let u: f64 = rng.gen_range(f64::EPSILON..1.0);
        let v: f64 = rng.r#gen();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    /// 60 speakers x 12 vectors: speaker variance 4 in the first 3 dimensions, residual
    /// variance 1 (and 0.25 in the last dimension).
    fn planted() -> (Array2<f64>, Classes) {
        let mut rng = stage_kit::rng::stream(5, "splda-test");
        let (speakers, per, dim) = (60, 12, 5);
        let mut x = Array2::zeros((speakers * per, dim));
        let mut labels = Vec::new();
        for s in 0..speakers {
            let y: Vec<f64> = (0..3).map(|_| 2.0 * normal(&mut rng)).collect();
            for j in 0..per {
                let mut row = x.row_mut(s * per + j);
                for d in 0..dim {
                    let noise = if d == dim - 1 { 0.5 } else { 1.0 } * normal(&mut rng);
                    row[d] = noise + if d < 3 { y[d] } else { 0.0 };
                }
                labels.push(s);
            }
        }
        (x, Classes::new(&labels))
    }

    #[test]
    fn em_recovers_the_planted_covariances() {
        let (x, classes) = planted();
        let model = Splda::train(x.view(), &classes, 3, 20).unwrap();
        let between = model.between();
        for d in 0..3 {
            assert!((between[[d, d]] - 4.0).abs() < 1.6, "{between}");
        }
        assert!(between[[4, 4]].abs() < 0.2, "{between}");
        assert!(
            (model.within[[0, 0]] - 1.0).abs() < 0.15,
            "{}",
            model.within
        );
        assert!(
            (model.within[[4, 4]] - 0.25).abs() < 0.05,
            "{}",
            model.within
        );
    }

    #[test]
    fn bilinear_form_and_set_llr_agree() {
        let (x, classes) = planted();
        let scorer = Scorer::new(&Splda::train(x.view(), &classes, 3, 5).unwrap()).unwrap();
        let eta = scorer.project(x.slice(s![..4, ..]));
        let (left, right) = scorer.bilinear(eta.view());
        for i in 0..4 {
            for j in 0..4 {
                let direct = scorer.set_llr(1.0, eta.row(i), 1.0, eta.row(j));
                assert!((left.row(i).dot(&right.row(j)) - direct).abs() < 1e-9);
            }
        }
        // Same-speaker pairs score above different-speaker ones on average.
        let same = scorer.set_llr(1.0, eta.row(0), 1.0, eta.row(1));
        let other = scorer.project(x.slice(s![12..13, ..]));
        let different = scorer.set_llr(1.0, eta.row(0), 1.0, other.row(0));
        assert!(same > different, "{same} vs {different}");
    }
}
