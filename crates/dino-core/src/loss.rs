//! The DINO objective: cross-entropy between the teacher's centred, sharpened distribution over
//! prototypes for each global view and the student's distribution for every other view. The
//! centre is an exponential moving average of the teacher's outputs; together with sharpening
//! it keeps the teacher from collapsing to a uniform or a one-hot output.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossConfig {
    /// Teacher temperature after the warm-up.
    pub teacher_temp: f64,
    /// Teacher temperature at the start of the warm-up.
    pub warmup_teacher_temp: f64,
    /// Epochs of linear teacher-temperature warm-up (0: none).
    pub warmup_teacher_temp_epochs: usize,
    pub student_temp: f64,
    /// EMA momentum of the centre.
    pub center_momentum: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            teacher_temp: 0.04,
            warmup_teacher_temp: 0.04,
            warmup_teacher_temp_epochs: 0,
            student_temp: 0.1,
            center_momentum: 0.9,
        }
    }
}

/// What the loss saw in one step, for monitoring collapse.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TeacherStats {
    /// Mean entropy (nats) of the teacher's per-view distributions: log K when uniform.
    pub entropy: f64,
    /// KL divergence of those distributions from the uniform one: log K - entropy.
    pub kl_from_uniform: f64,
    /// Entropy of the batch-averaged distribution: near 0 when every input picks the same
    /// prototype (one-hot collapse).
    pub batch_entropy: f64,
    pub center_norm: f64,
}

/// Loss state: the centre, `[1, K]`.
#[derive(Debug)]
pub struct DinoLoss {
    pub config: LossConfig,
    pub center: Tensor,
}

impl DinoLoss {
    pub fn new(config: LossConfig, out_dim: i64, device: Device) -> Self {
        DinoLoss {
            config,
            center: Tensor::zeros([1, out_dim], (Kind::Float, device)),
        }
    }

    /// Loss for student outputs of `student_views` views and teacher outputs of
    /// `teacher_views` views, each `[views * B, K]` with views stacked in the first dimension;
    /// teacher view `i` is the same crop as student view `i`, so that pair is skipped.
    /// Updates the centre with the teacher outputs.
    pub fn forward(
        &mut self,
        student: &Tensor,
        teacher: &Tensor,
        student_views: i64,
        teacher_views: i64,
        teacher_temp: f64,
    ) -> (Tensor, TeacherStats) {
        let out = self.loss_and_stats(student, teacher, student_views, teacher_views, teacher_temp);
        self.update_center(&teacher.detach().mean_dim(0, true, Kind::Float));
        out
    }

    /// [`DinoLoss::forward`] without moving the centre: data-parallel training moves it with
    /// the mean teacher output of the global batch ([`DinoLoss::update_center`]).
    pub fn loss_and_stats(
        &self,
        student: &Tensor,
        teacher: &Tensor,
        student_views: i64,
        teacher_views: i64,
        teacher_temp: f64,
    ) -> (Tensor, TeacherStats) {
        let student = (student / self.config.student_temp).log_softmax(-1, Kind::Float);
        let student_chunks = student.chunk(student_views, 0);
        let teacher = teacher.detach().to_kind(Kind::Float);
        let targets = ((&teacher - &self.center) / teacher_temp).softmax(-1, Kind::Float);
        let teacher_chunks = targets.chunk(teacher_views, 0);
        let mut total = Tensor::zeros([], (Kind::Float, student.device()));
        let mut pairs = 0;
        for (iq, q) in teacher_chunks.iter().enumerate() {
            for (v, s) in student_chunks.iter().enumerate() {
                if v == iq {
                    continue;
                }
                total += (-q * s)
                    .sum_dim_intlist(-1, false, Kind::Float)
                    .mean(Kind::Float);
                pairs += 1;
            }
        }
        let stats = tch::no_grad(|| self.teacher_stats(&targets));
        (total / f64::from(pairs), stats)
    }

    fn teacher_stats(&self, targets: &Tensor) -> TeacherStats {
        let k = targets.size()[1] as f64;
        let entropy_of = |p: &Tensor| {
            (-(p * p.clamp_min(1e-12).log()))
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        };
        let entropy = entropy_of(targets);
        let batch_entropy = entropy_of(&targets.mean_dim(0, true, Kind::Float));
        TeacherStats {
            entropy,
            kl_from_uniform: k.ln() - entropy,
            batch_entropy,
            center_norm: self.center.norm().double_value(&[]),
        }
    }

    /// centre = momentum * centre + (1 - momentum) * `batch_center` (`[1, K]`, the mean
    /// teacher output of a batch).
    pub fn update_center(&mut self, batch_center: &Tensor) {
        tch::no_grad(|| {
            let m = self.config.center_momentum;
            self.center = &self.center * m + batch_center * (1.0 - m);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(values: &[f32], rows: i64) -> Tensor {
        Tensor::from_slice(values).view([rows, -1])
    }

    #[test]
    fn matches_a_hand_computed_value() {
        // One image (B = 1), K = 2, two teacher views, three student views.
        let teacher = t(&[1.0, 0.0, 0.0, 1.0], 2);
        let student = t(&[0.0, 0.0, 1.0, 0.0, 0.0, 2.0], 3);
        let config = LossConfig {
            teacher_temp: 1.0,
            warmup_teacher_temp: 1.0,
            student_temp: 1.0,
            ..Default::default()
        };
        let mut loss = DinoLoss::new(config, 2, Device::Cpu);
        let (value, _) = loss.forward(&student, &teacher, 3, 2, 1.0);
        let sm = |a: f64, b: f64| [a.exp() / (a.exp() + b.exp()), b.exp() / (a.exp() + b.exp())];
        let ce = |q: [f64; 2], s: [f64; 2]| -(q[0] * s[0].ln() + q[1] * s[1].ln());
        let (q0, q1) = (sm(1.0, 0.0), sm(0.0, 1.0));
        let (s0, s1, s2) = (sm(0.0, 0.0), sm(1.0, 0.0), sm(0.0, 2.0));
        // Pairs: (q0, s1), (q0, s2), (q1, s0), (q1, s2).
        let expected = (ce(q0, s1) + ce(q0, s2) + ce(q1, s0) + ce(q1, s2)) / 4.0;
        assert!(
            (value.double_value(&[]) - expected).abs() < 1e-6,
            "{} vs {expected}",
            value.double_value(&[])
        );
        // Centre: 0.9 * 0 + 0.1 * mean of teacher rows = [0.05, 0.05].
        let center: Vec<f32> = loss.center.view([-1]).try_into().unwrap();
        assert!((center[0] - 0.05).abs() < 1e-7 && (center[1] - 0.05).abs() < 1e-7);
    }

    #[test]
    fn centring_and_sharpening_change_the_targets() {
        let teacher = t(&[2.0, 0.0, 0.0, 0.0, 2.0, 0.0], 2);
        let student = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
        let mut loss = DinoLoss::new(LossConfig::default(), 3, Device::Cpu);
        let _ = loss.center.fill_(1.0);
        let (_, sharp) = loss.forward(&student, &teacher, 2, 2, 0.04);
        let (_, soft) = loss.forward(&student, &teacher, 2, 2, 10.0);
        assert!(sharp.entropy < 0.01 && soft.entropy > 1.0);
        assert!((soft.kl_from_uniform - (3f64.ln() - soft.entropy)).abs() < 1e-12);
        assert!(
            sharp.batch_entropy > 0.6,
            "two views pick different prototypes"
        );
    }
}
