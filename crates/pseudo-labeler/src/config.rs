//! The clustering recipe as a serde struct: every knob has a default (the authors' `ssl.v1`
//! recipe where it names one), unknown keys are errors, and the resolved value is written
//! into `cluster_report.json`. A pipeline TOML embeds it as a table.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use stage_kit::DeviceSpec;

use crate::error::{Error, Result};
use crate::plda_ahc::PldaAhcConfig;

/// How pseudo-labels are made from embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Project the (length-normalised) embeddings with PCA before clustering.
    pub pca: bool,
    /// Keep the fewest principal components whose explained variance exceeds this share.
    pub pca_variance: f64,
    /// Number of k-means clusters; when absent, `k_fraction` of the utterance count.
    pub k: Option<usize>,
    /// Number of clusters as a fraction of the number of utterances (`ssl.v1`: N/4).
    pub k_fraction: f64,
    /// How each k-means restart picks its initial centroids.
    pub init: Init,
    /// Independent k-means runs from different initial centroids; the lowest inertia wins.
    pub restarts: usize,
    /// Upper bound on Lloyd iterations per restart.
    pub max_iterations: usize,
    /// A restart has converged when the inertia changes by less than this share between
    /// two iterations.
    pub tolerance: f64,
    /// Which k-means implementation runs the iterations.
    pub backend: Backend,
    /// Where nearest-centroid searches run.
    pub device: DeviceSpec,
    /// Merge k-means clusters whose centroids are more cosine-similar than `merge_threshold`.
    pub merge: bool,
    /// After cosine merging: stop (`cosine`), or go on with PLDA-AHC (`plda`, `ssl.v1`).
    pub method: Method,
    /// PLDA-AHC settings, used when `method = "plda"`.
    pub plda: PldaAhcConfig,
    /// Cosine similarity above which two cluster centroids are merged (`ssl.v1`: 0.8).
    pub merge_threshold: f32,
    /// Clusters with fewer kept members than this are dropped.
    pub min_cluster_size: usize,
    /// Members less cosine-similar than this to their cluster centroid are dropped.
    pub min_similarity: f32,
    /// Members whose similarity to their centroid exceeds that to the second-closest
    /// centroid by less than this are dropped as ambiguous.
    pub min_margin: f32,
    /// The stage fails when more than this share of the embeddings is unusable (NaN,
    /// infinite or all-zero vectors).
    pub max_reject_share: f64,
    /// Seed of every random stream (k-means initialisation).
    pub seed: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            pca: true,
            pca_variance: 0.99,
            k: None,
            k_fraction: 0.25,
            init: Init::Random,
            restarts: 3,
            max_iterations: 100,
            tolerance: 1e-4,
            backend: Backend::Batched,
            device: DeviceSpec::Auto,
            merge: true,
            method: Method::Cosine,
            plda: PldaAhcConfig::default(),
            merge_threshold: 0.8,
            min_cluster_size: 3,
            min_similarity: 0.3,
            min_margin: 0.02,
            max_reject_share: 0.01,
            seed: 0,
        }
    }
}

/// How clusters are merged after k-means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Agglomerative merging of centroids by cosine similarity, then the cosine clean-up.
    Cosine,
    /// Cosine merging, then PLDA-AHC and the posterior clean-up.
    Plda,
}

/// Initial centroids of a k-means restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Init {
    /// k distinct points drawn uniformly (faiss' default; cheap at any scale).
    #[serde(rename = "random")]
    #[value(name = "random")]
    Random,
    /// k-means++ seeding (Arthur & Vassilvitskii 2007): better starts, but k sequential
    /// passes over the data, so meant for k up to a few thousand.
    #[serde(rename = "kmeans++")]
    #[value(name = "kmeans++")]
    KMeansPlusPlus,
}

/// The k-means implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Lloyd iterations with GEMM assignment in blocks (ndarray + rayon on the CPU, libtorch
    /// on CUDA): the one for VoxCeleb-scale data.
    Batched,
    /// linfa-clustering's KMeans, one of its iterations at a time: the reference.
    Linfa,
}

impl fmt::Display for Init {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Init::Random => "random",
            Init::KMeansPlusPlus => "kmeans++",
        })
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Batched => "batched",
            Backend::Linfa => "linfa",
        })
    }
}

