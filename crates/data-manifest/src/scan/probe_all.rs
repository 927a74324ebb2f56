//! Probing every candidate's header on a thread pool, with progress.

use std::path::Path;

use rayon::prelude::*;
use stage_kit::progress::Progress;

use crate::error::{ManifestError, Result};
use crate::probe::{self, AudioInfo, ProbeError};
use crate::rejects::Reject;
use crate::scan::Candidate;
use crate::utterances::{Utterance, channel_utt_id};

/// Candidates probed between two progress updates.
const CHUNK: usize = 2048;

/// Probes `candidates` (relative to `root`) with `threads` threads (0: one per core) and
/// returns the utterances, in candidate order, and the rejects.
pub fn probe_all(
    root: &Path,
    corpus: &str,
    candidates: Vec<Candidate>,
    threads: usize,
) -> Result<(Vec<Utterance>, Vec<Reject>)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("probe-{i}"))
        .build()
        .map_err(|e| ManifestError::invalid(root, format!("cannot start probe threads: {e}")))?;
    let mut progress = Progress::new("probe", candidates.len(), "file");
    let mut utterances = Vec::with_capacity(candidates.len());
    let mut rejects = Vec::new();
    for chunk in candidates.chunks(CHUNK) {
        let results: Vec<std::result::Result<AudioInfo, ProbeError>> = pool.install(|| {
            chunk
                .par_iter()
                .map(|c| probe::probe(&root.join(&c.path)))
                .collect()
        });
        for (candidate, result) in chunk.iter().zip(results) {
            match result {
                Ok(info) => utterances.extend(channel_utterances(candidate, corpus, info)),
                Err(e) => rejects.push(Reject {
                    path: candidate.path.clone(),
                    reason: e.to_string(),
                }),
            }
        }
        progress.update(chunk.len());
    }
    progress.finish();
    Ok((utterances, rejects))
}

/// The utterance of a file, or one per channel when its channels are separate recordings.
fn channel_utterances(c: &Candidate, corpus: &str, info: AudioInfo) -> Vec<Utterance> {
    if !info.separate_channels {
        return vec![utterance(c, corpus, info, None)];
    }
    (0..info.channels)
        .map(|channel| utterance(c, corpus, info.clone(), Some(channel)))
        .collect()
}

fn utterance(c: &Candidate, corpus: &str, info: AudioInfo, channel: Option<u16>) -> Utterance {
    Utterance {
        utt_id: match channel {
            Some(channel) => channel_utt_id(&c.utt_id, channel),
            None => c.utt_id.clone(),
        },
        path: c.path.clone(),
        corpus: corpus.to_owned(),
        speaker: c.speaker.clone(),
        session: c.session.clone(),
        num_samples: info.num_samples,
        sample_rate: info.sample_rate,
        channels: info.channels,
        codec: info.codec,
        split: c.split.clone(),
        emotion: c.emotion.clone(),
        fold: c.fold.clone(),
        channel,
    }
}
