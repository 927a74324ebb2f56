//! Configs checked when planning: each stage's section goes through its binary's
//! `check-config` before any stage runs, so that a typo in `[finetune.optim]` fails the plan
//! rather than the run, days in. The stage binaries own their config types (they link
//! libtorch, which xtask does not); the runner only names where in the pipeline file the
//! refused key sits.

use std::process::Command;

use anyhow::bail;

use super::plan::Stage;
use crate::command;

/// Runs `check-config` of each stage's binary on the config the stage would get (each
/// section once); the error names the section, and the key where the binary names one.
pub fn check_configs(stages: &[Stage]) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut checked = Vec::new();
    for stage in stages {
        let (Some(config), Some((section, kind)), Some(command)) =
            (&stage.config, stage.config_of, stage.commands.first())
        else {
            continue;
        };
        if checked.contains(&section) {
            continue;
        }
        checked.push(section);
        let file = dir.path().join(format!("{section}.toml"));
        std::fs::write(&file, toml::to_string(config)?)?;
        let out = Command::new(&command[0])
            .arg("check-config")
            .arg(kind)
            .arg(&file)
            .output();
        let out = match out {
            Ok(out) => out,
            Err(e) => bail!("checking [{section}]: could not start {}: {e}", command[0]),
        };
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let place = unknown_key(&stderr)
                .map(|key| key_places(config, section, key).join(", "))
                .filter(|places| !places.is_empty())
                .unwrap_or_else(|| format!("[{section}]"));
            bail!(
                "{place}: the stage's configuration is refused (stage {}, checked by `{} check-config {kind}`):\n{}",
                stage.name,
                command::display(&Command::new(&command[0])),
                stderr.trim_end()
            );
        }
    }
    Ok(())
}

/// The key serde names in "unknown field `KEY`".
fn unknown_key(message: &str) -> Option<&str> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    Some(&rest[..rest.find('`')?])
}

/// Where `key` sits in the section `table`: `[section.sub] key` for each table holding it.
fn key_places(table: &toml::Table, section: &str, key: &str) -> Vec<String> {
    let mut places = Vec::new();
    if table.contains_key(key) {
        places.push(format!("[{section}] {key}"));
    }
    for (name, value) in table {
        if let toml::Value::Table(sub) = value {
            places.extend(key_places(sub, &format!("{section}.{name}"), key));
        }
    }
    places
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refused_key_is_named_where_it_sits() {
        let table: toml::Table = toml::from_str("epochs = 3\n[optim]\nlrr = 0.1\n").unwrap();
        let message = "Error: x.toml: invalid configuration\n\nCaused by:\n    unknown field `lrr`, expected one of `kind`, `lr`";
        let key = unknown_key(message).unwrap();
        assert_eq!(key, "lrr");
        assert_eq!(
            key_places(&table, "pretrain", key),
            ["[pretrain.optim] lrr"]
        );
        assert!(unknown_key("invalid type: string").is_none());
    }

    #[test]
    fn a_refusing_binary_fails_the_plan_naming_section_and_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // A stand-in for a stage binary: refuses any config holding `lrr`, as serde would.
        let binary = dir.path().join("dino-core");
        std::fs::write(
            &binary,
            "#!/bin/sh\n[ \"$1\" = check-config ] || exit 2\n\
             if grep -q lrr \"$3\"; then echo \"unknown field \\`lrr\\`, expected lr\" >&2; exit 1; fi\n",
        )
        .unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let stage = |config: &str| {
            let mut stage = Stage::new("pretrain", &[]);
            stage.config = Some(toml::from_str(config).unwrap());
            stage.config_of = Some(("pretrain", "pretrain"));
            stage.commands = vec![vec![binary.display().to_string(), "pretrain".into()]];
            stage
        };
        check_configs(&[stage("epochs = 3\n[optim]\nlr = 0.1\n")]).unwrap();
        let err = check_configs(&[stage("epochs = 3\n[optim]\nlrr = 0.1\n")])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("[pretrain.optim] lrr: the stage's configuration is refused"),
            "{err}"
        );
        assert!(err.contains("unknown field `lrr`"), "{err}");
    }
}
