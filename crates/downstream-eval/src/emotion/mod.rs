//! Emotion recognition on frozen embeddings: a classifier (multinomial logistic regression
//! or a small MLP) on standardised embeddings, its regularisation chosen inside each
//! training part, evaluated on speaker/session-independent folds; micro-F1, macro-F1 and
//! UAR per fold and pooled, a confusion matrix, predictions and a report.

pub mod classifier;
pub mod confusion_plot;
pub mod folds;
pub mod lbfgs;
pub mod logistic;
pub mod metrics;
pub mod mlp;
pub mod standardize;

use std::path::{Path, PathBuf};
use std::time::Instant;

use data_manifest::UtteranceManifest;
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use stage_kit::DeviceSpec;
use stage_kit::progress::Progress;

use crate::error::{EvalError, Result};
use crate::inputs::EmbeddingFile;
use crate::report::{self, Provenance, markdown_table};
use classifier::{ClassWeight, Classifier, ClassifierKind, LogisticConfig};
use folds::{FoldPlan, FoldSource, LabelledSet, OuterFold, Split, SplitNames};
use metrics::{ClassificationScores, ConfusionMatrix};
use mlp::MlpConfig;
use standardize::Standardizer;

/// The metric that chooses the hyperparameter on the selection splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SelectionMetric {
    MicroF1,
    MacroF1,
    Uar,
}

impl SelectionMetric {
    fn of(self, scores: &ClassificationScores) -> f64 {
        match self {
            SelectionMetric::MicroF1 => scores.micro_f1,
            SelectionMetric::MacroF1 => scores.macro_f1,
            SelectionMetric::Uar => scores.uar,
        }
    }
}

/// Settings of `downstream-eval emotion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmotionConfig {
    pub folds: FoldSource,
    /// `split` values of the parts, for `folds = "split"`.
    pub split_names: SplitNames,
    pub classifier: ClassifierKind,
    pub class_weight: ClassWeight,
    pub selection_metric: SelectionMetric,
    /// Most selection splits per outer fold (groups are merged beyond that).
    pub inner_folds: usize,
    pub seed: u64,
    pub logistic: LogisticConfig,
    pub mlp: MlpConfig,
    /// Where the MLP classifier trains; the pipeline writes its own device here.
    pub device: DeviceSpec,
}

impl Default for EmotionConfig {
    fn default() -> Self {
        EmotionConfig {
            folds: FoldSource::Fold,
            split_names: SplitNames::default(),
            classifier: ClassifierKind::Logistic,
            class_weight: ClassWeight::Balanced,
            selection_metric: SelectionMetric::MicroF1,
            inner_folds: 5,
            seed: 0,
            logistic: LogisticConfig::default(),
            mlp: MlpConfig::default(),
            device: DeviceSpec::Cpu,
        }
    }
}

/// Input files of `downstream-eval emotion`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmotionInputs {
    pub embeddings: PathBuf,
    /// `utterances.parquet` with `emotion` labels and `fold` / `split`.
    pub manifest: PathBuf,
}

/// Score of one hyperparameter value on the selection splits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SelectionPoint {
    pub value: f64,
    pub score: f64,
}

/// Results of one outer fold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldReport {
    pub fold: String,
    pub num_train: usize,
    pub num_test: usize,
    pub hyperparameter: &'static str,
    pub chosen: f64,
    pub selection: Vec<SelectionPoint>,
    #[serde(flatten)]
    pub scores: ClassificationScores,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// `report.json` of `downstream-eval emotion`: headline metrics first (pooled over the
/// test folds), then the fold means, folds, confusion matrix, inputs and config.
#[derive(Debug, Clone, Serialize)]
pub struct EmotionReport {
    pub task: &'static str,
    pub micro_f1: f64,
    pub macro_f1: f64,
    pub uar: f64,
    pub micro_f1_fold_mean: f64,
    pub macro_f1_fold_mean: f64,
    pub uar_fold_mean: f64,
    pub classes: Vec<String>,
    /// Test examples per class (every labelled utterance once in `fold` mode).
    pub class_counts: Vec<usize>,
    pub num_evaluated: usize,
    pub num_unlabelled: usize,
    /// `confusion[true][predicted]`, pooled over folds.
    pub confusion: Vec<Vec<u64>>,
    pub folds: Vec<FoldReport>,
    #[serde(flatten)]
    pub run: Provenance<EmotionInputs, EmotionConfig>,
}

/// One test prediction.
struct Prediction {
    index: usize,
    fold: String,
    probabilities: Vec<f64>,
}

/// Trains and tests a classifier on splits of one labelled set.
struct Evaluation<'a> {
    set: &'a LabelledSet,
    vectors: ArrayView2<'a, f32>,
    classifier: Classifier<'a>,
    seed: u64,
}