impl ClusterConfig {
    /// Reads a TOML file holding this table.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| stage_kit::FileError::new(path, source))?;
        let config: ClusterConfig = toml::from_str(&text).map_err(|e| Error::Config {
            path: Some(path.to_path_buf()),
            message: e.to_string(),
        })?;
        config.validate().map_err(|e| match e {
            Error::Config { message, .. } => Error::Config {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Checks ranges that serde cannot express.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| {
            Err(Error::Config {
                path: None,
                message,
            })
        };
        if !(self.pca_variance > 0.0 && self.pca_variance <= 1.0) {
            return fail(format!(
                "pca_variance must be in (0, 1], got {}",
                self.pca_variance
            ));
        }
        if self.k == Some(0) {
            return fail("k must be at least 1".to_owned());
        }
        if !(self.k_fraction > 0.0 && self.k_fraction <= 1.0) {
            return fail(format!(
                "k_fraction must be in (0, 1], got {}",
                self.k_fraction
            ));
        }
        if self.restarts == 0 || self.max_iterations == 0 {
            return fail("restarts and max_iterations must be at least 1".to_owned());
        }
        if !(self.tolerance >= 0.0 && self.tolerance.is_finite()) {
            return fail(format!(
                "tolerance must be finite and >= 0, got {}",
                self.tolerance
            ));
        }
        for (name, value) in [
            ("merge_threshold", self.merge_threshold),
            ("min_similarity", self.min_similarity),
        ] {
            if !(-1.0..=1.0).contains(&value) {
                return fail(format!(
                    "{name} is a cosine similarity in [-1, 1], got {value}"
                ));
            }
        }
        if !(0.0..=2.0).contains(&self.min_margin) {
            return fail(format!(
                "min_margin must be in [0, 2], got {}",
                self.min_margin
            ));
        }
        let p = &self.plda;
        if p.min_train_size < 2 || p.min_train_size > p.max_train_size {
            return fail(format!(
                "plda.min_train_size must be at least 2 and at most plda.max_train_size, got {} and {}",
                p.min_train_size, p.max_train_size
            ));
        }
        if p.y_dim == 0 || p.iterations == 0 || p.passes == 0 || !p.threshold.is_finite() {
            return fail("plda.y_dim, plda.iterations and plda.passes must be at least 1, plda.threshold finite".to_owned());
        }
        if !(0.0..=1.0).contains(&p.min_posterior) {
            return fail(format!(
                "plda.min_posterior must be in [0, 1], got {}",
                p.min_posterior
            ));
        }
        if !(0.0..=1.0).contains(&self.max_reject_share) {
            return fail(format!(
                "max_reject_share must be in [0, 1], got {}",
                self.max_reject_share
            ));
        }
        Ok(())
    }

    /// The number of k-means clusters for `n` utterances: `k`, else `k_fraction * n`
    /// rounded, at least 1 and at most `n`.
    pub fn clusters_for(&self, n: usize) -> usize {
        let k = self
            .k
            .unwrap_or_else(|| (self.k_fraction * n as f64).round() as usize);
        k.clamp(1, n.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_and_unknown_keys_fail() {
        let config = ClusterConfig::default();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(toml::from_str::<ClusterConfig>(&text).unwrap(), config);

        let partial: ClusterConfig = toml::from_str(
            "k = 40\ninit = \"kmeans++\"\nbackend = \"linfa\"\nmethod = \"plda\"\n[plda]\nthreshold = 5.0",
        )
        .unwrap();
        assert_eq!(partial.method, Method::Plda);
        assert_eq!(partial.plda.threshold, 5.0);
        assert_eq!(partial.plda.max_train_size, 50);
        let err = toml::from_str::<ClusterConfig>("[plda]\nthreshhold = 1.0").unwrap_err();
        assert!(
            err.to_string().contains("unknown field `threshhold`"),
            "{err}"
        );
        assert_eq!(partial.k, Some(40));
        assert_eq!(partial.init, Init::KMeansPlusPlus);
        assert_eq!(partial.backend, Backend::Linfa);
        assert_eq!(partial.merge_threshold, 0.8);

        let err = toml::from_str::<ClusterConfig>("kk = 3").unwrap_err();
        assert!(err.to_string().contains("unknown field `kk`"), "{err}");
    }

    #[test]
    fn cluster_count_and_validation() {
        let mut config = ClusterConfig::default();
        assert_eq!(config.clusters_for(1000), 250);
        assert_eq!(config.clusters_for(1), 1);
        config.k = Some(5000);
        assert_eq!(config.clusters_for(100), 100);
        config.validate().unwrap();
        config.merge_threshold = 1.5;
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("merge_threshold")
        );
    }
}
