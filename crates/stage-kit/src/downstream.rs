//! What of a trained model goes downstream, as `[embed]` writes it: which checkpoint of the
//! training run (`checkpoint = "last" | "best-validation" | "average:N"`) and which layer
//! (`representation = "embedding" | "pooled" | "concat"`). One definition for dino-core,
//! which applies them, and the runner, which plans the files they give.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which model of a training run embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum CheckpointRule {
    /// The model at the end of training.
    #[default]
    Last,
    /// The epoch model with the lowest validation error.
    BestValidation,
    /// The element-wise mean of the last N epoch models (wespeaker's model averaging).
    Average(usize),
}

impl FromStr for CheckpointRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "last" => Ok(CheckpointRule::Last),
            "best-validation" => Ok(CheckpointRule::BestValidation),
            _ => match s.strip_prefix("average:").map(str::parse) {
                Some(Ok(n)) if n >= 1 => Ok(CheckpointRule::Average(n)),
                _ => Err(format!(
                    "checkpoint {s:?}: expected last, best-validation or average:N (N >= 1)"
                )),
            },
        }
    }
}

impl fmt::Display for CheckpointRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointRule::Last => f.write_str("last"),
            CheckpointRule::BestValidation => f.write_str("best-validation"),
            CheckpointRule::Average(n) => write!(f, "average:{n}"),
        }
    }
}

impl TryFrom<String> for CheckpointRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<CheckpointRule> for String {
    fn from(rule: CheckpointRule) -> String {
        rule.to_string()
    }
}

/// Which layer of the encoder an extraction writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Representation {
    /// The embedding layer's output (the speaker embedding).
    #[default]
    Embedding,
    /// The pooled statistics over time that the embedding layer reads.
    Pooled,
    /// Pooled statistics and embedding side by side.
    Concat,
}

impl Representation {
    /// Every representation, in the order reports list them.
    pub const ALL: [Representation; 3] = [
        Representation::Embedding,
        Representation::Pooled,
        Representation::Concat,
    ];

    /// The name in configurations, command lines and file names.
    pub fn name(self) -> &'static str {
        match self {
            Representation::Embedding => "embedding",
            Representation::Pooled => "pooled",
            Representation::Concat => "concat",
        }
    }
}

impl FromStr for Representation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Representation::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| format!("representation {s:?}: expected embedding, pooled or concat"))
    }
}

impl fmt::Display for Representation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_print_and_refuse() {
        for (text, rule) in [
            ("last", CheckpointRule::Last),
            ("best-validation", CheckpointRule::BestValidation),
            ("average:5", CheckpointRule::Average(5)),
        ] {
            assert_eq!(text.parse::<CheckpointRule>().unwrap(), rule);
            assert_eq!(rule.to_string(), text);
        }
        for bad in ["average:0", "average:", "best", "average:x"] {
            let err = bad.parse::<CheckpointRule>().unwrap_err();
            assert!(
                err.contains("expected last, best-validation or average:N"),
                "{err}"
            );
        }
        #[derive(Deserialize)]
        struct Section {
            #[allow(dead_code)]
            checkpoint: CheckpointRule,
        }
        let err = toml::from_str::<Section>("checkpoint = \"avg:3\"")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("expected last"), "{err}");
    }

    #[test]
    fn representations_round_trip_by_name() {
        for r in Representation::ALL {
            assert_eq!(r.name().parse::<Representation>().unwrap(), r);
            assert_eq!(toml::Value::try_from(r).unwrap().as_str(), Some(r.name()));
        }
        assert!("stats".parse::<Representation>().is_err());
    }
}