impl Evaluation<'_> {
    /// Class probabilities of `split.test` from models trained on `split.train`, one per
    /// hyperparameter value of `path`.
    fn predict(&self, split: &Split, path: &[f64], fold: &str) -> Result<Vec<Array2<f64>>> {
        let rows = |indices: &[usize]| -> Vec<usize> {
            indices.iter().map(|&i| self.set.rows[i]).collect()
        };
        let (train_rows, test_rows) = (rows(&split.train), rows(&split.test));
        let standardizer = Standardizer::fit(self.vectors, &train_rows);
        let labels: Vec<usize> = split.train.iter().map(|&i| self.set.labels[i]).collect();
        let seed = |value: f64| {
            stage_kit::rng::stream_seed(
                self.seed,
                &format!("emotion {fold} {} {value}", split.name),
            )
        };
        self.classifier.fit_predict_path(
            standardizer.transform(self.vectors, &train_rows).view(),
            &labels,
            standardizer.transform(self.vectors, &test_rows).view(),
            self.set.classes.len(),
            path,
            seed,
        )
    }

    fn confusion(&self, test: &[usize], probabilities: &Array2<f64>) -> ConfusionMatrix {
        let truth: Vec<usize> = test.iter().map(|&i| self.set.labels[i]).collect();
        ConfusionMatrix::new(self.set.classes.len(), &truth, &argmax_rows(probabilities))
    }

    /// Chooses the hyperparameter on the fold's selection splits, then trains on the whole
    /// training part and predicts the test part.
    fn run_fold(
        &self,
        fold: &OuterFold,
        metric: SelectionMetric,
    ) -> Result<(FoldReport, Vec<Prediction>)> {
        let (name, grid) = self.classifier.grid();
        let fold_name = &fold.split.name;
        let job = |split: &Split| self.predict(split, &grid, fold_name);
        // libtorch runs its own threads and a global seed: train MLPs one at a time.
        let paths: Vec<Vec<Array2<f64>>> = match self.classifier.kind {
            ClassifierKind::Logistic => {
                fold.selection.par_iter().map(job).collect::<Result<_>>()?
            }
            ClassifierKind::Mlp => fold.selection.iter().map(job).collect::<Result<_>>()?,
        };
        let mut selection = Vec::with_capacity(grid.len());
        for (g, &value) in grid.iter().enumerate() {
            let mut pooled = ConfusionMatrix::new(self.set.classes.len(), &[], &[]);
            for (s, split) in fold.selection.iter().enumerate() {
                pooled.add(&self.confusion(&split.test, &paths[s][g]));
            }
            selection.push(SelectionPoint {
                value,
                score: metric.of(&pooled.scores()),
            });
        }
        // Strongest regularisation first, so ties keep it.
        let chosen = selection
            .iter()
            .fold(None::<SelectionPoint>, |best, p| match best {
                Some(b) if b.score >= p.score => Some(b),
                _ => Some(*p),
            })
            .expect("a non-empty grid")
            .value;
        let probabilities = self
            .predict(&fold.split, &[chosen], fold_name)?
            .pop()
            .expect("one model");
        let confusion = self.confusion(&fold.split.test, &probabilities);
        let report = FoldReport {
            fold: fold_name.clone(),
            num_train: fold.split.train.len(),
            num_test: fold.split.test.len(),
            hyperparameter: name,
            chosen,
            selection,
            scores: confusion.scores(),
            confusion: confusion.counts,
        };
        let predictions = fold
            .split
            .test
            .iter()
            .zip(probabilities.rows())
            .map(|(&index, p)| Prediction {
                index,
                fold: fold_name.clone(),
                probabilities: p.to_vec(),
            })
            .collect();
        Ok((report, predictions))
    }
}

/// Index of the largest value (the first on ties).
fn argmax(values: &[f64]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &p)| {
            if p > best.1 { (i, p) } else { best }
        })
        .0
}

/// The predicted class of each row of class probabilities.
fn argmax_rows(probabilities: &Array2<f64>) -> Vec<usize> {
    probabilities
        .rows()
        .into_iter()
        .map(|row| argmax(&row.to_vec()))
        .collect()
}

impl EmotionConfig {
    /// Why these options cannot evaluate, if they cannot (the message names the key).
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.inner_folds < 2 {
            return Err(format!(
                "[eval_emotion] inner_folds = {}: must be at least 2",
                self.inner_folds
            ));
        }
        self.logistic
            .check()
            .map_err(|m| format!("[eval_emotion.logistic] {m}"))?;
        self.mlp
            .check()
            .map_err(|m| format!("[eval_emotion.mlp] {m}"))
    }
}

