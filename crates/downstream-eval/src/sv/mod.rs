//! Speaker verification on frozen embeddings: cosine (optionally with mean subtraction and
//! length normalisation) or PLDA scoring of a trial list, either with AS-norm, EER / minDCF,
//! a DET plot, the scores in Kaldi/VoxCeleb form and a report.

pub mod asnorm;
pub mod backend;
pub mod calibration;
pub mod det_plot;
pub mod detection;
pub mod preprocess;
pub mod score_file;
pub mod scoring;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use data_manifest::TrialList;
use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::inputs::EmbeddingFile;
use crate::plda::PldaModel;
use crate::report::{self, Provenance, markdown_table};
pub use backend::Backend;
use backend::Scoring;
use detection::{MinDcf, Roc};
use preprocess::Preprocess;
use scoring::IndexedTrials;

/// Scoring and metric settings of `downstream-eval sv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SvConfig {
    /// Cosine similarity or PLDA log-likelihood ratios (the model file is an input).
    pub backend: Backend,
    /// Cosine scoring: L2-normalise embeddings before the training mean is estimated and subtracted.
    pub length_norm: bool,
    /// AS-norm: how many of the highest cohort scores describe each utterance.
    pub asnorm_top: usize,
    /// Target priors of the reported minDCF operating points.
    pub p_targets: Vec<f64>,
    pub c_miss: f64,
    pub c_fa: f64,
    /// Effective target prior of the score-to-LLR calibration (`calibration.json`).
    pub calibration_prior: f64,
}

impl Default for SvConfig {
    fn default() -> Self {
        SvConfig {
            backend: Backend::Cosine,
            length_norm: false,
            asnorm_top: 300,
            p_targets: vec![0.01, 0.05],
            c_miss: 1.0,
            c_fa: 1.0,
            calibration_prior: 0.5,
        }
    }
}

impl SvConfig {
    /// Why these settings cannot score or measure, if they cannot (names the key).
    pub fn check(&self) -> std::result::Result<(), String> {
        use stage_kit::config::{at_least_one, finite_in};
        let at = |m: String| format!("[eval_sv] {m}");
        at_least_one(&[("asnorm_top", self.asnorm_top as i64)]).map_err(at)?;
        let mut priors: Vec<_> = self
            .p_targets
            .iter()
            .map(|&p| ("p_targets[_]", p))
            .collect();
        priors.push(("calibration_prior", self.calibration_prior));
        finite_in(&priors, |p| p > 0.0 && p < 1.0, "in (0, 1)").map_err(at)?;
        let costs = [("c_miss", self.c_miss), ("c_fa", self.c_fa)];
        finite_in(&costs, |c| c > 0.0, "> 0").map_err(at)
    }
}

/// Input files of `downstream-eval sv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SvInputs {
    /// `embeddings.h5` holding every utterance of the trial list (or `scores`).
    pub embeddings: Option<PathBuf>,
    /// Kaldi-form scores (`enroll test score` lines) of the trial list, from any system,
    /// instead of embeddings.
    pub scores: Option<PathBuf>,
    /// `trials.parquet`.
    pub trials: PathBuf,
    /// Embeddings whose mean is subtracted (a training set), if any.
    pub mean_embeddings: Option<PathBuf>,
    /// AS-norm cohort embeddings, if any.
    pub cohort_embeddings: Option<PathBuf>,
    /// PLDA model file (`downstream-eval plda-train`), for the PLDA back-end.
    pub plda: Option<PathBuf>,
}

/// Error rates of one set of scores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// EER of the ROC convex hull (hyperion / BOSARIS).
    pub eer: f64,
    /// EER by interpolation between the two points around the crossing (wespeaker).
    pub eer_interpolated: f64,
    pub min_dcf: Vec<MinDcf>,
}

impl Detection {
    /// EERs and the configured minDCF operating points of `roc`.
    pub fn new(roc: &Roc, config: &SvConfig) -> Self {
        Detection {
            eer: roc.eer_rocch(),
            eer_interpolated: roc.eer_interpolated(),
            min_dcf: config
                .p_targets
                .iter()
                .map(|&p| roc.min_dcf(p, config.c_miss, config.c_fa))
                .collect(),
        }
    }
}

