//! The `cluster` stage end to end: embeddings (and optionally true speakers) in,
//! pseudo-labels and a report out. [`pseudo_label`] works in memory; [`run`] reads and
//! writes the stage's files.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use data_manifest::{PseudoLabel, PseudoLabels, UtteranceManifest};
use feature_extract::Embeddings;
use ndarray::Axis;

use crate::cleanup::{self, Judged, Rules, Verdict};
use crate::config::{Backend, ClusterConfig, Method};
use crate::error::{Error, Result};
use crate::kmeans::{self, Batched, KMeansBackend, LinfaReference, Settings};
use crate::merge::merge_clusters;
use crate::metrics::agreement;
use crate::nearest::Compute;
use crate::pca::Pca;
use crate::plda_ahc::{plda_ahc, unit_centroids};
use crate::preprocess::{normalize_rows, screen};
use crate::report::{
    ClusterReport, Diagnostics, InputSummary, KMeansSummary, SCHEMA, SizeHistograms, StepAgreement,
    size_histogram,
};

/// The pseudo-labels and the report inside the output folder.
pub use stage_kit::run_folder::{
    CLUSTER_REPORT as REPORT_FILE, PSEUDO_LABELS as PSEUDO_LABELS_FILE,
};

/// Name of the random stream that draws initial centroids.
const INIT_STREAM: &str = "kmeans-init";

/// Files of one run of the stage.
#[derive(Debug, Clone)]
pub struct StagePaths {
    pub embeddings: PathBuf,
    /// Utterance manifest with true speakers, for diagnostics only.
    pub manifest: Option<PathBuf>,
    pub out_dir: PathBuf,
}

/// True speakers (and recording sessions, where known) by utterance id, and the file they
/// came from.
pub struct Speakers<'a> {
    pub source: &'a Path,
    pub by_utterance: &'a HashMap<String, String>,
    /// `speaker/session` by utterance id; empty when the manifest has no sessions.
    pub sessions: &'a HashMap<String, String>,
}

/// Pseudo-labels in the order of the embeddings, and the report.
pub struct Outcome {
    pub labels: PseudoLabels,
    pub report: ClusterReport,
}

/// Runs the stage on files: reads the embeddings (and manifest), clusters, and writes
/// `pseudo_labels.parquet` and `cluster_report.json` atomically into `out_dir`.
pub fn run(paths: &StagePaths, config: &ClusterConfig) -> Result<ClusterReport> {
    let embeddings = Embeddings::read(&paths.embeddings)?;
    let truth = match &paths.manifest {
        Some(path) => {
            let manifest = UtteranceManifest::read(path)?;
            Some((
                path.as_path(),
                speakers_of(&manifest),
                sessions_of(&manifest),
            ))
        }
        None => None,
    };
    let outcome = pseudo_label(
        &embeddings,
        &paths.embeddings,
        truth
            .as_ref()
            .map(|(source, by_utterance, sessions)| Speakers {
                source,
                by_utterance,
                sessions,
            }),
        config,
    )?;
    outcome
        .labels
        .write(&paths.out_dir.join(PSEUDO_LABELS_FILE))?;
    let report_path = paths.out_dir.join(REPORT_FILE);
    let json = serde_json::to_vec_pretty(&outcome.report).expect("the report serialises");
    stage_kit::write_bytes_atomically(&report_path, &json)?;
    Ok(outcome.report)
}

/// Speaker of every utterance that has one.
pub fn speakers_of(manifest: &UtteranceManifest) -> HashMap<String, String> {
    manifest
        .utterances
        .iter()
        .filter_map(|u| Some((u.utt_id.clone(), u.speaker.clone()?)))
        .collect()
}

/// Recording session of every utterance that has a speaker and a session, as
/// `speaker/session` (session names need only be unique within a speaker).
pub fn sessions_of(manifest: &UtteranceManifest) -> HashMap<String, String> {
    manifest
        .utterances
        .iter()
        .filter_map(|u| {
            let key = format!("{}/{}", u.speaker.as_ref()?, u.session.as_ref()?);
            Some((u.utt_id.clone(), key))
        })
        .collect()
}

