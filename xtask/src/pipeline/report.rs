//! The run's final report, `report.md` and `report.json`: speaker-verification EER and minDCF
//! and emotion-recognition F1 for the no-learning baseline, after DINO and after each
//! pseudo-labelling round, the clustering rounds, the paper's numbers where the pipeline
//! lists them, and each stage's wall time.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use stage_kit::{metrics, run_folder};

use super::config::PipelineFile;
use super::plan::{DINO_PLDA, Stage};
use super::state::StageRecord;

/// A system whose embeddings were evaluated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct System {
    pub name: String,
    /// Per trial list: `eer`, `eer_interpolated`, `min_dcf_0.01`, ... (fractions).
    pub sv: serde_json::Map<String, Value>,
    /// Per emotion set: `micro_f1`, `macro_f1`, `uar` (fractions).
    pub emotion: serde_json::Map<String, Value>,
}

impl System {
    /// The EER (a fraction) of the trial list or scoring variant `key`, if reported.
    fn eer(&self, key: &str) -> Option<f64> {
        self.sv
            .get(key)
            .and_then(|m| m.get(metrics::EER))
            .and_then(Value::as_f64)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StageTime {
    pub stage: String,
    pub wall_seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub pipeline: String,
    pub description: String,
    pub systems: Vec<System>,
    /// The pretraining report's numbers (steps, final loss and teacher entropy, collapse
    /// monitor: collapsed steps and the first of them).
    #[serde(default)]
    pub pretraining: serde_json::Map<String, Value>,
    /// Cluster report numbers per round.
    pub clustering: Vec<Value>,
    /// The training stages that drew their curves (`<stage>/curves.svg`).
    #[serde(default)]
    pub curves: Vec<String>,
    pub paper: std::collections::BTreeMap<String, f64>,
    pub stages: Vec<StageTime>,
}

/// Collects the stage records into the report and writes both files into `run_dir`.
pub fn write(
    name: &str,
    file: &PipelineFile,
    stages: &[Stage],
    run_dir: &Path,
) -> anyhow::Result<Report> {
    let record = |stage: &str| StageRecord::read(&run_dir.join(stage));
    let section = |record: &Option<StageRecord>, prefix: &str| -> serde_json::Map<String, Value> {
        record
            .as_ref()
            .and_then(|r| r.metrics.as_object())
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                k.strip_prefix(prefix)
                    .map(|set| (set.to_owned(), v.clone()))
            })
            .collect()
    };
    let mut systems = Vec::new();
    let baseline = record("baseline");
    systems.push(System {
        name: "baseline (fbank mean+std, no learning)".to_owned(),
        sv: section(&baseline, "sv/"),
        emotion: section(&baseline, "emotion/"),
    });
    let mut clustering = Vec::new();
    let rounds = stages
        .iter()
        .filter(|s| s.name.starts_with("finetune-r"))
        .count();
    for round in 0..=rounds {
        let suffix = if round == 0 {
            String::new()
        } else {
            format!("-r{round}")
        };
        let mut sv = section(&record(&format!("eval-sv{suffix}")), "sv/");
        let emotion = record(&format!("eval-emotion{suffix}"));
        let name = if round == 0 {
            sv.extend(section(&record(DINO_PLDA), "sv/"));
            "DINO".to_owned()
        } else {
            format!("DINO + {round} pseudo-label round(s)")
        };
        systems.push(System {
            name,
            sv,
            emotion: section(&emotion, "emotion/"),
        });
        if round > 0
            && let Some(c) =
                record(&format!("cluster-r{round}")).and_then(|r| r.metrics.get("cluster").cloned())
        {
            clustering.push(c);
        }
    }
    let pretraining = record("pretrain")
        .and_then(|r| {
            r.metrics
                .get("pretrain")
                .and_then(Value::as_object)
                .cloned()
        })
        .unwrap_or_default();
    let report = Report {
        pipeline: name.to_owned(),
        description: file.pipeline.description.clone(),
        systems,
        pretraining,
        clustering,
        curves: stages
            .iter()
            .filter(|s| run_dir.join(&s.name).join(run_folder::CURVES_SVG).is_file())
            .map(|s| s.name.clone())
            .collect(),
        paper: file.pipeline.paper.clone(),
        stages: stages
            .iter()
            .filter_map(|s| {
                record(&s.name).map(|r| StageTime {
                    stage: s.name.clone(),
                    wall_seconds: r.wall_seconds,
                })
            })
            .collect(),
    };
    stage_kit::write_bytes_atomically(
        &run_dir.join(run_folder::REPORT),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    stage_kit::write_bytes_atomically(
        &run_dir.join(run_folder::REPORT_MD),
        markdown(&report).as_bytes(),
    )?;
    Ok(report)
}

fn percent(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_f64)
        .map_or("-".to_owned(), |v| format!("{:.2}", 100.0 * v))
}

