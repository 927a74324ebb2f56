//! Top-level keys of the stages' `report.json` files that the runner's pipeline report
//! reads. The stages' report types serialise to these keys (their tests check it through
//! these constants); the runner looks them up by the same constants.

/// Speaker verification: equal error rate from the ROC convex hull, as a fraction.
pub const EER: &str = "eer";
/// Speaker verification: equal error rate interpolated between operating points.
pub const EER_INTERPOLATED: &str = "eer_interpolated";

/// Speaker verification: the normalised minimum detection cost at target prior `p_target`
/// (`min_dcf_0.01`).
pub fn min_dcf(p_target: f64) -> String {
    format!("min_dcf_{p_target}")
}

/// Emotion recognition: micro-averaged F1 (accuracy), pooled over the test folds.
pub const MICRO_F1: &str = "micro_f1";
/// Emotion recognition: macro-averaged F1.
pub const MACRO_F1: &str = "macro_f1";
/// Emotion recognition: unweighted average recall.
pub const UAR: &str = "uar";

/// Pretraining: optimiser steps taken.
pub const STEPS: &str = "steps";
/// Pretraining: the last step's loss.
pub const FINAL_LOSS: &str = "final_loss";
/// Pretraining: the last step's teacher entropy, in nats.
pub const FINAL_TEACHER_ENTROPY: &str = "final_teacher_entropy";
/// Pretraining: steps the collapse monitor flagged.
pub const COLLAPSE_WARNINGS: &str = "collapse_warnings";
/// Pretraining: the first flagged step, when any.
pub const FIRST_COLLAPSE_STEP: &str = "first_collapse_step";

#[cfg(test)]
mod tests {
    #[test]
    fn min_dcf_keys_print_the_prior_as_written() {
        assert_eq!(super::min_dcf(0.01), "min_dcf_0.01");
        assert_eq!(super::min_dcf(0.05), "min_dcf_0.05");
    }
}
