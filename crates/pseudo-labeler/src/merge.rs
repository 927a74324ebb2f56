//! Agglomerative merging of k-means clusters by the cosine similarity of their centroids
//! (centroid linkage): k-means is run with many more clusters than speakers, so several
//! clusters hold one speaker. Merging goes in rounds; each round merges every pair of
//! clusters that are each other's most similar cluster (reciprocal nearest neighbours) and
//! more similar than the threshold, then recomputes the merged centroids. The most similar
//! pair overall is always reciprocal, so merging stops exactly when no two centroids are more
//! similar than the threshold.
//!
//! The nearest neighbours are searched by blocked GEMMs on the chosen engine, and after the
//! first round only where they can have changed: a group untouched by a round keeps its
//! nearest group unless that one merged (then it is searched again against all groups) or a
//! merged centroid is now closer (each untouched group is compared with the merged ones
//! only). The merged groups themselves are searched against all. Same neighbours, same
//! rounds, same clusters as searching all pairs every round (the unit test checks it), at a
//! fraction of the cost once the first rounds have merged most pairs: at k = 273,000 a full
//! round is a 273 k x 273 k x 256 product.

use ndarray::{Array2, ArrayView2, Axis};
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
        (groups, rounds) = merge_rounds(groups, dim, threshold, compute, Search::Incremental)?;
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

/// How each round finds the nearest neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Search {
    /// Only where a round can have changed them (see the module documentation).
    Incremental,
    /// All pairs every round (the reference the incremental search is tested against).
    #[cfg(test)]
    Full,
}

/// The nearest other group of a group and its cosine similarity (`None` when alone).
type Neighbour = Option<(usize, f32)>;

/// Merges reciprocal nearest pairs above `threshold` round by round until none is left;
/// returns the groups and the number of rounds.
fn merge_rounds(
    mut groups: Vec<Group>,
    dim: usize,
    threshold: f32,
    compute: Compute,
    search: Search,
) -> Result<(Vec<Group>, usize)> {
    let mut rounds = 0;
    let mut centroids = unit_centroids(&groups, dim);
    let all: Vec<usize> = (0..groups.len()).collect();
    let mut nearest = nearest_among_all(centroids.view(), &all, compute)?;
    while groups.len() >= 2 {
        let pairs = reciprocal_pairs(&nearest, threshold);
        if pairs.is_empty() {
            break;
        }
        let mut paired = vec![false; groups.len()];
        for &(a, b) in &pairs {
            paired[a] = true;
            paired[b] = true;
        }
        let old_nearest = nearest;
        let (merged, old_of) = merge_pairs(groups, &pairs);
        groups = merged;
        centroids = unit_centroids(&groups, dim);
        rounds += 1;
        tracing::debug!(round = rounds, clusters = groups.len(), "merged clusters");
        nearest = match search {
            Search::Incremental => {
                update_nearest(centroids.view(), &old_of, &old_nearest, &paired, compute)?
            }
            #[cfg(test)]
            Search::Full => {
                let all: Vec<usize> = (0..groups.len()).collect();
                nearest_among_all(centroids.view(), &all, compute)?
            }
        };
    }
    Ok((groups, rounds))
}

/// The nearest other centroid of each of the centroids `queries` (indices into `centroids`).
fn nearest_among_all(
    centroids: ArrayView2<'_, f32>,
    queries: &[usize],
    compute: Compute,
) -> Result<Vec<Neighbour>> {
    if queries.is_empty() {
        return Ok(Vec::new());
    }
    let rows = centroids.select(Axis(0), queries);
    let two = compute.engine(rows.view())?.nearest_two(centroids)?;
    // Unit rows: cos = 1 - d^2 / 2.
    Ok(queries
        .iter()
        .zip(two)
        .map(|(&a, t)| {
            let (other, d) = if t.best as usize == a {
                (t.second, t.second_distance)
            } else {
                (t.best, t.best_distance)
            };
            (other != u32::MAX).then_some((other as usize, 1.0 - d / 2.0))
        })
        .collect())
}