fn number(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_f64)
        .map_or("-".to_owned(), |v| format!("{v:.4}"))
}

fn integer(value: Option<&Value>) -> String {
    value
        .and_then(Value::as_u64)
        .map_or("-".to_owned(), |v| v.to_string())
}

fn markdown(report: &Report) -> String {
    let mut md = format!(
        "# Pipeline `{}`\n\n{}\n\n",
        report.pipeline, report.description
    );
    let paper = |key: String| {
        report
            .paper
            .get(&key)
            .map_or("-".to_owned(), |v| format!("{v:.2}"))
    };
    let sv_sets: Vec<&String> = report
        .systems
        .iter()
        .flat_map(|s| s.sv.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !sv_sets.is_empty() {
        md.push_str("## Speaker verification\n\nCosine scoring of `SET`; `SET+asnorm`: AS-norm with the training set's embeddings as cohort; `SET+plda`: a PLDA trained on the round's kept pseudo-labels, DINO's on the first round's (`+plda+asnorm` with AS-norm).\n\n");
        md.push_str("| system | trial list | EER % (ROCCH) | EER % (interp.) | minDCF 0.01 | minDCF 0.05 | paper EER % |\n|---|---|---|---|---|---|---|\n");
        for (i, system) in report.systems.iter().enumerate() {
            for set in &sv_sets {
                let m = system.sv.get(*set);
                let get = |k: &str| m.and_then(|m| m.get(k));
                let paper_key = match i {
                    0 => format!("baseline.{set}.{}", metrics::EER),
                    1 => format!("dino.{set}.{}", metrics::EER),
                    r => format!("round{}.{set}.{}", r - 1, metrics::EER),
                };
                let _ = writeln!(
                    md,
                    "| {} | {set} | {} | {} | {} | {} | {} |",
                    system.name,
                    percent(get(metrics::EER)),
                    percent(get(metrics::EER_INTERPOLATED)),
                    number(get(&metrics::min_dcf(0.01))),
                    number(get(&metrics::min_dcf(0.05))),
                    paper(paper_key)
                );
            }
        }
        md.push('\n');
    }
    let emotion_sets: Vec<&String> = report
        .systems
        .iter()
        .flat_map(|s| s.emotion.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !emotion_sets.is_empty() {
        md.push_str("## Emotion recognition (frozen embeddings)\n\n`SET`: the embeddings `[embed] representation` names; `SET+pooled`: the pooled statistics the embedding layer reads; `SET+concat`: both side by side; `SET+embedding`: the embedding layer, when another representation is configured.\n\n");
        md.push_str("| system | corpus | micro-F1 % | macro-F1 % | UAR % | paper micro-F1 % |\n|---|---|---|---|---|---|\n");
        for (i, system) in report.systems.iter().enumerate() {
            for set in &emotion_sets {
                let m = system.emotion.get(*set);
                let get = |k: &str| m.and_then(|m| m.get(k));
                let paper_key = if i == 1 {
                    format!("dino.{set}.{}", metrics::MICRO_F1)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    md,
                    "| {} | {set} | {} | {} | {} | {} |",
                    system.name,
                    percent(get(metrics::MICRO_F1)),
                    percent(get(metrics::MACRO_F1)),
                    percent(get(metrics::UAR)),
                    paper(paper_key)
                );
            }
        }
        md.push('\n');
    }
    if !report.pretraining.is_empty() {
        let get = |k: &str| report.pretraining.get(k);
        let first = get(metrics::FIRST_COLLAPSE_STEP)
            .and_then(Value::as_u64)
            .map_or("none".to_owned(), |s| format!("step {s}"));
        let _ = writeln!(
            md,
            "## Pretraining\n\n{} steps, final loss {}, final teacher entropy {} nats; collapse monitor: {} collapsed step(s), first: {first}.\n",
            integer(get(metrics::STEPS)),
            number(get(metrics::FINAL_LOSS)),
            number(get(metrics::FINAL_TEACHER_ENTROPY)),
            integer(get(metrics::COLLAPSE_WARNINGS)),
        );
        if get("validation.best.epoch").is_some() {
            let eer = |which: &str| percent(get(&format!("validation.{which}.{}", metrics::EER)));
            let _ = writeln!(
                md,
                "Validation (during training, on a set disjoint from the evaluation trials): best EER {} % after epoch {}, last EER {} % after epoch {}.\n",
                eer("best"),
                integer(get("validation.best.epoch")),
                eer("last"),
                integer(get("validation.last.epoch")),
            );
        }
        if report.curves.iter().any(|c| c == "pretrain") {
            let _ = writeln!(
                md,
                "![pretraining curves: loss, collapse monitor, validation](pretrain/{})\n",
                run_folder::CURVES_SVG
            );
        }
    }
    if !report.clustering.is_empty() {
        md.push_str("## Pseudo-labelling rounds\n\nAgreement with the true speakers and sessions is a diagnostic only (the labels are not used). k-means clusters closer to the sessions than to the speakers split speakers by recording condition, which merging has to undo.\n\n");
        md.push_str("| round | k-means clusters | after merging | after PLDA-AHC | after clean-up | kept % | NMI k-means | NMI k-means vs sessions | NMI kept | ARI kept | purity kept | seconds |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for (round, c) in report.clustering.iter().enumerate() {
            let get = |k: &str| c.get(k);
            let count = |k: &str| integer(c.get(k));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} |",
                round + 1,
                count("kmeans.k"),
                count("merge.clusters_after"),
                count("plda.clusters_after"),
                count("cleanup.clusters_after"),
                percent(get("cleanup.kept_share")),
                number(get("diagnostics.kmeans.nmi")),
                number(get("diagnostics.kmeans_sessions.nmi")),
                number(get("diagnostics.kept.nmi")),
                number(get("diagnostics.kept.ari")),
                number(get("diagnostics.kept.purity")),
                get("seconds").and_then(Value::as_f64).unwrap_or(f64::NAN)
            );
        }
        md.push('\n');
        md.push_str(&round_effects(report));
    }
    md.push_str("## Stages\n\n| stage | wall time (s) |\n|---|---|\n");
    for s in &report.stages {
        let _ = writeln!(md, "| {} | {:.1} |", s.stage, s.wall_seconds);
    }
    md
}

