//! Additive angular margin softmax (ArcFace / AAM-softmax) with optional sub-centres: the
//! classifier of the supervised fine-tuning on pseudo-labels. Logits are scaled cosines between
//! the L2-normalised embedding and class centres; the target class's angle is widened by the
//! margin m, which forces compact, well-separated classes. With several sub-centres per class
//! the closest one counts, so noisy pseudo-labels can form their own sub-centre instead of
//! dragging the main one.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Path};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AamConfig {
    /// Logit scale s.
    pub scale: f64,
    /// Angular margin m (radians) after the warm-up.
    pub margin: f64,
    /// Epochs over which the margin grows linearly from 0 to `margin`.
    pub margin_warmup_epochs: f64,
    /// Sub-centres per class (1: plain AAM-softmax).
    pub sub_centres: i64,
}

impl Default for AamConfig {
    fn default() -> Self {
        AamConfig {
            scale: 30.0,
            margin: 0.2,
            margin_warmup_epochs: 5.0,
            sub_centres: 1,
        }
    }
}

impl AamConfig {
    /// Why these settings cannot train a classifier, if they cannot (names the key).
    pub fn check(&self) -> Result<(), String> {
        use stage_kit::config::{at_least_one, finite_in};
        finite_in(&[("scale", self.scale)], |v| v > 0.0, "> 0")?;
        let margins = [
            ("margin", self.margin),
            ("margin_warmup_epochs", self.margin_warmup_epochs),
        ];
        finite_in(&margins, |v| v >= 0.0, ">= 0")?;
        at_least_one(&[("sub_centres", self.sub_centres)])
    }

    /// Margin at a (fractional) epoch.
    pub fn margin_at(&self, epoch: f64) -> f64 {
        if self.margin_warmup_epochs <= 0.0 {
            return self.margin;
        }
        self.margin * (epoch / self.margin_warmup_epochs).clamp(0.0, 1.0)
    }
}

/// The classifier: `classes x sub_centres` centres of the embedding dimension.
#[derive(Debug)]
pub struct AamSoftmax {
    config: AamConfig,
    classes: i64,
    centres: Tensor,
}

impl AamSoftmax {
    pub fn new(vs: &Path, embedding_dim: i64, classes: i64, config: AamConfig) -> Self {
        let centres = vs.var(
            "centres",
            &[classes * config.sub_centres, embedding_dim],
            nn::init::DEFAULT_KAIMING_UNIFORM,
        );
        AamSoftmax {
            config,
            classes,
            centres,
        }
    }

    /// Cosine between each embedding and the closest sub-centre of each class, `[B, classes]`.
    pub fn cosines(&self, embeddings: &Tensor) -> Tensor {
        let x = embeddings / embeddings.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
        let w = &self.centres
            / self
                .centres
                .norm_scalaropt_dim(2, [1], true)
                .clamp_min(1e-12);
        let cos = x.matmul(&w.tr());
        if self.config.sub_centres == 1 {
            return cos;
        }
        let b = cos.size()[0];
        cos.view([b, self.classes, self.config.sub_centres])
            .amax([2], false)
    }

    /// Scaled logits with the margin `margin` applied to each row's target class.
    pub fn logits(&self, embeddings: &Tensor, labels: &Tensor, margin: f64) -> Tensor {
        let cos = self.cosines(embeddings).clamp(-1.0 + 1e-7, 1.0 - 1e-7);
        let sin = (-(&cos * &cos) + 1.0).sqrt();
        let phi = &cos * margin.cos() - sin * margin.sin();
        // Past theta = pi - m, cos(theta + m) stops decreasing; use the monotone ArcFace fallback.
        let threshold = (std::f64::consts::PI - margin).cos();
        let fallback = &cos - margin * (std::f64::consts::PI - margin).sin();
        let phi = phi.where_self(&cos.gt(threshold), &fallback);
        let one_hot = cos.zeros_like().scatter_value(1, &labels.unsqueeze(1), 1.0);
        (&one_hot * phi + (-&one_hot + 1.0) * cos) * self.config.scale
    }

