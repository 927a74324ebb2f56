//! Gradient accumulation against whole batches: at a world of one, 10 SGD steps over a
//! batch of 16 taken as 2 micro-batches of 8 (losses back-propagated into the same
//! gradients, one sync after the last) end with the weights of 10 steps over the whole
//! batches (max abs difference <= 1e-5), for a model without batch norm.

use std::sync::Arc;

use dino_core::accumulation::{backward_micro, finish};
use dino_core::distributed::GradSync;
use dino_core::optim::{LossScaler, OptimConfig, Optimizer, OptimizerKind};
use process_group::ProcessGroup;
use tch::nn::{Module, VarStore};
use tch::{Device, Kind, Tensor};

const BATCH: i64 = 16;
const STEPS: usize = 10;

/// Trains a two-layer tanh network from a fixed initialisation on a fixed regression
/// problem, each step's batch split into `micro` micro-batches; returns the final weights.
fn train(micro: usize) -> Vec<(String, Tensor)> {
    tch::manual_seed(7);
    let vs = VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = tch::nn::seq()
        .add(tch::nn::linear(&root / "a", 6, 12, Default::default()))
        .add_fn(|x| x.tanh())
        .add(tch::nn::linear(&root / "b", 12, 3, Default::default()));
    let mut opt = Optimizer::new(
        &vs,
        OptimConfig {
            kind: OptimizerKind::Sgd,
            weight_decay: 0.0,
            ..Default::default()
        },
    );
    let grads = GradSync::new(Arc::new(ProcessGroup::single()), opt.parameters()).unwrap();
    let mut scaler = LossScaler::new();
    let size = BATCH / micro as i64;
    for step in 0..STEPS {
        tch::manual_seed(1000 + step as i64);
        let x = Tensor::randn([BATCH, 6], (Kind::Float, Device::Cpu));
        let y = x.narrow(1, 0, 3).cos() - x.narrow(1, 3, 3);
        for m in 0..micro {
            let (xm, ym) = (
                x.narrow(0, m as i64 * size, size),
                y.narrow(0, m as i64 * size, size),
            );
            let loss = (net.forward(&xm) - ym).square().mean(Kind::Float);
            backward_micro(&opt, &scaler, &grads, &loss, false, (m, micro)).expect("backward");
        }
        let (norm, skipped) = finish(&opt, &mut scaler, false, None);
        assert!(norm.is_finite() && norm > 0.0 && !skipped);
        opt.step(0.1, 0.0, |_| false);
    }
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[test]
fn two_micro_batches_match_the_whole_batch() {
    let (whole, accumulated) = (train(1), train(2));
    let untrained = {
        tch::manual_seed(7);
        let vs = VarStore::new(Device::Cpu);
        let _ = tch::nn::linear(vs.root() / "a", 6, 12, Default::default());
        vs.variables()["a.weight"].copy()
    };
    let mut max_diff = 0f64;
    for ((n1, w1), (n2, w2)) in whole.iter().zip(&accumulated) {
        assert_eq!(n1, n2);
        max_diff = max_diff.max((w1 - w2).abs().max().double_value(&[]));
    }
    eprintln!("max |accumulated - whole| after {STEPS} steps = {max_diff:.3e}");
    assert!(max_diff <= 1e-5, "max abs difference {max_diff:e}");
    // The comparison is not vacuous: training moved the weights.
    let trained = &whole
        .iter()
        .find(|(n, _)| n == "a.weight")
        .expect("a.weight")
        .1;
    let moved = (trained - untrained).abs().max().double_value(&[]);
    assert!(moved > 1e-3, "the weights barely moved ({moved:e})");
}
