//! How a stage becomes Slurm jobs. Shardable commands (`data-manifest scan`,
//! `feature-extract prepare`, `dino-core embed`, which take `--shard i/N`) run in an array job, task `s` doing
//! shard `s` of each into files named `*.shard-s.*`; a merge job then joins the shards into the
//! files the unsharded command writes and runs the stage's other commands. Training commands
//! (`dino-core pretrain|finetune`) run as one job of `srun` tasks. The rest run as one job.

use std::path::Path;

use super::super::plan::Stage;

/// Stands for the array task's shard index in a command line (the job script substitutes
/// `$SLURM_ARRAY_TASK_ID`).
pub const SHARD: &str = "@SHARD@";

/// The jobs of one stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// One job running the stage's commands in order.
    Single,
    /// One multi-task job: each command is started with `srun`; warned before its time
    /// limit, it waits for the next checkpoint and requeues itself.
    Training,
    /// An array job and a merge job after it.
    Array(ArrayPlan),
}

/// The array and merge jobs of a sharded stage.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayPlan {
    /// Shards (array tasks).
    pub count: u32,
    /// The commands of one array task, with [`SHARD`] for its index.
    pub task: Vec<Vec<String>>,
    /// The files a task writes (with [`SHARD`]): a shard whose files all exist is done.
    pub shard_files: Vec<String>,
    /// Merges of the shards, then the stage's unshardable commands in their order.
    pub merge: Vec<Vec<String>>,
    /// Each unsharded output path a task writes per shard instead, with its shard template.
    pub renamed: Vec<(String, String)>,
}

impl ArrayPlan {
    /// Shards whose files are not all there (to run, or rerun).
    pub fn missing_shards(&self) -> Vec<u32> {
        (0..self.count)
            .filter(|s| {
                self.shard_files
                    .iter()
                    .any(|f| !Path::new(&instance(f, *s)).exists())
            })
            .collect()
    }

    /// The stage's metric files with each per-shard one split into its shards
    /// (`train` -> `train/shard-0`, ...).
    pub fn metrics(&self, stage: &Stage) -> Vec<(String, std::path::PathBuf)> {
        let mut out = Vec::new();
        for (label, path) in &stage.metrics {
            let path_text = path.display().to_string();
            match self
                .renamed
                .iter()
                .find(|(original, _)| *original == path_text)
            {
                Some((_, template)) => out.extend(
                    (0..self.count)
                        .map(|s| (format!("{label}/shard-{s}"), instance(template, s).into())),
                ),
                None => out.push((label.clone(), path.clone())),
            }
        }
        out
    }
}

/// `template` with [`SHARD`] replaced by `shard`.
pub fn instance(template: &str, shard: u32) -> String {
    template.replace(SHARD, &shard.to_string())
}

/// A command the Slurm executor treats specially, recognised by program and subcommand.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Scan,
    Prepare,
    Embed,
    Training,
    Other,
}

/// Flags whose values are files a shard writes, by kind.
const SCAN_OUTPUTS: [&str; 3] = ["--out", "--rejects", "--summary-json"];
const PREPARE_OUTPUTS: [&str; 4] = ["--audio-out", "--fbank-out", "--rejects", "--summary-json"];
const EMBED_OUTPUTS: [&str; 2] = ["--out", "--summary-json"];

