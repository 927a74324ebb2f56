//! The stage graph of a pipeline: which commands each stage runs, on which files, what it
//! depends on, what it produces and where its headline metrics are.
//!
//! Folder layout under the run folder: `scan/` (manifests, trial lists, folds), `prepare/`
//! (audio caches), `baseline/`, `pretrain/`, `embed/` (embeddings and the self-contained
//! `model.safetensors`), `eval-sv/<set>/` (with `calibration.json`),
//! `eval-emotion/<set>/`, and per pseudo-labelling round `cluster-rN/`, `finetune-rN/`,
//! `embed-rN/`, `eval-sv-rN/`, `eval-emotion-rN/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use stage_kit::run_folder;

use super::config::{DataRef, PipelineFile, ResolvedCorpus};

/// One stage of the graph.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    /// Program (absolute path) and arguments of each command, run in order.
    pub commands: Vec<Vec<String>>,
    /// The stage's configuration section, written to `<stage>/config.toml`.
    pub config: Option<toml::Table>,
    /// The pipeline section the config comes from and the subcommand of the stage's binary
    /// that reads it (`check-config` checks it when planning).
    pub config_of: Option<(&'static str, &'static str)>,
    /// Stages whose outputs this one reads.
    pub upstream: Vec<String>,
    /// Files and folders outside the run folder that this stage reads (fingerprinted).
    pub external: Vec<PathBuf>,
    /// Files that must exist after the stage.
    pub outputs: Vec<PathBuf>,
    /// Report files whose top-level numbers are the stage's metrics, by label.
    pub metrics: Vec<(String, PathBuf)>,
    /// Nested objects of the report files (dotted paths) whose numbers are metrics too,
    /// keyed `path.name`.
    pub nested_metrics: Vec<&'static str>,
    /// Arguments that say how the commands run, not what they compute (the ranks of a
    /// training stage): appended to each command when it runs, left out of the hash.
    pub how_it_runs: Vec<String>,
}

impl Stage {
    pub(super) fn new(name: &str, upstream: &[&str]) -> Self {
        Stage {
            name: name.to_owned(),
            commands: Vec::new(),
            config: None,
            config_of: None,
            upstream: upstream.iter().map(|s| s.to_string()).collect(),
            external: Vec::new(),
            outputs: Vec::new(),
            metrics: Vec::new(),
            nested_metrics: Vec::new(),
            how_it_runs: Vec::new(),
        }
    }

    /// The commands as they run: [`Stage::commands`] with [`Stage::how_it_runs`].
    pub fn runnable_commands(&self) -> Vec<Vec<String>> {
        self.commands
            .iter()
            .map(|c| c.iter().chain(&self.how_it_runs).cloned().collect())
            .collect()
    }

    /// The binaries the stage runs.
    pub fn binaries(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.commands.iter().map(|c| PathBuf::from(&c[0])).collect();
        out.sort();
        out.dedup();
        out
    }

    /// Top-level numbers of each metrics file, and those of its `nested_metrics` objects, by
    /// label.
    pub fn read_metrics(&self) -> anyhow::Result<serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (label, path) in &self.metrics {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            let report: serde_json::Value = serde_json::from_str(&text)?;
            let mut numbers = serde_json::Map::new();
            let sections = std::iter::once("").chain(self.nested_metrics.iter().copied());
            for section in sections {
                // JSON pointer ("" is the whole report) and key prefix of the section.
                let (pointer, prefix): (String, String) = section
                    .split('.')
                    .filter(|part| !part.is_empty())
                    .map(|part| (format!("/{part}"), format!("{part}.")))
                    .unzip();
                let object = report.pointer(&pointer).and_then(|v| v.as_object());
                for (k, v) in object.into_iter().flatten().filter(|(_, v)| v.is_number()) {
                    numbers.insert(format!("{prefix}{k}"), v.clone());
                }
            }
            out.insert(label.clone(), serde_json::Value::Object(numbers));
        }
        Ok(serde_json::Value::Object(out))
    }
}

