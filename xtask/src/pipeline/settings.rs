//! Changes to a pipeline file from the command line, `--set SECTION.KEY=VALUE`: a variant of a
//! pipeline (PLDA-AHC clustering, another learning rate) without a copy of its file. They
//! change the stage configurations like an edit of the file would, so the stages they touch
//! rerun; give the variant its own `--run-dir` to keep both.

use anyhow::bail;

/// One `KEY=VALUE`: a dotted path into the file's tables and a TOML value (a bare word is a
/// string, so `cluster.method=plda` needs no quotes).
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    path: Vec<String>,
    value: toml::Value,
}

impl Setting {
    /// Parses `SECTION.KEY=VALUE` (clap's value parser).
    pub fn parse(text: &str) -> Result<Setting, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected SECTION.KEY=VALUE"))?;
        let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(|part| part.is_empty()) {
            return Err(format!("{text:?}: {key:?} is not a dotted key"));
        }
        let value = value.trim();
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut table| table.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        Ok(Setting { path, value })
    }

    /// Writes the value into `file`, making the tables on its path that are missing.
    pub fn apply(&self, file: &mut toml::Table) -> anyhow::Result<()> {
        let (key, tables) = self
            .path
            .split_last()
            .expect("parse makes a non-empty path");
        let mut table = file;
        for (depth, name) in tables.iter().enumerate() {
            let entry = table
                .entry(name.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(inner) = entry.as_table_mut() else {
                bail!(
                    "--set {}: {} is not a table",
                    self.path.join("."),
                    tables[..=depth].join(".")
                );
            };
            table = inner;
        }
        table.insert(key.clone(), self.value.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_toml_and_bare_words_are_strings() {
        let mut file: toml::Table = toml::from_str("[cluster]\nmethod = \"cosine\"\n").unwrap();
        for text in [
            "cluster.method=plda",
            "pretrain.optim.lr = 0.004",
            "pipeline.rounds=2",
            "prepare.vad=false",
        ] {
            Setting::parse(text).unwrap().apply(&mut file).unwrap();
        }
        let expected: toml::Table = toml::from_str(
            "[cluster]\nmethod = \"plda\"\n[pretrain.optim]\nlr = 0.004\n\
             [pipeline]\nrounds = 2\n[prepare]\nvad = false\n",
        )
        .unwrap();
        assert_eq!(file, expected);
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        assert!(Setting::parse("cluster.method").is_err());
        assert!(Setting::parse("cluster..method=x").is_err());
        let mut file: toml::Table = toml::from_str("[[sv]]\nname = \"a\"\n").unwrap();
        let error = Setting::parse("sv.name=b")
            .unwrap()
            .apply(&mut file)
            .unwrap_err();
        assert_eq!(error.to_string(), "--set sv.name: sv is not a table");
    }
}
