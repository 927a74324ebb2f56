//! Names of the files a stage leaves in its folder of a run, which the runner (xtask) reads
//! back and hands to later stages: one definition for both sides.

/// A trained model (pretraining, fine-tuning) or a bundled inference model.
pub const MODEL: &str = "model.safetensors";
/// A stage's headline metrics and provenance, as JSON (training, evaluation, the pipeline).
pub const REPORT: &str = "report.json";
/// The same report as Markdown tables.
pub const REPORT_MD: &str = "report.md";
/// The pseudo-labels a clustering round writes.
pub const PSEUDO_LABELS: &str = "pseudo_labels.parquet";
/// What each step of a clustering round did.
pub const CLUSTER_REPORT: &str = "cluster_report.json";
/// One score per trial, written by speaker verification.
pub const SCORES: &str = "scores.txt";
/// A training run's curves (loss, collapse monitor, validation), beside its step log.
pub const CURVES_SVG: &str = "curves.svg";
pub const CURVES_PNG: &str = "curves.png";

/// The manifest of a data reference (`key`: corpus, part and split joined).
pub fn manifest(key: &str) -> String {
    format!("{key}.parquet")
}

/// An HDF5 file of a data reference: its feature cache, or its embeddings.
pub fn h5(key: &str) -> String {
    format!("{key}.h5")
}

/// The trial list made for a verification set.
pub fn trials(set: &str) -> String {
    format!("{set}.trials.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(manifest("vox-dev"), "vox-dev.parquet");
        assert_eq!(h5("vox-dev"), "vox-dev.h5");
        assert_eq!(trials("o"), "o.trials.parquet");
    }
}
