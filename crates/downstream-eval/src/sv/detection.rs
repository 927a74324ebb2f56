//! Detection metrics of a scored trial list: the ROC (one operating point per distinct
//! threshold), the equal error rate read two ways, and the minimum detection cost.
//!
//! - ROCCH EER (hyperion / BOSARIS `rocch2eer`): where the ROC convex hull crosses
//!   P_miss = P_fa. It is the highest Bayes error a calibrated system can reach over all
//!   priors, and does not depend on how ties or steps are interpolated. (Kaldi's
//!   `compute-eer` is a step-wise search over sorted scores, neither of these two.)
//! - Interpolated EER (wespeaker / NIST SRE `compute_eer`): the crossing of the straight
//!   segment between the last operating point with P_miss < P_fa and the first with
//!   P_miss >= P_fa. Never below the ROCCH EER.
//! - Normalised minDCF: `min_t (C_miss P_t P_miss(t) + C_fa (1 - P_t) P_fa(t)) /
//!   min(C_miss P_t, C_fa (1 - P_t))` over every threshold, as hyperion and wespeaker.

use serde::Serialize;

/// Operating points of a detector, ordered from "accept everything" (no miss, every
/// non-target a false alarm) to "reject everything". Point `k` rejects every score
/// `<= thresholds[k]` (`-inf` for the first point); tied scores share one point. Error
/// counts are kept as integers so that the convex hull is computed exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Roc {
    pub misses: Vec<usize>,
    pub false_alarms: Vec<usize>,
    pub thresholds: Vec<f64>,
    pub num_targets: usize,
    pub num_nontargets: usize,
}

/// Why a trial list has no ROC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RocError {
    #[error("the trial list has no target trial")]
    NoTargets,
    #[error("the trial list has no non-target trial")]
    NoNontargets,
    #[error("{0} score(s) are NaN")]
    NanScores(usize),
}

impl Roc {
    /// Builds the ROC of `scores` with labels `targets` (higher score = more likely target).
    pub fn new(scores: &[f32], targets: &[bool]) -> Result<Roc, RocError> {
        assert_eq!(scores.len(), targets.len(), "one label per score");
        let nan = scores.iter().filter(|s| s.is_nan()).count();
        if nan > 0 {
            return Err(RocError::NanScores(nan));
        }
        let num_targets = targets.iter().filter(|&&t| t).count();
        let num_nontargets = targets.len() - num_targets;
        if num_targets == 0 {
            return Err(RocError::NoTargets);
        }
        if num_nontargets == 0 {
            return Err(RocError::NoNontargets);
        }
        let mut order: Vec<u32> = (0..scores.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| scores[a as usize].total_cmp(&scores[b as usize]));

        let mut roc = Roc {
            misses: vec![0],
            false_alarms: vec![num_nontargets],
            thresholds: vec![f64::NEG_INFINITY],
            num_targets,
            num_nontargets,
        };
        let (mut misses, mut false_alarms) = (0usize, num_nontargets);
        let mut k = 0;
        while k < order.len() {
            let value = scores[order[k] as usize];
            while k < order.len() && scores[order[k] as usize] == value {
                if targets[order[k] as usize] {
                    misses += 1;
                } else {
                    false_alarms -= 1;
                }
                k += 1;
            }
            roc.misses.push(misses);
            roc.false_alarms.push(false_alarms);
            roc.thresholds.push(f64::from(value));
        }
        Ok(roc)
    }

    /// Number of operating points.
    pub fn len(&self) -> usize {
        self.misses.len()
    }

    /// Miss probability of point `k`.
    pub fn p_miss(&self, k: usize) -> f64 {
        self.misses[k] as f64 / self.num_targets as f64
    }

    /// False-alarm probability of point `k`.
    pub fn p_fa(&self, k: usize) -> f64 {
        self.false_alarms[k] as f64 / self.num_nontargets as f64
    }

    /// Always false: a ROC has at least its two end points.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// EER where the ROC convex hull crosses the diagonal.
    pub fn eer_rocch(&self) -> f64 {
        let hull: Vec<(f64, f64)> = self
            .convex_hull()
            .into_iter()
            .map(|k| (self.p_fa(k), self.p_miss(k)))
            .collect();
        // The hull runs from P_fa = 0 (P_miss - P_fa >= 0) to P_fa = 1 (P_miss - P_fa = -1).
        for pair in hull.windows(2) {
            let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
            let (d0, d1) = (y0 - x0, y1 - x1);
            if d0 >= 0.0 && d1 < 0.0 {
                let t = d0 / (d0 - d1);
                return x0 + t * (x1 - x0);
            }
        }
        unreachable!("the ROC hull always crosses the diagonal")
    }

