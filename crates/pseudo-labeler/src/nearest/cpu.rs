//! The CPU engine: rayon over blocks of points, and within a block, for each block of
//! centroids, one single-threaded GEMM (the `gemm` crate's AVX-512/AVX2 kernels) into a
//! block-sized buffer that is reduced right away while it is still in cache.

use std::borrow::Cow;

use ndarray::{ArrayView2, CowArray, Ix2};
use rayon::prelude::*;

use super::{Nearest, NearestCentroids, TopTwo, squared_norms};
use crate::error::Result;

/// Points per task: one GEMM's rows. 512 rows x 192 dims is 384 KiB, and the product buffer
/// (`POINT_BLOCK x CENTROID_BLOCK` floats, 4 MiB at most) is streamed through once.
const POINT_BLOCK: usize = 512;
/// Centroids per GEMM: bounds the buffer whatever k is (tens of thousands at VoxCeleb scale).
const CENTROID_BLOCK: usize = 2048;

/// Nearest-centroid search on the CPU for points held as an ndarray view.
pub struct CpuNearest<'a> {
    /// Row-major, contiguous (copied once if the view was not).
    points: CowArray<'a, f32, Ix2>,
    squared_norms: Vec<f32>,
}

impl<'a> CpuNearest<'a> {
    /// Holds `points` (copied only when they are not in standard layout).
    pub fn new(points: ArrayView2<'a, f32>) -> Self {
        let points = if points.is_standard_layout() {
            CowArray::from(points)
        } else {
            CowArray::from(points.as_standard_layout().into_owned())
        };
        let squared_norms = squared_norms(points.view());
        CpuNearest {
            points,
            squared_norms,
        }
    }

    /// Runs `reduce` for every block of points against every block of centroids. `reduce`
    /// gets the block's first centroid index, the products `-2 x.c` as one row per point,
    /// the block's `||c||^2` (one per row element; their sums are the partial distances),
    /// and the per-point results of its point block.
    fn scan<T: Send + Copy>(
        &self,
        centroids: ArrayView2<'_, f32>,
        init: T,
        reduce: impl Fn(u32, &[f32], &[f32], &mut [T]) + Sync,
    ) -> Vec<T> {
        let dim = self.points.ncols();
        assert_eq!(
            centroids.ncols(),
            dim,
            "centroid and point dimensions differ"
        );
        let centroids: Cow<'_, [f32]> = match centroids.to_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(centroids.iter().copied().collect()),
        };
        let k = centroids.len() / dim.max(1);
        let centroid_norms =
            squared_norms(ArrayView2::from_shape((k, dim), &centroids).expect("k x dim centroids"));
        let points = self.points.as_slice().expect("standard layout");
        let mut out = vec![init; self.points.nrows()];
        if k == 0 || out.is_empty() {
            return out;
        }
        out.par_chunks_mut(POINT_BLOCK)
            .zip(points.par_chunks(POINT_BLOCK * dim))
            .for_each(|(results, block)| {
                let rows = results.len();
                let mut products = vec![0.0f32; rows * CENTROID_BLOCK.min(k)];
                for start in (0..k).step_by(CENTROID_BLOCK) {
                    let width = CENTROID_BLOCK.min(k - start);
                    let products = &mut products[..rows * width];
                    // SAFETY: `block` is rows x dim row-major, the centroid slice is width x
                    // dim row-major (read as its transpose, dim x width, through the strides)
                    // and `products` is rows x width row-major; all three are in bounds.
                    unsafe {
                        gemm::gemm(
                            rows,
                            width,
                            dim,
                            products.as_mut_ptr(),
                            1,
                            width as isize,
                            false,
                            block.as_ptr(),
                            1,
                            dim as isize,
                            centroids[start * dim..].as_ptr(),
                            dim as isize,
                            1,
                            0.0,
                            -2.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                    let norms = &centroid_norms[start..start + width];
                    reduce(start as u32, products, norms, results);
                }
            });
        out
    }
}

impl NearestCentroids for CpuNearest<'_> {
    fn len(&self) -> usize {
        self.points.nrows()
    }

    fn nearest(&self, centroids: ArrayView2<'_, f32>) -> Result<Nearest> {
        let best = self.scan(
            centroids,
            (u32::MAX, f32::INFINITY),
            |start, products, norms, results| {
                for (row, best) in products.chunks_exact(norms.len()).zip(results) {
                    let (index, value) = row_minimum(row, norms);
                    if value < best.1 {
                        *best = (start + index as u32, value);
                    }
                }
            },
        );
        Ok(Nearest {
            labels: best.iter().map(|&(index, _)| index).collect(),
            distances: best
                .iter()
                .zip(&self.squared_norms)
                .map(|(&(_, partial), &norm)| (partial + norm).max(0.0))
                .collect(),
        })
    }

    fn nearest_two(&self, centroids: ArrayView2<'_, f32>) -> Result<Vec<TopTwo>> {
        let two = self.scan(
            centroids,
            TopTwo::EMPTY,
            |start, products, norms, results| {
                for (row, two) in products.chunks_exact(norms.len()).zip(results) {
                    for (j, (&p, &n)) in row.iter().zip(norms).enumerate() {
                        two.offer(start + j as u32, p + n);
                    }
                }
            },
        );
        Ok(two
            .into_iter()
            .zip(&self.squared_norms)
            .map(|(two, &norm)| two.complete(norm))
            .collect())
    }
}

/// Index and value of the first minimum of `row[j] + offsets[j]`: a lane-wise minimum the
/// compiler turns into SIMD, then a search for the first element equal to it.
fn row_minimum(row: &[f32], offsets: &[f32]) -> (usize, f32) {
    const LANES: usize = 16;
    let mut lanes = [f32::INFINITY; LANES];
    let chunks = row.chunks_exact(LANES).zip(offsets.chunks_exact(LANES));
    for (values, offsets) in chunks {
        for ((m, &v), &o) in lanes.iter_mut().zip(values).zip(offsets) {
            let d = v + o;
            *m = if d < *m { d } else { *m };
        }
    }
    let tail = row.len() - row.len() % LANES;
    let minimum = row[tail..]
        .iter()
        .zip(&offsets[tail..])
        .map(|(v, o)| v + o)
        .chain(lanes)
        .fold(f32::INFINITY, |m, d| if d < m { d } else { m });
    match row.iter().zip(offsets).position(|(v, o)| v + o == minimum) {
        Some(index) => (index, minimum),
        // Only NaN everywhere: keep the first centroid, as a linear scan would.
        None => (0, row[0] + offsets[0]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_minimum_finds_the_first_minimum() {
        let mut row: Vec<f32> = (0..37).map(|i| (i as f32 - 20.0).abs()).collect();
        let zeros = vec![0.0f32; 37];
        assert_eq!(row_minimum(&row, &zeros), (20, 0.0));
        row[33] = -1.0;
        row[35] = -1.0;
        assert_eq!(row_minimum(&row, &zeros), (33, -1.0));
        // The offsets count: 3 + 0 beats 2 + 2.
        assert_eq!(row_minimum(&[3.0, 2.0], &[0.0, 2.0]), (0, 3.0));
        let mut offsets = zeros.clone();
        offsets[2] = -20.0;
        assert_eq!(row_minimum(&row, &offsets), (2, -2.0));
    }
}
