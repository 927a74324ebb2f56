//! `stats`: what a manifest holds (utterances, hours, speakers, per split, durations, labels,
//! formats).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::summary::Summary;
use crate::utterances::UtteranceManifest;

/// Upper edges (seconds) of the duration histogram's bins; the last bin is open.
pub const DURATION_BIN_EDGES: &[f64] =
    &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 60.0];

/// Counts of one split.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SplitStats {
    pub utterances: usize,
    pub hours: f64,
    pub speakers: usize,
}

/// One bin of the duration histogram: `[from_s, to_s)`, `to_s` absent for the last bin.
#[derive(Debug, Clone, Serialize)]
pub struct DurationBin {
    pub from_s: f64,
    pub to_s: Option<f64>,
    pub utterances: usize,
}

/// The statistics of a manifest.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub utterances: usize,
    pub hours: f64,
    pub speakers: usize,
    pub sessions: usize,
    pub min_seconds: f64,
    pub mean_seconds: f64,
    pub max_seconds: f64,
    pub splits: BTreeMap<String, SplitStats>,
    pub duration_histogram: Vec<DurationBin>,
    pub emotions: BTreeMap<String, usize>,
    pub folds: BTreeMap<String, usize>,
    pub corpora: BTreeMap<String, usize>,
    pub sample_rates: BTreeMap<u32, usize>,
    pub channels: BTreeMap<u16, usize>,
    pub codecs: BTreeMap<String, usize>,
}

/// Computes the statistics of `manifest`.
pub fn stats(manifest: &UtteranceManifest) -> Stats {
    let u = &manifest.utterances;
    let durations: Vec<f64> = u.iter().map(|x| x.duration_seconds()).collect();
    let total: f64 = durations.iter().sum();
    let mut splits: BTreeMap<String, (SplitStats, BTreeSet<&str>)> = BTreeMap::new();
    let mut stats = Stats {
        utterances: u.len(),
        hours: total / 3600.0,
        speakers: distinct(u.iter().filter_map(|x| x.speaker.as_deref())),
        sessions: distinct(
            u.iter()
                .filter_map(|x| Some((x.speaker.as_deref(), x.session.as_deref()?))),
        ),
        min_seconds: durations.iter().copied().fold(f64::INFINITY, f64::min),
        mean_seconds: total / u.len().max(1) as f64,
        max_seconds: durations.iter().copied().fold(0.0, f64::max),
        splits: BTreeMap::new(),
        duration_histogram: histogram(&durations),
        emotions: BTreeMap::new(),
        folds: BTreeMap::new(),
        corpora: BTreeMap::new(),
        sample_rates: BTreeMap::new(),
        channels: BTreeMap::new(),
        codecs: BTreeMap::new(),
    };
    if u.is_empty() {
        stats.min_seconds = 0.0;
    }
    for (x, seconds) in u.iter().zip(&durations) {
        let (split, speakers) = splits.entry(x.split.clone()).or_default();
        split.utterances += 1;
        split.hours += seconds / 3600.0;
        if let Some(s) = &x.speaker {
            speakers.insert(s);
        }
        if let Some(e) = &x.emotion {
            *stats.emotions.entry(e.clone()).or_default() += 1;
        }
        if let Some(f) = &x.fold {
            *stats.folds.entry(f.clone()).or_default() += 1;
        }
        *stats.corpora.entry(x.corpus.clone()).or_default() += 1;
        *stats.sample_rates.entry(x.sample_rate).or_default() += 1;
        *stats.channels.entry(x.channels).or_default() += 1;
        *stats.codecs.entry(x.codec.clone()).or_default() += 1;
    }
    stats.splits = splits
        .into_iter()
        .map(|(name, (mut split, speakers))| {
            split.speakers = speakers.len();
            (name, split)
        })
        .collect();
    stats
}

fn distinct<T: Ord>(values: impl Iterator<Item = T>) -> usize {
    values.collect::<BTreeSet<T>>().len()
}

fn histogram(durations: &[f64]) -> Vec<DurationBin> {
    let mut bins: Vec<DurationBin> = std::iter::once(0.0)
        .chain(DURATION_BIN_EDGES.iter().copied())
        .zip(DURATION_BIN_EDGES.iter().map(|&e| Some(e)).chain([None]))
        .map(|(from_s, to_s)| DurationBin {
            from_s,
            to_s,
            utterances: 0,
        })
        .collect();
    for &d in durations {
        let bin = DURATION_BIN_EDGES
            .iter()
            .position(|&edge| d < edge)
            .unwrap_or(DURATION_BIN_EDGES.len());
        bins[bin].utterances += 1;
    }
    bins
}

/// `k v, k v, ...`
pub(crate) fn counts<K: std::fmt::Display, V: std::fmt::Display>(map: &BTreeMap<K, V>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Summary for Stats {
    fn paragraph(&self) -> String {
        let splits: Vec<String> = self
            .splits
            .iter()
            .map(|(name, s)| {
                format!(
                    "{name} {} utt / {:.2} h / {} spk",
                    s.utterances, s.hours, s.speakers
                )
            })
            .collect();
        let histogram: Vec<String> = self
            .duration_histogram
            .iter()
            .filter(|b| b.utterances > 0)
            .map(|b| match b.to_s {
                Some(to) => format!("{}-{} s {}", b.from_s, to, b.utterances),
                None => format!(">= {} s {}", b.from_s, b.utterances),
            })
            .collect();
        let mut text = format!(
            "{} utterances, {:.2} h, {} speakers, {} sessions; durations {:.2}-{:.2} s (mean \
             {:.2}); splits: {}; durations: {}; sample rates: {}; channels: {}; codecs: {}",
            self.utterances,
            self.hours,
            self.speakers,
            self.sessions,
            self.min_seconds,
            self.max_seconds,
            self.mean_seconds,
            splits.join(", "),
            histogram.join(", "),
            counts(&self.sample_rates),
            counts(&self.channels),
            counts(&self.codecs),
        );
        if !self.emotions.is_empty() {
            text += &format!("; emotions: {}", counts(&self.emotions));
        }
        if !self.folds.is_empty() {
            text += &format!("; folds: {}", counts(&self.folds));
        }
        text + "."
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_are_half_open() {
        let bins = histogram(&[0.5, 1.0, 5.9, 61.0]);
        let counts: Vec<usize> = bins.iter().map(|b| b.utterances).collect();
        assert_eq!(counts, [1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(bins.last().unwrap().to_s, None);
    }
}
