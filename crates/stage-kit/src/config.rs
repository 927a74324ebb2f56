//! Stage configuration files: the TOML section the pipeline runner hands a stage binary.

use std::path::Path;

use anyhow::Context;
use serde::de::DeserializeOwned;

/// The configuration in the TOML file `path` (unknown keys are errors where the type denies
/// them), or the defaults without a file.
pub fn read_or_default<T: DeserializeOwned + Default>(path: Option<&Path>) -> anyhow::Result<T> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{}: invalid configuration", path.display()))
}
