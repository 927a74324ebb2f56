//! The `[slurm]` section of a pipeline file: what each job asks the scheduler for, with
//! `[slurm.stage.<name>]` overrides (stage names as in the plan; a round's stages may also be
//! named by their base name, `finetune` for `finetune-r1`, ...). Unknown keys are errors.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Seconds before the time limit at which a training job is warned (`--signal=B:USR1@...`).
pub const DEFAULT_WARNING_SECONDS: u32 = 300;

/// What one job asks for; unset fields are left to the cluster's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub partition: Option<String>,
    pub account: Option<String>,
    pub qos: Option<String>,
    /// Time limit, in any form sbatch takes (`1-00:00:00`, `30`, ...).
    pub time: Option<String>,
    /// Memory per node, as sbatch takes it (`16G`).
    pub mem: Option<String>,
    /// CPUs of each task; also the stage's intra-op threads (`OMP_NUM_THREADS`).
    pub cpus_per_task: Option<u32>,
    pub gpus_per_node: Option<u32>,
    /// Nodes of a training job.
    pub nodes: Option<u32>,
    /// Array tasks of a shardable stage (1: one job, no merge).
    pub shards: Option<u32>,
    /// Array tasks running at once (`--array=...%M`).
    pub max_parallel: Option<u32>,
    /// Warning before the time limit for training jobs, seconds (default 300).
    pub warning_seconds: Option<u32>,
    /// Further sbatch options, verbatim.
    pub extra: Option<Vec<String>>,
}

impl Resources {
    /// `self` with each field that `over` sets replaced.
    fn overridden_by(&self, over: &Resources) -> Resources {
        macro_rules! pick {
            ($($field:ident),*) => {
                Resources { $($field: over.$field.clone().or_else(|| self.$field.clone())),* }
            };
        }
        pick!(
            partition,
            account,
            qos,
            time,
            mem,
            cpus_per_task,
            gpus_per_node,
            nodes,
            shards,
            max_parallel,
            warning_seconds,
            extra
        )
    }
}

/// `[slurm]`: defaults for every job and per-stage overrides. Read through a table because
/// serde's `deny_unknown_fields` does not work across `flatten`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "toml::Table")]
pub struct SlurmSection {
    #[serde(flatten)]
    pub defaults: Resources,
    pub stage: BTreeMap<String, Resources>,
}

impl TryFrom<toml::Table> for SlurmSection {
    type Error = String;

    fn try_from(mut table: toml::Table) -> Result<Self, String> {
        let stage = match table.remove("stage") {
            Some(value) => value
                .try_into()
                .map_err(|e| format!("[slurm.stage]: {e}"))?,
            None => BTreeMap::new(),
        };
        let defaults = toml::Value::Table(table)
            .try_into()
            .map_err(|e| format!("[slurm]: {e}"))?;
        Ok(SlurmSection { defaults, stage })
    }
}

impl SlurmSection {
    /// The resources of stage `name`: the defaults, then the override of its base name
    /// (`finetune` for `finetune-r2`), then its own.
    pub fn for_stage(&self, name: &str) -> Resources {
        let base = base_name(name);
        let mut out = self.defaults.clone();
        if base != name
            && let Some(over) = self.stage.get(base)
        {
            out = out.overridden_by(over);
        }
        if let Some(over) = self.stage.get(name) {
            out = out.overridden_by(over);
        }
        out
    }

    /// Overrides naming no stage of `stages` (a typo would otherwise be silently ignored).
    pub fn unknown_stages<'a>(&'a self, stages: &[&str]) -> Vec<&'a str> {
        self.stage
            .keys()
            .filter(|k| !stages.iter().any(|s| s == k || base_name(s) == k.as_str()))
            .map(String::as_str)
            .collect()
    }
}

/// A stage name without its round suffix (`embed-r1` -> `embed`).
fn base_name(name: &str) -> &str {
    match name.rsplit_once("-r") {
        Some((base, round)) if !round.is_empty() && round.chars().all(|c| c.is_ascii_digit()) => {
            base
        }
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_overrides_apply_over_the_defaults_and_unknown_keys_fail() {
        let section: SlurmSection = toml::from_str(
            r#"
            partition = "cpu"
            cpus_per_task = 4
            shards = 8
            [stage.finetune]
            partition = "gpu"
            gpus_per_node = 4
            [stage.finetune-r2]
            nodes = 2
            "#,
        )
        .unwrap();
        let r2 = section.for_stage("finetune-r2");
        assert_eq!(r2.partition.as_deref(), Some("gpu"));
        assert_eq!(
            (r2.gpus_per_node, r2.nodes, r2.cpus_per_task),
            (Some(4), Some(2), Some(4))
        );
        assert_eq!(section.for_stage("finetune-r1").nodes, None);
        assert_eq!(section.for_stage("scan"), section.defaults);
        assert_eq!(
            section.unknown_stages(&["scan", "finetune-r1"]),
            ["finetune-r2"]
        );
        assert!(toml::from_str::<SlurmSection>("partiton = \"x\"").is_err());
        assert!(toml::from_str::<SlurmSection>("[stage.scan]\nshard = 2").is_err());
    }
}