/// The nearest neighbours after a round: `old_of[j]` is the group (before the round) that
/// group `j` continues, `paired` marks the groups (before) that merged.
fn update_nearest(
    centroids: ArrayView2<'_, f32>,
    old_of: &[usize],
    old_nearest: &[Neighbour],
    paired: &[bool],
    compute: Compute,
) -> Result<Vec<Neighbour>> {
    // Where each surviving old group is now.
    let mut new_of = vec![usize::MAX; paired.len()];
    for (j, &o) in old_of.iter().enumerate() {
        new_of[o] = j;
    }
    let mut nearest: Vec<Neighbour> = vec![None; old_of.len()];
    let (mut changed, mut stale, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    for (j, &o) in old_of.iter().enumerate() {
        match old_nearest[o] {
            _ if paired[o] => changed.push(j),
            Some((b, _)) if paired[b] => stale.push(j),
            Some((b, similarity)) => {
                nearest[j] = Some((new_of[b], similarity));
                kept.push(j);
            }
            None => stale.push(j),
        }
    }
    // Untouched groups: the old neighbour, unless a merged centroid is now closer.
    if !changed.is_empty() && !kept.is_empty() {
        let merged = centroids.select(Axis(0), &changed);
        let rows = centroids.select(Axis(0), &kept);
        let closest = compute.engine(rows.view())?.nearest(merged.view())?;
        for (i, &j) in kept.iter().enumerate() {
            let candidate = (
                changed[closest.labels[i] as usize],
                1.0 - closest.distances[i] / 2.0,
            );
            if nearest[j].is_none_or(|(_, s)| candidate.1 > s) {
                nearest[j] = Some(candidate);
            }
        }
    }
    // Merged groups and those whose neighbour merged: against all groups.
    let search: Vec<usize> = changed.into_iter().chain(stale).collect();
    for (j, n) in search
        .iter()
        .zip(nearest_among_all(centroids, &search, compute)?)
    {
        nearest[*j] = n;
    }
    Ok(nearest)
}

/// Pairs `(a, b)`, `a < b`, of mutually most similar groups above `threshold`.
fn reciprocal_pairs(nearest: &[Neighbour], threshold: f32) -> Vec<(usize, usize)> {
    nearest
        .iter()
        .enumerate()
        .filter_map(|(a, n)| {
            let (b, similarity) = (*n)?;
            let reciprocal = nearest[b].is_some_and(|(back, _)| back == a);
            (a < b && reciprocal && similarity > threshold).then_some((a, b))
        })
        .collect()
}

/// Joins each pair's second group into its first; the order of the survivors is kept, and
/// the second vector names the group (before) each survivor continues.
fn merge_pairs(groups: Vec<Group>, pairs: &[(usize, usize)]) -> (Vec<Group>, Vec<usize>) {
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
    slots
        .into_iter()
        .enumerate()
        .filter_map(|(o, g)| g.map(|g| (g, o)))
        .unzip()
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
    fn incremental_search_gives_the_clusters_of_the_full_search() {
        use rand::SeedableRng;
        // 600 k-means-like clusters of 40 planted speakers, merged over several rounds.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let (mut points, _) = crate::synthetic::blobs(40, 30, 16, 0.9, &mut rng);
        crate::preprocess::normalize_rows(&mut points);
        // Pairs of consecutive points (of one speaker) as the initial clusters.
        let groups = || {
            (0..points.nrows() / 2)
                .map(|c| {
                    let rows = points.slice(ndarray::s![2 * c..2 * c + 2, ..]);
                    Group {
                        sum: rows
                            .sum_axis(Axis(0))
                            .iter()
                            .map(|&v| f64::from(v))
                            .collect(),
                        clusters: vec![c as u32],
                    }
                })
                .collect::<Vec<_>>()
        };
        for compute in [Compute::Cpu, Compute::Torch(tch::Device::Cpu)] {
            let (full, full_rounds) =
                merge_rounds(groups(), 16, 0.6, compute, Search::Full).unwrap();
            let (fast, fast_rounds) =
                merge_rounds(groups(), 16, 0.6, compute, Search::Incremental).unwrap();
            assert!(full_rounds >= 3, "{full_rounds} rounds");
            assert!(
                full.len() < 300 && full.len() > 1,
                "{} clusters",
                full.len()
            );
            assert_eq!(fast_rounds, full_rounds);
            let members = |g: &[Group]| g.iter().map(|g| g.clusters.clone()).collect::<Vec<_>>();
            assert_eq!(members(&fast), members(&full));
        }
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
