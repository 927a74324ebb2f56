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

/// Refuses a count or size below 1, naming the first such key (`channels = 0: must be at
/// least 1`).
pub fn at_least_one(values: &[(&str, i64)]) -> Result<(), String> {
    match values.iter().find(|(_, v)| *v < 1) {
        Some((key, v)) => Err(format!("{key} = {v}: must be at least 1")),
        None => Ok(()),
    }
}

/// Refuses a value that is not a finite number in `range`, naming the first such key and
/// the range as words (`"> 0"`, `"in [0, 1)"`).
pub fn finite_in(
    values: &[(&str, f64)],
    range: impl Fn(f64) -> bool,
    words: &str,
) -> Result<(), String> {
    match values.iter().find(|(_, v)| !(v.is_finite() && range(*v))) {
        Some((key, v)) => Err(format!("{key} = {v}: must be a finite number {words}")),
        None => Ok(()),
    }
}

/// A command-line share in [0, 1] (a reject bound): refuses NaN and values outside, which
/// would silently disable or trip the bound.
pub fn fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    finite_in(
        &[("the share", value)],
        |v| (0.0..=1.0).contains(&v),
        "in [0, 1]",
    )?;
    Ok(value)
}

/// A command-line number that must be finite (a score threshold).
pub fn finite(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{text:?}: {e}"))?;
    finite_in(&[("the value", value)], |_| true, "")?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_checks_name_the_first_bad_key() {
        assert_eq!(at_least_one(&[("a", 1), ("b", 3)]), Ok(()));
        assert_eq!(
            at_least_one(&[("a", 1), ("b", 0), ("c", -1)]),
            Err("b = 0: must be at least 1".to_owned())
        );
        let positive = |v: f64| v > 0.0;
        assert_eq!(finite_in(&[("lr", 0.1)], positive, "> 0"), Ok(()));
        assert_eq!(
            finite_in(&[("lr", 0.1), ("scale", f64::NAN)], positive, "> 0"),
            Err("scale = NaN: must be a finite number > 0".to_owned())
        );
        assert!(finite_in(&[("s", -1.0)], positive, "> 0").is_err());
        assert_eq!(fraction("0.05"), Ok(0.05));
        for bad in ["NaN", "1.5", "-0.1", "x"] {
            assert!(fraction(bad).is_err(), "{bad}");
        }
        assert_eq!(finite("-3.5"), Ok(-3.5));
        assert!(finite("nan").is_err() && finite("inf").is_err());
    }
}
