//! `cluster_report.json`: the resolved configuration and what each step did: PCA, the
//! k-means restarts with their inertia per iteration, merging, clean-up, cluster sizes, and
//! (when true speakers are known) agreement with them.

use serde::Serialize;

use crate::cleanup::CleanupSummary;
use crate::config::ClusterConfig;
use crate::kmeans::Restart;
use crate::merge::MergeSummary;
use crate::metrics::Agreement;
use crate::pca::PcaSummary;
use crate::plda_ahc::PldaAhcSummary;
use crate::preprocess::Rejected;

/// Schema tag of the report.
pub const SCHEMA: &str = "cluster_report/1";

/// Everything a clustering run reports.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterReport {
    pub schema: &'static str,
    pub tool_version: &'static str,
    pub config: ClusterConfig,
    pub input: InputSummary,
    pub pca: Option<PcaSummary>,
    pub kmeans: KMeansSummary,
    pub merge: MergeSummary,
    /// PLDA-AHC, when the method is `plda`.
    pub plda: Option<PldaAhcSummary>,
    pub cleanup: CleanupSummary,
    pub size_histogram: SizeHistograms,
    /// Agreement with the true speakers, when a manifest with speakers was given.
    pub diagnostics: Option<Diagnostics>,
    pub seconds: f64,
}

/// The embeddings that went in.
#[derive(Debug, Clone, Serialize)]
pub struct InputSummary {
    pub embeddings: String,
    /// The producer's description stored in the embeddings file.
    pub description: String,
    pub utterances: usize,
    pub dim: usize,
    /// Utterances that could not be clustered, with the reason; they are written with
    /// cluster -1 and `kept = false`.
    pub rejected: Vec<Rejected>,
}

/// The k-means step.
#[derive(Debug, Clone, Serialize)]
pub struct KMeansSummary {
    pub backend: String,
    /// Where nearest-centroid searches ran (`cpu`, `cuda:0`).
    pub device: String,
    pub k: usize,
    pub points: usize,
    pub dim: usize,
    pub best_restart: usize,
    pub final_inertia: f64,
    /// Inertia per iteration of the best restart.
    pub inertia_per_iteration: Vec<f64>,
    pub restarts: Vec<Restart>,
    pub seconds: f64,
}

/// Cluster sizes before and after the clean-up.
#[derive(Debug, Clone, Serialize)]
pub struct SizeHistograms {
    pub before_cleanup: Vec<SizeBin>,
    pub after_cleanup: Vec<SizeBin>,
}

/// Clusters with between `min` and `max` utterances (inclusive).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SizeBin {
    pub min: usize,
    pub max: usize,
    pub clusters: usize,
    pub utterances: usize,
}

/// Agreement of the clusters with the true speakers at three points of the recipe, and of
/// the k-means clusters with the recording sessions.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostics {
    pub manifest: String,
    /// Clustered utterances whose speaker the manifest knows (the others are left out).
    pub utterances_with_speaker: usize,
    /// The k-means clusters.
    pub kmeans: Agreement,
    /// The final clusters (after merging and reassignment), all utterances.
    pub assigned: Agreement,
    /// The final clusters, kept utterances only: the labels fine-tuning trains on.
    pub kept: Agreement,
    /// The k-means clusters against the recording sessions (speaker + session), when the
    /// manifest has them. Agreement above that with the speakers means the clusters split
    /// speakers by recording condition, which merging has to undo.
    pub kmeans_sessions: Option<Agreement>,
    /// Agreement after every step (`kmeans`, `cosine_ahc`, `plda_ahc`, `assigned`, `kept`),
    /// so one can see which step joins (or splits) a speaker's sessions.
    pub steps: Vec<StepAgreement>,
}

/// Agreement of one step's clusters with the speakers and with the recording sessions.
#[derive(Debug, Clone, Serialize)]
pub struct StepAgreement {
    pub step: &'static str,
    pub speakers: Agreement,
    pub sessions: Option<Agreement>,
}

/// Histogram of cluster sizes in power-of-two bins: 1, 2, 3-4, 5-8, 9-16, ...
pub fn size_histogram(sizes: &[usize]) -> Vec<SizeBin> {
    let mut bins: Vec<SizeBin> = Vec::new();
    for &size in sizes.iter().filter(|&&s| s > 0) {
        let max = size.next_power_of_two();
        let min = if max <= 2 { max } else { max / 2 + 1 };
        match bins.iter_mut().find(|b| b.max == max) {
            Some(bin) => {
                bin.clusters += 1;
                bin.utterances += size;
            }
            None => bins.push(SizeBin {
                min,
                max,
                clusters: 1,
                utterances: size,
            }),
        }
    }
    bins.sort_by_key(|b| b.max);
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_are_powers_of_two() {
        let bins = size_histogram(&[1, 2, 3, 4, 5, 8, 9, 0, 1]);
        let shape: Vec<(usize, usize, usize, usize)> = bins
            .iter()
            .map(|b| (b.min, b.max, b.clusters, b.utterances))
            .collect();
        assert_eq!(
            shape,
            [
                (1, 1, 2, 2),
                (2, 2, 1, 2),
                (3, 4, 2, 7),
                (5, 8, 2, 13),
                (9, 16, 1, 9)
            ]
        );
    }
}
