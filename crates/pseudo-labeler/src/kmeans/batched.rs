//! The batched backend: assignment by a [`NearestCentroids`] engine (blocked GEMM on the CPU
//! or on a device), then the standard Lloyd update on the host: each centroid moves to the
//! mean of its points, summed in f64 cluster by cluster. A cluster left empty is re-seeded
//! with the point farthest from its centroid among clusters that can spare one, as
//! scikit-learn does.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use super::{KMeansBackend, Step};
use crate::error::Result;
use crate::nearest::{Nearest, NearestCentroids};

/// Lloyd iterations with batched assignment.
pub struct Batched<'a> {
    points: ArrayView2<'a, f32>,
    engine: &'a dyn NearestCentroids,
    last: Option<Array2<f32>>,
}

impl<'a> Batched<'a> {
    /// `engine` must hold the same `points`.
    pub fn new(points: ArrayView2<'a, f32>, engine: &'a dyn NearestCentroids) -> Self {
        assert_eq!(engine.len(), points.nrows(), "engine holds other points");
        Batched {
            points,
            engine,
            last: None,
        }
    }
}

impl KMeansBackend for Batched<'_> {
    fn name(&self) -> &'static str {
        "batched"
    }

    fn step(&mut self, centroids: &Array2<f32>) -> Result<Step> {
        let nearest = self.engine.nearest(centroids.view())?;
        let step = lloyd_update(self.points, &nearest, centroids);
        self.last = Some(step.centroids.clone());
        Ok(step)
    }

    fn labels(&mut self) -> Result<Vec<u32>> {
        let centroids = self.last.as_ref().expect("labels() after step()");
        Ok(self.engine.nearest(centroids.view())?.labels)
    }
}

/// Points grouped by cluster: `members[offsets[c]..offsets[c + 1]]` are the points of `c`,
/// in increasing order.
struct Groups {
    offsets: Vec<usize>,
    members: Vec<u32>,
}

impl Groups {
    fn new(labels: &[u32], k: usize) -> Self {
        let mut offsets = vec![0usize; k + 1];
        for &label in labels {
            offsets[label as usize + 1] += 1;
        }
        for c in 0..k {
            offsets[c + 1] += offsets[c];
        }
        let mut next = offsets.clone();
        let mut members = vec![0u32; labels.len()];
        for (i, &label) in labels.iter().enumerate() {
            members[next[label as usize]] = i as u32;
            next[label as usize] += 1;
        }
        Groups { offsets, members }
    }

    fn of(&self, c: usize) -> &[u32] {
        &self.members[self.offsets[c]..self.offsets[c + 1]]
    }
}

/// The Lloyd update for the assignment `nearest` made against the `old` centroids.
pub(crate) fn lloyd_update(
    points: ArrayView2<'_, f32>,
    nearest: &Nearest,
    old: &Array2<f32>,
) -> Step {
    let (k, dim) = old.dim();
    let points = points.as_standard_layout();
    let rows = points.as_slice().expect("standard layout");
    let row = |i: usize| &rows[i * dim..(i + 1) * dim];
    let labels = &nearest.labels;
    let inertia = nearest.distances.iter().map(|&d| f64::from(d)).sum();

    let groups = Groups::new(labels, k);
    let mut sums = vec![0.0f64; k * dim];
    sums.par_chunks_mut(dim.max(1))
        .enumerate()
        .for_each(|(c, sum)| {
            for &i in groups.of(c) {
                for (s, &x) in sum.iter_mut().zip(row(i as usize)) {
                    *s += f64::from(x);
                }
            }
        });
    let mut counts: Vec<usize> = (0..k).map(|c| groups.of(c).len()).collect();
    let relocated = relocate_empty(&row, nearest, &mut sums, &mut counts);

    let mut centroids = old.clone();
    for (c, mut centroid) in centroids.rows_mut().into_iter().enumerate() {
        if counts[c] > 0 {
            let n = counts[c] as f64;
            for (value, s) in centroid.iter_mut().zip(&sums[c * dim..(c + 1) * dim]) {
                *value = (s / n) as f32;
            }
        }
    }
    Step {
        centroids,
        inertia,
        relocated,
    }
}

/// Gives every empty cluster the farthest remaining point of a cluster that has at least
/// two; returns how many clusters were re-seeded. A cluster nothing can be spared for keeps
/// its old centroid.
fn relocate_empty<'r>(
    row: &impl Fn(usize) -> &'r [f32],
    nearest: &Nearest,
    sums: &mut [f64],
    counts: &mut [usize],
) -> usize {
    let empty: Vec<usize> = (0..counts.len()).filter(|&c| counts[c] == 0).collect();
    if empty.is_empty() {
        return 0;
    }
    let (labels, distances) = (&nearest.labels, &nearest.distances);
    let dim = sums.len() / counts.len();
    let mut far: Vec<usize> = (0..labels.len()).collect();
    far.sort_unstable_by(|&a, &b| distances[b].total_cmp(&distances[a]).then(a.cmp(&b)));
    let mut candidates = far.into_iter();
    let mut relocated = 0;
    for c in empty {
        let Some(p) = candidates.find(|&p| counts[labels[p] as usize] >= 2) else {
            break;
        };
        let from = labels[p] as usize;
        for (j, &x) in row(p).iter().enumerate() {
            sums[from * dim + j] -= f64::from(x);
            sums[c * dim + j] = f64::from(x);
        }
        counts[from] -= 1;
        counts[c] = 1;
        relocated += 1;
    }
    relocated
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmeans::squared_distance;
    use ndarray::array;

    /// The assignment `labels` with exact distances to the `old` centroids.
    fn assigned(points: &Array2<f32>, labels: &[u32], old: &Array2<f32>) -> Nearest {
        Nearest {
            labels: labels.to_vec(),
            distances: labels
                .iter()
                .enumerate()
                .map(|(i, &c)| squared_distance(points.row(i), old.row(c as usize)) as f32)
                .collect(),
        }
    }

    #[test]
    fn update_moves_centroids_to_means_and_reports_old_inertia() {
        let points = array![[0.0f32, 0.0], [2.0, 0.0], [10.0, 10.0], [12.0, 10.0]];
        let old = array![[1.0f32, 1.0], [11.0, 11.0]];
        let step = lloyd_update(points.view(), &assigned(&points, &[0, 0, 1, 1], &old), &old);
        assert_eq!(step.centroids, array![[1.0f32, 0.0], [11.0, 10.0]]);
        assert_eq!(step.inertia, 8.0);
        assert_eq!(step.relocated, 0);
    }

    #[test]
    fn empty_clusters_take_the_farthest_points() {
        let points = array![[0.0f32], [1.0], [9.0], [50.0]];
        let old = array![[0.0f32], [100.0], [200.0]];
        // Everything went to cluster 0; clusters 1 and 2 are empty.
        let step = lloyd_update(points.view(), &assigned(&points, &[0, 0, 0, 0], &old), &old);
        assert_eq!(step.relocated, 2);
        // The farthest point (50) seeds cluster 1, the next (9) cluster 2.
        assert_eq!(step.centroids, array![[0.5f32], [50.0], [9.0]]);
    }

    #[test]
    fn a_lone_point_is_not_taken_from_its_cluster() {
        let points = array![[0.0f32], [100.0]];
        let old = array![[0.0f32], [90.0], [-5.0]];
        let step = lloyd_update(points.view(), &assigned(&points, &[0, 1], &old), &old);
        assert_eq!(step.relocated, 0);
        assert_eq!(step.centroids, array![[0.0f32], [100.0], [-5.0]]);
    }
}