/// Evaluates and writes `predictions.csv`, `confusion.svg`, `confusion.png`, `report.json`
/// and `report.md` into `out_dir`.
pub fn run(
    inputs: &EmotionInputs,
    config: &EmotionConfig,
    out_dir: &Path,
) -> Result<EmotionReport> {
    let started = Instant::now();
    config
        .check()
        .map_err(|message| EvalError::invalid(&inputs.manifest, message))?;
    let embeddings = EmbeddingFile::read(&inputs.embeddings)?;
    let manifest = UtteranceManifest::read(&inputs.manifest)?;
    let set = LabelledSet::new(&manifest, &inputs.manifest, &embeddings)?;
    let plan = FoldPlan {
        source: config.folds,
        split_names: config.split_names.clone(),
        inner_folds: config.inner_folds,
        seed: config.seed,
    };
    let folds = plan.folds(&set, &inputs.manifest)?;
    let evaluation = Evaluation {
        set: &set,
        vectors: embeddings.embeddings.vectors.view(),
        classifier: Classifier {
            kind: config.classifier,
            class_weight: config.class_weight,
            logistic: &config.logistic,
            mlp: &config.mlp,
            device: feature_extract::device::resolve(config.device)?,
        },
        seed: config.seed,
    };
    tracing::info!(
        "{} labelled utterances, {} classes ({}), {} folds, {:?} classifier",
        set.len(),
        set.classes.len(),
        set.classes.join(", "),
        folds.len(),
        config.classifier
    );

    let mut progress = Progress::new("emotion folds", folds.len(), "fold");
    let mut fold_reports = Vec::new();
    let mut predictions = Vec::new();
    let mut pooled = ConfusionMatrix::new(set.classes.len(), &[], &[]);
    for fold in &folds {
        let (report, fold_predictions) = evaluation.run_fold(fold, config.selection_metric)?;
        tracing::info!(
            "fold {}: {} = {}, micro-F1 {:.4}, macro-F1 {:.4}, UAR {:.4}",
            report.fold,
            report.hyperparameter,
            report.chosen,
            report.scores.micro_f1,
            report.scores.macro_f1,
            report.scores.uar
        );
        pooled.add(&ConfusionMatrix {
            counts: report.confusion.clone(),
        });
        fold_reports.push(report);
        predictions.extend(fold_predictions);
        progress.update(1);
    }
    progress.finish();

    let outputs = report::output_paths(
        out_dir,
        &[
            ("predictions", "predictions.csv"),
            ("confusion_svg", "confusion.svg"),
            ("confusion_png", "confusion.png"),
        ],
    );
    write_predictions(&outputs["predictions"], &set, &predictions)?;
    let scores = pooled.scores();
    let plot = confusion_plot::ConfusionPlot {
        matrix: &pooled,
        classes: &set.classes,
        title: format!(
            "{}: micro-F1 {:.1} % over {} fold(s)",
            inputs
                .manifest
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            100.0 * scores.micro_f1,
            folds.len()
        ),
    };
    crate::plot::save(&plot, &outputs["confusion_svg"], &outputs["confusion_png"])?;

    let fold_mean = |f: fn(&ClassificationScores) -> f64| {
        fold_reports.iter().map(|r| f(&r.scores)).sum::<f64>() / fold_reports.len() as f64
    };
    let tested: Vec<usize> = predictions.iter().map(|p| p.index).collect();
    let report = EmotionReport {
        task: "emotion",
        micro_f1: scores.micro_f1,
        macro_f1: scores.macro_f1,
        uar: scores.uar,
        micro_f1_fold_mean: fold_mean(|s| s.micro_f1),
        macro_f1_fold_mean: fold_mean(|s| s.macro_f1),
        uar_fold_mean: fold_mean(|s| s.uar),
        class_counts: set.class_counts(&tested),
        classes: set.classes.clone(),
        num_evaluated: tested.len(),
        num_unlabelled: set.unlabelled,
        confusion: pooled.counts.clone(),
        folds: fold_reports,
        run: Provenance::new(inputs.clone(), config.clone(), outputs, started),
    };
    report::write(out_dir, &report, &markdown(&report))?;
    tracing::info!(
        "micro-F1 {:.4}, macro-F1 {:.4}, UAR {:.4} (pooled over {} folds)",
        report.micro_f1,
        report.macro_f1,
        report.uar,
        report.folds.len()
    );
    Ok(report)
}

