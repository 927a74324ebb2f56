//! Mean normalisation of features `[frames, bins]`: per-utterance CMN, and hyperion's
//! short-time mean normalisation (STMN) over a sliding window, in Rust and for batched tch
//! tensors `[B, frames, bins]`.
//!
//! STMN follows hyperion's `MeanVarianceNorm.normalize_cumsum` exactly: the utterance mean is
//! removed first; the result is padded by reflection (`x[1], x[0] | x[0] ...`) with
//! `left_context` frames before and `right_context` after; the mean subtracted at frame `t`
//! is the sum of the padded frames `t - left + 1 ..= t + right` divided by
//! `left + right + 1` (hyperion's cumulative-sum difference covers one frame fewer than it
//! divides by). Utterances of at most `left + right + 1` frames get plain CMN.

use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Sliding-window context of STMN (hyperion's defaults: 150 frames each side).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StmnOptions {
    pub left_context: usize,
    pub right_context: usize,
}

impl Default for StmnOptions {
    fn default() -> Self {
        StmnOptions {
            left_context: 150,
            right_context: 150,
        }
    }
}

impl StmnOptions {
    fn window(&self) -> usize {
        self.left_context + self.right_context + 1
    }
}

/// Per-utterance cepstral mean normalisation.
pub fn cmn(feats: &Array2<f32>) -> Array2<f32> {
    let mut out = feats.clone();
    if feats.nrows() == 0 {
        return out;
    }
    let mean = feats
        .mapv(f64::from)
        .mean_axis(Axis(0))
        .expect("at least one frame");
    for mut row in out.rows_mut() {
        for (v, m) in row.iter_mut().zip(&mean) {
            *v = (f64::from(*v) - m) as f32;
        }
    }
    out
}

/// Hyperion's sliding-window mean normalisation (see the module documentation).
pub fn stmn(feats: &Array2<f32>, opts: &StmnOptions) -> Array2<f32> {
    let (frames, bins) = feats.dim();
    if frames <= opts.window() || (opts.left_context == 0 && opts.right_context == 0) {
        return cmn(feats);
    }
    let centred = cmn(feats);
    let (left, right) = (opts.left_context as isize, opts.right_context as isize);
    let last = frames as isize - 1;
    let reflect = |k: isize| -> usize {
        if k < 0 {
            (-k) as usize
        } else if k > last {
            (2 * last - k) as usize
        } else {
            k as usize
        }
    };
    let scale = 1.0 / opts.window() as f64;
    let mut out = centred.clone();
    let mut sum = vec![0.0f64; bins];
    // Window of frame 0: padded frames -left+1 ..= right.
    for k in (1 - left)..=right {
        for (s, v) in sum.iter_mut().zip(centred.row(reflect(k))) {
            *s += f64::from(*v);
        }
    }
    for t in 0..frames as isize {
        if t > 0 {
            let (enter, leave) = (reflect(t + right), reflect(t - left));
            for ((s, a), b) in sum
                .iter_mut()
                .zip(centred.row(enter))
                .zip(centred.row(leave))
            {
                *s += f64::from(*a) - f64::from(*b);
            }
        }
        for (o, s) in out.row_mut(t as usize).iter_mut().zip(&sum) {
            *o = (f64::from(*o) - s * scale) as f32;
        }
    }
    out
}

/// [`cmn`] over the frames of each utterance of a `[B, frames, bins]` batch.
pub fn cmn_tch(feats: &Tensor) -> Tensor {
    feats - feats.mean_dim(1, true, feats.kind())
}

/// [`stmn`] over a `[B, frames, bins]` batch (all utterances of the same length).
pub fn stmn_tch(feats: &Tensor, opts: &StmnOptions) -> Tensor {
    let frames = feats.size()[1] as usize;
    if frames <= opts.window() || (opts.left_context == 0 && opts.right_context == 0) {
        return cmn_tch(feats);
    }
    let centred = cmn_tch(feats);
    let (left, right) = (opts.left_context as i64, opts.right_context as i64);
    // Reflection padding along time: [B, bins, frames] for reflection_pad1d.
    let padded = centred
        .transpose(1, 2)
        .reflection_pad1d([left, right])
        .transpose(1, 2);
    let cumsum = padded.to_kind(Kind::Double).cumsum(1, Kind::Double);
    let total = padded.size()[1];
    let window = opts.window() as i64;
    let sums =
        cumsum.narrow(1, window - 1, total - window + 1) - cumsum.narrow(1, 0, total - window + 1);
    (centred.to_kind(Kind::Double) - sums / window as f64).to_kind(feats.kind())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn cmn_removes_the_mean_and_short_utterances_fall_back_to_it() {
        let x = array![[1.0f32, 10.0], [3.0, 20.0]];
        assert_eq!(cmn(&x), array![[-1.0f32, -5.0], [1.0, 5.0]]);
        assert_eq!(stmn(&x, &StmnOptions::default()), cmn(&x));
    }

    #[test]
    fn stmn_matches_a_direct_window_sum() {
        let opts = StmnOptions {
            left_context: 3,
            right_context: 2,
        };
        let x = Array2::from_shape_fn((20, 2), |(t, b)| ((t * 7 + b * 3) % 11) as f32);
        let y = stmn(&x, &opts);
        let c = cmn(&x);
        let reflect = |k: isize| k.unsigned_abs().min(38 - k.max(0) as usize);
        for t in 0..20isize {
            for b in 0..2 {
                let s: f32 = (t - 2..=t + 2).map(|k| c[[reflect(k), b]]).sum();
                assert!((y[[t as usize, b]] - (c[[t as usize, b]] - s / 6.0)).abs() < 1e-5);
            }
        }
        let t = Tensor::from_slice(x.as_slice().unwrap()).view([1, 20, 2]);
        let yt: Vec<f32> = Vec::try_from(stmn_tch(&t, &opts).flatten(0, -1)).unwrap();
        for (a, b) in yt.iter().zip(y.iter()) {
            assert!((a - b).abs() < 1e-5);
        }
    }
}
