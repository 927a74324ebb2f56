//! The stage graph of a pipeline: which commands each stage runs, on which files, what it
//! depends on, what it produces and where its headline metrics are.
//!
//! Folder layout under the run folder: `scan/` (manifests, trial lists, folds), `prepare/`
//! (audio caches), `baseline/`, `pretrain/`, `embed/` (embeddings and the self-contained
//! `model.safetensors`), `eval-sv/<set>/` (with `calibration.json`),
//! `eval-emotion/<set>/`, and per pseudo-labelling round `cluster-rN/`, `finetune-rN/`,
//! `embed-rN/`, `eval-sv-rN/`, `eval-emotion-rN/`; `eval-sv-plda/` scores DINO's embeddings
//! by a PLDA on the first round's pseudo-labels.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::bail;
use stage_kit::{CheckpointRule, Representation, run_folder};

use super::config::{
    DataRef, EmotionSet, PipelineFile, ResolvedCorpus, SvSet, VALIDATION_SET_KEY, ValidationSpec,
};

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
    let mut stages = vec![p.scan()?, p.prepare(), p.baseline(), p.pretrain()?];
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
            if round == 1 {
                stages.push(p.eval_sv_plda());
            }
            stages.push(p.finetune(round, &model)?);
            model = (
                format!("finetune{suffix}"),
                run_dir
                    .join(format!("finetune{suffix}"))
                    .join(run_folder::MODEL),
            );
        }
        let rule = file.embed_checkpoint()?;
        if rule != CheckpointRule::Last {
            let (stage, selected) = p.select(&suffix, &model.0, rule);
            model = (stage.name.clone(), selected);
            stages.push(stage);
        }
        stages.push(p.embed(&suffix, &model)?);
        // PLDA rows need pseudo-labels: those of the round's own clustering.
        let labels = (round > 0).then(|| format!("cluster-r{round}"));
        stages.push(p.eval_sv(&suffix, labels.as_deref()));
        if !file.emotion.is_empty() {
            stages.push(p.eval_emotion(&suffix)?);
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
            self.trials_command(&mut stage, set, &[])?;
        }
        // A validation list made from an evaluated corpus leaves out the evaluation's pairs.
        for set in self
            .file
            .validation
            .iter()
            .filter_map(ValidationSpec::as_sv)
        {
            let evaluations = self
                .file
                .sv
                .iter()
                .filter(|s| s.data.corpus == set.data.corpus);
            let exclude: Vec<PathBuf> = evaluations
                .map(|s| dir.join(run_folder::trials(&s.name)))
                .collect();
            self.trials_command(&mut stage, &set, &exclude)?;
        }
        for set in self.fold_sets() {
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

    /// The emotion sets whose folds the scan may make: the evaluations' and the validations'.
    fn fold_sets(&self) -> Vec<EmotionSet> {
        let validations = self
            .file
            .validation
            .iter()
            .filter_map(ValidationSpec::as_emotion);
        self.file
            .emotion
            .iter()
            .cloned()
            .chain(validations)
            .collect()
    }

    /// Adds the command writing `scan/<set>.trials.parquet`: from the set's own or a shipped
    /// list, else made from the manifest's speakers without the pairs of the `exclude` lists.
    fn trials_command(
        &self,
        stage: &mut Stage,
        set: &SvSet,
        exclude: &[PathBuf],
    ) -> anyhow::Result<()> {
        let dir = self.dir("scan");
        let out = dir.join(run_folder::trials(&set.name));
        let summary = dir.join(format!("{}.trials.summary.json", set.name));
        let list = match (&set.trials, &set.shipped_trials) {
            (Some(_), Some(_)) => {
                bail!("{}: give trials or shipped_trials, not both", set.name)
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
                if set.per_speaker.is_some() {
                    bail!(
                        "{}: per_speaker is for made trial lists, not given ones",
                        set.name
                    );
                }
                stage.external.push(list.clone());
                self.bin("data-manifest")
                    .arg("trials")
                    .path("--list", &list)
            }
            None => {
                let mut cmd = self
                    .bin("data-manifest")
                    .arg("make-trials")
                    .arg("--seed")
                    .arg(self.seed());
                if let Some(n) = set.per_speaker {
                    cmd = cmd.arg("--per-speaker").arg(n.to_string());
                }
                for list in exclude {
                    cmd = cmd.path("--exclude-trials", list);
                }
                cmd
            }
        };
        let cmd = cmd
            .path("--manifest", &self.manifest(&set.data))
            .path("--out", &out)
            .path("--summary-json", &summary);
        stage.commands.push(cmd.0);
        stage.outputs.push(out);
        Ok(())
    }

    fn prepare(&self) -> Stage {
        let mut stage = Stage::new("prepare", &["scan"]);
        let dir = self.dir("prepare");
        stage.config = Some(self.file.prepare.clone());
        stage.config_of = Some(("prepare", "prepare"));
        let config = dir.join("config.toml");
        // A joined training set is prepared part by part, then its caches are concatenated.
        let mut speech = self.file.train.parts().to_vec();
        let validation = self.file.validation.iter().map(|v| v.data.clone());
        for data in self.speech_sets().into_iter().skip(1).chain(validation) {
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

    fn pretrain(&self) -> anyhow::Result<Stage> {
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
    ) -> anyhow::Result<Stage> {
        let mut stage = Stage::new(name, upstream);
        let dir = self.dir(name);
        let mut config = self.with_seed_and_device(config);
        // The validation set is the runner's to resolve: the section names it, the command
        // gets its files.
        if let Some(toml::Value::Table(validation)) = config.get_mut("validation") {
            validation.remove(VALIDATION_SET_KEY);
        }
        stage.config = Some(config);
        stage.config_of = Some((subcommand, subcommand));
        let cmd = self
            .bin("dino-core")
            .path("--log-json", &dir.join("log.jsonl"))
            .arg(subcommand)
            .path("--config", &dir.join("config.toml"));
        let mut cmd = inputs(cmd).path("--audio-cache", &self.cache(&self.train()));
        if let Some(set) = self.file.validation_of(subcommand)? {
            let manifest = match &set.folds {
                Some(folds) => self.emotion_manifest(&set.name, &set.data, folds),
                None => self.manifest(&set.data),
            };
            cmd = cmd
                .path("--validation-manifest", &manifest)
                .path("--validation-cache", &self.cache(&set.data));
            if set.folds.is_none() {
                let trials = self.dir("scan").join(run_folder::trials(&set.name));
                cmd = cmd.path("--validation-trials", &trials);
            }
            stage.outputs.push(dir.join(run_folder::CURVES_SVG));
            stage.nested_metrics = vec!["validation.best", "validation.last"];
        }
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
        Ok(stage)
    }

    /// Embeds every speech set with `model` (a training stage's last model, or a select
    /// stage's choice) in the configured representation, the emotion sets also in the other representations, and bundles the
    /// self-contained model file.
    fn embed(&self, suffix: &str, model: &(String, PathBuf)) -> anyhow::Result<Stage> {
        let name = format!("embed{suffix}");
        let mut stage = Stage::new(&name, &["scan", "prepare", &model.0]);
        let dir = self.dir(&name);
        let config = dir.join("config.toml");
        stage.config = Some(self.with_device(&self.file.embed));
        stage.config_of = Some(("embed", "embed"));
        let checkpoint = &model.1;
        let representation = self.file.embed_representation()?;
        let emotion_data: Vec<&DataRef> = self.file.emotion.iter().map(|e| &e.data).collect();
        for data in self.speech_sets() {
            let key = Self::key(&data);
            let mut outputs = vec![(None, dir.join(run_folder::h5(&key)))];
            // The other layers too, for the emotion evaluation to compare; the training
            // set's embedding layer for the model file's mean.
            for other in Representation::ALL
                .into_iter()
                .filter(|&r| r != representation)
            {
                let wanted = emotion_data.contains(&&data)
                    || (data == self.train() && other == Representation::Embedding);
                if wanted {
                    outputs.push((Some(other), Self::representation_file(&dir, &key, other)));
                }
            }
            for (other, out) in outputs {
                let mut cmd = self
                    .bin("dino-core")
                    .arg("embed")
                    .path("--checkpoint", checkpoint)
                    .path("--manifest", &self.manifest(&data))
                    .path("--audio-cache", &self.cache(&data))
                    .path("--out", &out)
                    .path("--config", &config);
                let summary = match other {
                    Some(r) => {
                        cmd = cmd.arg("--representation").arg(r.name());
                        format!("{key}.{r}.summary.json")
                    }
                    None => format!("{key}.summary.json"),
                };
                stage
                    .commands
                    .push(cmd.path("--summary-json", &dir.join(summary)).0);
                stage.outputs.push(out);
            }
        }
        // The self-contained model file: the encoder with the training audio's decoding/VAD
        // options and the mean of the training set's embeddings just written.
        let model_file = dir.join(run_folder::MODEL);
        let pipeline = self
            .run_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let train_key = Self::key(&self.train());
        let mean = match representation {
            Representation::Embedding => dir.join(run_folder::h5(&train_key)),
            _ => Self::representation_file(&dir, &train_key, Representation::Embedding),
        };
        let cmd = self
            .bin("dino-core")
            .arg("bundle")
            .path("--checkpoint", checkpoint)
            .path("--audio-cache", &self.cache(&self.train()))
            .path("--mean-embeddings", &mean)
            .arg("--pipeline")
            .arg(pipeline)
            .path("--out", &model_file);
        stage.commands.push(cmd.0);
        stage.outputs.push(model_file);
        Ok(stage)
    }

    /// `select{suffix}`: the model of the training stage `trained` that `rule` picks (the
    /// best-validated epoch, or an average of the last epochs).
    fn select(&self, suffix: &str, trained: &str, rule: CheckpointRule) -> (Stage, PathBuf) {
        let name = format!("select{suffix}");
        let mut stage = Stage::new(&name, &[trained]);
        let dir = self.dir(&name);
        let selected = dir.join(run_folder::MODEL);
        let cmd = self
            .bin("dino-core")
            .arg("select-model")
            .path("--run", &self.dir(trained))
            .arg("--rule")
            .arg(rule.to_string())
            .path("--out", &selected)
            .path("--summary-json", &dir.join(SELECTION));
        stage.commands.push(cmd.0);
        stage.outputs.push(selected.clone());
        (stage, selected)
    }

    /// `<key>.<representation>.h5`: a set's embeddings in a representation other than the
    /// configured one.
    fn representation_file(dir: &Path, key: &str, representation: Representation) -> PathBuf {
        dir.join(run_folder::h5(&format!("{key}.{representation}")))
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
        let mut stage = self.sv_stage(&name, &upstream);
        self.sv_rows(&mut stage, &embed, &[("", false), ("+asnorm", true)], None);
        if let Some(cluster) = labels {
            self.plda_rows(&mut stage, &embed, cluster);
        }
        stage
    }

    /// [`DINO_PLDA`]: DINO's embeddings scored by a PLDA trained on the first round's
    /// pseudo-labels, so that the round is compared with DINO by the same back-end.
    fn eval_sv_plda(&self) -> Stage {
        let (embed, cluster) = ("embed", "cluster-r1");
        let mut stage = self.sv_stage(DINO_PLDA, &["scan", embed, cluster]);
        self.plda_rows(&mut stage, embed, cluster);
        stage
    }

    /// An empty speaker-verification stage reading the `[eval_sv]` section.
    fn sv_stage(&self, name: &str, upstream: &[&str]) -> Stage {
        let mut stage = Stage::new(name, upstream);
        stage.config = Some(self.file.eval_sv.clone());
        stage.config_of = Some(("eval_sv", "sv"));
        stage
    }

    /// The training set's embeddings in `embed`'s folder: what the next round clusters, the
    /// scoring mean, the AS-norm cohort and the PLDA's training data.
    fn train_embeddings(&self, embed: &str) -> PathBuf {
        self.dir(embed)
            .join(run_folder::h5(&Self::key(&self.train())))
    }

    /// Trains `<stage>/plda.json` on `embed`'s training-set embeddings and the kept
    /// pseudo-labels of `cluster`, and adds the PLDA rows with and without AS-norm.
    fn plda_rows(&self, stage: &mut Stage, embed: &str, cluster: &str) {
        let plda = self.dir(&stage.name).join("plda.json");
        let cmd = self
            .bin("downstream-eval")
            .arg("plda-train")
            .path("--embeddings", &self.train_embeddings(embed))
            .path(
                "--pseudo-labels",
                &self.dir(cluster).join(run_folder::PSEUDO_LABELS),
            )
            .path("--out", &plda);
        stage.commands.push(cmd.0);
        stage.outputs.push(plda.clone());
        let variants = [("+plda", false), ("+plda+asnorm", true)];
        self.sv_rows(stage, embed, &variants, Some(&plda));
    }

    /// One `downstream-eval sv` per trial list and variant (label suffix, AS-norm or not):
    /// by PLDA when `plda` is given, else by cosine after subtracting the training mean.
    fn sv_rows(
        &self,
        stage: &mut Stage,
        embed: &str,
        variants: &[(&str, bool)],
        plda: Option<&Path>,
    ) {
        let dir = self.dir(&stage.name);
        let train = self.train_embeddings(embed);
        for set in &self.file.sv {
            for &(variant, with_asnorm) in variants {
                let out = dir.join(format!("{}{variant}", set.name));
                let mut cmd = self
                    .bin("downstream-eval")
                    .arg("sv")
                    .path(
                        "--embeddings",
                        &self.dir(embed).join(run_folder::h5(&Self::key(&set.data))),
                    )
                    .path(
                        "--trials",
                        &self.dir("scan").join(run_folder::trials(&set.name)),
                    )
                    .path("--out-dir", &out)
                    .path("--config", &dir.join("config.toml"));
                cmd = match plda {
                    Some(plda) => cmd.arg("--backend").arg("plda").path("--plda", plda),
                    None => cmd.path("--mean-embeddings", &train),
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
    }

    /// Emotion recognition on each emotion set's embeddings: the configured representation
    /// (metrics `emotion/<set>`) and the other two (`emotion/<set>+pooled`, ...).
    fn eval_emotion(&self, suffix: &str) -> anyhow::Result<Stage> {
        let name = format!("eval-emotion{suffix}");
        let embed = format!("embed{suffix}");
        let mut stage = Stage::new(&name, &["scan", &embed]);
        let dir = self.dir(&name);
        stage.config = Some(self.with_device(&self.file.eval_emotion));
        stage.config_of = Some(("eval_emotion", "emotion"));
        let configured = self.file.embed_representation()?;
        for set in &self.file.emotion {
            let key = Self::key(&set.data);
            for representation in Representation::ALL {
                let (label, embeddings) = if representation == configured {
                    (
                        set.name.clone(),
                        self.dir(&embed).join(run_folder::h5(&key)),
                    )
                } else {
                    (
                        format!("{}+{representation}", set.name),
                        Self::representation_file(&self.dir(&embed), &key, representation),
                    )
                };
                let out = dir.join(&label);
                stage.commands.push(self.emotion_command(
                    &set.name,
                    &set.data,
                    &set.folds,
                    &embeddings,
                    &out,
                    Some(&dir.join("config.toml")),
                ));
                stage.outputs.push(out.join(run_folder::REPORT));
                stage
                    .metrics
                    .push((format!("emotion/{label}"), out.join(run_folder::REPORT)));
            }
        }
        Ok(stage)
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
            .path("--embeddings", &self.train_embeddings(previous_embed))
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

    fn finetune(&self, round: usize, model: &(String, PathBuf)) -> anyhow::Result<Stage> {
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

/// The stage scoring DINO's embeddings by a PLDA on the first round's pseudo-labels; the
/// report adds its rows to DINO's.
pub(super) const DINO_PLDA: &str = "eval-sv-plda";

/// What a select stage chose (`dino-core select-model --summary-json`).
const SELECTION: &str = "selection.json";

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
        let (_, mut file) = PipelineFile::load("fixture", &[]).unwrap();
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

    /// A validated pipeline: the runner resolves `[pretrain.validation] set` into the files
    /// of a made list that leaves out the evaluation's pairs, `best-validation` adds a select
    /// stage that fine-tuning and embedding take their model from, and the emotion set is
    /// embedded and evaluated in every representation.
    #[test]
    fn validation_sets_selection_and_representations() {
        let text = r#"
            [pipeline]
            description = "validated"
            seed = 1
            rounds = 1
            [corpora.a]
            kind = "fixture"
            [train]
            corpus = "a"
            part = "speech"
            split = "train"
            [[sv]]
            name = "t"
            corpus = "a"
            part = "speech"
            split = "test"
            [[validation]]
            name = "dev"
            corpus = "a"
            part = "speech"
            split = "test"
            per_speaker = 3
            [[emotion]]
            name = "e"
            corpus = "a"
            part = "emotion"
            folds = 2
            [pretrain.validation]
            set = "dev"
            every_epochs = 2
            [finetune.validation]
            set = "dev"
            [embed]
            checkpoint = "best-validation"
            representation = "pooled"
        "#;
        let file: PipelineFile = toml::from_str(text).unwrap();
        file.check_references().unwrap();
        let corpora = BTreeMap::from([(
            "a".to_owned(),
            ResolvedCorpus {
                root: PathBuf::from("/corpora/a"),
                source: "test".to_owned(),
            },
        )]);
        let stages = build(&file, &corpora, 1, Path::new("/run"), Path::new("/bin")).unwrap();
        let stage = |name: &str| stages.iter().find(|s| s.name == name).unwrap();
        let commands = |name: &str| -> Vec<String> {
            stage(name)
                .commands
                .iter()
                .map(|c| c[1..].join(" "))
                .collect()
        };
        let scan = commands("scan");
        assert!(
            scan.iter().any(|c| c.starts_with("make-trials --seed 1 --per-speaker 3 --exclude-trials /run/scan/t.trials.parquet --manifest /run/scan/a-speech-test.parquet --out /run/scan/dev.trials.parquet")),
            "{scan:#?}"
        );
        let pretrain = stage("pretrain");
        let validation = pretrain.config.as_ref().unwrap()["validation"]
            .as_table()
            .unwrap();
        assert_eq!(validation.keys().collect::<Vec<_>>(), ["every_epochs"]);
        assert!(
            commands("pretrain")[0].contains("--validation-manifest /run/scan/a-speech-test.parquet --validation-cache /run/prepare/a-speech-test.h5 --validation-trials /run/scan/dev.trials.parquet"),
            "{:#?}",
            commands("pretrain")
        );
        assert_eq!(
            commands("select"),
            [
                "select-model --run /run/pretrain --rule best-validation --out /run/select/model.safetensors --summary-json /run/select/selection.json"
            ]
        );
        assert!(commands("finetune-r1")[0].contains("--init /run/select/model.safetensors"));
        assert!(commands("select-r1")[0].starts_with("select-model --run /run/finetune-r1"));
        let embed = commands("embed-r1");
        assert!(
            embed.iter().all(|c| !c.starts_with("embed")
                || c.contains("--checkpoint /run/select-r1/model.safetensors")),
            "{embed:#?}"
        );
        for out in [
            "a-emotion.h5",
            "a-emotion.embedding.h5",
            "a-emotion.concat.h5",
            "a-speech-train.embedding.h5",
        ] {
            assert!(
                embed
                    .iter()
                    .any(|c| c.contains(&format!("--out /run/embed-r1/{out}"))),
                "{out}: {embed:#?}"
            );
        }
        assert!(
            embed
                .last()
                .unwrap()
                .contains("--mean-embeddings /run/embed-r1/a-speech-train.embedding.h5"),
            "{embed:#?}"
        );
        let labels: Vec<&str> = stage("eval-emotion")
            .metrics
            .iter()
            .map(|(l, _)| l.as_str())
            .collect();
        assert_eq!(
            labels,
            ["emotion/e+embedding", "emotion/e", "emotion/e+concat"]
        );

        let unvalidated = text.replace("[finetune.validation]\n            set = \"dev\"", "");
        let file: PipelineFile = toml::from_str(&unvalidated).unwrap();
        let err = file.check_references().unwrap_err().to_string();
        assert!(err.contains("needs [finetune.validation]"), "{err}");
        let unknown = text.replace(
            "set = \"dev\"\n            every_epochs",
            "set = \"deev\"\n            every_epochs",
        );
        let file: PipelineFile = toml::from_str(&unknown).unwrap();
        let err = file.check_references().unwrap_err().to_string();
        assert!(err.contains("no [[validation]] set has that name"), "{err}");
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
        assert!(sv[2].starts_with("plda-train --embeddings /run/embed-r1/joined-train.h5 --pseudo-labels /run/cluster-r1/pseudo_labels.parquet"), "{sv:#?}");
        assert_eq!(sv.len(), 5, "{sv:#?}");
        assert!(
            sv[4].contains("--backend plda --plda /run/eval-sv-r1/plda.json --cohort-embeddings"),
            "{sv:#?}"
        );
        // DINO's embeddings, by a PLDA on the first round's pseudo-labels.
        let sv = commands(DINO_PLDA);
        assert_eq!(sv.len(), 3, "{sv:#?}");
        assert!(sv[0].starts_with("plda-train --embeddings /run/embed/joined-train.h5 --pseudo-labels /run/cluster-r1/pseudo_labels.parquet --out /run/eval-sv-plda/plda.json"), "{sv:#?}");
        assert!(
            sv[2].starts_with("sv --embeddings /run/embed/a-speech-test.h5")
                && sv[2].contains("--out-dir /run/eval-sv-plda/t+plda+asnorm")
                && sv[2].contains("--backend plda --plda /run/eval-sv-plda/plda.json --cohort-embeddings /run/embed/joined-train.h5"),
            "{sv:#?}"
        );

        let bad = text.replace("kind = \"fixture\"", "kind = \"fixture\"\nregex = \"x\"");
        let file: PipelineFile = toml::from_str(&bad).unwrap();
        let err = file.check_references().unwrap_err().to_string();
        assert!(err.contains("options of the generic scanner"), "{err}");
    }
}
