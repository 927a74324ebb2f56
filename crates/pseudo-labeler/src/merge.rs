//! Agglomerative merging of k-means clusters by the cosine similarity of their centroids
//! (centroid linkage): k-means is run with many more clusters than speakers, so several
//! clusters hold one speaker. Merging goes in rounds; each round merges every pair of
//! clusters that are each other's most similar cluster (reciprocal nearest neighbours) and
//! more similar than the threshold, then recomputes the merged centroids. The most similar
//! pair overall is always reciprocal, so merging stops exactly when no two centroids are more
//! similar than the threshold. Each round's search is one blocked GEMM of centroids against
//! centroids on the chosen engine, which keeps this workable at tens of thousands of
//! clusters.

use ndarray::{Array2, ArrayView2};
use serde::Serialize;

use crate::error::Result;
use crate::nearest::Compute;

/// Clusters after merging.
#[derive(Debug, Clone)]
pub struct Merged {
    /// Merged cluster of every input cluster (`u32::MAX` for clusters without points).
    pub cluster_of: Vec<u32>,
    /// Unit-length centroid (mean direction of the members) of every merged cluster.
    pub centroids: Array2<f32>,
    pub summary: MergeSummary,
}

/// What the report says about merging.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergeSummary {
    /// Cosine threshold, or `None` when merging was off.
    pub threshold: Option<f32>,
    /// Non-empty clusters before merging.
    pub clusters_before: usize,
    pub clusters_after: usize,
    pub rounds: usize,
}

/// A group of input clusters with the sum of its points.
struct Group {
    sum: Vec<f64>,
    clusters: Vec<u32>,
}

/// Merges the `k` clusters that `labels` assign the (unit-length) `points` to, while two
/// centroids are more cosine-similar than `threshold`; `None` only drops empty clusters.
pub fn merge_clusters(
    points: ArrayView2<'_, f32>,
    labels: &[u32],
    k: usize,
    threshold: Option<f32>,
    compute: Compute,
) -> Result<Merged> {
    let dim = points.ncols();
    let mut sums = vec![vec![0.0f64; dim]; k];
    let mut sizes = vec![0usize; k];
    for (row, &label) in points.rows().into_iter().zip(labels) {
        sizes[label as usize] += 1;
        for (s, &x) in sums[label as usize].iter_mut().zip(row) {
            *s += f64::from(x);
        }
    }
    let mut groups: Vec<Group> = sums
        .into_iter()
        .enumerate()
        .filter(|&(c, _)| sizes[c] > 0)
        .map(|(c, sum)| Group {
            sum,
            clusters: vec![c as u32],
        })
        .collect();
    let clusters_before = groups.len();

    let mut rounds = 0;
    if let Some(threshold) = threshold {
        while groups.len() >= 2 {
            let centroids = unit_centroids(&groups, dim);
            let partners = reciprocal_pairs(centroids.view(), threshold, compute)?;
            if partners.is_empty() {
                break;
            }
            groups = merge_pairs(groups, &partners);
            rounds += 1;
            tracing::debug!(round = rounds, clusters = groups.len(), "merged clusters");
        }
    }

    let mut cluster_of = vec![u32::MAX; k];
    for (g, group) in groups.iter().enumerate() {
        for &c in &group.clusters {
            cluster_of[c as usize] = g as u32;
        }
    }
    Ok(Merged {
        cluster_of,
        centroids: unit_centroids(&groups, dim),
        summary: MergeSummary {
            threshold,
            clusters_before,
            clusters_after: groups.len(),
            rounds,
        },
    })
}

/// The mean direction of every group, as unit rows.
fn unit_centroids(groups: &[Group], dim: usize) -> Array2<f32> {
    let mut centroids = Array2::zeros((groups.len(), dim));
    for (mut row, group) in centroids.rows_mut().into_iter().zip(groups) {
        let norm = group.sum.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 0.0 {
            for (r, s) in row.iter_mut().zip(&group.sum) {
                *r = (s / norm) as f32;
            }
        }
    }
    centroids
}