/// Builds the stages, in an order where every stage follows those it depends on.
pub fn build(
    file: &PipelineFile,
    corpora: &BTreeMap<String, ResolvedCorpus>,
    rounds: usize,
    run_dir: &Path,
    bin_dir: &Path,
) -> anyhow::Result<Vec<Stage>> {
    let p = Planner {
        file,
        corpora,
        run_dir,
        bin_dir,
    };
    let mut stages = vec![p.scan()?, p.prepare(), p.baseline(), p.pretrain()];
    let mut model = (
        "pretrain".to_owned(),
        run_dir.join("pretrain").join(run_folder::MODEL),
    );
    for round in 0..=rounds {
        let suffix = if round == 0 {
            String::new()
        } else {
            format!("-r{round}")
        };
        if round > 0 {
            let previous_embed = if round == 1 {
                "embed".to_owned()
            } else {
                format!("embed-r{}", round - 1)
            };
            stages.push(p.cluster(round, &previous_embed));
            stages.push(p.finetune(round, &model));
            model = (
                format!("finetune{suffix}"),
                run_dir
                    .join(format!("finetune{suffix}"))
                    .join(run_folder::MODEL),
            );
        }
        stages.push(p.embed(&suffix, &model));
        // PLDA rows need pseudo-labels: those of the round's own clustering.
        let labels = (round > 0).then(|| format!("cluster-r{round}"));
        stages.push(p.eval_sv(&suffix, labels.as_deref()));
        if !file.emotion.is_empty() {
            stages.push(p.eval_emotion(&suffix));
        }
    }
    Ok(stages)
}

struct Planner<'a> {
    file: &'a PipelineFile,
    corpora: &'a BTreeMap<String, ResolvedCorpus>,
    run_dir: &'a Path,
    bin_dir: &'a Path,
}

/// A command line builder.
struct Cmd(Vec<String>);

impl Cmd {
    fn arg(mut self, arg: impl AsRef<str>) -> Self {
        self.0.push(arg.as_ref().to_owned());
        self
    }

    fn path(self, flag: &str, path: &Path) -> Self {
        self.arg(flag).arg(path.display().to_string())
    }
}

