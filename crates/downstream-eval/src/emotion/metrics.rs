//! Classification metrics from a confusion matrix, with scikit-learn's conventions:
//! micro-F1 (`f1_score(average="micro")`, equal to accuracy for single-label problems),
//! macro-F1 (`average="macro"`: mean over the classes that occur in the truth or the
//! predictions, F1 = 0 where undefined) and UAR (`balanced_accuracy_score`: mean recall
//! over the classes that occur in the truth).

use serde::Serialize;

/// Counts of (true class, predicted class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfusionMatrix {
    /// `counts[true][predicted]`.
    pub counts: Vec<Vec<u64>>,
}

/// The three headline metrics of emotion recognition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassificationScores {
    pub micro_f1: f64,
    pub macro_f1: f64,
    pub uar: f64,
}

impl ConfusionMatrix {
    /// Counts the (truth, prediction) pairs over `n_classes` classes.
    pub fn new(n_classes: usize, truth: &[usize], predicted: &[usize]) -> Self {
        let mut counts = vec![vec![0; n_classes]; n_classes];
        for (&t, &p) in truth.iter().zip(predicted) {
            counts[t][p] += 1;
        }
        ConfusionMatrix { counts }
    }

    /// Number of classes (rows and columns).
    pub fn n_classes(&self) -> usize {
        self.counts.len()
    }

    fn true_count(&self, c: usize) -> u64 {
        self.counts[c].iter().sum()
    }

    fn predicted_count(&self, c: usize) -> u64 {
        self.counts.iter().map(|row| row[c]).sum()
    }

    /// Number of predictions counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Micro-averaged F1: correct predictions over all predictions.
    pub fn micro_f1(&self) -> f64 {
        let correct: u64 = (0..self.n_classes()).map(|c| self.counts[c][c]).sum();
        correct as f64 / self.total().max(1) as f64
    }

    /// Unweighted mean of the per-class F1 over the classes seen in truth or predictions.
    pub fn macro_f1(&self) -> f64 {
        let f1s: Vec<f64> = (0..self.n_classes())
            .filter(|&c| self.true_count(c) + self.predicted_count(c) > 0)
            .map(|c| {
                let tp = self.counts[c][c] as f64;
                2.0 * tp / (self.true_count(c) + self.predicted_count(c)) as f64
            })
            .collect();
        mean(&f1s)
    }

    /// Unweighted average recall over the classes seen in the truth.
    pub fn uar(&self) -> f64 {
        let recalls: Vec<f64> = (0..self.n_classes())
            .filter(|&c| self.true_count(c) > 0)
            .map(|c| self.counts[c][c] as f64 / self.true_count(c) as f64)
            .collect();
        mean(&recalls)
    }

    /// All three headline metrics.
    pub fn scores(&self) -> ClassificationScores {
        ClassificationScores {
            micro_f1: self.micro_f1(),
            macro_f1: self.macro_f1(),
            uar: self.uar(),
        }
    }

    /// Adds another matrix of the same classes (pooling folds).
    pub fn add(&mut self, other: &ConfusionMatrix) {
        for (row, other) in self.counts.iter_mut().zip(&other.counts) {
            row.iter_mut().zip(other).for_each(|(a, b)| *a += b);
        }
    }
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f64>() / values.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_scores() {
        // Class 2 never occurs; class 3 is predicted but never true.
        let truth = [0, 0, 0, 1, 1];
        let predicted = [0, 0, 1, 1, 3];
        let m = ConfusionMatrix::new(4, &truth, &predicted);
        assert_eq!(m.counts[0], vec![2, 1, 0, 0]);
        assert_eq!(m.micro_f1(), 3.0 / 5.0);
        // F1: class 0 = 4/5, class 1 = 2/4, class 3 = 0 (class 2 left out).
        assert!((m.macro_f1() - (0.8 + 0.5 + 0.0) / 3.0).abs() < 1e-15);
        // Recall: class 0 = 2/3, class 1 = 1/2.
        assert!((m.uar() - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-15);
        let mut pooled = m.clone();
        pooled.add(&m);
        assert_eq!(pooled.total(), 10);
        assert_eq!(pooled.scores(), m.scores());
    }
}
