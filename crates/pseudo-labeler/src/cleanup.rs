//! Clean-up of the clusters before they become training labels. After cosine merging every
//! utterance goes to its most cosine-similar final centroid; it is dropped when that
//! similarity is below `min_similarity` or when the second most similar centroid comes
//! within `min_margin` (ambiguous). After PLDA-AHC an utterance is dropped when its
//! posterior for its cluster is below the minimum. Then clusters left with fewer than
//! `min_cluster_size` members are dropped whole. Surviving clusters are renumbered 0.. by decreasing size, so kept labels are
//! exactly `0..clusters_after`; dropped clusters follow them.

use serde::Serialize;

use crate::nearest::TopTwo;

/// Thresholds of the clean-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    pub min_cluster_size: usize,
    pub min_similarity: f32,
    pub min_margin: f32,
}

/// One utterance's cluster (before renumbering), similarity to its centroid, and whether it
/// passes the member rules (and, if not, which one it fails).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judged {
    pub cluster: u32,
    pub similarity: f32,
    pub verdict: Verdict,
}

/// The member rule an utterance fails, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    LowSimilarity,
    Ambiguous,
    LowPosterior,
}

/// The pseudo-label of one utterance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    pub cluster: i64,
    /// Cosine similarity to the cluster centroid.
    pub similarity: f32,
    pub kept: bool,
}

/// What the clean-up did, for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CleanupSummary {
    /// Clusters with at least one utterance before the clean-up.
    pub clusters_before: usize,
    /// Clusters with kept utterances.
    pub clusters_after: usize,
    pub dropped_low_similarity: usize,
    pub dropped_ambiguous: usize,
    /// Utterances whose PLDA posterior for their cluster is too low (PLDA-AHC only).
    pub dropped_low_posterior: usize,
    /// Utterances that passed both member rules but whose cluster was too small.
    pub dropped_small_cluster: usize,
    pub kept: usize,
    pub kept_share: f64,
    /// Utterances per cluster before the clean-up, by cluster (in the final numbering).
    #[serde(skip)]
    pub sizes_before: Vec<usize>,
    /// Kept utterances per surviving cluster, by cluster.
    #[serde(skip)]
    pub sizes_after: Vec<usize>,
}

/// Applies `rules` to the two most similar of `clusters` unit centroids of every unit-length
/// utterance embedding (squared distances `d` give cosine `1 - d / 2`).
pub fn clean_up(
    assignments: &[TopTwo],
    clusters: usize,
    rules: &Rules,
) -> (Vec<Member>, CleanupSummary) {
    finish(
        &judge_cosine(assignments, rules),
        clusters,
        rules.min_cluster_size,
    )
}

/// The cosine member rules: similarity to the nearest centroid and margin to the second.
pub fn judge_cosine(assignments: &[TopTwo], rules: &Rules) -> Vec<Judged> {
    let cosine = |d: f32| 1.0 - d / 2.0;
    assignments
        .iter()
        .map(|a| {
            let similarity = cosine(a.best_distance);
            let verdict = if similarity < rules.min_similarity {
                Verdict::LowSimilarity
            } else if similarity - cosine(a.second_distance) < rules.min_margin {
                Verdict::Ambiguous
            } else {
                Verdict::Pass
            };
            Judged {
                cluster: a.best,
                similarity,
                verdict,
            }
        })
        .collect()
}

