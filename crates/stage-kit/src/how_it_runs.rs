//! The keys of a stage configuration that say how a run is carried out rather than what it
//! computes: the device, loader threads and depth, checkpoint cadence and retention, and the
//! collapse monitor's stopping rule. They may change between a checkpoint and its resume
//! (the change is logged), and they stay out of the runner's stage hash, so that editing
//! them neither refuses a resume nor makes the runner wipe a stage folder with its
//! checkpoints. Everything else defines the run and must match.

use serde_json::Value;

/// How-it-runs keys, at any depth of a configuration.
pub const KEYS: &[&str] = &[
    "device",
    "workers",
    "prefetch",
    "checkpoint_every",
    "keep_checkpoints",
    "monitor",
];

/// `config` without its how-it-runs keys: what defines the run.
pub fn defining(config: &Value) -> Value {
    match config {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), defining(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The how-it-runs settings that differ between `before` and `after`, as
/// `path: old -> new` lines for the log.
pub fn changes(before: &Value, after: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_changes("", before, after, &mut out);
    out
}

fn collect_changes(at: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    let (Value::Object(b), Value::Object(a)) = (before, after) else {
        return;
    };
    for key in b.keys().chain(a.keys().filter(|k| !b.contains_key(*k))) {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        let (old, new) = (b.get(key), a.get(key));
        if KEYS.contains(&key.as_str()) {
            if old != new {
                let show = |v: Option<&Value>| v.map_or("(unset)".to_owned(), Value::to_string);
                out.push(format!("{path}: {} -> {}", show(old), show(new)));
            }
        } else if let (Some(old), Some(new)) = (old, new) {
            collect_changes(&path, old, new, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn only_the_defining_part_is_compared_and_changes_are_named() {
        let before = json!({"seed": 1, "workers": 4, "device": "cpu",
                            "optim": {"lr": 0.1}, "monitor": {"patience": 200}});
        let after = json!({"seed": 1, "workers": 2, "device": "cuda:0",
                           "optim": {"lr": 0.1}, "monitor": {"patience": 50}});
        assert_eq!(defining(&before), defining(&after));
        assert_eq!(defining(&before), json!({"seed": 1, "optim": {"lr": 0.1}}));
        assert_eq!(
            changes(&before, &after),
            [
                "device: \"cpu\" -> \"cuda:0\"",
                "monitor: {\"patience\":200} -> {\"patience\":50}",
                "workers: 4 -> 2"
            ]
        );
        let other = json!({"seed": 1, "workers": 4, "optim": {"lr": 0.2}});
        assert_ne!(defining(&before), defining(&other));
    }
}
