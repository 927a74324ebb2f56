//! Optimisers written over tch tensors, so that their whole state can be checkpointed and a
//! resumed run continues bit for bit: Adam (optionally AMSGrad, coupled L2 weight decay as in
//! PyTorch's `Adam`), AdamW (decoupled decay) and SGD with momentum. Parameters with at most
//! one dimension (biases, norm gains) get no weight decay. For fp16 autocast on CUDA a dynamic
//! loss scaler skips steps whose gradients overflow.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adam,
    AdamW,
    Sgd,
}

/// Optimiser and learning-rate schedule settings; defaults from the authors' recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    pub kind: OptimizerKind,
    pub amsgrad: bool,
    pub betas: (f64, f64),
    pub eps: f64,
    /// SGD momentum.
    pub momentum: f64,
    pub weight_decay: f64,
    /// Peak learning rate for a batch of 256 utterances (scaled linearly with the batch size).
    pub lr: f64,
    /// Learning rate at the end of the cosine decay.
    pub min_lr: f64,
    /// Epochs of linear learning-rate warm-up.
    pub warmup_epochs: f64,
    /// Clip the global gradient norm to this value.
    pub clip_grad: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            kind: OptimizerKind::Adam,
            amsgrad: true,
            betas: (0.9, 0.95),
            eps: 1e-8,
            momentum: 0.9,
            weight_decay: 1e-4,
            lr: 0.005,
            min_lr: 1e-6,
            warmup_epochs: 10.0,
            clip_grad: None,
        }
    }
}

impl OptimConfig {
    /// Why these options cannot train, if they cannot (the message names the key).
    pub fn check(&self) -> std::result::Result<(), String> {
        let (b1, b2) = self.betas;
        let checks = [
            (
                "lr",
                self.lr,
                self.lr.is_finite() && self.lr > 0.0,
                "a finite number > 0",
            ),
            (
                "min_lr",
                self.min_lr,
                self.min_lr.is_finite() && (0.0..=self.lr).contains(&self.min_lr),
                "finite, >= 0 and <= lr",
            ),
            (
                "warmup_epochs",
                self.warmup_epochs,
                self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0,
                "a finite number >= 0",
            ),
            (
                "eps",
                self.eps,
                self.eps.is_finite() && self.eps > 0.0,
                "a finite number > 0",
            ),
            (
                "weight_decay",
                self.weight_decay,
                self.weight_decay.is_finite() && self.weight_decay >= 0.0,
                "a finite number >= 0",
            ),
            (
                "momentum",
                self.momentum,
                (0.0..1.0).contains(&self.momentum),
                "in [0, 1)",
            ),
            ("betas.0", b1, (0.0..1.0).contains(&b1), "in [0, 1)"),
            ("betas.1", b2, (0.0..1.0).contains(&b2), "in [0, 1)"),
            (
                "clip_grad",
                self.clip_grad.unwrap_or(1.0),
                self.clip_grad.is_none_or(|c| c.is_finite() && c > 0.0),
                "a finite number > 0",
            ),
        ];
        match checks.into_iter().find(|(_, _, ok, _)| !ok) {
            Some((key, value, _, want)) => Err(format!("{key} = {value}: must be {want}")),
            None => Ok(()),
        }
    }

    /// Peak learning rate for `batch_size` utterances per step.
    pub fn scaled_lr(&self, batch_size: usize) -> f64 {
        self.lr * batch_size as f64 / 256.0
    }
}

/// One optimised tensor and its state.
struct Slot {
    name: String,
    param: Tensor,
    decay: bool,
    step: i64,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor,
}

pub struct Optimizer {
    config: OptimConfig,
    slots: Vec<Slot>,
    /// Work space of the in-place Adam step, as many elements as the largest parameter.
    scratch: Tensor,
}

impl Optimizer {
    /// Optimises every trainable variable of `vs`.
    pub fn new(vs: &VarStore, config: OptimConfig) -> Self {
        let mut named: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let largest = named.iter().map(|(_, t)| t.numel()).max().unwrap_or(0);
        let scratch = match named.first() {
            Some((_, t)) => Tensor::zeros([largest as i64], (Kind::Float, t.device())),
            None => Tensor::zeros([0], (Kind::Float, tch::Device::Cpu)),
        };
        let slots = named
            .into_iter()
            .map(|(name, param)| Slot {
                decay: param.dim() > 1,
                step: 0,
                exp_avg: param.zeros_like(),
                exp_avg_sq: param.zeros_like(),
                max_exp_avg_sq: param.zeros_like(),
                name,
                param,
            })
            .collect();
        Optimizer {
            config,
            slots,
            scratch,
        }
    }

    pub fn config(&self) -> &OptimConfig {
        &self.config
    }

