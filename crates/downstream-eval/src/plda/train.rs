//! `downstream-eval plda-train`: the labels (true speakers of a manifest, or the kept
//! clusters of a pseudo-label file), the embeddings that carry one, and the model file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use data_manifest::{PseudoLabels, UtteranceManifest};
use ndarray::Axis;

use super::{Classes, PldaConfig, PldaModel};
use crate::error::{EvalError, Result};
use crate::inputs::EmbeddingFile;

/// Where the training labels come from.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSource {
    /// The `speaker` column of an utterance manifest.
    Manifest(PathBuf),
    /// The kept rows of `pseudo_labels.parquet` (their cluster is the class).
    PseudoLabels(PathBuf),
}

impl LabelSource {
    /// Label by utterance id.
    pub fn read(&self) -> Result<HashMap<String, String>> {
        Ok(match self {
            LabelSource::Manifest(path) => UtteranceManifest::read(path)?
                .utterances
                .into_iter()
                .filter_map(|u| Some((u.utt_id, u.speaker?)))
                .collect(),
            LabelSource::PseudoLabels(path) => PseudoLabels::read(path)?
                .labels
                .into_iter()
                .filter(|l| l.kept && l.cluster >= 0)
                .map(|l| (l.utt_id, l.cluster.to_string()))
                .collect(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            LabelSource::Manifest(p) | LabelSource::PseudoLabels(p) => p,
        }
    }
}

/// The rows of an embeddings file (`utt_ids`) whose utterance has a label in a class of at
/// least `min_class_size` such rows, with those classes.
pub fn labelled_rows(
    utt_ids: &[String],
    labels: &HashMap<String, String>,
    min_class_size: usize,
) -> (Vec<usize>, Classes) {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for id in utt_ids {
        if let Some(l) = labels.get(id) {
            *count.entry(l.as_str()).or_default() += 1;
        }
    }
    let (rows, names): (Vec<usize>, Vec<&str>) = utt_ids
        .iter()
        .enumerate()
        .filter_map(|(row, id)| {
            let l = labels.get(id)?.as_str();
            (count[l] >= min_class_size).then_some((row, l))
        })
        .unzip();
    (rows, Classes::new(&names))
}

/// Trains a model on `embeddings` with the labels of `labels` and writes it to `out`.
pub fn run(
    embeddings: &Path,
    labels: &LabelSource,
    config: &PldaConfig,
    out: &Path,
) -> Result<PldaModel> {
    let file = EmbeddingFile::read(embeddings)?;
    let by_utterance = labels.read()?;
    let (rows, classes) = labelled_rows(
        &file.embeddings.utt_ids,
        &by_utterance,
        config.min_class_size.max(1),
    );
    let dim = config.lda_dim.unwrap_or(file.dim());
    if classes.count() < 2 || rows.len() <= classes.count() + dim {
        return Err(EvalError::invalid(
            labels.path(),
            format!(
                "{} labelled embeddings in {} classes of at least {} (of {} embeddings in {}): \
                 PLDA of dimension {dim} needs at least 2 classes and more vectors than \
                 classes + dimension",
                rows.len(),
                classes.count(),
                config.min_class_size,
                file.embeddings.utt_ids.len(),
                embeddings.display()
            ),
        ));
    }
    if let Some(lda) = config.lda_dim
        && (lda == 0 || lda >= classes.count() || lda > file.dim())
    {
        return Err(EvalError::invalid(
            labels.path(),
            format!(
                "lda_dim = {lda} must be at least 1, below the {} classes and at most the \
                 embedding dimension {}",
                classes.count(),
                file.dim()
            ),
        ));
    }
    let x = file
        .embeddings
        .vectors
        .select(Axis(0), &rows)
        .mapv(f64::from);
    let source = format!(
        "{} with labels of {}",
        embeddings.display(),
        labels.path().display()
    );
    let model = PldaModel::fit(x.view(), &classes, config, source)
        .map_err(|e| EvalError::invalid(embeddings, e.to_string()))?;
    model.write(out)?;
    tracing::info!(
        "PLDA trained on {} vectors of {} classes ({} -> {} dimensions, y_dim {}), written to {}",
        rows.len(),
        classes.count(),
        file.dim(),
        model.preprocess.output_dim(),
        model.plda.loading.ncols(),
        out.display()
    );
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_classes_and_unlabelled_rows_are_left_out() {
        let ids: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
        let labels: HashMap<String, String> =
            [("a", "x"), ("b", "y"), ("c", "x"), ("e", "y"), ("d", "z")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into();
        let (rows, classes) = labelled_rows(&ids, &labels, 2);
        assert_eq!(rows, [0, 1, 2, 4]);
        assert_eq!(classes.of_row, [0, 1, 0, 1]);
    }
}