    /// Points (indices) on the lower-left convex hull of the ROC in the (P_fa, P_miss)
    /// plane, by increasing P_fa; collinear points are left out.
    pub fn convex_hull(&self) -> Vec<usize> {
        // Scaling the axes by the trial counts keeps convexity: work on exact integers.
        let point = |k: usize| (self.false_alarms[k] as i128, self.misses[k] as i128);
        let mut hull: Vec<usize> = Vec::new();
        // By increasing P_fa; for equal P_fa only the lowest P_miss can be on the hull, and
        // it comes last in reverse ROC order.
        for k in (0..self.len()).rev() {
            let p = point(k);
            if let Some(&last) = hull.last()
                && point(last).0 == p.0
            {
                hull.pop();
            }
            while let [.., a, b] = hull[..] {
                let (a, b) = (point(a), point(b));
                // Keep b only if a -> b -> p turns counter-clockwise (strictly convex).
                let cross = (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0);
                if cross > 0 {
                    break;
                }
                hull.pop();
            }
            hull.push(k);
        }
        hull
    }

    /// EER by linear interpolation between the two operating points around the crossing.
    pub fn eer_interpolated(&self) -> f64 {
        let diff = |k: usize| self.p_miss(k) - self.p_fa(k);
        // diff rises monotonically from -1 (accept all) to 1 (reject all).
        let x1 = (0..self.len())
            .find(|&k| diff(k) >= 0.0)
            .expect("the last point has P_miss - P_fa = 1");
        let x2 = x1 - 1;
        let a = diff(x1) / (diff(x1) - diff(x2));
        self.p_miss(x1) + a * (self.p_miss(x2) - self.p_miss(x1))
    }

    /// Normalised minimum detection cost at target prior `p_target`.
    pub fn min_dcf(&self, p_target: f64, c_miss: f64, c_fa: f64) -> MinDcf {
        let norm = (c_miss * p_target).min(c_fa * (1.0 - p_target));
        let cost = |k: usize| {
            (c_miss * p_target * self.p_miss(k) + c_fa * (1.0 - p_target) * self.p_fa(k)) / norm
        };
        let best = (0..self.len())
            .min_by(|&a, &b| cost(a).total_cmp(&cost(b)))
            .expect("a ROC has points");
        MinDcf {
            p_target,
            c_miss,
            c_fa,
            min_dcf: cost(best),
            threshold: self.thresholds[best],
            p_miss: self.p_miss(best),
            p_fa: self.p_fa(best),
        }
    }
}

/// The minimum of the normalised detection cost and where it is reached.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MinDcf {
    pub p_target: f64,
    pub c_miss: f64,
    pub c_fa: f64,
    pub min_dcf: f64,
    /// Scores above this are accepted at the optimum (`null` in JSON for "accept all").
    pub threshold: f64,
    pub p_miss: f64,
    pub p_fa: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_separation_has_zero_error() {
        let roc = Roc::new(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]).unwrap();
        assert_eq!(roc.eer_rocch(), 0.0);
        assert_eq!(roc.eer_interpolated(), 0.0);
        assert_eq!(roc.min_dcf(0.01, 1.0, 1.0).min_dcf, 0.0);
    }

    #[test]
    fn inverted_scores_have_full_error() {
        let roc = Roc::new(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]).unwrap();
        assert_eq!(roc.eer_rocch(), 0.5);
        assert_eq!(roc.eer_interpolated(), 1.0);
        // Rejecting everything costs the normaliser: 1.
        assert_eq!(roc.min_dcf(0.05, 1.0, 1.0).min_dcf, 1.0);
    }

    #[test]
    fn ties_form_one_operating_point() {
        // All scores tied: the ROC is the two end points, the hull the anti-diagonal.
        let roc = Roc::new(&[0.5; 4], &[true, false, true, false]).unwrap();
        assert_eq!(roc.len(), 2);
        assert_eq!(roc.eer_rocch(), 0.5);
        assert_eq!(roc.eer_interpolated(), 0.5);
    }

    #[test]
    fn hand_computed_example() {
        // Sorted: n0.1 t0.2 n0.3 t0.4 n0.5 t0.6; 3 targets, 3 non-targets.
        let scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6];
        let targets = [false, true, false, true, false, true];
        let roc = Roc::new(&scores, &targets).unwrap();
        let third = 1.0 / 3.0;
        assert_eq!(roc.misses, vec![0, 0, 1, 1, 2, 2, 3]);
        assert_eq!(roc.false_alarms, vec![3, 2, 2, 1, 1, 0, 0]);
        // Interpolated between (P_miss 1/3, P_fa 2/3) and (1/3, 1/3): crossing at 1/3.
        assert!((roc.eer_interpolated() - third).abs() < 1e-15);
        // Hull vertices (P_fa, P_miss): (0, 2/3), (2/3, 0), (1, 0); (1/3, 1/3) lies on the
        // first segment, which crosses the diagonal there.
        assert_eq!(roc.convex_hull(), vec![5, 1, 0]);
        assert!((roc.eer_rocch() - third).abs() < 1e-15);
        assert!(roc.eer_rocch() <= roc.eer_interpolated());
    }

    #[test]
    fn degenerate_lists_are_refused() {
        assert_eq!(Roc::new(&[1.0], &[true]), Err(RocError::NoNontargets));
        assert_eq!(Roc::new(&[1.0], &[false]), Err(RocError::NoTargets));
        assert_eq!(
            Roc::new(&[f32::NAN, 1.0], &[true, false]),
            Err(RocError::NanScores(1))
        );
    }
}