/// Clusters `embeddings` (read from `source`) into pseudo-labels.
pub fn pseudo_label(
    embeddings: &Embeddings,
    source: &Path,
    speakers: Option<Speakers<'_>>,
    config: &ClusterConfig,
) -> Result<Outcome> {
    let started = Instant::now();
    config.validate()?;
    let input_error = |message: String| Error::Input {
        path: source.to_path_buf(),
        message,
    };
    check_unique(&embeddings.utt_ids).map_err(input_error)?;
    let compute = Compute::select(config.device)?;

    let (usable, rejected) = screen(&embeddings.vectors, &embeddings.utt_ids);
    let total = embeddings.utt_ids.len();
    if rejected.len() as f64 > config.max_reject_share * total as f64 {
        let shown: Vec<String> = rejected
            .iter()
            .take(10)
            .map(|r| format!("{} ({})", r.utt_id, r.reason))
            .collect();
        return Err(input_error(format!(
            "{} of {total} embeddings are unusable, above max_reject_share = {}: {}",
            rejected.len(),
            config.max_reject_share,
            shown.join(", ")
        )));
    }
    for r in &rejected {
        tracing::warn!(
            "{}: {} not clustered: {}",
            source.display(),
            r.utt_id,
            r.reason
        );
    }
    if usable.len() < 2 {
        return Err(input_error(format!(
            "{} usable embedding(s): clustering needs at least 2",
            usable.len()
        )));
    }

    let mut points = embeddings.vectors.select(Axis(0), &usable);
    normalize_rows(&mut points);
    let pca = if config.pca {
        let pca = Pca::fit(points.view(), config.pca_variance)?;
        points = pca.transform(points.view());
        normalize_rows(&mut points);
        tracing::info!(
            "PCA: {} of {} dimensions keep {:.2} % of the variance",
            pca.kept(),
            embeddings.dim(),
            100.0 * pca.summary().explained_variance
        );
        Some(pca.summary())
    } else {
        None
    };

    let settings = Settings {
        k: config.clusters_for(points.nrows()),
        init: config.init,
        restarts: config.restarts,
        max_iterations: config.max_iterations,
        tolerance: config.tolerance,
    };
    tracing::info!(
        "k-means: {} points of dimension {}, k = {}, backend {}, device {}",
        points.nrows(),
        points.ncols(),
        settings.k,
        config.backend,
        compute.name()
    );
    let engine = compute.engine(points.view())?;
    let kmeans_started = Instant::now();
    let mut backend: Box<dyn KMeansBackend> = match config.backend {
        Backend::Batched => Box::new(Batched::new(points.view(), &*engine)),
        Backend::Linfa => Box::new(LinfaReference::new(points.view())),
    };
    let mut rng = stage_kit::rng::stream(config.seed, INIT_STREAM);
    let clustering = kmeans::fit(backend.as_mut(), points.view(), &settings, &mut rng)?;
    let kmeans_seconds = kmeans_started.elapsed().as_secs_f64();

    let merged = merge_clusters(
        points.view(),
        &clustering.labels,
        settings.k,
        config.merge.then_some(config.merge_threshold),
        compute,
    )?;
    tracing::info!(
        "merging: {} -> {} clusters in {} round(s)",
        merged.summary.clusters_before,
        merged.summary.clusters_after,
        merged.summary.rounds
    );
    let cosine_labels: Vec<u32> = clustering
        .labels
        .iter()
        .map(|&l| merged.cluster_of[l as usize])
        .collect();
    let rules = Rules {
        min_cluster_size: config.min_cluster_size,
        min_similarity: config.min_similarity,
        min_margin: config.min_margin,
    };
    let (plda, (members, cleanup)) = match config.method {
        Method::Cosine => {
            let assignments = engine.nearest_two(merged.centroids.view())?;
            let outcome = cleanup::clean_up(&assignments, merged.centroids.nrows(), &rules);
            (None, outcome)
        }
        Method::Plda => {
            let plda = plda_ahc(points.view(), &cosine_labels, &config.plda)?;
            tracing::info!(
                "PLDA-AHC: PLDA trained on {} clusters ({} utterances); {} -> {} clusters in {} round(s); {} below posterior {}",
                plda.summary.training_clusters,
                plda.summary.training_utterances,
                plda.summary.clusters_before,
                plda.summary.clusters_after,
                plda.summary.rounds,
                plda.summary.low_posterior,
                config.plda.min_posterior
            );
            let clusters = plda.summary.clusters_after;
            let centroids = unit_centroids(points.view(), &plda.labels, clusters);
            let judged: Vec<Judged> = points
                .rows()
                .into_iter()
                .zip(plda.labels.iter().zip(&plda.posterior))
                .map(|(row, (&cluster, &posterior))| Judged {
                    cluster,
                    similarity: row.dot(&centroids.row(cluster as usize)),
                    verdict: if posterior < config.plda.min_posterior {
                        Verdict::LowPosterior
                    } else {
                        Verdict::Pass
                    },
                })
                .collect();
            let outcome = cleanup::finish(&judged, clusters, config.min_cluster_size);
            (Some(plda), outcome)
        }
    };
    tracing::info!(
        "clean-up: {} -> {} clusters, {} of {} utterances kept ({:.1} %)",
        cleanup.clusters_before,
        cleanup.clusters_after,
        cleanup.kept,
        members.len(),
        100.0 * cleanup.kept_share
    );

    let diagnostics = speakers.and_then(|speakers| {
        let known = labelled(&usable, &embeddings.utt_ids, speakers.by_utterance);
        if known.is_empty() {
            tracing::info!(
                "{}: no clustered utterance has a speaker label, so there is nothing to compare \
                 the clusters with (no NMI, ARI or purity)",
                speakers.source.display()
            );
            return None;
        }
        let mut steps: Vec<(&'static str, Vec<i64>)> = vec![
            (
                "kmeans",
                clustering.labels.iter().map(|&l| i64::from(l)).collect(),
            ),
            (
                "cosine_ahc",
                cosine_labels.iter().map(|&l| i64::from(l)).collect(),
            ),
        ];
        if let Some(plda) = &plda {
            steps.push((
                "plda_ahc",
                plda.labels.iter().map(|&l| i64::from(l)).collect(),
            ));
        }
        Some(diagnose(
            speakers.source,
            &known,
            &labelled(&usable, &embeddings.utt_ids, speakers.sessions),
            &steps,
            &members,
        ))
    });
    if let Some(d) = &diagnostics {
        for step in &d.steps {
            tracing::info!(
                "{}: against true speakers NMI {:.4}, purity {:.4}, {} clusters{}",
                step.step,
                step.speakers.nmi,
                step.speakers.purity,
                step.speakers.clusters,
                step.sessions
                    .map(|s| format!(
                        "; against sessions NMI {:.4}, purity {:.4}",
                        s.nmi, s.purity
                    ))
                    .unwrap_or_default()
            );
        }
    }

    let labels = output_rows(embeddings, &usable, &members);
    let best = &clustering.restarts[clustering.best];
    let report = ClusterReport {
        schema: SCHEMA,
        tool_version: env!("CARGO_PKG_VERSION"),
        config: config.clone(),
        input: InputSummary {
            embeddings: source.display().to_string(),
            description: embeddings.description.clone(),
            utterances: total,
            dim: embeddings.dim(),
            rejected,
        },
        pca,
        kmeans: KMeansSummary {
            backend: config.backend.to_string(),
            device: compute.name(),
            k: settings.k,
            points: points.nrows(),
            dim: points.ncols(),
            best_restart: clustering.best,
            final_inertia: clustering.inertia,
            inertia_per_iteration: best.inertia_per_iteration.clone(),
            restarts: clustering.restarts.clone(),
            seconds: kmeans_seconds,
        },
        merge: merged.summary,
        plda: plda.map(|p| p.summary),
        size_histogram: SizeHistograms {
            before_cleanup: size_histogram(&cleanup.sizes_before),
            after_cleanup: size_histogram(&cleanup.sizes_after),
        },
        cleanup,
        diagnostics,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(Outcome { labels, report })
}

/// The clustered utterances (`usable` rows of `utt_ids`) that `truth` labels, as (position
/// in `usable`, label).
fn labelled<'t>(
    usable: &[usize],
    utt_ids: &[String],
    truth: &'t HashMap<String, String>,
) -> Vec<(usize, &'t str)> {
    usable
        .iter()
        .enumerate()
        .filter_map(|(p, &row)| Some((p, truth.get(&utt_ids[row])?.as_str())))
        .collect()
}