/// `report.json` of `downstream-eval sv`: headline metrics first (`eer`,
/// `eer_interpolated`, `min_dcf_<p>`), then details.
#[derive(Debug, Clone, Serialize)]
pub struct SvReport {
    pub task: &'static str,
    pub eer: f64,
    pub eer_interpolated: f64,
    /// `min_dcf_0.01`, `min_dcf_0.05`, ...: normalised minDCF per target prior.
    #[serde(flatten)]
    pub min_dcf_by_prior: BTreeMap<String, f64>,
    pub num_trials: usize,
    pub num_targets: usize,
    pub num_nontargets: usize,
    pub num_utterances: usize,
    /// What produced the final scores, in words.
    pub scoring: String,
    pub detection: Detection,
    /// Metrics of the scores before AS-norm, when AS-norm produced the headline.
    pub without_asnorm: Option<Detection>,
    /// Cohort size and the top-N actually used, when AS-norm was applied.
    pub asnorm: Option<AsNormSummary>,
    #[serde(flatten)]
    pub run: Provenance<SvInputs, SvConfig>,
}

/// How AS-norm was applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AsNormSummary {
    pub cohort_size: usize,
    pub top_n: usize,
}

/// Scores the trial list (from embeddings, or a score file) and writes `scores.txt`,
/// `det.svg`, `det.png`, `report.json`, `report.md` and `calibration.json` into `out_dir`.
pub fn run(inputs: &SvInputs, config: &SvConfig, out_dir: &Path) -> Result<SvReport> {
    let started = Instant::now();
    config
        .check()
        .map_err(|message| EvalError::invalid(&inputs.trials, message))?;
    let trials = TrialList::read(&inputs.trials)?;
    if trials.trials.is_empty() {
        return Err(EvalError::invalid(
            &inputs.trials,
            "the trial list is empty",
        ));
    }
    let scored = match (&inputs.embeddings, &inputs.scores) {
        (Some(embeddings), None) => score_embeddings(embeddings, &trials, inputs, config)?,
        (None, Some(scores)) => Scored {
            scores: score_file::read(scores, &trials)?,
            cosine: None,
            num_utterances: score_file::utterance_count(&trials),
            asnorm: None,
        },
        _ => {
            return Err(EvalError::invalid(
                &inputs.trials,
                "sv needs either embeddings or a score file (not both)",
            ));
        }
    };
    let targets: Vec<bool> = trials.trials.iter().map(|t| t.target).collect();
    let roc_error = |e: detection::RocError| EvalError::invalid(&inputs.trials, e.to_string());
    let roc = Roc::new(&scored.scores, &targets).map_err(roc_error)?;
    let detection = Detection::new(&roc, config);
    let without_asnorm = match &scored.cosine {
        Some(cosine) => Some(Detection::new(
            &Roc::new(cosine, &targets).map_err(roc_error)?,
            config,
        )),
        None => None,
    };

    let scoring = describe_scoring(inputs, config, scored.asnorm);
    let outputs = report::output_paths(
        out_dir,
        &[
            ("scores", stage_kit::run_folder::SCORES),
            ("det_svg", "det.svg"),
            ("det_png", "det.png"),
            ("calibration", calibration::CALIBRATION_FILE),
        ],
    );
    stage_kit::write_bytes_atomically(
        &outputs["scores"],
        score_file::to_text(&trials, &scored.scores).as_bytes(),
    )?;
    let plot = det_plot::DetPlot {
        roc: &roc,
        eer: detection.eer,
        min_dcfs: &detection.min_dcf,
        title: format!("DET: {}", file_label(&inputs.trials)),
    };
    crate::plot::save(&plot, &outputs["det_svg"], &outputs["det_png"])?;
    // The calibration describes the scores `dino-core verify` computes: cosine, without
    // AS-norm (which needs a cohort).
    let (calibrated, calibrated_roc, calibrated_scoring) = match &scored.cosine {
        Some(cosine) => (
            cosine,
            Roc::new(cosine, &targets).map_err(roc_error)?,
            describe_scoring(inputs, config, None),
        ),
        None => (&scored.scores, roc.clone(), scoring.clone()),
    };
    calibration::Calibration::fit(
        &calibrated_roc,
        calibrated,
        &targets,
        &file_label(&inputs.trials),
        &calibrated_scoring,
        (
            config.length_norm,
            inputs.embeddings.is_some() && inputs.mean_embeddings.is_some(),
        ),
        config.calibration_prior,
    )
    .write(&outputs["calibration"])?;

    let report = SvReport {
        task: "sv",
        eer: detection.eer,
        eer_interpolated: detection.eer_interpolated,
        min_dcf_by_prior: detection
            .min_dcf
            .iter()
            .map(|d| (stage_kit::metrics::min_dcf(d.p_target), d.min_dcf))
            .collect(),
        num_trials: trials.trials.len(),
        num_targets: roc.num_targets,
        num_nontargets: roc.num_nontargets,
        num_utterances: scored.num_utterances,
        scoring,
        detection,
        without_asnorm,
        asnorm: scored.asnorm,
        run: Provenance::new(inputs.clone(), config.clone(), outputs, started),
    };
    report::write(out_dir, &report, &markdown(&report))?;
    tracing::info!(
        "EER {:.3} % (interpolated {:.3} %), {}",
        100.0 * report.eer,
        100.0 * report.eer_interpolated,
        report
            .min_dcf_by_prior
            .iter()
            .map(|(k, v)| format!("{k} {v:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(report)
}

/// The PLDA model when the back-end is PLDA (required then, refused otherwise), checked
/// against the embedding dimension.
fn plda_model(
    inputs: &SvInputs,
    config: &SvConfig,
    embeddings: &EmbeddingFile,
) -> Result<Option<PldaModel>> {
    match (config.backend, &inputs.plda) {
        (Backend::Cosine, None) => Ok(None),
        (Backend::Cosine, Some(path)) => Err(EvalError::invalid(
            path,
            "a PLDA model was given but the back-end is cosine (use --backend plda)",
        )),
        (Backend::Plda, None) => Err(EvalError::invalid(
            &inputs.trials,
            "the PLDA back-end needs a model file (--plda, from downstream-eval plda-train)",
        )),
        (Backend::Plda, Some(path)) => {
            if let Some(mean) = &inputs.mean_embeddings {
                return Err(EvalError::invalid(
                    mean,
                    "mean subtraction is part of the PLDA model's preprocessing: give no \
                     --mean-embeddings with --backend plda",
                ));
            }
            let model = PldaModel::read(path)?;
            if model.input_dim() != embeddings.dim() {
                return Err(EvalError::invalid(
                    path,
                    format!(
                        "PLDA model for {}-dimensional embeddings, but {} has dimension {}",
                        model.input_dim(),
                        embeddings.path.display(),
                        embeddings.dim()
                    ),
                ));
            }
            Ok(Some(model))
        }
    }
}

/// Scores of a trial list: the headline scores, the scores before AS-norm when AS-norm made
/// the headline, and how many utterances they cover.
struct Scored {
    scores: Vec<f32>,
    cosine: Option<Vec<f32>>,
    num_utterances: usize,
    asnorm: Option<AsNormSummary>,
}

/// Scores of the trials from embeddings: cosine (mean subtraction and length normalisation as
/// configured) or PLDA log-likelihood ratios, then AS-norm when a cohort is given.
fn score_embeddings(
    embeddings_path: &Path,
    trials: &TrialList,
    inputs: &SvInputs,
    config: &SvConfig,
) -> Result<Scored> {
    let embeddings = EmbeddingFile::read(embeddings_path)?;
    let trials_name = inputs.trials.display().to_string();
    let indexed = IndexedTrials::new(trials, &embeddings, &trials_name)?;
    tracing::info!(
        "{} trials over {} utterances, {}-dimensional embeddings",
        trials.trials.len(),
        indexed.rows.len(),
        embeddings.dim()
    );
    let mean_source = inputs
        .mean_embeddings
        .as_deref()
        .map(EmbeddingFile::read)
        .transpose()?;
    if let Some(source) = &mean_source {
        embeddings.check_same_dim(source)?;
    }
    let preprocess = Preprocess::new(
        config.length_norm,
        mean_source.as_ref().map(|s| s.embeddings.vectors.view()),
    );
    let model = plda_model(inputs, config, &embeddings)?;
    let backend = match &model {
        Some(model) => Scoring::Plda(model),
        None => Scoring::Cosine(&preprocess),
    };
    let model_error = |e: crate::plda::LinalgError| {
        EvalError::invalid(
            inputs.plda.as_deref().unwrap_or(embeddings_path),
            e.to_string(),
        )
    };
    let sides = backend
        .sides(embeddings.embeddings.vectors.view(), &indexed.rows)
        .map_err(model_error)?;
    let raw = sides.trial_scores(&indexed.pairs);
    let num_utterances = indexed.rows.len();
    let Some(path) = &inputs.cohort_embeddings else {
        return Ok(Scored {
            scores: raw,
            cosine: None,
            num_utterances,
            asnorm: None,
        });
    };
    let cohort = EmbeddingFile::read(path)?;
    embeddings.check_same_dim(&cohort)?;
    let cohort_sides = backend
        .sides_all(cohort.embeddings.vectors.view())
        .map_err(model_error)?;
    let cohort_size = cohort.embeddings.utt_ids.len();
    let summary = AsNormSummary {
        cohort_size,
        top_n: config.asnorm_top.clamp(1, cohort_size),
    };
    if summary.top_n != config.asnorm_top {
        tracing::warn!(
            "AS-norm top {} exceeds the cohort of {}: using all of it",
            config.asnorm_top,
            summary.top_n
        );
    }
    let stats = asnorm::cohort_stats(sides.left.view(), cohort_sides.right(), summary.top_n);
    Ok(Scored {
        scores: asnorm::as_norm(&raw, &indexed.pairs, &stats),
        cosine: Some(raw),
        num_utterances,
        asnorm: Some(summary),
    })
}

fn describe_scoring(inputs: &SvInputs, config: &SvConfig, asnorm: Option<AsNormSummary>) -> String {
    if let Some(scores) = &inputs.scores {
        return format!("scores read from {}", file_label(scores));
    }
    let mut steps = Vec::new();
    match (config.backend, &inputs.plda) {
        (Backend::Plda, Some(model)) => steps.push(format!("PLDA ({})", file_label(model))),
        _ => {
            if config.length_norm {
                steps.push("length normalisation".to_owned());
            }
            if let Some(mean) = &inputs.mean_embeddings {
                steps.push(format!("mean of {} subtracted", file_label(mean)));
            }
            steps.push("cosine".to_owned());
        }
    }
    if let Some(a) = asnorm {
        steps.push(format!(
            "AS-norm (top {} of a {}-vector cohort)",
            a.top_n, a.cohort_size
        ));
    }
    steps.join(", ")
}

/// The file name of a path, for titles.
fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn markdown(report: &SvReport) -> String {
    let percent = |x: f64| format!("{:.3} %", 100.0 * x);
    let mut columns = vec![("score", &report.detection)];
    if let Some(plain) = &report.without_asnorm {
        let plain_name = match report.run.config.backend {
            Backend::Cosine => "cosine",
            Backend::Plda => "PLDA",
        };
        columns = vec![(plain_name, plain), ("AS-norm", &report.detection)];
    }
    let mut header = vec!["metric"];
    header.extend(columns.iter().map(|c| c.0));
    let mut rows = vec![
        std::iter::once("EER (ROCCH)".to_owned())
            .chain(columns.iter().map(|c| percent(c.1.eer)))
            .collect::<Vec<_>>(),
        std::iter::once("EER (interpolated)".to_owned())
            .chain(columns.iter().map(|c| percent(c.1.eer_interpolated)))
            .collect(),
    ];
    for (i, dcf) in report.detection.min_dcf.iter().enumerate() {
        rows.push(
            std::iter::once(format!(
                "minDCF (p_target {}, C_miss {}, C_fa {})",
                dcf.p_target, dcf.c_miss, dcf.c_fa
            ))
            .chain(
                columns
                    .iter()
                    .map(|c| format!("{:.4}", c.1.min_dcf[i].min_dcf)),
            )
            .collect(),
        );
    }
    format!(
        "# Speaker verification: {}\n\n{}\n{} trials ({} target, {} non-target) over {} utterances; \
         scoring: {}.\n\n{}. DET curve: `det.svg`, `det.png`; scores: `scores.txt`; \
         calibration: `calibration.json`.\n",
        file_label(&report.run.inputs.trials),
        markdown_table(&header, &rows),
        report.num_trials,
        report.num_targets,
        report.num_nontargets,
        report.num_utterances,
        report.scoring,
        match (&report.run.inputs.embeddings, &report.run.inputs.scores) {
            (Some(path), _) => format!("Embeddings: `{}`", path.display()),
            (None, Some(path)) => format!("Scores: `{}`", path.display()),
            (None, None) => "No input".to_owned(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::SvConfig;

    #[test]
    fn settings_that_cannot_score_are_refused_by_key() {
        assert_eq!(SvConfig::default().check(), Ok(()));
        let refused = |edit: fn(&mut SvConfig)| {
            let mut config = SvConfig::default();
            edit(&mut config);
            config.check().unwrap_err()
        };
        assert_eq!(
            refused(|c| c.asnorm_top = 0),
            "[eval_sv] asnorm_top = 0: must be at least 1"
        );
        assert!(
            refused(|c| c.p_targets = vec![0.01, 1.0]).starts_with("[eval_sv] p_targets[_] = 1")
        );
        assert!(refused(|c| c.calibration_prior = f64::NAN).contains("calibration_prior = NaN"));
        assert!(refused(|c| c.c_fa = 0.0).contains("c_fa = 0"));
    }
}
