//! `filter`: keeps the utterances of a manifest that pass duration and split filters, and,
//! only when asked, a filter that uses speaker labels (hyperion drops speakers with fewer than
//! 8 utterances). Label-using filters are opt-in and loud: the summary says so, and the
//! output manifest records them under [`LABEL_FILTERS_KEY`] so that no self-supervised stage
//! takes it for unlabelled data.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::summary::Summary;
use crate::utterances::{LABEL_FILTERS_KEY, UtteranceManifest};

/// What to keep.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FilterOptions {
    /// Drop utterances shorter than this (seconds).
    pub min_seconds: Option<f64>,
    /// Drop utterances longer than this (seconds).
    pub max_seconds: Option<f64>,
    /// Keep only these splits (all when empty).
    pub splits: Vec<String>,
    /// USES SPEAKER LABELS: drop speakers with fewer utterances than this (after the other
    /// filters); utterances without a speaker label are dropped too.
    pub min_utterances_per_speaker: Option<usize>,
}

impl FilterOptions {
    /// The label-using filters asked for, as `name=value` (empty when none).
    pub fn label_filters(&self) -> Vec<String> {
        self.min_utterances_per_speaker
            .map(|n| format!("min_utterances_per_speaker={n}"))
            .into_iter()
            .collect()
    }
}

/// Filters `manifest` in place and returns what was removed, by reason.
pub fn filter(manifest: &mut UtteranceManifest, options: &FilterOptions) -> FilterSummary {
    let before = manifest.utterances.len();
    let mut removed: BTreeMap<String, usize> = BTreeMap::new();
    manifest.utterances.retain(|u| {
        let seconds = u.duration_seconds();
        let reason = if options.min_seconds.is_some_and(|m| seconds < m) {
            Some("shorter than --min-seconds")
        } else if options.max_seconds.is_some_and(|m| seconds > m) {
            Some("longer than --max-seconds")
        } else if !options.splits.is_empty() && !options.splits.contains(&u.split) {
            Some("split not selected")
        } else {
            None
        };
        if let Some(reason) = reason {
            *removed.entry(reason.to_owned()).or_default() += 1;
        }
        reason.is_none()
    });
    if let Some(min) = options.min_utterances_per_speaker {
        let mut per_speaker: HashMap<Option<String>, usize> = HashMap::new();
        for u in &manifest.utterances {
            *per_speaker.entry(u.speaker.clone()).or_default() += 1;
        }
        manifest.utterances.retain(|u| {
            let keep = u.speaker.is_some() && per_speaker[&u.speaker] >= min;
            if !keep {
                *removed
                    .entry("speaker with too few utterances (uses labels)".to_owned())
                    .or_default() += 1;
            }
            keep
        });
    }
    FilterSummary {
        before,
        kept: manifest.utterances.len(),
        removed,
        options: options.clone(),
        label_filters: options.label_filters(),
    }
}

/// What `filter` did, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct FilterSummary {
    pub before: usize,
    pub kept: usize,
    pub removed: BTreeMap<String, usize>,
    pub options: FilterOptions,
    /// Non-empty when a filter used speaker labels.
    pub label_filters: Vec<String>,
}

impl Summary for FilterSummary {
    fn paragraph(&self) -> String {
        let mut text = String::new();
        if !self.label_filters.is_empty() {
            text += &format!(
                "WARNING: this filter used speaker labels ({}); the output is marked with {} \
                 and must not be used for self-supervised training. ",
                self.label_filters.join(", "),
                LABEL_FILTERS_KEY
            );
        }
        text += &format!("Kept {} of {} utterances", self.kept, self.before);
        if !self.removed.is_empty() {
            text += &format!("; removed: {}", crate::stats::counts(&self.removed));
        }
        text + "."
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::utterances::Utterance;

    #[test]
    fn duration_and_label_filters() {
        let utt = |id: &str, speaker: Option<&str>, seconds: u64| {
            Utterance::for_test(id, speaker, seconds as f64)
        };
        let mut manifest = UtteranceManifest {
            corpus_root: "/c".into(),
            utterances: vec![
                utt("a1", Some("a"), 3),
                utt("a2", Some("a"), 4),
                utt("a3", Some("a"), 1),
                utt("b1", Some("b"), 5),
                utt("n1", None, 5),
            ],
        };
        let mut unlabelled = manifest.clone();
        let summary = filter(
            &mut unlabelled,
            &FilterOptions {
                min_seconds: Some(2.0),
                ..Default::default()
            },
        );
        assert_eq!(summary.kept, 4);
        assert!(summary.label_filters.is_empty());
        assert!(!summary.paragraph().contains("WARNING"));

        let summary = filter(
            &mut manifest,
            &FilterOptions {
                min_seconds: Some(2.0),
                min_utterances_per_speaker: Some(2),
                ..Default::default()
            },
        );
        let kept: Vec<&str> = manifest
            .utterances
            .iter()
            .map(|u| u.utt_id.as_str())
            .collect();
        assert_eq!(kept, ["a1", "a2"]);
        assert_eq!(summary.label_filters, ["min_utterances_per_speaker=2"]);
        assert!(
            summary
                .paragraph()
                .starts_with("WARNING: this filter used speaker labels")
        );
    }
}
