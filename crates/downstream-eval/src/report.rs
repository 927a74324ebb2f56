//! Report files every evaluation writes: `report.json` (headline metrics at the top level,
//! details, inputs and the resolved config) and `report.md` (the same as tables).

use std::path::Path;

use serde::Serialize;

use crate::error::{EvalError, Result};

/// Name and version of this tool, recorded in every report.
pub const TOOL_VERSION: &str = concat!(env!("CARGO_PKG_NAME"), " ", env!("CARGO_PKG_VERSION"));

/// Writes `report.json` and `report.md` into `out_dir`, each atomically.
pub fn write(out_dir: &Path, json: &impl Serialize, markdown: &str) -> Result<()> {
    let path = out_dir.join("report.json");
    let mut text = serde_json::to_string_pretty(json)
        .map_err(|e| EvalError::invalid(&path, format!("serialising the report: {e}")))?;
    text.push('\n');
    stage_kit::write_bytes_atomically(&path, text.as_bytes())?;
    stage_kit::write_bytes_atomically(&out_dir.join("report.md"), markdown.as_bytes())?;
    Ok(())
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
