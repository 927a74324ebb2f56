//! Pipelines as data: `pipelines/<name>.toml` names the corpora, which parts of them train and
//! evaluate, and carries each stage's configuration section, which the runner hands to the
//! stage binary as a file (the binary rejects unknown keys; so does this top level).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use stage_kit::{CheckpointRule, DeviceSpec, Representation};

use super::settings::Setting;
use crate::fixture;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub pipeline: PipelineSection,
    pub corpora: BTreeMap<String, CorpusSpec>,
    /// The unlabelled training set: one data reference, or several (`[[train]]`) joined.
    pub train: TrainSets,
    /// Speaker-verification evaluations.
    #[serde(default)]
    pub sv: Vec<SvSet>,
    /// Emotion-recognition evaluations.
    #[serde(default)]
    pub emotion: Vec<EmotionSet>,
    /// Validation sets of the training stages (`[pretrain.validation] set = NAME`), never
    /// an evaluation's data.
    #[serde(default)]
    pub validation: Vec<ValidationSpec>,
    /// Noise and impulse-response sets for augmentation.
    pub augment: Option<AugmentSets>,
    /// Stage sections, handed to the stage binaries.
    #[serde(default)]
    pub prepare: toml::Table,
    #[serde(default)]
    pub pretrain: toml::Table,
    #[serde(default)]
    pub embed: toml::Table,
    #[serde(default)]
    pub eval_sv: toml::Table,
    #[serde(default)]
    pub eval_emotion: toml::Table,
    #[serde(default)]
    pub cluster: toml::Table,
    #[serde(default)]
    pub finetune: toml::Table,
    /// Resources of the Slurm executor's jobs.
    pub slurm: Option<super::slurm::SlurmSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSection {
    pub description: String,
    /// The one seed behind every random stream of every stage.
    pub seed: u64,
    /// Pseudo-labelling rounds (cluster -> fine-tune -> embed -> evaluate).
    #[serde(default)]
    pub rounds: usize,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`, written into every stage that
    /// computes on a device.
    #[serde(default)]
    pub device: DeviceSpec,
    /// Ranks of each training stage on this machine (`dino-core --nproc-per-node`); how a
    /// stage runs, so it is not part of any stage's hash.
    #[serde(default)]
    pub nproc_per_node: Option<usize>,
    /// Trim speech to the frames the energy VAD keeps when caching it.
    #[serde(default = "yes")]
    pub vad: bool,
    /// Published numbers to print beside ours in the report (e.g. `"dino.voxceleb1-o.eer" = 4.38`).
    #[serde(default)]
    pub paper: BTreeMap<String, f64>,
}

fn yes() -> bool {
    true
}

/// Where a corpus is and how to scan it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusSpec {
    /// Scanner kind (`data-manifest scan <kind>`).
    pub kind: String,
    /// Environment variable that may hold the root.
    pub env: Option<String>,
    /// Default root, relative to the workspace root unless absolute.
    pub default: Option<String>,
    /// Generate the fixture of this size (with the pipeline's seed) when the corpus is
    /// absent; its default root is then the generator's folder.
    pub generate: Option<fixture::Size>,
    /// Evaluations on an optional corpus are dropped when it is absent.
    #[serde(default)]
    pub optional: bool,
    /// `generic` scanner: path component holding the speaker (0-based; negative counts from
    /// the end).
    pub speaker_component: Option<i32>,
    /// `generic` scanner: path component holding the session.
    pub session_component: Option<i32>,
    /// `generic` scanner: regex on the relative path with named groups (utt, speaker,
    /// session, split, emotion, fold).
    pub regex: Option<String>,
}

impl CorpusSpec {
    /// The `generic` scanner's flags that this corpus's options give.
    pub fn scanner_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, value) in [
            (
                "--speaker-component",
                self.speaker_component.map(|c| c.to_string()),
            ),
            (
                "--session-component",
                self.session_component.map(|c| c.to_string()),
            ),
            ("--regex", self.regex.clone()),
        ] {
            if let Some(value) = value {
                args.push(flag.to_owned());
                args.push(value);
            }
        }
        args
    }
}

/// The training data: `[train]` with one data reference, or `[[train]]` with several, whose
/// manifests and audio caches are joined into one training set.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TrainSets {
    One(DataRef),
    Joined(Vec<DataRef>),
}

/// Corpus name of the joined training set (`scan/joined-train.parquet`, ...).
pub const JOINED_TRAIN: &str = "joined-train";

impl TrainSets {
    /// The data references that are scanned and prepared.
    pub fn parts(&self) -> &[DataRef] {
        match self {
            TrainSets::One(data) => std::slice::from_ref(data),
            TrainSets::Joined(parts) => parts,
        }
    }

    /// Whether several parts are joined.
    pub fn is_joined(&self) -> bool {
        self.parts().len() > 1
    }

    /// The data reference training, embedding and clustering read: the only part, or the
    /// join of all of them.
    pub fn data(&self) -> DataRef {
        match self.parts() {
            [one] => one.clone(),
            _ => DataRef {
                corpus: JOINED_TRAIN.to_owned(),
                part: None,
                split: None,
            },
        }
    }
}

/// A part of a corpus: `part` selects a sub-corpus (the fixture's `speech`, `emotion`, ...),
/// `split` a value of the manifest's `split` column.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct DataRef {
    pub corpus: String,
    pub part: Option<String>,
    pub split: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SvSet {
    pub name: String,
    #[serde(flatten)]
    pub data: DataRef,
    /// Trial list (`label enroll test` lines), relative to the corpus root unless absolute;
    /// without one (and without `shipped_trials`), a balanced list is made from the
    /// manifest's speaker labels.
    pub trials: Option<String>,
    /// Trial list that ships with the project, relative to `data-manifests/`.
    pub shipped_trials: Option<String>,
    /// A made list's most target trials per speaker (as many non-target trials again).
    pub per_speaker: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmotionSet {
    pub name: String,
    #[serde(flatten)]
    pub data: DataRef,
    /// `"fold"` or `"split"`: use that manifest column; a number: make that many
    /// speaker-disjoint folds.
    pub folds: toml::Value,
}

/// A validation set: speaker verification on a trial list (as an `[[sv]]` set gives one),
/// or with `folds` emotion recognition (as an `[[emotion]]` set), scored by EER and minDCF or
/// by micro-F1 during training.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationSpec {
    pub name: String,
    #[serde(flatten)]
    pub data: DataRef,
    pub trials: Option<String>,
    pub shipped_trials: Option<String>,
    pub per_speaker: Option<usize>,
    /// Emotion folds (`"fold"`, `"split"` or a number), for an emotion validation.
    pub folds: Option<toml::Value>,
}

impl ValidationSpec {
    /// The trial list of a speaker-verification validation.
    pub fn as_sv(&self) -> Option<SvSet> {
        self.folds.is_none().then(|| SvSet {
            name: self.name.clone(),
            data: self.data.clone(),
            trials: self.trials.clone(),
            shipped_trials: self.shipped_trials.clone(),
            per_speaker: self.per_speaker,
        })
    }

    /// The folds of an emotion validation.
    pub fn as_emotion(&self) -> Option<EmotionSet> {
        self.folds.as_ref().map(|folds| EmotionSet {
            name: self.name.clone(),
            data: self.data.clone(),
            folds: folds.clone(),
        })
    }
}

/// The training sections that may validate, and the key of their validation table.
pub const VALIDATED_SECTIONS: [&str; 2] = ["pretrain", "finetune"];

/// The key of a training section's validation table naming a `[[validation]]` set; the
/// runner takes it out and passes the set's files instead.
pub const VALIDATION_SET_KEY: &str = "set";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentSets {
    pub musan: DataRef,
    pub rirs: DataRef,
}

/// Keys of stage sections that the runner sets itself, from `[pipeline]` or per set, with
/// where they come from: a section that sets one is refused rather than silently overridden.
pub const RUNNER_KEYS: &[(&str, &[&str], &str)] = &[
    (
        "prepare",
        &["vad"],
        "[pipeline] vad for speech; augmentation sets are never trimmed",
    ),
    (
        "prepare",
        &["downmix"],
        "the runner: mean for speech and noise, the first channel for RIRs",
    ),
    (
        "pretrain",
        &["seed", "device"],
        "[pipeline] seed and device",
    ),
    (
        "finetune",
        &["seed", "device"],
        "[pipeline] seed and device",
    ),
    ("cluster", &["seed", "device"], "[pipeline] seed and device"),
    ("embed", &["device"], "[pipeline] device"),
    ("eval_emotion", &["device"], "[pipeline] device"),
    ("eval_emotion", &["seed"], "[pipeline] seed"),
    ("eval_emotion", &["folds"], "each [[emotion]] set's folds"),
];

impl PipelineFile {
    /// Reads `pipelines/<name>.toml`, or a path to a TOML file, with `settings` applied.
    pub fn load(name_or_path: &str, settings: &[Setting]) -> anyhow::Result<(String, Self)> {
        let path = if name_or_path.ends_with(".toml") {
            PathBuf::from(name_or_path)
        } else {
            crate::workspace::root()
                .join("pipelines")
                .join(format!("{name_or_path}.toml"))
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading pipeline {}", path.display()))?;
        let mut table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("parsing pipeline {}", path.display()))?;
        for setting in settings {
            setting.apply(&mut table)?;
        }
        let file: PipelineFile = table
            .try_into()
            .with_context(|| format!("parsing pipeline {}", path.display()))?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        file.check_references()
            .and_then(|()| file.check_runner_keys())
            .with_context(|| format!("in pipeline {}", path.display()))?;
        Ok((name, file))
    }

    pub(crate) fn check_references(&self) -> anyhow::Result<()> {
        if self.train.parts().is_empty() {
            bail!("[[train]] lists no data reference");
        }
        if self.corpora.contains_key(JOINED_TRAIN) {
            bail!("{JOINED_TRAIN:?} names the joined training set; give the corpus another name");
        }
        for (name, spec) in &self.corpora {
            if spec.kind != "generic" && !spec.scanner_args().is_empty() {
                bail!(
                    "[corpora.{name}]: speaker_component, session_component and regex are \
                     options of the generic scanner, not of {:?}",
                    spec.kind
                );
            }
        }
        self.check_validation()?;
        for data in self.data_refs() {
            if !self.corpora.contains_key(&data.corpus) {
                bail!(
                    "corpus {:?} is used but not declared under [corpora]",
                    data.corpus
                );
            }
        }
        Ok(())
    }

    /// The `[[validation]]` set a training section's `[<section>.validation] set` names.
    pub fn validation_of(&self, section: &str) -> anyhow::Result<Option<&ValidationSpec>> {
        let table = match section {
            "pretrain" => &self.pretrain,
            "finetune" => &self.finetune,
            other => bail!("[{other}] does not train"),
        };
        let Some(validation) = table.get("validation") else {
            return Ok(None);
        };
        let name = validation
            .get(VALIDATION_SET_KEY)
            .and_then(toml::Value::as_str)
            .with_context(|| {
                format!("[{section}.validation] {VALIDATION_SET_KEY}: name a [[validation]] set")
            })?;
        let spec = self.validation.iter().find(|v| v.name == name);
        spec.map(Some).with_context(|| {
            format!("[{section}.validation] {VALIDATION_SET_KEY} = {name:?}: no [[validation]] set has that name")
        })
    }

    /// `[embed] checkpoint`: which model of each training stage embeds.
    pub fn embed_checkpoint(&self) -> anyhow::Result<CheckpointRule> {
        self.embed_choice("checkpoint")
    }

    /// `[embed] representation`: which layer the embed stages write.
    pub fn embed_representation(&self) -> anyhow::Result<Representation> {
        self.embed_choice("representation")
    }

    fn embed_choice<T: std::str::FromStr<Err = String> + Default>(
        &self,
        key: &str,
    ) -> anyhow::Result<T> {
        match self.embed.get(key) {
            None => Ok(T::default()),
            Some(toml::Value::String(s)) => s.parse().map_err(|e| anyhow::anyhow!("[embed] {e}")),
            Some(other) => bail!("[embed] {key} = {other}: expected a string"),
        }
    }

    /// Validation sets: names unique among the trial lists, one kind each, named sets exist;
    /// `[embed] checkpoint = "best-validation"` needs every training stage to validate.
    fn check_validation(&self) -> anyhow::Result<()> {
        let mut names: Vec<&str> = self.sv.iter().map(|s| s.name.as_str()).collect();
        for v in &self.validation {
            if names.contains(&v.name.as_str()) {
                bail!(
                    "[[validation]] {}: the name is taken by another set",
                    v.name
                );
            }
            names.push(&v.name);
            let trial_options =
                v.trials.is_some() || v.shipped_trials.is_some() || v.per_speaker.is_some();
            if v.folds.is_some() && trial_options {
                bail!(
                    "[[validation]] {}: folds (emotion) or trial-list options (speaker                      verification), not both",
                    v.name
                );
            }
        }
        self.embed_representation()?;
        let best = self.embed_checkpoint()? == CheckpointRule::BestValidation;
        for section in VALIDATED_SECTIONS {
            let validated = self.validation_of(section)?.is_some();
            let trains = section == "pretrain" || self.pipeline.rounds > 0;
            if best && trains && !validated {
                bail!(
                    "[embed] checkpoint = \"best-validation\" needs [{section}.validation]                      (set and every_epochs)"
                );
            }
        }
        Ok(())
    }

    /// Refuses the [`RUNNER_KEYS`] inside stage sections.
    fn check_runner_keys(&self) -> anyhow::Result<()> {
        for &(section, keys, source) in RUNNER_KEYS {
            let table = match section {
                "prepare" => &self.prepare,
                "pretrain" => &self.pretrain,
                "finetune" => &self.finetune,
                "cluster" => &self.cluster,
                "embed" => &self.embed,
                "eval_emotion" => &self.eval_emotion,
                other => unreachable!("RUNNER_KEYS names section {other}"),
            };
            if let Some(key) = keys.iter().find(|k| table.contains_key(**k)) {
                bail!(
                    "[{section}] {key}: set by the runner from {source}; remove it from the section"
                );
            }
        }
        Ok(())
    }

    /// Every data reference, training first.
    pub fn data_refs(&self) -> Vec<&DataRef> {
        let mut refs: Vec<&DataRef> = self.train.parts().iter().collect();
        refs.extend(self.sv.iter().map(|s| &s.data));
        refs.extend(self.emotion.iter().map(|e| &e.data));
        refs.extend(self.validation.iter().map(|v| &v.data));
        if let Some(a) = &self.augment {
            refs.extend([&a.musan, &a.rirs]);
        }
        refs
    }

    /// Drops the emotion evaluations whose optional corpus is absent.
    pub fn without_absent(mut self, present: &BTreeSet<String>) -> Self {
        self.emotion.retain(|e| present.contains(&e.data.corpus));
        self.sv.retain(|s| present.contains(&s.data.corpus));
        self.validation.retain(|v| present.contains(&v.data.corpus));
        self
    }
}

/// A corpus root and how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedCorpus {
    pub root: PathBuf,
    pub source: String,
}

/// Finds each declared corpus: `--corpus name=PATH`, then its environment variable, then its
/// default (generating the fixture there when the spec says so and `generate` is set).
/// Required corpora that are missing are reported together, with where each was looked for.
pub fn resolve_corpora(
    file: &PipelineFile,
    overrides: &BTreeMap<String, PathBuf>,
    generate: bool,
) -> anyhow::Result<BTreeMap<String, ResolvedCorpus>> {
    for name in overrides.keys() {
        if !file.corpora.contains_key(name) {
            bail!("--corpus {name}=...: the pipeline declares no corpus {name:?}");
        }
    }
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, spec) in &file.corpora {
        let mut looked = Vec::new();
        let candidate = |root: PathBuf, source: String, looked: &mut Vec<String>| {
            let exists = root.is_dir();
            looked.push(format!(
                "{source} = {}{}",
                root.display(),
                if exists { "" } else { " (missing)" }
            ));
            exists.then_some(ResolvedCorpus { root, source })
        };
        let mut resolved = overrides
            .get(name)
            .and_then(|p| candidate(p.clone(), format!("--corpus {name}"), &mut looked));
        if resolved.is_none()
            && let Some(var) = spec.env.as_deref()
        {
            match std::env::var_os(var) {
                Some(value) => {
                    resolved = candidate(PathBuf::from(value), format!("${var}"), &mut looked)
                }
                None => looked.push(format!("${var} (unset)")),
            }
        }
        let default = match (&spec.default, spec.generate) {
            (Some(d), _) => Some(absolute(Path::new(d))),
            (None, Some(size)) => Some(fixture::default_dir(size, file.pipeline.seed)),
            (None, None) => None,
        };
        if resolved.is_none()
            && let Some(default) = &default
        {
            resolved = candidate(default.clone(), "default".to_owned(), &mut looked);
            if resolved.is_none()
                && generate
                && let Some(size) = spec.generate
            {
                fixture::generate(default, size, file.pipeline.seed)?;
                resolved = Some(ResolvedCorpus {
                    root: default.clone(),
                    source: "generated".to_owned(),
                });
            }
        }
        match resolved {
            Some(r) => {
                found.insert(name.clone(), r);
            }
            None if spec.optional => {}
            None => missing.push(format!(
                "  {name} ({} corpus): looked at {}",
                spec.kind,
                looked.join("; ")
            )),
        }
    }
    if !missing.is_empty() {
        bail!(
            "missing corpora:\n{}\nGive each with --corpus NAME=PATH or its environment variable.",
            missing.join("\n")
        );
    }
    Ok(found)
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        crate::workspace::root().join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_section_may_not_set_what_the_runner_sets() {
        let (_, file) = PipelineFile::load("fixture", &[]).unwrap();
        file.check_runner_keys().unwrap();
        for (section, key, value) in [
            ("pretrain", "seed", toml::Value::Integer(7)),
            ("cluster", "device", "cuda".into()),
            ("eval_emotion", "device", "cuda".into()),
            ("prepare", "vad", true.into()),
        ] {
            let mut bad = file.clone();
            let table = match section {
                "pretrain" => &mut bad.pretrain,
                "cluster" => &mut bad.cluster,
                "eval_emotion" => &mut bad.eval_emotion,
                _ => &mut bad.prepare,
            };
            table.insert(key.into(), value);
            let err = bad.check_runner_keys().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("[{section}] {key}: set by the runner")),
                "{err}"
            );
        }
    }

    /// `--set` changes the file as read, and a runner key set that way is refused as in the
    /// file.
    #[test]
    fn settings_change_the_file_and_are_checked_like_it() {
        let set = |text: &str| Setting::parse(text).unwrap();
        let (_, file) = PipelineFile::load(
            "fixture",
            &[set("cluster.method=plda"), set("pipeline.rounds=2")],
        )
        .unwrap();
        assert_eq!(file.cluster["method"].as_str(), Some("plda"));
        assert_eq!(file.pipeline.rounds, 2);
        let err = PipelineFile::load("fixture", &[set("pretrain.seed=3")]).unwrap_err();
        assert!(
            format!("{err:#}").contains("[pretrain] seed: set by the runner"),
            "{err:#}"
        );
    }
}