/// `utt_id,fold,emotion,predicted,p_<class>...`, one line per test prediction.
fn write_predictions(path: &Path, set: &LabelledSet, predictions: &[Prediction]) -> Result<()> {
    let csv_error = |e: csv::Error| EvalError::invalid(path, format!("writing CSV: {e}"));
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header = vec![
        "utt_id".to_owned(),
        "fold".into(),
        "emotion".into(),
        "predicted".into(),
    ];
    header.extend(set.classes.iter().map(|c| format!("p_{c}")));
    writer.write_record(&header).map_err(csv_error)?;
    for p in predictions {
        let best = argmax(&p.probabilities);
        let mut record = vec![
            set.utt_ids[p.index].clone(),
            p.fold.clone(),
            set.classes[set.labels[p.index]].clone(),
            set.classes[best].clone(),
        ];
        record.extend(p.probabilities.iter().map(|v| format!("{v:.6}")));
        writer.write_record(&record).map_err(csv_error)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| EvalError::invalid(path, format!("writing CSV: {e}")))?;
    Ok(stage_kit::write_bytes_atomically(path, &bytes)?)
}

fn markdown(report: &EmotionReport) -> String {
    let pct = |x: f64| format!("{:.2}", 100.0 * x);
    let headline = markdown_table(
        &["", "micro-F1 (%)", "macro-F1 (%)", "UAR (%)"],
        &[
            vec![
                "pooled over folds".into(),
                pct(report.micro_f1),
                pct(report.macro_f1),
                pct(report.uar),
            ],
            vec![
                "mean of folds".into(),
                pct(report.micro_f1_fold_mean),
                pct(report.macro_f1_fold_mean),
                pct(report.uar_fold_mean),
            ],
        ],
    );
    let hyper = report.folds.first().map_or("", |f| f.hyperparameter);
    let folds = markdown_table(
        &[
            "fold",
            "train",
            "test",
            hyper,
            "micro-F1 (%)",
            "macro-F1 (%)",
            "UAR (%)",
        ],
        &report
            .folds
            .iter()
            .map(|f| {
                vec![
                    f.fold.clone(),
                    f.num_train.to_string(),
                    f.num_test.to_string(),
                    format!("{}", f.chosen),
                    pct(f.scores.micro_f1),
                    pct(f.scores.macro_f1),
                    pct(f.scores.uar),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let mut header = vec!["true \\ predicted"];
    header.extend(report.classes.iter().map(String::as_str));
    let confusion = markdown_table(
        &header,
        &report
            .classes
            .iter()
            .zip(&report.confusion)
            .map(|(c, row)| {
                std::iter::once(c.clone())
                    .chain(row.iter().map(u64::to_string))
                    .collect()
            })
            .collect::<Vec<_>>(),
    );
    format!(
        "# Emotion recognition: {}\n\n{} classifier ({} class weights), {} folds from the `{}` column, \
         {} evaluated utterances.\n\n{}\n## Folds\n\n{}\n## Confusion matrix (pooled)\n\n{}\n\
         Picture: `confusion.svg`, `confusion.png`; predictions: `predictions.csv`.\n",
        report.run.inputs.manifest.display(),
        match report.run.config.classifier {
            ClassifierKind::Logistic => "Multinomial logistic-regression",
            ClassifierKind::Mlp => "MLP",
        },
        match report.run.config.class_weight {
            ClassWeight::Balanced => "balanced",
            ClassWeight::None => "no",
        },
        report.folds.len(),
        match report.run.config.folds {
            FoldSource::Fold => "fold",
            FoldSource::Split => "split",
        },
        report.num_evaluated,
        headline,
        folds,
        confusion,
    )
}

#[cfg(test)]
mod tests {
    use super::EmotionConfig;

    #[test]
    fn settings_that_cannot_fit_are_refused_by_key() {
        assert_eq!(EmotionConfig::default().check(), Ok(()));
        let refused = |edit: fn(&mut EmotionConfig)| {
            let mut config = EmotionConfig::default();
            edit(&mut config);
            config.check().unwrap_err()
        };
        for (edit, expected) in [
            (
                (|c: &mut EmotionConfig| c.logistic.c_grid.clear()) as fn(&mut EmotionConfig),
                "[eval_emotion.logistic] c_grid.len() = 0: must be at least 1",
            ),
            (
                |c| c.logistic.c_grid = vec![1.0, f64::NAN],
                "[eval_emotion.logistic] c_grid[_] = NaN: must be a finite number > 0",
            ),
            (
                |c| c.logistic.max_iterations = 0,
                "[eval_emotion.logistic] max_iterations = 0",
            ),
            (
                |c| c.mlp.batch_size = 0,
                "[eval_emotion.mlp] batch_size = 0",
            ),
            (|c| c.mlp.hidden = 0, "[eval_emotion.mlp] hidden = 0"),
            (|c| c.mlp.epochs = 0, "[eval_emotion.mlp] epochs = 0"),
            (
                |c| c.mlp.dropout = 1.5,
                "[eval_emotion.mlp] dropout = 1.5: must be a finite number in [0, 1)",
            ),
            (
                |c| c.mlp.learning_rate = -1.0,
                "[eval_emotion.mlp] learning_rate = -1",
            ),
        ] {
            let err = refused(edit);
            assert!(err.starts_with(expected), "{err}");
        }
    }
}
