//! The PLDA back-end (Kaldi, hyperion, wespeaker): a preprocessing chain (centring, optional
//! LDA, whitening, length normalisation) and a simplified PLDA trained by EM on labelled or
//! pseudo-labelled embeddings, saved as one JSON file and applied to trials as
//! log-likelihood ratios. The pseudo-labeler's PLDA-AHC clustering uses the same code.

pub mod classes;
pub mod linalg;
mod matrix_serde;
pub mod preprocess;
pub mod splda;
pub mod train;

use std::path::Path;

use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
pub use classes::Classes;
pub use linalg::LinalgError;
pub use preprocess::Preprocessor;
pub use splda::{Scorer, Splda};

/// Schema tag of a PLDA model file.
pub const SCHEMA: &str = "plda/1";

/// How a PLDA back-end is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PldaConfig {
    /// Project with LDA to this dimension after centring (none: keep the dimension).
    pub lda_dim: Option<usize>,
    /// Dimension of the speaker factor (clamped to the data dimension; `ssl.v1`: 100).
    pub y_dim: usize,
    /// EM iterations.
    pub iterations: usize,
    /// Length-normalise the whitened vectors (to radius sqrt(dim)).
    pub length_norm: bool,
    /// Classes with fewer training vectors are left out.
    pub min_class_size: usize,
}

impl Default for PldaConfig {
    fn default() -> Self {
        PldaConfig {
            lda_dim: None,
            y_dim: 100,
            iterations: 10,
            length_norm: true,
            min_class_size: 2,
        }
    }
}

/// A trained back-end: what the file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PldaModel {
    pub schema: String,
    pub preprocess: Preprocessor,
    pub plda: Splda,
    pub training: TrainingSummary,
}

/// What the model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    pub config: PldaConfig,
    pub vectors: usize,
    pub classes: usize,
    /// Where the embeddings and labels came from, in words.
    pub source: String,
}

impl PldaModel {
    /// Fits the chain and the PLDA on the rows of `x` with their `labels` (dense classes,
    /// each at least `min_class_size` large; see [`train::labelled_rows`]).
    pub fn fit(
        x: ArrayView2<f64>,
        classes: &Classes,
        config: &PldaConfig,
        source: String,
    ) -> std::result::Result<Self, LinalgError> {
        let preprocess = Preprocessor::fit(x, classes, config.lda_dim, config.length_norm)?;
        let z = preprocess.apply(x);
        let plda = Splda::train(z.view(), classes, config.y_dim, config.iterations)?;
        Ok(PldaModel {
            schema: SCHEMA.to_owned(),
            preprocess,
            plda,
            training: TrainingSummary {
                config: config.clone(),
                vectors: x.nrows(),
                classes: classes.count(),
                source,
            },
        })
    }

    /// Reads a model file, checking its schema and shapes.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| stage_kit::FileError::new(path, source))?;
        let model: PldaModel = serde_json::from_str(&text)
            .map_err(|e| EvalError::invalid(path, format!("not a PLDA model file: {e}")))?;
        if model.schema != SCHEMA {
            return Err(EvalError::invalid(
                path,
                format!("PLDA model schema {:?}, expected {SCHEMA:?}", model.schema),
            ));
        }
        let (p, s) = (&model.preprocess, &model.plda);
        let consistent = p.projection.ncols() == p.input_dim()
            && s.dim() == p.output_dim()
            && s.loading.nrows() == s.dim()
            && s.within.dim() == (s.dim(), s.dim());
        if !consistent {
            return Err(EvalError::invalid(
                path,
                "PLDA model matrices of inconsistent shapes",
            ));
        }
        Ok(model)
    }

    /// Writes the model atomically as JSON.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string(self)
            .map_err(|e| EvalError::invalid(path, format!("serialising the model: {e}")))?;
        text.push('\n');
        stage_kit::write_bytes_atomically(path, text.as_bytes())?;
        Ok(())
    }

    /// Embedding dimension the model expects.
    pub fn input_dim(&self) -> usize {
        self.preprocess.input_dim()
    }

    /// The scoring form, and the projections (`eta`) of the rows of `x` (raw embeddings).
    pub fn project(
        &self,
        x: ArrayView2<f32>,
    ) -> std::result::Result<(Scorer, Array2<f64>), LinalgError> {
        let scorer = Scorer::new(&self.plda)?;
        let z = self.preprocess.apply(x.mapv(f64::from).view());
        let eta = scorer.project(z.view());
        Ok((scorer, eta))
    }
}