    /// Mean cross-entropy of [`AamSoftmax::logits`] and the accuracy of the plain cosines.
    pub fn loss(&self, embeddings: &Tensor, labels: &Tensor, margin: f64) -> (Tensor, f64) {
        let logits = self.logits(embeddings, labels, margin);
        let loss = logits.cross_entropy_for_logits(labels);
        let accuracy = tch::no_grad(|| {
            self.cosines(embeddings)
                .argmax(1, false)
                .eq_tensor(labels)
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[])
        });
        (loss, accuracy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn classifier(centres: &[f32], classes: i64, sub: i64) -> (nn::VarStore, AamSoftmax) {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = AamConfig {
            scale: 10.0,
            margin: 0.3,
            sub_centres: sub,
            ..Default::default()
        };
        let mut aam = AamSoftmax::new(&vs.root(), 2, classes, config);
        tch::no_grad(|| {
            aam.centres
                .copy_(&Tensor::from_slice(centres).view([classes * sub, 2]))
        });
        (vs, aam)
    }

    #[test]
    fn logits_and_loss_match_hand_computed_values() {
        // Centres at 0 and 90 degrees; embedding at 30 degrees (length 2), label 0.
        let (_vs, aam) = classifier(&[1.0, 0.0, 0.0, 1.0], 2, 1);
        let angle = 30f64.to_radians();
        let x =
            Tensor::from_slice(&[2.0 * angle.cos() as f32, 2.0 * angle.sin() as f32]).view([1, 2]);
        let labels = Tensor::from_slice(&[0i64]);
        let logits: Vec<f32> = aam.logits(&x, &labels, 0.3).view([-1]).try_into().unwrap();
        let target = 10.0 * (angle + 0.3).cos();
        let other = 10.0 * (90f64.to_radians() - angle).cos();
        assert!((f64::from(logits[0]) - target).abs() < 1e-5, "{logits:?}");
        assert!((f64::from(logits[1]) - other).abs() < 1e-5);
        let expected_loss = -(target - (target.exp() + other.exp()).ln());
        let (loss, accuracy) = aam.loss(&x, &labels, 0.3);
        assert!((loss.double_value(&[]) - expected_loss).abs() < 1e-5);
        assert_eq!(accuracy, 1.0);
    }

    #[test]
    fn past_pi_minus_m_the_target_logit_keeps_decreasing() {
        let (_vs, aam) = classifier(&[1.0, 0.0, 0.0, 1.0], 2, 1);
        let x = Tensor::from_slice(&[-1.0f32, 0.01]).view([1, 2]);
        let labels = Tensor::from_slice(&[0i64]);
        let logits: Vec<f32> = aam.logits(&x, &labels, 0.3).view([-1]).try_into().unwrap();
        let cos = -1.0 / (1.0f64 + 1e-4).sqrt();
        let expected = 10.0 * (cos - 0.3 * (std::f64::consts::PI - 0.3).sin());
        assert!((f64::from(logits[0]) - expected).abs() < 1e-4, "{logits:?}");
    }

    #[test]
    fn the_closest_sub_centre_counts() {
        // Class 0 has sub-centres at 0 and 180 degrees, class 1 at 90 and 270.
        let (_vs, aam) = classifier(&[1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0], 2, 2);
        let x = Tensor::from_slice(&[-1.0f32, 0.0]).view([1, 2]);
        let cos: Vec<f32> = aam.cosines(&x).view([-1]).try_into().unwrap();
        assert!((cos[0] - 1.0).abs() < 1e-6 && cos[1].abs() < 1e-6);
    }

    #[test]
    fn margin_warms_up_linearly() {
        let c = AamConfig::default();
        assert_eq!(c.margin_at(0.0), 0.0);
        assert!((c.margin_at(2.5) - 0.1).abs() < 1e-12);
        assert_eq!(c.margin_at(9.0), 0.2);
    }
}
