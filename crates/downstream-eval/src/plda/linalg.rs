//! The few dense symmetric-matrix operations the PLDA back-end needs (f64, through one
//! eigendecomposition each): sorted eigenpairs, inverse, inverse square root, log-determinant.

use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Eigenvalues below this share of the largest one make a matrix count as singular.
const SINGULAR: f64 = 1e-12;

/// Why a symmetric matrix could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinalgError {
    #[error("{what}: eigendecomposition failed: {message}")]
    Eigen { what: String, message: String },
    #[error(
        "{what} is not positive definite (eigenvalues from {smallest:e} to {largest:e}): \
         too few utterances per dimension, or duplicated vectors"
    )]
    NotPositiveDefinite {
        what: String,
        smallest: f64,
        largest: f64,
    },
}

/// Eigenvalues in decreasing order and the matching unit eigenvectors as columns, of the
/// symmetric part of `m`. `what` names the matrix in errors.
pub fn eig_desc(m: ArrayView2<f64>, what: &str) -> Result<(Array1<f64>, Array2<f64>), LinalgError> {
    let symmetric = symmetrised(m);
    let (values, vectors) =
        linfa_linalg::eigh::Eigh::eigh(&symmetric).map_err(|e| LinalgError::Eigen {
            what: what.to_owned(),
            message: e.to_string(),
        })?;
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    Ok((
        values.select(Axis(0), &order),
        vectors.select(Axis(1), &order),
    ))
}

/// `(m + m^T) / 2`.
pub fn symmetrised(m: ArrayView2<f64>) -> Array2<f64> {
    (&m + &m.t()) * 0.5
}

/// Eigendecomposition of a positive definite matrix, failing with a clear message otherwise.
fn positive_eig(m: ArrayView2<f64>, what: &str) -> Result<(Array1<f64>, Array2<f64>), LinalgError> {
    let (values, vectors) = eig_desc(m, what)?;
    let largest = values.first().copied().unwrap_or(0.0);
    let smallest = values.last().copied().unwrap_or(0.0);
    if !(largest > 0.0 && smallest > SINGULAR * largest) {
        return Err(LinalgError::NotPositiveDefinite {
            what: what.to_owned(),
            smallest,
            largest,
        });
    }
    Ok((values, vectors))
}

/// `U f(D) U^T` for the eigendecomposition `U D U^T` of a positive definite `m`.
fn spectral(
    m: ArrayView2<f64>,
    what: &str,
    f: impl Fn(f64) -> f64,
) -> Result<Array2<f64>, LinalgError> {
    let (values, vectors) = positive_eig(m, what)?;
    let scaled = &vectors * &values.mapv(f);
    Ok(scaled.dot(&vectors.t()))
}

/// Inverse of a symmetric positive definite matrix.
pub fn inverse(m: ArrayView2<f64>, what: &str) -> Result<Array2<f64>, LinalgError> {
    spectral(m, what, |v| 1.0 / v)
}

/// The symmetric inverse square root `m^(-1/2)` (ZCA whitening of covariance `m`).
pub fn inverse_sqrt(m: ArrayView2<f64>, what: &str) -> Result<Array2<f64>, LinalgError> {
    spectral(m, what, |v| 1.0 / v.sqrt())
}

/// The symmetric square root `m^(1/2)`.
pub fn sqrt(m: ArrayView2<f64>, what: &str) -> Result<Array2<f64>, LinalgError> {
    spectral(m, what, f64::sqrt)
}

/// Covariance (divided by the row count) of the rows of `x` around `mean`.
pub fn scatter_around(x: ArrayView2<f64>, mean: &Array1<f64>) -> Array2<f64> {
    let centred = &x - mean;
    centred.t().dot(&centred) / x.nrows().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn inverse_and_square_roots_agree() {
        let m = array![[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]];
        let inv = inverse(m.view(), "m").unwrap();
        let eye = m.dot(&inv);
        let root = sqrt(m.view(), "m").unwrap();
        let inv_root = inverse_sqrt(m.view(), "m").unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let id = if i == j { 1.0 } else { 0.0 };
                assert!((eye[[i, j]] - id).abs() < 1e-12);
                assert!((root.dot(&root)[[i, j]] - m[[i, j]]).abs() < 1e-12);
                assert!((inv_root.dot(&inv_root)[[i, j]] - inv[[i, j]]).abs() < 1e-12);
            }
        }
        let (values, _) = eig_desc(m.view(), "m").unwrap();
        assert!(values[0] >= values[1] && values[1] >= values[2]);
    }

    #[test]
    fn singular_matrices_are_named() {
        let m = array![[1.0, 1.0], [1.0, 1.0]];
        let err = inverse(m.view(), "within-class covariance").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("within-class covariance is not positive definite"),
            "{err}"
        );
    }
}