impl Planner<'_> {
    fn bin(&self, name: &str) -> Cmd {
        Cmd(vec![self.bin_dir.join(name).display().to_string()])
    }

    fn dir(&self, stage: &str) -> PathBuf {
        self.run_dir.join(stage)
    }

    fn seed(&self) -> String {
        self.file.pipeline.seed.to_string()
    }

    /// A stage section with the pipeline's seed and `device` written in: the one source of
    /// both ([`super::config::RUNNER_KEYS`] refuses them inside the sections, so nothing is
    /// overridden).
    fn with_seed_and_device(&self, section: &toml::Table) -> toml::Table {
        let mut config = self.with_device(section);
        let seed = i64::try_from(self.file.pipeline.seed).expect("TOML integers are i64");
        config.insert("seed".into(), seed.into());
        config
    }

    /// A stage section with the pipeline's `device` written in.
    fn with_device(&self, section: &toml::Table) -> toml::Table {
        let mut config = section.clone();
        let device = self.file.pipeline.device.to_string();
        config.insert("device".into(), device.into());
        config
    }

    /// Name of a data reference's manifest: corpus, part and split joined.
    fn key(data: &DataRef) -> String {
        [
            Some(data.corpus.as_str()),
            data.part.as_deref(),
            data.split.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join("-")
    }

    /// Name of the whole scanned part (before any split filter).
    fn scan_key(data: &DataRef) -> String {
        Self::key(&DataRef {
            split: None,
            ..data.clone()
        })
    }

    fn manifest(&self, data: &DataRef) -> PathBuf {
        self.dir("scan")
            .join(run_folder::manifest(&Self::key(data)))
    }

    fn cache(&self, data: &DataRef) -> PathBuf {
        self.dir("prepare").join(run_folder::h5(&Self::key(data)))
    }

    /// The training set (joined when `[[train]]` lists several parts).
    fn train(&self) -> DataRef {
        self.file.train.data()
    }

    /// Every data reference whose audio is embedded or trained on, once, training set first.
    fn speech_sets(&self) -> Vec<DataRef> {
        let mut sets = vec![self.train()];
        for data in self
            .file
            .sv
            .iter()
            .map(|s| &s.data)
            .chain(self.file.emotion.iter().map(|e| &e.data))
        {
            if !sets.contains(data) {
                sets.push(data.clone());
            }
        }
        sets
    }

    /// The manifest an emotion evaluation reads (with folds when the pipeline makes them).
    fn emotion_manifest(&self, name: &str, data: &DataRef, folds: &toml::Value) -> PathBuf {
        match folds {
            toml::Value::Integer(_) => self.dir("scan").join(format!("{name}.folds.parquet")),
            _ => self.manifest(data),
        }
    }

    fn emotion_fold_source(folds: &toml::Value) -> &'static str {
        match folds.as_str() {
            Some("split") => "split",
            _ => "fold",
        }
    }

    fn scan(&self) -> anyhow::Result<Stage> {
        let mut stage = Stage::new("scan", &[]);
        let dir = self.dir("scan");
        let mut scanned = Vec::new();
        for data in self.file.data_refs() {
            let base = DataRef {
                split: None,
                ..data.clone()
            };
            let key = Self::scan_key(data);
            if !scanned.contains(&key) {
                scanned.push(key.clone());
                let spec = &self.file.corpora[&data.corpus];
                let root = &self.corpora[&data.corpus].root;
                let mut cmd = self.bin("data-manifest").arg("scan").arg(&spec.kind);
                if let Some(part) = &data.part {
                    cmd = cmd.arg("--part").arg(part);
                }
                for arg in spec.scanner_args() {
                    cmd = cmd.arg(arg);
                }
                let cmd = cmd
                    .path("--root", root)
                    .path("--out", &self.manifest(&base))
                    .path("--rejects", &dir.join(format!("{key}.rejects.parquet")))
                    .path("--summary-json", &dir.join(format!("{key}.summary.json")));
                stage.commands.push(cmd.0);
                if !stage.external.contains(root) {
                    stage.external.push(root.clone());
                }
            }
            if let Some(split) = &data.split {
                let out = self.manifest(data);
                if !stage.outputs.contains(&out) {
                    let cmd = self
                        .bin("data-manifest")
                        .arg("filter")
                        .path("--manifest", &self.manifest(&base))
                        .arg("--split")
                        .arg(split)
                        .path("--out", &out);
                    stage.commands.push(cmd.0);
                    stage.outputs.push(out);
                }
            }
            stage.outputs.push(self.manifest(&base));
        }
        if self.file.train.is_joined() {
            let mut cmd = self
                .bin("data-manifest")
                .arg("merge")
                .arg("--join")
                .arg("--manifests");
            for part in self.file.train.parts() {
                cmd = cmd.arg(self.manifest(part).display().to_string());
            }
            let out = self.manifest(&self.train());
            stage.commands.push(cmd.path("--out", &out).0);
            stage.outputs.push(out);
        }
        for set in &self.file.sv {
            let out = dir.join(run_folder::trials(&set.name));
            let summary = dir.join(format!("{}.trials.summary.json", set.name));
            let list = match (&set.trials, &set.shipped_trials) {
                (Some(_), Some(_)) => {
                    bail!(
                        "[[sv]] {}: give trials or shipped_trials, not both",
                        set.name
                    )
                }
                (Some(list), None) => Some(absolute_in(&self.corpora[&set.data.corpus].root, list)),
                (None, Some(list)) => Some(crate::workspace::root().join(SHIPPED).join(list)),
                (None, None) => None,
            };
            let cmd = match list {
                Some(list) => {
                    if !list.exists() {
                        bail!(
                            "trial list {} of {} does not exist",
                            list.display(),
                            set.name
                        );
                    }
                    stage.external.push(list.clone());
                    self.bin("data-manifest")
                        .arg("trials")
                        .path("--list", &list)
                }
                None => self
                    .bin("data-manifest")
                    .arg("make-trials")
                    .arg("--seed")
                    .arg(self.seed()),
            };
            let cmd = cmd
                .path("--manifest", &self.manifest(&set.data))
                .path("--out", &out)
                .path("--summary-json", &summary);
            stage.commands.push(cmd.0);
            stage.outputs.push(out);
        }
        for set in &self.file.emotion {
            if let toml::Value::Integer(folds) = set.folds {
                let out = self.emotion_manifest(&set.name, &set.data, &set.folds);
                let cmd = self
                    .bin("data-manifest")
                    .arg("split")
                    .path("--manifest", &self.manifest(&set.data))
                    .path("--out", &out)
                    .arg("--by")
                    .arg("speaker")
                    .arg("--folds")
                    .arg(folds.to_string())
                    .arg("--seed")
                    .arg(self.seed());
                stage.commands.push(cmd.0);
                stage.outputs.push(out);
            }
        }
        stage.metrics.push((
            "train".to_owned(),
            dir.join(format!(
                "{}.summary.json",
                Self::scan_key(&self.file.train.parts()[0])
            )),
        ));
        stage.outputs.sort();
        stage.outputs.dedup();
        Ok(stage)
    }

    fn prepare(&self) -> Stage {
        let mut stage = Stage::new("prepare", &["scan"]);
        let dir = self.dir("prepare");
        stage.config = Some(self.file.prepare.clone());
        stage.config_of = Some(("prepare", "prepare"));
        let config = dir.join("config.toml");
        // A joined training set is prepared part by part, then its caches are concatenated.
        let mut speech = self.file.train.parts().to_vec();
        for data in self.speech_sets().into_iter().skip(1) {
            if !speech.contains(&data) {
                speech.push(data);
            }
        }
        let mut sets: Vec<(DataRef, bool, &str)> = speech
            .into_iter()
            .map(|d| (d, self.file.pipeline.vad, "mean"))
            .collect();
        if let Some(augment) = &self.file.augment {
            sets.push((augment.musan.clone(), false, "mean"));
            sets.push((augment.rirs.clone(), false, "first"));
        }
        for (data, vad, downmix) in sets {
            let key = Self::key(&data);
            let cmd = self
                .bin("feature-extract")
                .arg("prepare")
                .path("--manifest", &self.manifest(&data))
                .path("--audio-out", &self.cache(&data))
                .path("--config", &config)
                .path("--rejects", &dir.join(format!("{key}.rejects.parquet")))
                .path("--summary-json", &dir.join(format!("{key}.summary.json")))
                .arg("--vad")
                .arg(vad.to_string())
                .arg("--downmix")
                .arg(downmix);
            stage.commands.push(cmd.0);
            stage.outputs.push(self.cache(&data));
        }
        if self.file.train.is_joined() {
            let mut cmd = self
                .bin("feature-extract")
                .arg("merge")
                .path("--output", &self.cache(&self.train()));
            for part in self.file.train.parts() {
                cmd = cmd.arg(self.cache(part).display().to_string());
            }
            stage.commands.push(cmd.0);
            stage.outputs.push(self.cache(&self.train()));
        }
        stage.metrics.push((
            "train".to_owned(),
            dir.join(format!(
                "{}.summary.json",
                Self::key(&self.file.train.parts()[0])
            )),
        ));
        stage
    }

    fn baseline(&self) -> Stage {
        let mut stage = Stage::new("baseline", &["scan", "prepare"]);
        let dir = self.dir("baseline");
        for set in &self.file.sv {
            let embeddings = dir.join(run_folder::h5(&Self::key(&set.data)));
            if !stage.outputs.contains(&embeddings) {
                stage
                    .commands
                    .push(self.baseline_embed(&set.data, &embeddings));
                stage.outputs.push(embeddings.clone());
            }
            let out = dir.join(format!("sv-{}", set.name));
            let cmd = self
                .bin("downstream-eval")
                .arg("sv")
                .path("--embeddings", &embeddings)
                .path(
                    "--trials",
                    &self.dir("scan").join(run_folder::trials(&set.name)),
                )
                .path("--out-dir", &out);
            stage.commands.push(cmd.0);
            stage.outputs.push(out.join(run_folder::REPORT));
            stage
                .metrics
                .push((format!("sv/{}", set.name), out.join(run_folder::REPORT)));
        }
        for set in &self.file.emotion {
            let embeddings = dir.join(run_folder::h5(&Self::key(&set.data)));
            if !stage.outputs.contains(&embeddings) {
                stage
                    .commands
                    .push(self.baseline_embed(&set.data, &embeddings));
                stage.outputs.push(embeddings.clone());
            }
            let out = dir.join(format!("emotion-{}", set.name));
            stage.commands.push(self.emotion_command(
                &set.name,
                &set.data,
                &set.folds,
                &embeddings,
                &out,
                None,
            ));
            stage.outputs.push(out.join(run_folder::REPORT));
            stage.metrics.push((
                format!("emotion/{}", set.name),
                out.join(run_folder::REPORT),
            ));
        }
        stage
    }

    fn baseline_embed(&self, data: &DataRef, out: &Path) -> Vec<String> {
        self.bin("downstream-eval")
            .arg("baseline")
            .path("--manifest", &self.manifest(data))
            .path("--audio-cache", &self.cache(data))
            .path("--out", out)
            .0
    }

    fn emotion_command(
        &self,
        name: &str,
        data: &DataRef,
        folds: &toml::Value,
        embeddings: &Path,
        out: &Path,
        config: Option<&Path>,
    ) -> Vec<String> {
        let mut cmd = self
            .bin("downstream-eval")
            .arg("emotion")
            .path("--embeddings", embeddings)
            .path("--manifest", &self.emotion_manifest(name, data, folds))
            .path("--out-dir", out)
            .arg("--folds")
            .arg(Self::emotion_fold_source(folds))
            .arg("--seed")
            .arg(self.seed());
        if let Some(config) = config {
            cmd = cmd.path("--config", config);
        }
        cmd.0
    }

    fn augmentation_args(&self, mut cmd: Cmd) -> Cmd {
        if let Some(augment) = &self.file.augment {
            cmd = cmd
                .path("--noise-cache", &self.cache(&augment.musan))
                .path("--rir-cache", &self.cache(&augment.rirs));
        }
        cmd
    }

    fn pretrain(&self) -> Stage {
        self.training_stage(
            "pretrain",
            "pretrain",
            &["scan", "prepare"],
            &self.file.pretrain,
            |cmd| cmd.path("--manifest", &self.manifest(&self.train())),
        )
    }

    /// A `dino-core pretrain|finetune` stage: its config section, the training audio cache
    /// with augmentation, a resumable output folder, the pipeline's seed and device;
    /// `inputs` adds what the subcommand reads besides.
    fn training_stage(
        &self,
        name: &str,
        subcommand: &'static str,
        upstream: &[&str],
        config: &toml::Table,
        inputs: impl FnOnce(Cmd) -> Cmd,
    ) -> Stage {
        let mut stage = Stage::new(name, upstream);
        let dir = self.dir(name);
        stage.config = Some(self.with_seed_and_device(config));
        stage.config_of = Some((subcommand, subcommand));
        let cmd = self
            .bin("dino-core")
            .path("--log-json", &dir.join("log.jsonl"))
            .arg(subcommand)
            .path("--config", &dir.join("config.toml"));
        let cmd = inputs(cmd).path("--audio-cache", &self.cache(&self.train()));
        let cmd = self
            .augmentation_args(cmd)
            .path("--out-dir", &dir)
            .arg("--resume");
        stage.commands.push(cmd.0);
        if let Some(n) = self.file.pipeline.nproc_per_node.filter(|&n| n > 1) {
            stage.how_it_runs = vec!["--nproc-per-node".to_owned(), n.to_string()];
        }
        stage.outputs.push(dir.join(run_folder::MODEL));
        stage
            .metrics
            .push((subcommand.to_owned(), dir.join(run_folder::REPORT)));
        stage
    }

    fn embed(&self, suffix: &str, model: &(String, PathBuf)) -> Stage {
        let name = format!("embed{suffix}");
        let mut stage = Stage::new(&name, &["scan", "prepare", &model.0]);
        let dir = self.dir(&name);
        stage.config = Some(self.with_device(&self.file.embed));
        stage.config_of = Some(("embed", "embed"));
        for data in self.speech_sets() {
            let key = Self::key(&data);
            let out = dir.join(run_folder::h5(&key));
            let cmd = self
                .bin("dino-core")
                .arg("embed")
                .path("--checkpoint", &model.1)
                .path("--manifest", &self.manifest(&data))
                .path("--audio-cache", &self.cache(&data))
                .path("--out", &out)
                .path("--config", &dir.join("config.toml"))
                .path("--summary-json", &dir.join(format!("{key}.summary.json")));
            stage.commands.push(cmd.0);
            stage.outputs.push(out);
        }
        // The self-contained model file: the encoder with the training audio's decoding/VAD
        // options and the mean of the training set's embeddings just written.
        let model_file = dir.join(run_folder::MODEL);
        let pipeline = self
            .run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cmd = self
            .bin("dino-core")
            .arg("bundle")
            .path("--checkpoint", &model.1)
            .path("--audio-cache", &self.cache(&self.train()))
            .path(
                "--mean-embeddings",
                &dir.join(run_folder::h5(&Self::key(&self.train()))),
            )
            .arg("--pipeline")
            .arg(pipeline)
            .path("--out", &model_file);
        stage.commands.push(cmd.0);
        stage.outputs.push(model_file);
        stage
    }

    /// Scores every trial list with cosine, and with AS-norm against the training set's
    /// embeddings as cohort (no labels needed); with `labels` (a cluster stage) also with a
    /// PLDA trained on the training set's embeddings of that stage's kept pseudo-labels,
    /// without and with AS-norm. Metrics `sv/<set>`, `sv/<set>+asnorm`, `sv/<set>+plda`,
    /// `sv/<set>+plda+asnorm`.
    fn eval_sv(&self, suffix: &str, labels: Option<&str>) -> Stage {
        let name = format!("eval-sv{suffix}");
        let embed = format!("embed{suffix}");
        let mut upstream = vec!["scan", embed.as_str()];
        upstream.extend(labels);
        let mut stage = Stage::new(&name, &upstream);
        let dir = self.dir(&name);
        stage.config = Some(self.file.eval_sv.clone());
        stage.config_of = Some(("eval_sv", "sv"));
        let train = self
            .dir(&embed)
            .join(run_folder::h5(&Self::key(&self.train())));
        let plda = dir.join("plda.json");
        if let Some(cluster) = labels {
            let cmd = self
                .bin("downstream-eval")
                .arg("plda-train")
                .path("--embeddings", &train)
                .path(
                    "--pseudo-labels",
                    &self.dir(cluster).join(run_folder::PSEUDO_LABELS),
                )
                .path("--out", &plda);
            stage.commands.push(cmd.0);
            stage.outputs.push(plda.clone());
        }
        for set in &self.file.sv {
            let mut variants = vec![("", false, false), ("+asnorm", false, true)];
            if labels.is_some() {
                variants.extend([("+plda", true, false), ("+plda+asnorm", true, true)]);
            }
            for (variant, with_plda, with_asnorm) in variants {
                let out = dir.join(format!("{}{variant}", set.name));
                let mut cmd = self
                    .bin("downstream-eval")
                    .arg("sv")
                    .path(
                        "--embeddings",
                        &self.dir(&embed).join(run_folder::h5(&Self::key(&set.data))),
                    )
                    .path(
                        "--trials",
                        &self.dir("scan").join(run_folder::trials(&set.name)),
                    )
                    .path("--out-dir", &out)
                    .path("--config", &dir.join("config.toml"));
                cmd = if with_plda {
                    cmd.arg("--backend").arg("plda").path("--plda", &plda)
                } else {
                    cmd.path("--mean-embeddings", &train)
                };
                if with_asnorm {
                    cmd = cmd.path("--cohort-embeddings", &train);
                }
                stage.commands.push(cmd.0);
                stage.outputs.push(out.join(run_folder::REPORT));
                stage.metrics.push((
                    format!("sv/{}{variant}", set.name),
                    out.join(run_folder::REPORT),
                ));
            }
        }
        stage
    }

    fn eval_emotion(&self, suffix: &str) -> Stage {
        let name = format!("eval-emotion{suffix}");
        let embed = format!("embed{suffix}");
        let mut stage = Stage::new(&name, &["scan", &embed]);
        let dir = self.dir(&name);
        stage.config = Some(self.with_device(&self.file.eval_emotion));
        stage.config_of = Some(("eval_emotion", "emotion"));
        for set in &self.file.emotion {
            let out = dir.join(&set.name);
            let embeddings = self.dir(&embed).join(run_folder::h5(&Self::key(&set.data)));
            stage.commands.push(self.emotion_command(
                &set.name,
                &set.data,
                &set.folds,
                &embeddings,
                &out,
                Some(&dir.join("config.toml")),
            ));
            stage.outputs.push(out.join(run_folder::REPORT));
            stage.metrics.push((
                format!("emotion/{}", set.name),
                out.join(run_folder::REPORT),
            ));
        }
        stage
    }

    fn cluster(&self, round: usize, previous_embed: &str) -> Stage {
        let name = format!("cluster-r{round}");
        let mut stage = Stage::new(&name, &["scan", previous_embed]);
        let dir = self.dir(&name);
        stage.config = Some(self.with_seed_and_device(&self.file.cluster));
        stage.config_of = Some(("cluster", "cluster"));
        let cmd = self
            .bin("pseudo-labeler")
            .arg("cluster")
            .path(
                "--embeddings",
                &self
                    .dir(previous_embed)
                    .join(run_folder::h5(&Self::key(&self.train()))),
            )
            .path("--manifest", &self.manifest(&self.train()))
            .path("--out-dir", &dir)
            .path("--config", &dir.join("config.toml"))
            .path("--log-json", &dir.join("log.jsonl"));
        stage.commands.push(cmd.0);
        stage.outputs.push(dir.join(run_folder::PSEUDO_LABELS));
        stage
            .metrics
            .push(("cluster".to_owned(), dir.join(run_folder::CLUSTER_REPORT)));
        stage.nested_metrics = CLUSTER_METRICS.to_vec();
        stage
    }

    fn finetune(&self, round: usize, model: &(String, PathBuf)) -> Stage {
        let cluster = format!("cluster-r{round}");
        let labels = self.dir(&cluster).join(run_folder::PSEUDO_LABELS);
        self.training_stage(
            &format!("finetune-r{round}"),
            "finetune",
            &["scan", "prepare", &cluster, &model.0],
            &self.file.finetune,
            |cmd| {
                cmd.path("--init", &model.1)
                    .path("--pseudo-labels", &labels)
            },
        )
    }
}

