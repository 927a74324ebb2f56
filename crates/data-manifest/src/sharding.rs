//! `shard --shard i/N`: deterministic shards of a manifest balanced by total duration, for
//! parallel feature extraction.
//!
//! Utterances are taken longest first (ties by id) and each given to the shard with the least
//! audio so far (lowest index on ties), the classic longest-processing-time rule: every shard
//! ends within one utterance's duration of the others. Each shard keeps the manifest's order.

use serde::Serialize;
use stage_kit::Shard;

use crate::summary::Summary;
use crate::utterances::UtteranceManifest;

/// The shard index of every utterance of `manifest` among `count` shards.
pub fn assign_shards(manifest: &UtteranceManifest, count: usize) -> Vec<usize> {
    let u = &manifest.utterances;
    let mut order: Vec<usize> = (0..u.len()).collect();
    order.sort_by(|&a, &b| {
        u[b].duration_seconds()
            .total_cmp(&u[a].duration_seconds())
            .then_with(|| u[a].utt_id.cmp(&u[b].utt_id))
    });
    let mut load = vec![0.0f64; count];
    let mut shard_of = vec![0usize; u.len()];
    for i in order {
        let shard = (0..count)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .expect("count > 0");
        load[shard] += u[i].duration_seconds();
        shard_of[i] = shard;
    }
    shard_of
}

/// The utterances of `shard`, and the summary.
pub fn shard(manifest: &UtteranceManifest, shard: Shard) -> (UtteranceManifest, ShardSummary) {
    let shard_of = assign_shards(manifest, shard.count);
    let mut hours = vec![0.0; shard.count];
    let mut utterances = vec![0usize; shard.count];
    for (u, &s) in manifest.utterances.iter().zip(&shard_of) {
        hours[s] += u.duration_seconds() / 3600.0;
        utterances[s] += 1;
    }
    let part = UtteranceManifest {
        corpus_root: manifest.corpus_root.clone(),
        utterances: manifest
            .utterances
            .iter()
            .zip(&shard_of)
            .filter(|&(_, &s)| s == shard.index)
            .map(|(u, _)| u.clone())
            .collect(),
    };
    let summary = ShardSummary {
        shard: shard.to_string(),
        utterances: part.utterances.len(),
        hours: hours[shard.index],
        hours_per_shard: hours,
        utterances_per_shard: utterances,
    };
    (part, summary)
}

/// What `shard` wrote, with the balance of all shards.
#[derive(Debug, Clone, Serialize)]
pub struct ShardSummary {
    pub shard: String,
    pub utterances: usize,
    pub hours: f64,
    pub hours_per_shard: Vec<f64>,
    pub utterances_per_shard: Vec<usize>,
}

impl Summary for ShardSummary {
    fn paragraph(&self) -> String {
        let (min, max) = self
            .hours_per_shard
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &h| {
                (lo.min(h), hi.max(h))
            });
        format!(
            "Shard {}: {} utterances, {:.3} h; the {} shards hold {:.3}-{:.3} h each.",
            self.shard,
            self.utterances,
            self.hours,
            self.hours_per_shard.len(),
            min,
            max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::utterances::Utterance;

    #[test]
    fn shards_partition_and_balance_by_duration() {
        let utterances: Vec<Utterance> = (0..50u64)
            .map(|i| Utterance::for_test(&format!("u{i:02}"), None, (1 + (i * 7919) % 13) as f64))
            .collect();
        let longest = utterances
            .iter()
            .map(|u| u.duration_seconds())
            .fold(0.0, f64::max);
        let manifest = UtteranceManifest {
            corpus_root: "/c".into(),
            utterances,
        };
        let parts: Vec<(UtteranceManifest, ShardSummary)> = (0..4)
            .map(|index| shard(&manifest, Shard { index, count: 4 }))
            .collect();
        let total: usize = parts.iter().map(|(p, _)| p.utterances.len()).sum();
        assert_eq!(total, 50);
        let hours = &parts[0].1.hours_per_shard;
        let spread = hours.iter().cloned().fold(0.0, f64::max)
            - hours.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!(spread * 3600.0 <= longest + 1e-9, "{hours:?}");
        assert_eq!(shard(&manifest, Shard { index: 2, count: 4 }).0, parts[2].0);
    }
}
