//! What happens to raw embeddings before cosine scoring: optional length normalisation,
//! optional subtraction of a training-set mean, and the final projection onto the unit
//! sphere that makes every cosine score a single dot product.

use ndarray::{Array1, Array2, ArrayView2};
use rayon::prelude::*;

use crate::sv::scoring::dot;

/// Length-normalise first (if asked), then subtract `mean` (if any).
#[derive(Debug, Clone, Default)]
pub struct Preprocess {
    pub length_norm: bool,
    pub mean: Option<Array1<f32>>,
}

/// Norm below which a vector is treated as zero (it then scores 0 against everything).
const MIN_NORM: f32 = 1e-12;

impl Preprocess {
    /// With `mean_source` the mean of its (length-normalised, when `length_norm`) rows is
    /// subtracted from every embedding, as wespeaker's `cal_mean` and hyperion's centring.
    pub fn new(length_norm: bool, mean_source: Option<ArrayView2<f32>>) -> Self {
        let mean = mean_source.map(|source| {
            let mut sum = vec![0f64; source.ncols()];
            for row in source.rows() {
                let scale = if length_norm {
                    inverse_norm(row.dot(&row))
                } else {
                    1.0
                };
                for (s, &v) in sum.iter_mut().zip(row.iter()) {
                    *s += f64::from(v * scale);
                }
            }
            let n = source.nrows().max(1) as f64;
            sum.into_iter().map(|s| (s / n) as f32).collect()
        });
        Preprocess { length_norm, mean }
    }

    /// The rows `rows` of `vectors`, preprocessed and scaled to unit length.
    pub fn unit_rows(&self, vectors: ArrayView2<f32>, rows: &[usize]) -> Array2<f32> {
        let dim = vectors.ncols();
        let mut out = Array2::<f32>::zeros((rows.len(), dim));
        out.as_slice_mut()
            .expect("standard layout")
            .par_chunks_mut(dim.max(1))
            .zip(rows.par_iter())
            .for_each(|(target, &row)| {
                for (t, &v) in target.iter_mut().zip(vectors.row(row).iter()) {
                    *t = v;
                }
                if self.length_norm {
                    let scale = inverse_norm(dot(target, target));
                    target.iter_mut().for_each(|t| *t *= scale);
                }
                if let Some(mean) = &self.mean {
                    for (t, m) in target.iter_mut().zip(mean.iter()) {
                        *t -= m;
                    }
                }
                let scale = inverse_norm(dot(target, target));
                target.iter_mut().for_each(|t| *t *= scale);
            });
        out
    }

    /// Every row of `vectors`, preprocessed and scaled to unit length.
    pub fn unit_all(&self, vectors: ArrayView2<f32>) -> Array2<f32> {
        let rows: Vec<usize> = (0..vectors.nrows()).collect();
        self.unit_rows(vectors, &rows)
    }
}

/// 1 / ||v|| from ||v||^2 (0 for a zero vector).
fn inverse_norm(squared_norm: f32) -> f32 {
    let norm = squared_norm.sqrt();
    if norm > MIN_NORM { 1.0 / norm } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn mean_is_taken_after_length_norm_and_rows_end_on_the_unit_sphere() {
        let train = array![[2.0f32, 0.0], [0.0, 4.0]];
        let p = Preprocess::new(true, Some(train.view()));
        assert_eq!(p.mean.as_ref().unwrap(), &array![0.5f32, 0.5]);
        let raw = Preprocess::new(false, Some(train.view()));
        assert_eq!(raw.mean.as_ref().unwrap(), &array![1.0f32, 2.0]);

        let x = array![[3.0f32, 0.0], [0.0, 0.0], [1.0, 1.0]];
        let unit = p.unit_rows(x.view(), &[0, 2, 1]);
        // [3, 0] -> [1, 0] -> [0.5, -0.5] -> unit.
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!((unit[[0, 0]] - h).abs() < 1e-6 && (unit[[0, 1]] + h).abs() < 1e-6);
        // [1, 1] -> [h, h] -> [h - 0.5, h - 0.5] -> [h, h].
        assert!((unit[[1, 0]] - h).abs() < 1e-6 && (unit[[1, 1]] - h).abs() < 1e-6);
        // A zero vector becomes [-0.5, -0.5] after centring: still scored, at unit length.
        assert!((unit[[2, 0]] + h).abs() < 1e-6);
        assert_eq!(
            Preprocess::default().unit_all(array![[0.0f32, 0.0]].view()),
            array![[0.0f32, 0.0]]
        );
    }
}