fn kind(command: &[String]) -> Kind {
    let program = Path::new(&command[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let has = |word: &str| command[1..].iter().any(|a| a == word);
    match program.as_str() {
        "data-manifest" if command.get(1).is_some_and(|a| a == "scan") => Kind::Scan,
        "feature-extract" if has("prepare") => Kind::Prepare,
        "dino-core" if has("pretrain") || has("finetune") => Kind::Training,
        "dino-core" if has("embed") => Kind::Embed,
        _ => Kind::Other,
    }
}

/// The shape of `stage` when shardable stages are cut into `shards` array tasks.
pub fn of(stage: &Stage, shards: u32) -> Shape {
    let kinds: Vec<Kind> = stage.commands.iter().map(|c| kind(c)).collect();
    if kinds.contains(&Kind::Training) {
        return Shape::Training;
    }
    let shardable = |k: &Kind| matches!(k, Kind::Scan | Kind::Prepare | Kind::Embed);
    if shards <= 1 || !kinds.iter().any(shardable) {
        return Shape::Single;
    }
    let mut plan = ArrayPlan {
        count: shards,
        task: Vec::new(),
        shard_files: Vec::new(),
        merge: Vec::new(),
        renamed: Vec::new(),
    };
    let mut rest = Vec::new();
    for (command, kind) in stage.commands.iter().zip(kinds) {
        let outputs: &[&str] = match kind {
            Kind::Scan => &SCAN_OUTPUTS,
            Kind::Prepare => &PREPARE_OUTPUTS,
            Kind::Embed => &EMBED_OUTPUTS,
            _ => {
                rest.push(command.clone());
                continue;
            }
        };
        let mut task = Vec::with_capacity(command.len() + 2);
        let mut renamed = Vec::new();
        let mut args = command.iter();
        while let Some(arg) = args.next() {
            task.push(arg.clone());
            if outputs.contains(&arg.as_str())
                && let Some(value) = args.next()
            {
                let template = shard_name(value);
                task.push(template.clone());
                renamed.push((arg.clone(), value.clone(), template));
            }
        }
        task.extend(["--shard".to_owned(), format!("{SHARD}/{shards}")]);
        plan.task.push(task);
        plan.merge
            .extend(merge_commands(command, kind, &renamed, shards));
        for (_, original, template) in renamed {
            plan.shard_files.push(template.clone());
            plan.renamed.push((original, template));
        }
    }
    plan.merge.extend(rest);
    Shape::Array(plan)
}

/// `dir/name.ext` -> `dir/name.shard-@SHARD@.ext`.
fn shard_name(path: &str) -> String {
    let (dir, file) = path.rsplit_once('/').map_or(("", path), |(d, f)| (d, f));
    let file = match file.rsplit_once('.') {
        Some((stem, ext)) => format!("{stem}.shard-{SHARD}.{ext}"),
        None => format!("{file}.shard-{SHARD}"),
    };
    if dir.is_empty() {
        file
    } else {
        format!("{dir}/{file}")
    }
}

/// The commands that join the shards of one shardable command into its unsharded outputs.
fn merge_commands(
    command: &[String],
    kind: Kind,
    renamed: &[(String, String, String)],
    shards: u32,
) -> Vec<Vec<String>> {
    let program = &command[0];
    let value = |flag: &str| {
        command
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].clone())
    };
    let all = |flag: &str| -> Option<(String, Vec<String>)> {
        renamed
            .iter()
            .find(|(f, _, _)| f == flag)
            .map(|(_, original, template)| {
                (
                    original.clone(),
                    (0..shards).map(|s| instance(template, s)).collect(),
                )
            })
    };
    match kind {
        Kind::Scan => {
            let mut merge = vec![program.clone(), "merge".to_owned()];
            if let Some((out, parts)) = all("--out") {
                merge.push("--manifests".to_owned());
                merge.extend(parts);
                merge.extend(["--out".to_owned(), out]);
            }
            if let Some((out, parts)) = all("--rejects") {
                merge.push("--rejects".to_owned());
                merge.extend(parts);
                merge.extend(["--rejects-out".to_owned(), out]);
            }
            vec![merge]
        }
        Kind::Prepare => ["--audio-out", "--fbank-out"]
            .into_iter()
            .filter_map(all)
            .map(|(out, parts)| {
                let mut merge = vec![
                    program.clone(),
                    "merge".to_owned(),
                    "--output".to_owned(),
                    out,
                ];
                if let Some(manifest) = value("--manifest") {
                    merge.extend(["--manifest".to_owned(), manifest]);
                }
                merge.extend(parts);
                merge
            })
            .collect(),
        Kind::Embed => all("--out")
            .map(|(out, parts)| {
                let mut merge = vec![program.clone(), "merge-embeddings".to_owned()];
                if let Some(manifest) = value("--manifest") {
                    merge.extend(["--manifest".to_owned(), manifest]);
                }
                merge.extend(["--out".to_owned(), out]);
                merge.extend(parts);
                merge
            })
            .into_iter()
            .collect(),
        Kind::Training | Kind::Other => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(commands: &[&str]) -> Stage {
        let mut stage = Stage::new("prepare", &[]);
        stage.commands = commands
            .iter()
            .map(|c| c.split_whitespace().map(str::to_owned).collect())
            .collect();
        stage
    }

    #[test]
    fn shardable_commands_become_array_tasks_and_merges() {
        let s = stage(&[
            "/b/data-manifest scan fixture --root /c --out /r/scan/a.parquet --rejects /r/scan/a.rejects.parquet --summary-json /r/scan/a.summary.json",
            "/b/data-manifest filter --manifest /r/scan/a.parquet --split train --out /r/scan/a-train.parquet",
        ]);
        let Shape::Array(plan) = of(&s, 2) else {
            panic!("not an array")
        };
        assert_eq!(
            plan.task[0].join(" "),
            "/b/data-manifest scan fixture --root /c --out /r/scan/a.shard-@SHARD@.parquet --rejects /r/scan/a.rejects.shard-@SHARD@.parquet --summary-json /r/scan/a.summary.shard-@SHARD@.json --shard @SHARD@/2"
        );
        assert_eq!(
            plan.merge[0].join(" "),
            "/b/data-manifest merge --manifests /r/scan/a.shard-0.parquet /r/scan/a.shard-1.parquet --out /r/scan/a.parquet --rejects /r/scan/a.rejects.shard-0.parquet /r/scan/a.rejects.shard-1.parquet --rejects-out /r/scan/a.rejects.parquet"
        );
        assert_eq!(plan.merge[1], s.commands[1]);
        assert_eq!(plan.shard_files.len(), 3);
        assert_eq!(plan.missing_shards(), [0, 1]);
        assert_eq!(of(&s, 1), Shape::Single);
    }

    #[test]
    fn prepare_merges_in_manifest_order_and_training_is_one_job() {
        let s = stage(&[
            "/b/feature-extract prepare --manifest /r/scan/a.parquet --audio-out /r/prepare/a.h5 --config /r/prepare/config.toml --vad",
        ]);
        let Shape::Array(plan) = of(&s, 4) else {
            panic!("not an array")
        };
        assert_eq!(plan.merge.len(), 1);
        assert_eq!(
            plan.merge[0][..6].join(" "),
            "/b/feature-extract merge --output /r/prepare/a.h5 --manifest /r/scan/a.parquet"
        );
        assert_eq!(plan.merge[0].len(), 10);
        let train = stage(&["/b/dino-core --log-json /x pretrain --config /c"]);
        assert_eq!(of(&train, 4), Shape::Training);
        let eval = stage(&["/b/downstream-eval sv --embeddings /e"]);
        assert_eq!(of(&eval, 4), Shape::Single);
    }

    #[test]
    fn embedding_shards_are_merged_before_the_bundle() {
        let s = stage(&[
            "/b/dino-core embed --checkpoint /m --manifest /r/scan/a.parquet --out /r/embed/a.h5 --summary-json /r/embed/a.summary.json",
            "/b/dino-core bundle --checkpoint /m --mean-embeddings /r/embed/a.h5 --out /r/embed/model.safetensors",
        ]);
        let Shape::Array(plan) = of(&s, 2) else {
            panic!("not an array")
        };
        assert_eq!(
            plan.task[0].join(" "),
            "/b/dino-core embed --checkpoint /m --manifest /r/scan/a.parquet --out /r/embed/a.shard-@SHARD@.h5 --summary-json /r/embed/a.summary.shard-@SHARD@.json --shard @SHARD@/2"
        );
        assert_eq!(plan.task.len(), 1);
        assert_eq!(
            plan.merge[0].join(" "),
            "/b/dino-core merge-embeddings --manifest /r/scan/a.parquet --out /r/embed/a.h5 /r/embed/a.shard-0.h5 /r/embed/a.shard-1.h5"
        );
        assert_eq!(plan.merge[1], s.commands[1]);
    }
}
