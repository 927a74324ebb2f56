//! Adaptive symmetric score normalisation (AS-norm; Matejka et al., Interspeech 2017, as
//! in wespeaker's `score_norm`): each side of a trial is normalised by the mean and standard
//! deviation of its N highest scores against a cohort, and the two are averaged:
//! `s' = ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t) / 2`. Scores are dot products of a
//! left and a right factor (the unit vectors for cosine, see `backend`), so either back-end
//! is normalised the same way.

use ndarray::{ArrayView2, Axis, s};
use rayon::prelude::*;
use stage_kit::progress::Progress;

/// Utterances scored against the cohort per block (one matrix product each).
const BLOCK_ROWS: usize = 512;

/// Floor on a cohort standard deviation, so that a degenerate cohort cannot divide by 0.
const MIN_STD: f32 = 1e-6;

/// Per utterance: mean and standard deviation of its top-N cohort scores.
#[derive(Debug, Clone, PartialEq)]
pub struct CohortStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// Statistics of every row of `unit` (left factors) against every row of `cohort` (right
/// factors), over its `top_n` highest scores (all of them when the cohort is smaller).
pub fn cohort_stats(unit: ArrayView2<f32>, cohort: ArrayView2<f32>, top_n: usize) -> CohortStats {
    let top_n = top_n.clamp(1, cohort.nrows().max(1));
    let blocks = unit.nrows().div_ceil(BLOCK_ROWS);
    let progress = std::sync::Mutex::new(Progress::new("AS-norm cohort", unit.nrows(), "utt"));
    let per_block: Vec<Vec<(f32, f32)>> = (0..blocks)
        .into_par_iter()
        .map(|b| {
            let rows = unit.slice(s![
                b * BLOCK_ROWS..((b + 1) * BLOCK_ROWS).min(unit.nrows()),
                ..
            ]);
            let scores = rows.dot(&cohort.t());
            let stats = scores
                .axis_iter(Axis(0))
                .map(|row| {
                    let mut row = row.to_vec();
                    top_mean_std(&mut row, top_n)
                })
                .collect();
            progress.lock().expect("progress lock").update(rows.nrows());
            stats
        })
        .collect();
    progress.into_inner().expect("progress lock").finish();
    let (mean, std) = per_block.into_iter().flatten().unzip();
    CohortStats { mean, std }
}

/// Mean and (population) standard deviation of the `n` largest values; reorders `values`.
fn top_mean_std(values: &mut [f32], n: usize) -> (f32, f32) {
    if n < values.len() {
        values.select_nth_unstable_by(n - 1, |a, b| b.total_cmp(a));
    }
    let top = &values[..n];
    let mean = top.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let var = top
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    (mean as f32, (var.sqrt() as f32).max(MIN_STD))
}

/// AS-normalised scores: `raw[i]` is the score of `pairs[i]`, whose positions index `stats`.
pub fn as_norm(raw: &[f32], pairs: &[[u32; 2]], stats: &CohortStats) -> Vec<f32> {
    raw.par_iter()
        .zip(pairs.par_iter())
        .map(|(&s, &[e, t])| {
            let (e, t) = (e as usize, t as usize);
            0.5 * ((s - stats.mean[e]) / stats.std[e] + (s - stats.mean[t]) / stats.std[t])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn top_n_statistics() {
        let mut v = vec![0.1, 0.9, 0.5, 0.7, 0.3];
        let (mean, std) = top_mean_std(&mut v, 2);
        assert!((mean - 0.8).abs() < 1e-6);
        assert!((std - 0.1).abs() < 1e-6);
    }

    #[test]
    fn normalisation_is_symmetric_and_uses_both_sides() {
        let unit = array![[1.0f32, 0.0], [0.0, 1.0]];
        let cohort = array![[1.0f32, 0.0], [0.6, 0.8], [-1.0, 0.0]];
        let stats = cohort_stats(unit.view(), cohort.view(), 2);
        // Row 0 scores 1, 0.6, -1 -> top 2: mean 0.8, std 0.2. Row 1: 0, 0.8, 0 -> 0.4, 0.4.
        assert!((stats.mean[0] - 0.8).abs() < 1e-6 && (stats.std[0] - 0.2).abs() < 1e-6);
        assert!((stats.mean[1] - 0.4).abs() < 1e-6 && (stats.std[1] - 0.4).abs() < 1e-6);
        // A top-N beyond the cohort uses all of it.
        let all = cohort_stats(unit.view(), cohort.view(), 10);
        assert!((all.mean[0] - 0.2).abs() < 1e-6);
        let normed = as_norm(&[0.5, 0.5], &[[0, 1], [1, 0]], &stats);
        let expected = 0.5 * ((0.5 - 0.8) / 0.2 + (0.5 - 0.4) / 0.4);
        assert!((normed[0] - expected).abs() < 1e-5, "{normed:?}");
        assert_eq!(normed[0], normed[1]);
    }
}
