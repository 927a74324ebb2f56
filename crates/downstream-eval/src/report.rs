//! Report files every evaluation writes: `report.json` (headline metrics at the top level,
//! details, inputs and the resolved config) and `report.md` (the same as tables).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::error::{EvalError, Result};

/// Name and version of this tool, recorded in every report.
pub const TOOL_VERSION: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));

/// What every report records about its run: inputs, the resolved config, the files
/// written, the tool and the wall time (flattened into the report's JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Provenance<I, C> {
    pub inputs: I,
    pub config: C,
    pub outputs: BTreeMap<String, PathBuf>,
    pub tool_version: &'static str,
    pub wall_seconds: f64,
}

impl<I, C> Provenance<I, C> {
    /// The record of a run that began at `started`.
    pub fn new(inputs: I, config: C, outputs: BTreeMap<String, PathBuf>, started: Instant) -> Self {
        Provenance {
            inputs,
            config,
            outputs,
            tool_version: TOOL_VERSION,
            wall_seconds: started.elapsed().as_secs_f64(),
        }
    }
}

/// Writes `report.json` and `report.md` into `out_dir`, each atomically.
pub fn write(out_dir: &Path, json: &impl Serialize, markdown: &str) -> Result<()> {
    let path = out_dir.join(stage_kit::run_folder::REPORT);
    let mut text = serde_json::to_string_pretty(json)
        .map_err(|e| EvalError::invalid(&path, format!("serialising the report: {e}")))?;
    text.push('\n');
    stage_kit::write_bytes_atomically(&path, text.as_bytes())?;
    stage_kit::write_bytes_atomically(
        &out_dir.join(stage_kit::run_folder::REPORT_MD),
        markdown.as_bytes(),
    )?;
    Ok(())
}

/// Paths of a report's output files by name (`("scores", "scores.txt")` ->
/// `out_dir/scores.txt`), recorded in the report.
pub fn output_paths(out_dir: &Path, files: &[(&str, &str)]) -> BTreeMap<String, PathBuf> {
    files
        .iter()
        .map(|(name, file)| ((*name).to_owned(), out_dir.join(file)))
        .collect()
}

/// A Markdown table from a header and rows of cells.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        format!("| {} |\n", cells.join(" | "))
    };
    let mut table = line(&mut header.iter().copied());
    table.push_str(&line(&mut header.iter().map(|_| "---")));
    for row in rows {
        table.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout() {
        let t = markdown_table(&["a", "b"], &[vec!["1".into(), "2".into()]]);
        assert_eq!(t, "| a | b |\n| --- | --- |\n| 1 | 2 |\n");
    }
}
