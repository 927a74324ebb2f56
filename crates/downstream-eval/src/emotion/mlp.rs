//! A small MLP classifier on libtorch (tch): Linear -> ReLU -> Dropout -> Linear, trained
//! with AdamW on class-weighted cross-entropy in shuffled mini-batches.

use ndarray::{Array2, ArrayView2};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

use crate::error::{EvalError, Result};

/// MLP settings; the weight decay is chosen from `weight_decay_grid` on the selection splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MlpConfig {
    pub hidden: usize,
    pub dropout: f64,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    /// AdamW weight decays tried, strongest regularisation chosen on ties.
    pub weight_decay_grid: Vec<f64>,
}

impl MlpConfig {
    /// Why these settings cannot train, if they cannot (names the key).
    pub fn check(&self) -> std::result::Result<(), String> {
        use stage_kit::config::{at_least_one, finite_in};
        at_least_one(&[
            ("hidden", self.hidden as i64),
            ("epochs", self.epochs as i64),
            ("batch_size", self.batch_size as i64),
            (
                "weight_decay_grid.len()",
                self.weight_decay_grid.len() as i64,
            ),
        ])?;
        finite_in(
            &[("dropout", self.dropout)],
            |v| (0.0..1.0).contains(&v),
            "in [0, 1)",
        )?;
        let rate = [("learning_rate", self.learning_rate)];
        finite_in(&rate, |v| v > 0.0, "> 0")?;
        let grid: Vec<_> = self
            .weight_decay_grid
            .iter()
            .map(|&w| ("weight_decay_grid[_]", w))
            .collect();
        finite_in(&grid, |v| v >= 0.0, ">= 0")
    }
}

impl Default for MlpConfig {
    fn default() -> Self {
        MlpConfig {
            hidden: 256,
            dropout: 0.3,
            epochs: 60,
            batch_size: 64,
            learning_rate: 1e-3,
            weight_decay_grid: vec![1e-3, 1e-2, 1e-1],
        }
    }
}

/// A trained MLP.
pub struct Mlp {
    // Owns the parameters that `net` uses.
    _store: nn::VarStore,
    net: nn::SequentialT,
    device: Device,
}

impl std::fmt::Debug for Mlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mlp({:?})", self.device)
    }
}

fn to_tensor(x: ArrayView2<f64>, device: Device) -> Tensor {
    let values: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    Tensor::from_slice(&values)
        .view([x.nrows() as i64, x.ncols() as i64])
        .to_device(device)
}

impl Mlp {
    /// Trains on rows of `x` labelled `y` on `device`; `class_weights[c]` weights class `c`
    /// in the loss.
    pub fn fit(
        x: ArrayView2<f64>,
        y: &[usize],
        class_weights: &[f64],
        weight_decay: f64,
        (config, device): (&MlpConfig, Device),
        seed: u64,
    ) -> Result<Self> {
        tch::manual_seed(seed as i64);
        let store = nn::VarStore::new(device);
        let root = store.root();
        let (dim, classes) = (x.ncols() as i64, class_weights.len() as i64);
        let dropout = config.dropout;
        let net = nn::seq_t()
            .add(nn::linear(
                &root / "hidden",
                dim,
                config.hidden as i64,
                Default::default(),
            ))
            .add_fn(|t| t.relu())
            .add_fn_t(move |t, train| t.dropout(dropout, train))
            .add(nn::linear(
                &root / "output",
                config.hidden as i64,
                classes,
                Default::default(),
            ));
        let context = "training the emotion MLP";
        let mut optimiser = nn::AdamW::default()
            .wd(weight_decay)
            .build(&store, config.learning_rate)
            .map_err(EvalError::torch(context))?;
        let xs = to_tensor(x, device);
        let ys =
            Tensor::from_slice(&y.iter().map(|&c| c as i64).collect::<Vec<_>>()).to_device(device);
        let weights =
            Tensor::from_slice(&class_weights.iter().map(|&w| w as f32).collect::<Vec<_>>())
                .to_device(device);
        let mut rng = stage_kit::rng::stream(seed, "emotion mlp batches");
        let mut order: Vec<i64> = (0..y.len() as i64).collect();
        for _ in 0..config.epochs {
            order.shuffle(&mut rng);
            for batch in order.chunks(config.batch_size) {
                let index = Tensor::from_slice(batch).to_device(device);
                let logits = net.forward_t(&xs.index_select(0, &index), true);
                let loss = logits
                    .f_cross_entropy_loss(
                        &ys.index_select(0, &index),
                        Some(&weights),
                        Reduction::Mean,
                        -100,
                        0.0,
                    )
                    .map_err(EvalError::torch(context))?;
                optimiser.backward_step(&loss);
            }
        }
        Ok(Mlp {
            _store: store,
            net,
            device,
        })
    }

    /// Class probabilities, [rows, classes].
    pub fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Array2<f64>> {
        let probabilities = tch::no_grad(|| {
            self.net
                .forward_t(&to_tensor(x, self.device), false)
                .softmax(-1, Kind::Float)
                .to_device(Device::Cpu)
        });
        let classes = probabilities.size()[1] as usize;
        let values = Vec::<f32>::try_from(probabilities.flatten(0, -1))
            .map_err(EvalError::torch("reading MLP predictions"))?;
        Ok(Array2::from_shape_vec(
            (x.nrows(), classes),
            values.into_iter().map(f64::from).collect(),
        )
        .expect("rows x classes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn learns_a_nonlinear_problem() {
        // XOR-like quadrants: not linearly separable.
        let mut x = Array2::zeros((200, 2));
        let mut y = Vec::new();
        for i in 0..200 {
            let (a, b) = (
                ((i * 37) % 200) as f64 / 100.0 - 1.0,
                ((i * 91) % 200) as f64 / 100.0 - 1.0,
            );
            x[[i, 0]] = a;
            x[[i, 1]] = b;
            y.push(usize::from((a > 0.0) != (b > 0.0)));
        }
        let config = MlpConfig {
            epochs: 60,
            dropout: 0.0,
            learning_rate: 1e-2,
            ..MlpConfig::default()
        };
        let mlp = Mlp::fit(x.view(), &y, &[1.0, 1.0], 1e-4, (&config, Device::Cpu), 3).unwrap();
        let p = mlp.predict_proba(x.view()).unwrap();
        let correct = (0..200)
            .filter(|&i| usize::from(p[[i, 1]] > 0.5) == y[i])
            .count();
        assert!(correct >= 180, "{correct}/200");
    }
}
