//! Student and teacher networks of DINO: an encoder followed by the projection head each, with
//! identical architectures; the teacher is an exponential moving average of the student and
//! its encoder output is the embedding.

use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Tensor};

use crate::encoder::{Encoder, EncoderConfig};
use crate::head::{DinoHead, HeadConfig};

/// Encoder and head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub encoder: EncoderConfig,
    pub head: HeadConfig,
}

/// Runs `build` (which creates parameters) with libtorch's generator seeded to `seed`. That
/// generator is process-wide, so builds take turns: two trainings started in one process
/// (tests, notebooks) each draw their initial weights from their own seed only.
pub fn seeded_init<T>(seed: u64, build: impl FnOnce() -> T) -> T {
    static INIT: Mutex<()> = Mutex::new(());
    let _turn = INIT.lock().unwrap_or_else(PoisonError::into_inner);
    tch::manual_seed(seed as i64);
    build()
}

/// Encoder + head in one var store (`encoder.*`, `head.*`).
#[derive(Debug)]
pub struct Network {
    pub vs: VarStore,
    pub encoder: Encoder,
    pub head: DinoHead,
}

impl Network {
    pub fn new(config: &ModelConfig, device: Device) -> Self {
        let vs = VarStore::new(device);
        let encoder = Encoder::new(&(vs.root() / "encoder"), &config.encoder);
        let head = DinoHead::new(
            &(vs.root() / "head"),
            config.encoder.embedding_dim(),
            &config.head,
        );
        Network { vs, encoder, head }
    }

    /// Prototype scores `[B, K]` for features `[B, T, F]`.
    pub fn forward(&self, feats: &Tensor, train: bool) -> Tensor {
        self.head
            .forward_t(&self.encoder.forward_t(feats, train), train)
    }
}

/// The DINO pair.
pub struct Dino {
    pub student: Network,
    pub teacher: Network,
    /// (teacher, student) tensors of every trainable parameter, for the EMA update.
    ema_pairs: Vec<(Tensor, Tensor)>,
}

impl Dino {
    /// A student with fresh weights (from libtorch's RNG, seeded by the caller) and a teacher
    /// initialised as its copy; the teacher is never trained by gradient.
    pub fn new(config: &ModelConfig, device: Device) -> Self {
        let student = Network::new(config, device);
        let mut teacher = Network::new(config, device);
        teacher
            .vs
            .copy(&student.vs)
            .expect("identical architectures");
        let student_vars = student.vs.variables();
        let mut ema_pairs: Vec<(String, Tensor, Tensor)> = teacher
            .vs
            .variables()
            .into_iter()
            .filter_map(|(name, t)| {
                let s = student_vars[&name].shallow_clone();
                s.requires_grad().then_some((name, t, s))
            })
            .collect();
        ema_pairs.sort_by(|a, b| a.0.cmp(&b.0));
        teacher.vs.freeze();
        Dino {
            student,
            teacher,
            ema_pairs: ema_pairs.into_iter().map(|(_, t, s)| (t, s)).collect(),
        }
    }

    /// Teacher prototype scores for the global views, without gradient. The teacher runs in
    /// training mode (batch statistics), which also keeps its own batch-norm statistics current
    /// for embedding extraction.
    pub fn teacher_forward(&self, feats: &Tensor) -> Tensor {
        tch::no_grad(|| self.teacher.forward(feats, true))
    }

    /// teacher = momentum * teacher + (1 - momentum) * student, parameter by parameter.
    pub fn update_teacher(&self, momentum: f64) {
        tch::no_grad(|| {
            for (t, s) in &self.ema_pairs {
                let mut t = t.shallow_clone();
                let _ = t.g_mul_scalar_(momentum);
                t += s * (1.0 - momentum);
            }
        });
    }
}

/// Embedding network alone (encoder weights of a checkpoint), for extraction.
pub fn encoder_only(config: &EncoderConfig, device: Device) -> (VarStore, Encoder) {
    let vs = VarStore::new(device);
    let encoder = Encoder::new(&vs.root(), config);
    (vs, encoder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn tiny() -> ModelConfig {
        ModelConfig {
            encoder: EncoderConfig::preset("tiny-ecapa").unwrap(),
            head: HeadConfig {
                hidden_dim: 32,
                bottleneck_dim: 16,
                out_dim: 64,
                ..Default::default()
            },
        }
    }

    #[test]
    fn teacher_starts_as_the_student_and_follows_it_by_ema() {
        tch::manual_seed(1);
        let dino = Dino::new(&tiny(), Device::Cpu);
        let x = Tensor::randn([2, 30, 80], (Kind::Float, Device::Cpu));
        let s = dino.student.forward(&x, false);
        let t = tch::no_grad(|| dino.teacher.forward(&x, false));
        assert!(s.allclose(&t, 1e-6, 1e-6, false));
        let name = "head.mlp0.bias";
        let (mut sv, tv) = (
            dino.student.vs.variables()[name].shallow_clone(),
            dino.teacher.vs.variables()[name].shallow_clone(),
        );
        tch::no_grad(|| {
            let _ = sv.fill_(1.0);
        });
        let before = tv.copy();
        dino.update_teacher(0.9);
        let expected = &before * 0.9 + 0.1;
        assert!(tv.allclose(&expected, 1e-6, 1e-6, false));
        assert!(!tv.requires_grad());
    }
}