/// Pairs `(a, b)`, `a < b`, of mutually most similar centroids above `threshold`.
fn reciprocal_pairs(
    centroids: ArrayView2<'_, f32>,
    threshold: f32,
    compute: Compute,
) -> Result<Vec<(usize, usize)>> {
    let two = compute.engine(centroids)?.nearest_two(centroids)?;
    // The nearest other centroid and its cosine similarity (unit rows: cos = 1 - d^2 / 2).
    let nearest: Vec<Option<(usize, f32)>> = two
        .iter()
        .enumerate()
        .map(|(a, t)| {
            let (other, d) = if t.best as usize == a {
                (t.second, t.second_distance)
            } else {
                (t.best, t.best_distance)
            };
            (other != u32::MAX).then_some((other as usize, 1.0 - d / 2.0))
        })
        .collect();
    Ok(nearest
        .iter()
        .enumerate()
        .filter_map(|(a, n)| {
            let (b, similarity) = (*n)?;
            let reciprocal = nearest[b].is_some_and(|(back, _)| back == a);
            (a < b && reciprocal && similarity > threshold).then_some((a, b))
        })
        .collect())
}

/// Joins each pair's second group into its first; the order of the survivors is kept.
fn merge_pairs(groups: Vec<Group>, pairs: &[(usize, usize)]) -> Vec<Group> {
    let mut into: Vec<Option<usize>> = vec![None; groups.len()];
    for &(a, b) in pairs {
        into[b] = Some(a);
    }
    let mut slots: Vec<Option<Group>> = groups.into_iter().map(Some).collect();
    for (b, a) in into.iter().enumerate() {
        if let Some(a) = *a {
            let absorbed = slots[b].take().expect("a group merges once per round");
            let target = slots[a].as_mut().expect("merge targets are not absorbed");
            for (s, v) in target.sum.iter_mut().zip(&absorbed.sum) {
                *s += v;
            }
            target.clusters.extend(absorbed.clusters);
        }
    }
    slots.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn unit(angle_degrees: f32) -> [f32; 2] {
        let a = angle_degrees.to_radians();
        [a.cos(), a.sin()]
    }

    #[test]
    fn close_centroids_merge_and_far_ones_do_not() {
        // Cluster directions at 0, 10, 40 and 130 degrees; a fifth cluster has no points.
        let rows = [unit(0.0), unit(10.0), unit(40.0), unit(130.0)];
        let points = Array2::from_shape_fn((4, 2), |(i, j)| rows[i][j]);
        let labels = [0, 1, 2, 3];
        let merged = merge_clusters(points.view(), &labels, 5, Some(0.8), Compute::Cpu).unwrap();
        assert_eq!(merged.summary.clusters_before, 4);
        // Round 1 merges 0 and 1 (mutual nearest, cos 0.985); round 2: the merged centroid
        // (5 degrees) and cluster 2 (40 degrees) are 35 degrees apart, cos 0.819 > 0.8.
        assert_eq!(merged.summary.clusters_after, 2);
        assert_eq!(merged.summary.rounds, 2);
        assert_eq!(merged.cluster_of[0], merged.cluster_of[1]);
        assert_eq!(merged.cluster_of[0], merged.cluster_of[2]);
        assert_ne!(merged.cluster_of[0], merged.cluster_of[3]);
        assert_eq!(merged.cluster_of[4], u32::MAX);
        for row in merged.centroids.rows() {
            assert!((row.dot(&row) - 1.0).abs() < 1e-6);
        }

        let unmerged = merge_clusters(points.view(), &labels, 5, None, Compute::Cpu).unwrap();
        assert_eq!(unmerged.summary.clusters_after, 4);
        assert_eq!(unmerged.cluster_of[..4], [0, 1, 2, 3]);
    }

    #[test]
    fn merged_centroid_weights_clusters_by_size() {
        // Three points at 0 degrees in cluster 0, one at 20 degrees in cluster 1.
        let points = array![[1.0f32, 0.0], [1.0, 0.0], [1.0, 0.0], [0.9397, 0.3420]];
        let merged =
            merge_clusters(points.view(), &[0, 0, 0, 1], 2, Some(0.9), Compute::Cpu).unwrap();
        assert_eq!(merged.summary.clusters_after, 1);
        let c = merged.centroids.row(0);
        let angle = c[1].atan2(c[0]).to_degrees();
        assert!((angle - 4.96).abs() < 0.01, "{angle}");
    }
}