/// Drops clusters with fewer than `min_cluster_size` passing members and numbers the rest
/// (see the module documentation).
pub fn finish(
    judged: &[Judged],
    clusters: usize,
    min_cluster_size: usize,
) -> (Vec<Member>, CleanupSummary) {
    let mut assigned = vec![0usize; clusters];
    let mut surviving = vec![0usize; clusters];
    let count = |v: Verdict| judged.iter().filter(|j| j.verdict == v).count();
    for j in judged {
        assigned[j.cluster as usize] += 1;
        if j.verdict == Verdict::Pass {
            surviving[j.cluster as usize] += 1;
        }
    }
    let survives = |c: usize| surviving[c] > 0 && surviving[c] >= min_cluster_size;

    // Surviving clusters first by kept size, then dropped ones by size; ties by index.
    let mut order: Vec<usize> = (0..clusters).filter(|&c| assigned[c] > 0).collect();
    order.sort_by_key(|&c| {
        let size = if survives(c) {
            surviving[c]
        } else {
            assigned[c]
        };
        (!survives(c), std::cmp::Reverse(size), c)
    });
    let mut number = vec![-1i64; clusters];
    for (new, &c) in order.iter().enumerate() {
        number[c] = new as i64;
    }

    let mut dropped_small_cluster = 0;
    let members: Vec<Member> = judged
        .iter()
        .map(|j| {
            let c = j.cluster as usize;
            let passes = j.verdict == Verdict::Pass;
            let kept = passes && survives(c);
            if passes && !kept {
                dropped_small_cluster += 1;
            }
            Member {
                cluster: number[c],
                similarity: j.similarity,
                kept,
            }
        })
        .collect();
    let kept = members.iter().filter(|m| m.kept).count();
    let clusters_after = order.iter().filter(|&&c| survives(c)).count();
    let summary = CleanupSummary {
        clusters_before: order.len(),
        clusters_after,
        dropped_low_similarity: count(Verdict::LowSimilarity),
        dropped_ambiguous: count(Verdict::Ambiguous),
        dropped_low_posterior: count(Verdict::LowPosterior),
        dropped_small_cluster,
        kept,
        kept_share: if members.is_empty() {
            0.0
        } else {
            kept as f64 / members.len() as f64
        },
        sizes_before: order.iter().map(|&c| assigned[c]).collect(),
        sizes_after: order[..clusters_after]
            .iter()
            .map(|&c| surviving[c])
            .collect(),
    };
    (members, summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An assignment with cosine similarities `best` and `second` to centroids `c` and `other`.
    fn at(c: u32, best: f32, other: u32, second: f32) -> TopTwo {
        TopTwo {
            best: c,
            best_distance: 2.0 * (1.0 - best),
            second: other,
            second_distance: 2.0 * (1.0 - second),
        }
    }

    #[test]
    fn each_rule_drops_what_it_should() {
        let rules = Rules {
            min_cluster_size: 2,
            min_similarity: 0.5,
            min_margin: 0.1,
        };
        let assignments = [
            at(0, 0.9, 1, 0.2),  // kept
            at(0, 0.8, 2, 0.3),  // kept
            at(0, 0.4, 1, 0.1),  // similarity below 0.5
            at(0, 0.7, 1, 0.65), // margin 0.05 < 0.1: ambiguous
            at(1, 0.9, 0, 0.2),  // passes, but cluster 1 keeps only one member
            at(1, 0.3, 0, 0.1),  // similarity below 0.5
            at(2, 0.95, 0, 0.1), // cluster 2: three members, all kept
            at(2, 0.9, 0, 0.1),
            at(2, 0.85, 1, 0.2),
            at(3, 0.9, 0, 0.5), // cluster 3: a lone member
        ];
        let (members, summary) = clean_up(&assignments, 5, &rules);
        let kept: Vec<bool> = members.iter().map(|m| m.kept).collect();
        assert_eq!(
            kept,
            [
                true, true, false, false, false, false, true, true, true, false
            ]
        );
        // Cluster 2 (3 kept) becomes 0, cluster 0 (2 kept) becomes 1; the dropped clusters
        // follow by size: cluster 1 (2 assigned) is 2, cluster 3 (1 assigned) is 3.
        let numbers: Vec<i64> = members.iter().map(|m| m.cluster).collect();
        assert_eq!(numbers, [1, 1, 1, 1, 2, 2, 0, 0, 0, 3]);
        assert!((members[0].similarity - 0.9).abs() < 1e-6);
        assert_eq!(summary.clusters_before, 4);
        assert_eq!(summary.clusters_after, 2);
        assert_eq!(summary.dropped_low_similarity, 2);
        assert_eq!(summary.dropped_ambiguous, 1);
        assert_eq!(summary.dropped_small_cluster, 2);
        assert_eq!(summary.kept, 5);
        assert_eq!(summary.kept_share, 0.5);
        assert_eq!(summary.sizes_before, [3, 4, 2, 1]);
        assert_eq!(summary.sizes_after, [3, 2]);
    }

    #[test]
    fn a_single_centroid_is_never_ambiguous() {
        let rules = Rules {
            min_cluster_size: 1,
            min_similarity: 0.0,
            min_margin: 0.5,
        };
        let only = TopTwo::EMPTY;
        let a = TopTwo {
            best: 0,
            best_distance: 0.2,
            ..only
        };
        let (members, summary) = clean_up(&[a], 1, &rules);
        assert!(members[0].kept);
        assert_eq!(summary.clusters_after, 1);
    }
}