/// What each round did to the EER of the system before it (DINO for round 1), list by list
/// and scoring by scoring, whether it helped by cosine scoring (the method's own scoring),
/// and the cluster numbers that say why: agreement of the k-means clusters with speakers and
/// with recording sessions, and the speaker purity of the clusters kept for fine-tuning.
fn round_effects(report: &Report) -> String {
    let eer = |system: &System, key: &str| system.eer(key).map(|e| 100.0 * e);
    let mut md = String::new();
    // systems: baseline, DINO, then one per round.
    for (round, pair) in report.systems.windows(2).enumerate().skip(1) {
        let [before, after] = pair else { continue };
        let mut changes = Vec::new();
        let mut cosine_deltas = Vec::new();
        for key in after.sv.keys() {
            let Some(b) = eer(after, key) else { continue };
            match eer(before, key) {
                Some(a) => {
                    if !key.contains('+') {
                        cosine_deltas.push(b - a);
                    }
                    changes.push(format!("`{key}` {a:.2} -> {b:.2} % ({:+.2})", b - a));
                }
                None => changes.push(format!("`{key}` {b:.2} % (no counterpart before)")),
            }
        }
        if changes.is_empty() {
            continue;
        }
        let verdict = if cosine_deltas.is_empty() {
            "no cosine list to compare".to_owned()
        } else if cosine_deltas.iter().all(|d| *d < 0.0) {
            "it helps by cosine scoring".to_owned()
        } else {
            let worst = cosine_deltas.iter().copied().fold(f64::MIN, f64::max);
            format!("it does not help by cosine scoring (up to {worst:+.2} points)")
        };
        let _ = write!(
            md,
            "Round {round} against {}: {}; {verdict}.",
            before.name,
            changes.join(", ")
        );
        let cluster = report.clustering.get(round - 1);
        let get = |k: &str| cluster.and_then(|c| c.get(k)).and_then(Value::as_f64);
        if let Some(speakers) = get("diagnostics.kmeans.nmi") {
            let _ = match get("diagnostics.kmeans_sessions.nmi") {
                Some(sessions) => write!(
                    md,
                    " Its k-means clusters are {} (NMI {speakers:.3} against speakers, \
                     {sessions:.3} against sessions)",
                    if sessions > speakers {
                        "closer to the recording sessions than to the speakers"
                    } else {
                        "closer to the speakers than to the recording sessions"
                    }
                ),
                None => write!(
                    md,
                    " Its k-means clusters have NMI {speakers:.3} against the speakers (the \
                     manifest has no sessions)"
                ),
            };
            match get("diagnostics.kept.purity") {
                Some(purity) => {
                    let _ = write!(
                        md,
                        "; the clusters kept for fine-tuning have speaker purity {purity:.3}."
                    );
                }
                None => md.push('.'),
            }
        }
        md.push_str("\n\n");
    }
    md
}

