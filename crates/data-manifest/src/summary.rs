//! Every subcommand ends with a one-paragraph summary on stdout and, when asked, the same
//! headline numbers as JSON (`--summary-json PATH`) for the pipeline report.

use std::path::Path;

use serde::Serialize;

use crate::error::{ManifestError, Result};

/// A subcommand's headline numbers.
pub trait Summary: Serialize {
    /// The numbers as one paragraph of prose.
    fn paragraph(&self) -> String;
}

/// Prints the paragraph and writes the JSON (atomically) when `json` is given.
pub fn emit<S: Summary>(summary: &S, json: Option<&Path>) -> Result<()> {
    println!("{}", summary.paragraph());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(summary)
            .map_err(|e| ManifestError::invalid(path, format!("cannot encode summary: {e}")))?;
        stage_kit::write_bytes_atomically(path, text.as_bytes())?;
    }
    Ok(())
}