    /// The optimised tensors, ordered by name (the same order on every rank).
    pub fn parameters(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.param.shallow_clone()).collect()
    }

    pub fn zero_grad(&self) {
        for slot in &self.slots {
            let mut grad = slot.param.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// Global L2 norm of the gradients (NaN or infinite when one overflowed).
    pub fn grad_norm(&self) -> f64 {
        let norms: Vec<Tensor> = self
            .slots
            .iter()
            .map(|s| s.param.grad())
            .filter(Tensor::defined)
            .map(|g| g.to_kind(Kind::Float).norm())
            .collect();
        if norms.is_empty() {
            return 0.0;
        }
        Tensor::stack(&norms, 0).norm().double_value(&[])
    }

    /// Multiplies every gradient by `factor` (unscaling, clipping).
    pub fn scale_grads(&self, factor: f64) {
        tch::no_grad(|| {
            for slot in &self.slots {
                let mut grad = slot.param.grad();
                if grad.defined() {
                    let _ = grad.g_mul_scalar_(factor);
                }
            }
        });
    }

    /// Clips the global gradient norm to `max_norm`; returns the norm before clipping.
    pub fn clip_grad_norm(&self, max_norm: f64) -> f64 {
        let norm = self.grad_norm();
        if norm.is_finite() && norm > max_norm {
            self.scale_grads(max_norm / (norm + 1e-6));
        }
        norm
    }

    /// One update with learning rate `lr` and weight decay `weight_decay`; parameters for which
    /// `frozen(name)` holds, or that have no gradient, are left alone (state included).
    pub fn step(&mut self, lr: f64, weight_decay: f64, frozen: impl Fn(&str) -> bool) {
        let c = self.config.clone();
        tch::no_grad(|| {
            for slot in &mut self.slots {
                let grad = slot.param.grad();
                if !grad.defined() || frozen(&slot.name) {
                    continue;
                }
                let wd = if slot.decay { weight_decay } else { 0.0 };
                slot.step += 1;
                match c.kind {
                    OptimizerKind::Sgd => sgd_step(slot, &grad, lr, wd, c.momentum),
                    OptimizerKind::Adam | OptimizerKind::AdamW => {
                        adam_step(slot, &grad, &self.scratch, lr, wd, &c)
                    }
                }
            }
        });
    }

    /// The state as named tensors, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for s in &self.slots {
            out.push((format!("{}.step", s.name), Tensor::from(s.step)));
            out.push((format!("{}.exp_avg", s.name), s.exp_avg.shallow_clone()));
            out.push((
                format!("{}.exp_avg_sq", s.name),
                s.exp_avg_sq.shallow_clone(),
            ));
            if self.config.amsgrad {
                out.push((
                    format!("{}.max_exp_avg_sq", s.name),
                    s.max_exp_avg_sq.shallow_clone(),
                ));
            }
        }
        out
    }

    /// Restores [`Optimizer::state`]; fails naming the first missing or mis-shaped entry.
    pub fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<(), String> {
        let get = |key: String, like: &Tensor| -> Result<Tensor, String> {
            let t = state
                .get(&key)
                .ok_or_else(|| format!("optimiser state {key} is missing"))?;
            if t.size() != like.size() {
                return Err(format!(
                    "optimiser state {key} has shape {:?}, expected {:?}",
                    t.size(),
                    like.size()
                ));
            }
            Ok(t.to_device(like.device()))
        };
        let amsgrad = self.config.amsgrad;
        for s in &mut self.slots {
            s.step = state
                .get(&format!("{}.step", s.name))
                .ok_or_else(|| format!("optimiser state {}.step is missing", s.name))?
                .int64_value(&[]);
            tch::no_grad(|| -> Result<(), String> {
                s.exp_avg
                    .copy_(&get(format!("{}.exp_avg", s.name), &s.exp_avg)?);
                s.exp_avg_sq
                    .copy_(&get(format!("{}.exp_avg_sq", s.name), &s.exp_avg_sq)?);
                if amsgrad {
                    s.max_exp_avg_sq.copy_(&get(
                        format!("{}.max_exp_avg_sq", s.name),
                        &s.max_exp_avg_sq,
                    )?);
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

fn sgd_step(slot: &mut Slot, grad: &Tensor, lr: f64, wd: f64, momentum: f64) {
    let mut g = grad.to_kind(Kind::Float);
    if wd > 0.0 {
        g += &slot.param * wd;
    }
    let buf = &mut slot.exp_avg;
    if slot.step == 1 {
        buf.copy_(&g);
    } else {
        let _ = buf.g_mul_scalar_(momentum);
        *buf += &g;
    }
    let _ = slot.param.g_sub_(&(&*buf * lr));
}

/// PyTorch's single-tensor Adam update, in place: every pass writes into the moments, the
/// parameter or the optimiser's shared `scratch` buffer (sized for the largest parameter), so
/// a step allocates nothing.
fn adam_step(slot: &mut Slot, grad: &Tensor, scratch: &Tensor, lr: f64, wd: f64, c: &OptimConfig) {
    let (b1, b2) = c.betas;
    let mut scratch = scratch
        .narrow(0, 0, slot.param.numel() as i64)
        .view_as(&slot.param);
    // The gradient with coupled L2 decay (Adam) goes to scratch; AdamW decays the weights.
    let grad = match c.kind {
        OptimizerKind::AdamW => {
            let _ = slot.param.g_mul_scalar_(1.0 - lr * wd);
            grad.shallow_clone()
        }
        _ if wd > 0.0 => {
            let _ = slot.param.mul_scalar_out(&scratch, wd);
            let _ = scratch.g_add_(grad);
            scratch.shallow_clone()
        }
        _ => grad.shallow_clone(),
    };
    let _ = slot.exp_avg.lerp_(&grad, 1.0 - b1);
    let _ = grad.mul_out(&scratch, &grad);
    let _ = slot.exp_avg_sq.lerp_(&scratch, 1.0 - b2);
    let second = if c.amsgrad {
        let _ = slot
            .max_exp_avg_sq
            .maximum_out(&slot.max_exp_avg_sq, &slot.exp_avg_sq);
        &slot.max_exp_avg_sq
    } else {
        &slot.exp_avg_sq
    };
    // param -= step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps), as param += m / denom with
    // denom = (sqrt(v) / sqrt(1 - b2^t) + eps) / -step_size built in scratch; a zero learning
    // rate (the first warm-up step) moves nothing.
    let t = slot.step as f64;
    let step_size = lr / (1.0 - b1.powf(t));
    if step_size == 0.0 {
        return;
    }
    let bias2_sqrt = (1.0 - b2.powf(t)).sqrt();
    let _ = second.sqrt_out(&scratch);
    let _ = scratch.g_mul_scalar_(-1.0 / (bias2_sqrt * step_size));
    let _ = scratch.g_add_scalar_(-c.eps / step_size);
    let _ = slot.param.addcdiv_(&slot.exp_avg, &scratch);
}

/// The optimiser's and the loss scaler's state as checkpoint tensors (`optim.*`, `scaler.*`).
pub fn training_state(optimizer: &Optimizer, scaler: &LossScaler) -> Vec<(String, Tensor)> {
    let mut tensors: Vec<(String, Tensor)> = optimizer
        .state()
        .into_iter()
        .map(|(k, t)| (format!("optim.{k}"), t))
        .collect();
    tensors.extend(scaler.state());
    tensors
}

/// Restores [`training_state`] from a checkpoint's tensors; fails naming what is missing.
pub fn restore_training_state(
    tensors: &HashMap<String, Tensor>,
    optimizer: &mut Optimizer,
    scaler: &mut LossScaler,
) -> Result<(), String> {
    let optim: HashMap<String, Tensor> = tensors
        .iter()
        .filter_map(|(k, t)| {
            k.strip_prefix("optim.")
                .map(|k| (k.to_owned(), t.shallow_clone()))
        })
        .collect();
    optimizer.load_state(&optim)?;
    let get = |name: &str| {
        tensors
            .get(name)
            .ok_or_else(|| format!("tensor {name} is missing"))
    };
    scaler.scale = get("scaler.scale")?.double_value(&[]);
    scaler.good_steps = get("scaler.good_steps")?.int64_value(&[]);
    Ok(())
}

/// Dynamic loss scaling for fp16 autocast: losses are multiplied by `scale` before backward;
/// a step whose unscaled gradients overflow is skipped and the scale halved; after
/// `growth_interval` good steps the scale doubles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossScaler {
    pub scale: f64,
    pub good_steps: i64,
    pub growth_interval: i64,
}

impl LossScaler {
    pub fn new() -> Self {
        LossScaler {
            scale: 65536.0,
            good_steps: 0,
            growth_interval: 2000,
        }
    }

    /// The scaler's state as named tensors, for checkpoints.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        vec![
            ("scaler.scale".to_owned(), Tensor::from(self.scale)),
            (
                "scaler.good_steps".to_owned(),
                Tensor::from(self.good_steps),
            ),
        ]
    }

    /// Unscales the gradients; returns false (and backs off) when they overflowed.
    pub fn unscale(&mut self, optimizer: &Optimizer) -> bool {
        optimizer.scale_grads(1.0 / self.scale);
        if !optimizer.grad_norm().is_finite() {
            self.scale /= 2.0;
            self.good_steps = 0;
            return false;
        }
        self.good_steps += 1;
        if self.good_steps == self.growth_interval {
            self.scale *= 2.0;
            self.good_steps = 0;
        }
        true
    }
}

impl Default for LossScaler {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;
    use tch::nn::Module;

    /// Runs 3 steps on f(w) = sum((w - target)^2) and returns w.
    fn run(config: OptimConfig, wd: f64) -> Vec<f32> {
        let vs = VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]));
        let mut opt = Optimizer::new(&vs, config);
        let target = Tensor::from_slice(&[0.5f32, 0.5]).view([1, 2]);
        for _ in 0..3 {
            opt.zero_grad();
            (&w - &target).square().sum(Kind::Float).backward();
            opt.step(0.1, wd, |_| false);
        }
        w.view([-1]).try_into().unwrap()
    }

    /// PyTorch's update rules written out in scalars for one parameter.
    fn reference(x0: f64, target: f64, kind: OptimizerKind, amsgrad: bool, wd: f64) -> f64 {
        let (b1, b2, eps, lr) = (0.9, 0.95, 1e-8, 0.1);
        let (mut x, mut m, mut v, mut vmax, mut buf) = (x0, 0.0, 0.0, 0.0f64, 0.0);
        for t in 1..=3 {
            let mut g = 2.0 * (x - target);
            match kind {
                OptimizerKind::AdamW => x *= 1.0 - lr * wd,
                OptimizerKind::Adam | OptimizerKind::Sgd => g += wd * x,
            }
            if kind == OptimizerKind::Sgd {
                buf = if t == 1 { g } else { 0.9 * buf + g };
                x -= lr * buf;
                continue;
            }
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            vmax = vmax.max(v);
            let second = if amsgrad { vmax } else { v };
            let denom = second.sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
            x -= lr / (1.0 - b1.powi(t)) * m / denom;
        }
        x
    }

    #[test]
    fn updates_match_pytorch_rules() {
        for kind in [
            OptimizerKind::Adam,
            OptimizerKind::AdamW,
            OptimizerKind::Sgd,
        ] {
            for amsgrad in [false, true] {
                let config = OptimConfig {
                    kind,
                    amsgrad,
                    ..Default::default()
                };
                let got = run(config, 0.01);
                for (g, x0) in got.iter().zip([1.0, -2.0]) {
                    let want = reference(x0, 0.5, kind, amsgrad, 0.01);
                    assert!(
                        (f64::from(*g) - want).abs() < 1e-6,
                        "{kind:?} amsgrad={amsgrad}: {g} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_zero_learning_rate_updates_the_moments_but_not_the_weights() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, 0.0]));
        let mut opt = Optimizer::new(&vs, OptimConfig::default());
        // One gradient is zero: its second moment stays 0, where 0 / 0 would give NaN.
        (&w * Tensor::from_slice(&[3.0f32, 0.0]))
            .sum(Kind::Float)
            .backward();
        opt.step(0.0, 0.0, |_| false);
        assert!(w.equal(&Tensor::from_slice(&[1.0f32, 0.0])));
        let state: HashMap<String, Tensor> = opt.state().into_iter().collect();
        let want = Tensor::from_slice(&[0.3f32, 0.0]);
        assert!(state["w.exp_avg"].allclose(&want, 1e-6, 1e-6, false));
    }

    #[test]
    fn biases_get_no_decay_and_frozen_parameters_do_not_move() {
        let vs = VarStore::new(Device::Cpu);
        let layer = tch::nn::linear(vs.root() / "last_layer", 2, 2, Default::default());
        let bias_before = layer.bs.as_ref().unwrap().copy();
        let weight_before = layer.ws.copy();
        let mut opt = Optimizer::new(&vs, OptimConfig::default());
        assert!(opt.slots.iter().all(|s| s.decay == (s.param.dim() > 1)));
        layer
            .forward(&Tensor::ones([1, 2], (Kind::Float, Device::Cpu)))
            .sum(Kind::Float)
            .backward();
        opt.step(0.1, 0.1, |name| name.ends_with("weight"));
        assert!(layer.ws.equal(&weight_before));
        assert!(!layer.bs.as_ref().unwrap().equal(&bias_before));
        assert!(
            opt.state()
                .iter()
                .any(|(k, _)| k == "last_layer.bias.max_exp_avg_sq")
        );
    }

    #[test]
    fn loss_scaler_backs_off_on_overflow() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32]));
        let opt = Optimizer::new(&vs, OptimConfig::default());
        let mut scaler = LossScaler::new();
        (&w * f64::INFINITY).sum(Kind::Float).backward();
        assert!(!scaler.unscale(&opt));
        assert_eq!(scaler.scale, 32768.0);
        opt.zero_grad();
        (&w * 2.0 * scaler.scale).sum(Kind::Float).backward();
        assert!(scaler.unscale(&opt));
        assert!((w.grad().double_value(&[0]) - 2.0).abs() < 1e-6);
    }
}