/// pseudo-labeler takes `auto`, `cpu` or `cuda` (no ordinal).
/// The parts of `cluster_report.json` the report shows per round: cluster counts through the
/// recipe, the share kept, and agreement with the true speakers (and of k-means with the
/// recording sessions) where the manifest has them.
const CLUSTER_METRICS: [&str; 7] = [
    "kmeans",
    "merge",
    "plda",
    "cleanup",
    "diagnostics.kmeans",
    "diagnostics.kept",
    "diagnostics.kmeans_sessions",
];

/// Folder of the manifests and trial lists that ship with the project.
const SHIPPED: &str = "data-manifests";

/// `path` itself when absolute, else under `root`.
fn absolute_in(root: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture pipeline planned into `run`, with its corpus (a trial list alone) at
    /// `corpus`.
    fn fixture_plan(corpus: &Path, run: &Path) -> Vec<Stage> {
        let path = crate::workspace::root().join("pipelines/fixture.toml");
        let file: PipelineFile = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        std::fs::write(corpus.join("trials.txt"), "").unwrap();
        let corpora = BTreeMap::from([(
            "fixture".to_owned(),
            ResolvedCorpus {
                root: corpus.to_path_buf(),
                source: "test".into(),
            },
        )]);
        build(&file, &corpora, 1, run, Path::new("/bin")).unwrap()
    }

    #[test]
    fn seed_device_vad_and_downmix_come_from_the_runner_once() {
        let corpus = tempfile::tempdir().unwrap();
        let stages = fixture_plan(corpus.path(), Path::new("/run"));
        let stage = |name: &str| stages.iter().find(|s| s.name == name).unwrap();
        for name in ["pretrain", "finetune-r1", "cluster-r1"] {
            let config = stage(name).config.as_ref().unwrap();
            assert_eq!(config["seed"].as_integer(), Some(1), "{name}");
            assert_eq!(config["device"].as_str(), Some("cpu"), "{name}");
            let flags: Vec<&String> = stage(name).commands.iter().flatten().collect();
            assert!(
                !flags.iter().any(|f| *f == "--seed" || *f == "--device"),
                "{name} overrides its config with flags: {flags:?}"
            );
        }
        for name in ["embed", "eval-emotion", "eval-emotion-r1"] {
            let config = stage(name).config.as_ref().unwrap();
            assert_eq!(config["device"].as_str(), Some("cpu"), "{name}");
        }
        let prepare = stage("prepare");
        let option = |cache: &str, flag: &str| {
            let cmd = prepare
                .commands
                .iter()
                .find(|c| c.iter().any(|a| a.ends_with(cache)))
                .unwrap_or_else(|| panic!("no prepare command for {cache}"));
            let at = cmd.iter().position(|a| a == flag).unwrap();
            cmd[at + 1].clone()
        };
        assert_eq!(option("fixture-speech-train.h5", "--vad"), "true");
        assert_eq!(option("fixture-musan.h5", "--vad"), "false");
        assert_eq!(option("fixture-rirs.h5", "--vad"), "false");
        assert_eq!(option("fixture-rirs.h5", "--downmix"), "first");
        assert_eq!(option("fixture-musan.h5", "--downmix"), "mean");
    }

    #[test]
    fn metrics_are_the_top_level_and_the_named_nested_numbers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let report = r#"{"seconds": 1.5, "name": "x", "inertia": [3, 2],
            "cleanup": {"kept_share": 0.9, "rule": "y"},
            "diagnostics": {"kept": {"nmi": 0.7}, "kmeans": {"nmi": 0.6}}}"#;
        std::fs::write(&path, report).unwrap();
        let mut stage = Stage::new("cluster-r1", &[]);
        stage.metrics.push(("cluster".to_owned(), path));
        stage.nested_metrics = vec!["cleanup", "diagnostics.kept", "absent"];
        let metrics = stage.read_metrics().unwrap();
        assert_eq!(
            metrics,
            serde_json::json!({"cluster": {
                "seconds": 1.5,
                "cleanup.kept_share": 0.9,
                "diagnostics.kept.nmi": 0.7
            }})
        );
    }

    #[test]
    fn ranks_change_how_training_runs_but_not_the_commands_that_are_hashed() {
        let (_, mut file) = PipelineFile::load("fixture").unwrap();
        let corpora =
            super::super::config::resolve_corpora(&file, &BTreeMap::new(), false).unwrap();
        let (run, bin) = (Path::new("/run"), Path::new("/bin"));
        let alone = build(&file, &corpora, 1, run, bin).unwrap();
        file.pipeline.nproc_per_node = Some(2);
        let ranks = build(&file, &corpora, 1, run, bin).unwrap();
        for (a, r) in alone.iter().zip(&ranks) {
            assert_eq!(a.commands, r.commands, "{}", a.name);
            let training = a.name == "pretrain" || a.name.starts_with("finetune");
            assert_eq!(r.how_it_runs.is_empty(), !training, "{}", a.name);
        }
        let pretrain = ranks.iter().find(|s| s.name == "pretrain").unwrap();
        let command = &pretrain.runnable_commands()[0];
        assert_eq!(command[command.len() - 2..], ["--nproc-per-node", "2"]);
    }

    #[test]
    fn joined_training_sets_and_generic_options_and_eval_rows() {
        let text = r#"
            [pipeline]
            description = "two training corpora"
            seed = 1
            rounds = 1
            [corpora.a]
            kind = "fixture"
            [corpora.b]
            kind = "generic"
            speaker_component = 0
            session_component = -2
            [[train]]
            corpus = "a"
            part = "speech"
            split = "train"
            [[train]]
            corpus = "b"
            [[sv]]
            name = "t"
            corpus = "a"
            part = "speech"
            split = "test"
        "#;
        let file: PipelineFile = toml::from_str(text).unwrap();
        file.check_references().unwrap();
        let corpora: BTreeMap<String, ResolvedCorpus> = ["a", "b"]
            .map(|c| {
                let resolved = ResolvedCorpus {
                    root: PathBuf::from(format!("/corpora/{c}")),
                    source: "test".to_owned(),
                };
                (c.to_owned(), resolved)
            })
            .into();
        let stages = build(&file, &corpora, 1, Path::new("/run"), Path::new("/bin")).unwrap();
        let commands = |name: &str| -> Vec<String> {
            let stage = stages.iter().find(|s| s.name == name).unwrap();
            stage.commands.iter().map(|c| c[1..].join(" ")).collect()
        };
        let scan = commands("scan");
        assert!(
            scan.iter().any(|c| c.starts_with(
                "scan generic --speaker-component 0 --session-component -2 --root /corpora/b"
            )),
            "{scan:#?}"
        );
        assert!(
            scan.iter().any(|c| c.starts_with("merge --join --manifests /run/scan/a-speech-train.parquet /run/scan/b.parquet --out /run/scan/joined-train.parquet")),
            "{scan:#?}"
        );
        let prepare = commands("prepare");
        assert!(
            prepare.iter().any(|c| c == "merge --output /run/prepare/joined-train.h5 /run/prepare/a-speech-train.h5 /run/prepare/b.h5"),
            "{prepare:#?}"
        );
        for stage in ["pretrain", "embed", "cluster-r1"] {
            let joined = commands(stage).iter().any(|c| c.contains("joined-train"));
            assert!(joined, "{stage}: {:#?}", commands(stage));
        }
        let sv = commands("eval-sv");
        assert_eq!(sv.len(), 2, "cosine and AS-norm: {sv:#?}");
        assert!(
            sv[1].contains("--cohort-embeddings /run/embed/joined-train.h5"),
            "{sv:#?}"
        );
        let sv = commands("eval-sv-r1");
        assert!(sv[0].starts_with("plda-train --embeddings /run/embed-r1/joined-train.h5 --pseudo-labels /run/cluster-r1/pseudo_labels.parquet"), "{sv:#?}");
        assert_eq!(sv.len(), 5, "{sv:#?}");
        assert!(
            sv[4].contains("--backend plda --plda /run/eval-sv-r1/plda.json --cohort-embeddings"),
            "{sv:#?}"
        );

        let bad = text.replace("kind = \"fixture\"", "kind = \"fixture\"\nregex = \"x\"");
        let file: PipelineFile = toml::from_str(&bad).unwrap();
        let err = file.check_references().unwrap_err().to_string();
        assert!(err.contains("options of the generic scanner"), "{err}");
    }
}
