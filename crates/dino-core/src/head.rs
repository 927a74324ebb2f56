//! The DINO projection head: an MLP to a bottleneck, L2 normalisation, and a weight-normalised
//! linear layer without bias onto K prototypes. With `norm_last_layer` the weight norm's gain
//! is fixed to 1, which the DINO authors found stabilises training.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use crate::encoder::batch_norm1d;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeadConfig {
    /// Layers of the MLP (the last one maps to the bottleneck).
    pub layers: usize,
    pub hidden_dim: i64,
    pub bottleneck_dim: i64,
    /// Number of prototypes K.
    pub out_dim: i64,
    /// Batch norm after the hidden layers.
    pub use_bn: bool,
    /// Fix the last layer's weight-norm gain to 1.
    pub norm_last_layer: bool,
}

impl Default for HeadConfig {
    fn default() -> Self {
        HeadConfig {
            layers: 3,
            hidden_dim: 2048,
            bottleneck_dim: 256,
            out_dim: 65536,
            use_bn: false,
            norm_last_layer: true,
        }
    }
}

impl HeadConfig {
    /// Why these sizes cannot build the head, if they cannot (names the key).
    pub fn check(&self) -> Result<(), String> {
        stage_kit::config::at_least_one(&[
            ("layers", self.layers as i64),
            ("hidden_dim", self.hidden_dim),
            ("bottleneck_dim", self.bottleneck_dim),
            ("out_dim", self.out_dim),
        ])
    }
}

/// Variable-name prefix of the last layer (frozen during the first epoch).
pub const LAST_LAYER: &str = "last_layer";

/// Normal(0, 0.02) initialisation clipped at two standard deviations (DINO truncates there).
fn trunc_normal(vs: &nn::Path, name: &str, dims: &[i64]) -> Tensor {
    let mut w = vs.zeros(name, dims);
    tch::no_grad(|| {
        w.copy_(&(Tensor::randn(dims, (Kind::Float, w.device())) * 0.02).clamp(-0.04, 0.04));
    });
    w
}

#[derive(Debug)]
pub struct DinoHead {
    mlp: Vec<(nn::Linear, Option<nn::BatchNorm>)>,
    /// Direction parameters `v` of the last layer, `[K, bottleneck]`.
    last_v: Tensor,
    /// Gain `g`, `[K, 1]`; absent when fixed to 1.
    last_g: Option<Tensor>,
}

impl DinoHead {
    pub fn new(vs: &nn::Path, input_dim: i64, config: &HeadConfig) -> Self {
        let layers = config.layers.max(1);
        let mut dims = vec![input_dim];
        dims.extend(std::iter::repeat_n(config.hidden_dim, layers - 1));
        dims.push(config.bottleneck_dim);
        let mlp = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| {
                let p = vs / format!("mlp{i}");
                let linear = nn::Linear {
                    ws: trunc_normal(&p, "weight", &[d[1], d[0]]),
                    bs: Some(p.zeros("bias", &[d[1]])),
                };
                let hidden = i + 1 < layers;
                let bn = (hidden && config.use_bn).then(|| batch_norm1d(&(&p / "bn"), d[1]));
                (linear, bn)
            })
            .collect();
        let last = vs / LAST_LAYER;
        let bound = 1.0 / (config.bottleneck_dim as f64).sqrt();
        let last_v = last.var(
            "weight_v",
            &[config.out_dim, config.bottleneck_dim],
            nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        );
        let last_g = (!config.norm_last_layer).then(|| last.ones("weight_g", &[config.out_dim, 1]));
        DinoHead {
            mlp,
            last_v,
            last_g,
        }
    }

    /// The last layer's effective weight `g * v / ||v||`.
    pub fn last_layer_weight(&self) -> Tensor {
        let direction = &self.last_v / self.last_v.norm_scalaropt_dim(2, [1], true);
        match &self.last_g {
            Some(g) => direction * g,
            None => direction,
        }
    }
}

impl ModuleT for DinoHead {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let hidden = self.mlp.len() - 1;
        let mut x = x.shallow_clone();
        for (i, (linear, bn)) in self.mlp.iter().enumerate() {
            x = linear.forward(&x);
            if i < hidden {
                if let Some(bn) = bn {
                    x = bn.forward_t(&x, train);
                }
                x = x.gelu("none");
            }
        }
        let x = &x / x.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
        x.matmul(&self.last_layer_weight().tr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn last_layer_rows_have_unit_norm_and_outputs_are_cosines() {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = HeadConfig {
            hidden_dim: 32,
            bottleneck_dim: 16,
            out_dim: 50,
            ..Default::default()
        };
        let head = DinoHead::new(&vs.root(), 8, &config);
        let norms = head.last_layer_weight().norm_scalaropt_dim(2, [1], false);
        assert!(norms.allclose(
            &Tensor::ones([50], (Kind::Float, Device::Cpu)),
            1e-5,
            1e-6,
            false
        ));
        let y = head.forward_t(&Tensor::randn([4, 8], (Kind::Float, Device::Cpu)), false);
        assert_eq!(y.size(), vec![4, 50]);
        // Unit-norm bottleneck times unit-norm prototypes: every logit is a cosine.
        assert!(y.abs().max().double_value(&[]) <= 1.0 + 1e-5);
        assert!(vs.variables().keys().all(|k| !k.contains("weight_g")));
    }

    #[test]
    fn a_free_gain_is_a_trainable_variable() {
        let vs = nn::VarStore::new(Device::Cpu);
        let config = HeadConfig {
            hidden_dim: 8,
            bottleneck_dim: 4,
            out_dim: 6,
            norm_last_layer: false,
            ..Default::default()
        };
        let head = DinoHead::new(&vs.root(), 8, &config);
        assert!(vs.variables()["last_layer.weight_g"].requires_grad());
        let _ = head.forward_t(&Tensor::randn([2, 8], (Kind::Float, Device::Cpu)), true);
    }
}