/// Fails unless DINO's EER is below the baseline's on every trial list.
pub fn require_improvement(report: &Report) -> anyhow::Result<()> {
    let baseline = report
        .systems
        .first()
        .context("the report has no baseline")?;
    let dino = report
        .systems
        .get(1)
        .context("the report has no DINO system")?;
    if baseline.sv.is_empty() {
        bail!("the report has no speaker-verification result");
    }
    for set in baseline.sv.keys() {
        let (b, d) = (baseline.eer(set), dino.eer(set));
        match (b, d) {
            (Some(b), Some(d)) if d < b => println!(
                "{set}: DINO EER {:.2} % < baseline {:.2} %",
                100.0 * d,
                100.0 * b
            ),
            (Some(b), Some(d)) => bail!(
                "{set}: DINO EER {:.2} % is not below the baseline's {:.2} %",
                100.0 * d,
                100.0 * b
            ),
            _ => bail!("{set}: EER missing from the report"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(name: &str, eers: &[(&str, f64)]) -> System {
        System {
            name: name.to_owned(),
            sv: eers
                .iter()
                .map(|(set, eer)| ((*set).to_owned(), serde_json::json!({ metrics::EER: eer })))
                .collect(),
            emotion: serde_json::Map::new(),
        }
    }

    fn report(round: System, cluster: Value) -> Report {
        Report {
            pipeline: "p".into(),
            description: String::new(),
            systems: vec![
                system("baseline", &[("dev", 0.40)]),
                system("DINO", &[("dev", 0.20), ("dev+asnorm", 0.19)]),
                round,
            ],
            pretraining: serde_json::Map::new(),
            clustering: vec![cluster],
            curves: Vec::new(),
            paper: Default::default(),
            stages: Vec::new(),
        }
    }

    /// The round's effect is stated list by list against DINO, with the verdict of cosine
    /// scoring and the cluster numbers behind it.
    #[test]
    fn a_round_that_does_not_help_says_by_how_much_and_why() {
        let round = system(
            "round",
            &[("dev", 0.215), ("dev+asnorm", 0.18), ("dev+plda", 0.17)],
        );
        let cluster = serde_json::json!({
            "diagnostics.kmeans.nmi": 0.7,
            "diagnostics.kmeans_sessions.nmi": 0.8,
            "diagnostics.kept.purity": 0.39,
        });
        let text = round_effects(&report(round, cluster));
        assert!(text.starts_with("Round 1 against DINO: "), "{text}");
        assert!(text.contains("`dev` 20.00 -> 21.50 % (+1.50)"), "{text}");
        assert!(
            text.contains("`dev+asnorm` 19.00 -> 18.00 % (-1.00)"),
            "{text}"
        );
        assert!(
            text.contains("`dev+plda` 17.00 % (no counterpart before)"),
            "{text}"
        );
        assert!(
            text.contains("does not help by cosine scoring (up to +1.50 points)"),
            "{text}"
        );
        assert!(
            text.contains("closer to the recording sessions than to the speakers")
                && text.contains("NMI 0.700 against speakers, 0.800 against sessions")
                && text.contains("speaker purity 0.390"),
            "{text}"
        );
    }

    #[test]
    fn a_round_that_lowers_every_cosine_eer_helps() {
        let round = system("round", &[("dev", 0.15)]);
        let cluster = serde_json::json!({
            "diagnostics.kmeans.nmi": 0.9,
            "diagnostics.kmeans_sessions.nmi": 0.6,
        });
        let text = round_effects(&report(round, cluster));
        assert!(text.contains("it helps by cosine scoring."), "{text}");
        assert!(text.contains("closer to the speakers than to the recording sessions"));
        assert!(text.contains("against sessions)."), "{text}");
        let without_sessions = serde_json::json!({
            "diagnostics.kmeans.nmi": 0.56,
            "diagnostics.kept.purity": 0.46,
        });
        let text = round_effects(&report(system("round", &[("dev", 0.3)]), without_sessions));
        assert!(
            text.contains("NMI 0.560 against the speakers (the manifest has no sessions)")
                && text.contains("speaker purity 0.460."),
            "{text}"
        );
    }
}
