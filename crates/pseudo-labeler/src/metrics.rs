//! How well clusters agree with the true speakers (diagnostics only; the labels never feed
//! the clustering): normalised mutual information (arithmetic mean of the entropies, as
//! scikit-learn's default), the adjusted Rand index, and purity.

use std::collections::HashMap;
use std::hash::Hash;

use serde::Serialize;

/// Agreement between a reference labelling and a clustering of the same items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Agreement {
    /// Items compared.
    pub utterances: usize,
    /// Distinct reference labels (speakers).
    pub classes: usize,
    /// Distinct clusters.
    pub clusters: usize,
    pub nmi: f64,
    pub ari: f64,
    /// Share of items whose cluster's most frequent class is their own.
    pub purity: f64,
}

/// Compares `truth[i]` with `clusters[i]` for every item.
pub fn agreement<T: Eq + Hash, C: Eq + Hash>(truth: &[T], clusters: &[C]) -> Agreement {
    assert_eq!(
        truth.len(),
        clusters.len(),
        "labellings of different lengths"
    );
    let n = truth.len();
    let classes = dense_ids(truth);
    let cluster_ids = dense_ids(clusters);
    let class_count = classes.iter().max().map_or(0, |m| m + 1);
    let cluster_count = cluster_ids.iter().max().map_or(0, |m| m + 1);

    let mut cells: HashMap<(usize, usize), u64> = HashMap::new();
    for (&a, &b) in classes.iter().zip(&cluster_ids) {
        *cells.entry((a, b)).or_default() += 1;
    }
    let mut class_sizes = vec![0u64; class_count];
    let mut cluster_sizes = vec![0u64; cluster_count];
    let mut cluster_best = vec![0u64; cluster_count];
    for (&(a, b), &count) in &cells {
        class_sizes[a] += count;
        cluster_sizes[b] += count;
        cluster_best[b] = cluster_best[b].max(count);
    }

    let purity = if n == 0 {
        1.0
    } else {
        cluster_best.iter().sum::<u64>() as f64 / n as f64
    };
    Agreement {
        utterances: n,
        classes: class_count,
        clusters: cluster_count,
        nmi: nmi(n, &cells, &class_sizes, &cluster_sizes),
        ari: ari(n, &cells, &class_sizes, &cluster_sizes),
        purity,
    }
}

/// Labels renumbered 0.. in order of first appearance.
fn dense_ids<T: Eq + Hash>(labels: &[T]) -> Vec<usize> {
    let mut ids: HashMap<&T, usize> = HashMap::new();
    labels
        .iter()
        .map(|label| {
            let next = ids.len();
            *ids.entry(label).or_insert(next)
        })
        .collect()
}

fn entropy(n: usize, sizes: &[u64]) -> f64 {
    let n = n as f64;
    sizes
        .iter()
        .filter(|&&s| s > 0)
        .map(|&s| {
            let p = s as f64 / n;
            -p * p.ln()
        })
        .sum()
}

fn nmi(
    n: usize,
    cells: &HashMap<(usize, usize), u64>,
    class_sizes: &[u64],
    cluster_sizes: &[u64],
) -> f64 {
    // Both labellings one block (or nothing to compare): a perfect match.
    if class_sizes.len() == cluster_sizes.len() && class_sizes.len() <= 1 {
        return 1.0;
    }
    let total = n as f64;
    let mi: f64 = cells
        .iter()
        .map(|(&(a, b), &count)| {
            let count = count as f64;
            let expected = class_sizes[a] as f64 * cluster_sizes[b] as f64;
            count / total * (total * count / expected).ln()
        })
        .sum();
    let mi = mi.max(0.0);
    if mi == 0.0 {
        return 0.0;
    }
    let normaliser = 0.5 * (entropy(n, class_sizes) + entropy(n, cluster_sizes));
    mi / normaliser
}

fn ari(
    n: usize,
    cells: &HashMap<(usize, usize), u64>,
    class_sizes: &[u64],
    cluster_sizes: &[u64],
) -> f64 {
    // Pair counts, exact in i128 (n^2 overflows u64 beyond four billion items).
    let square = |x: u64| i128::from(x) * i128::from(x);
    let n = n as i128;
    let sum_cells: i128 = cells.values().map(|&c| square(c)).sum();
    let sum_classes: i128 = class_sizes.iter().map(|&s| square(s)).sum();
    let sum_clusters: i128 = cluster_sizes.iter().map(|&s| square(s)).sum();
    let together_both = sum_cells - n;
    let together_cluster_only = sum_clusters - sum_cells;
    let together_class_only = sum_classes - sum_cells;
    let apart_both = n * n - together_cluster_only - together_class_only - sum_cells;
    if together_cluster_only == 0 && together_class_only == 0 {
        return 1.0;
    }
    let (tp, tn) = (together_both as f64, apart_both as f64);
    let (fp, fn_) = (together_cluster_only as f64, together_class_only as f64);
    2.0 * (tp * tn - fn_ * fp) / ((tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_partitions_agree_perfectly_whatever_the_names() {
        let truth = ["a", "a", "b", "b", "c"];
        let clusters = [7, 7, 3, 3, 9];
        let a = agreement(&truth, &clusters);
        assert!((a.nmi - 1.0).abs() < 1e-12);
        assert_eq!(a.ari, 1.0);
        assert_eq!(a.purity, 1.0);
        assert_eq!((a.classes, a.clusters, a.utterances), (3, 3, 5));
    }

    #[test]
    fn one_cluster_for_everything() {
        let a = agreement(&["a", "a", "b", "b"], &[0, 0, 0, 0]);
        assert_eq!(a.nmi, 0.0);
        assert_eq!(a.ari, 0.0);
        assert_eq!(a.purity, 0.5);
    }
}