/// Agreement with the true speakers of the `known` utterances (position among the
/// clustered ones, speaker), and with the recording `sessions` (position, session) if any,
/// of the labels after each step of the recipe (`steps`, k-means first; labels by position)
/// and of the final clusters, all and kept.
fn diagnose(
    manifest: &Path,
    known: &[(usize, &str)],
    sessions: &[(usize, &str)],
    steps: &[(&'static str, Vec<i64>)],
    members: &[cleanup::Member],
) -> Diagnostics {
    let compare = |items: &[(usize, &str)], cluster: &dyn Fn(usize) -> i64| {
        let truth: Vec<&str> = items.iter().map(|&(_, s)| s).collect();
        let clusters: Vec<i64> = items.iter().map(|&(p, _)| cluster(p)).collect();
        agreement(&truth, &clusters)
    };
    let kept: Vec<(usize, &str)> = known
        .iter()
        .copied()
        .filter(|&(p, _)| members[p].kept)
        .collect();
    let kept_sessions: Vec<(usize, &str)> = sessions
        .iter()
        .copied()
        .filter(|&(p, _)| members[p].kept)
        .collect();
    let final_labels: Vec<i64> = members.iter().map(|m| m.cluster).collect();
    let step = |name: &'static str,
                labels: &[i64],
                known: &[(usize, &str)],
                sessions: &[(usize, &str)]| {
        StepAgreement {
            step: name,
            speakers: compare(known, &|p| labels[p]),
            sessions: (!sessions.is_empty()).then(|| compare(sessions, &|p| labels[p])),
        }
    };
    let mut agreements: Vec<StepAgreement> = steps
        .iter()
        .map(|(name, labels)| step(name, labels, known, sessions))
        .collect();
    agreements.push(step("assigned", &final_labels, known, sessions));
    agreements.push(step("kept", &final_labels, &kept, &kept_sessions));
    let kmeans = &steps[0].1;
    Diagnostics {
        manifest: manifest.display().to_string(),
        utterances_with_speaker: known.len(),
        kmeans: compare(known, &|p| kmeans[p]),
        assigned: compare(known, &|p| members[p].cluster),
        kept: compare(&kept, &|p| members[p].cluster),
        kmeans_sessions: (!sessions.is_empty()).then(|| compare(sessions, &|p| kmeans[p])),
        steps: agreements,
    }
}

/// One row per embedding, in file order; rejected embeddings get cluster -1, similarity NaN
/// and `kept = false`.
fn output_rows(
    embeddings: &Embeddings,
    usable: &[usize],
    members: &[cleanup::Member],
) -> PseudoLabels {
    let mut labels: Vec<PseudoLabel> = embeddings
        .utt_ids
        .iter()
        .map(|utt_id| PseudoLabel {
            utt_id: utt_id.clone(),
            cluster: -1,
            similarity: f32::NAN,
            kept: false,
        })
        .collect();
    for (&row, member) in usable.iter().zip(members) {
        let label = &mut labels[row];
        label.cluster = member.cluster;
        label.similarity = member.similarity;
        label.kept = member.kept;
    }
    PseudoLabels { labels }
}

/// Fails on duplicate utterance ids, naming a few.
fn check_unique(utt_ids: &[String]) -> std::result::Result<(), String> {
    let mut seen = HashSet::new();
    let duplicates: Vec<&str> = utt_ids
        .iter()
        .filter(|id| !seen.insert(id.as_str()))
        .map(String::as_str)
        .take(10)
        .collect();
    if duplicates.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "duplicate utterance ids: {}",
            duplicates.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::blobs;
    use rand::SeedableRng;

    /// Embeddings of `speakers` x `per_speaker` utterances around speaker directions, with
    /// the speaker of each.
    fn speaker_blobs(speakers: usize, per_speaker: usize) -> (Embeddings, HashMap<String, String>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let (vectors, truth) = blobs(speakers, per_speaker, 32, 0.12, &mut rng);
        let utt_ids: Vec<String> = (0..vectors.nrows()).map(|i| format!("utt{i:05}")).collect();
        let by_utterance = utt_ids
            .iter()
            .zip(&truth)
            .map(|(id, s)| (id.clone(), format!("spk{s}")))
            .collect();
        let embeddings = Embeddings {
            utt_ids,
            vectors,
            description: "blobs".to_owned(),
        };
        (embeddings, by_utterance)
    }

    #[test]
    fn recovers_planted_speakers_and_reports_rejects() {
        let (mut embeddings, truth) = speaker_blobs(12, 30);
        embeddings.vectors[[5, 3]] = f32::NAN;
        let config = ClusterConfig {
            device: stage_kit::DeviceSpec::Cpu,
            ..ClusterConfig::default()
        };
        let source = Path::new("blobs.h5");
        // Two recording sessions per speaker.
        let sessions: HashMap<String, String> = truth
            .iter()
            .map(|(utt, spk)| {
                let n: usize = utt[3..].parse().unwrap();
                (utt.clone(), format!("{spk}/s{}", n % 2))
            })
            .collect();
        let speakers = Speakers {
            source: Path::new("truth.parquet"),
            by_utterance: &truth,
            sessions: &sessions,
        };
        let unlabelled = Speakers {
            source: Path::new("unlabelled.parquet"),
            by_utterance: &HashMap::new(),
            sessions: &HashMap::new(),
        };
        let outcome = pseudo_label(&embeddings, source, Some(unlabelled), &config).unwrap();
        assert!(
            outcome.report.diagnostics.is_none(),
            "no figures against speakers when no utterance has one"
        );
        let outcome = pseudo_label(&embeddings, source, Some(speakers), &config).unwrap();
        let report = &outcome.report;
        assert_eq!(report.kmeans.k, 90, "k = N/4 of the 359 usable utterances");
        assert_eq!(report.input.rejected.len(), 1);
        assert_eq!(report.input.rejected[0].utt_id, "utt00005");
        let rejected = &outcome.labels.labels[5];
        assert_eq!((rejected.cluster, rejected.kept), (-1, false));
        assert!(rejected.similarity.is_nan());

        // Merging folds the 90 k-means clusters back to the 12 speakers.
        assert_eq!(report.merge.clusters_after, 12, "{:?}", report.merge);
        let d = report.diagnostics.as_ref().unwrap();
        assert_eq!(d.utterances_with_speaker, 359);
        assert!(d.assigned.nmi > 0.99, "{:?}", d.assigned);
        assert!(d.kept.purity > 0.99, "{:?}", d.kept);
        // Sessions here are arbitrary halves of each speaker: no better agreement with them.
        let by_session = d.kmeans_sessions.as_ref().unwrap();
        assert_eq!(by_session.classes, 24);
        assert!(by_session.nmi <= d.kmeans.nmi + 0.05, "{by_session:?}");
        assert!(report.cleanup.kept_share > 0.9, "{:?}", report.cleanup);
        // Kept labels are exactly 0..clusters_after.
        let kept: HashSet<i64> = outcome
            .labels
            .labels
            .iter()
            .filter(|l| l.kept)
            .map(|l| l.cluster)
            .collect();
        assert_eq!(kept, (0..report.cleanup.clusters_after as i64).collect());
        assert!(report.kmeans.inertia_per_iteration.len() >= 2);
        let json = serde_json::to_value(report).unwrap();
        assert_eq!(json["config"]["merge_threshold"], 0.8f32 as f64);
        assert!(json["pca"]["components"].as_u64().unwrap() <= 32);
    }

    /// Planted speakers with a strong shared within-speaker direction: k-means splits each
    /// speaker along it, cosine merging cannot join the parts, PLDA-AHC does (one pass of
    /// the recipe part of the way, passes that retrain on the merged clusters all of it).
    #[test]
    fn plda_ahc_joins_what_cosine_merging_cannot() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (vectors, truth) =
            crate::synthetic::anisotropic_speakers(16, 40, 24, (2, 2.5), 0.15, &mut rng);
        let utt_ids: Vec<String> = (0..vectors.nrows()).map(|i| format!("utt{i:05}")).collect();
        let by_utterance: HashMap<String, String> = utt_ids
            .iter()
            .zip(&truth)
            .map(|(id, s)| (id.clone(), format!("spk{s}")))
            .collect();
        let embeddings = Embeddings {
            utt_ids,
            vectors,
            description: "anisotropic speakers".to_owned(),
        };
        let run = |method: Method, passes: usize| {
            let mut config = ClusterConfig {
                device: stage_kit::DeviceSpec::Cpu,
                method,
                ..ClusterConfig::default()
            };
            config.plda.passes = passes;
            let speakers = Speakers {
                source: Path::new("truth.parquet"),
                by_utterance: &by_utterance,
                sessions: &HashMap::new(),
            };
            let report = pseudo_label(&embeddings, Path::new("e.h5"), Some(speakers), &config)
                .unwrap()
                .report;
            let d = report.diagnostics.as_ref().unwrap();
            let steps: Vec<(&str, f64)> =
                d.steps.iter().map(|s| (s.step, s.speakers.nmi)).collect();
            eprintln!(
                "{method:?}, {passes} pass(es): NMI after each step {steps:?}; {:?}",
                report.plda
            );
            (d.assigned.nmi, report)
        };
        let (cosine, _) = run(Method::Cosine, 1);
        let (one_pass, _) = run(Method::Plda, 1);
        let (plda, report) = run(Method::Plda, 3);
        assert!(cosine < 0.9, "cosine merging NMI {cosine}");
        assert!(
            one_pass > cosine + 0.03,
            "one PLDA-AHC pass: NMI {one_pass} vs cosine {cosine}"
        );
        assert!(plda > 0.95, "PLDA-AHC NMI {plda}");
        let summary = report.plda.unwrap();
        assert!(
            summary.clusters_after < summary.clusters_before / 2,
            "{summary:?}"
        );
        assert!(report.cleanup.kept_share > 0.8, "{:?}", report.cleanup);
        let steps: Vec<&str> = report
            .diagnostics
            .unwrap()
            .steps
            .iter()
            .map(|s| s.step)
            .collect();
        assert_eq!(
            steps,
            ["kmeans", "cosine_ahc", "plda_ahc", "assigned", "kept"]
        );
    }

    #[test]
    fn too_many_rejects_fail_naming_them() {
        let (mut embeddings, _) = speaker_blobs(2, 10);
        embeddings.vectors.row_mut(3).fill(0.0);
        let config = ClusterConfig {
            device: stage_kit::DeviceSpec::Cpu,
            ..ClusterConfig::default()
        };
        let err = pseudo_label(&embeddings, Path::new("e.h5"), None, &config)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("e.h5: 1 of 20 embeddings are unusable"),
            "{err}"
        );
        assert!(
            err.contains("utt00003 (embedding is the zero vector"),
            "{err}"
        );
    }
}
