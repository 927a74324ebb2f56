//! Both backends on Gaussian blobs with planted clusters.

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::metrics::agreement;
use crate::nearest::{Compute, NearestCentroids};
use crate::synthetic::blobs;

/// 40 blobs of 60 points in 24 dimensions, overlapping a little (spread 0.35 against
/// centre distances around 7).
fn planted() -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    blobs(40, 60, 24, 0.35, &mut rng)
}

fn settings(init: Init) -> Settings {
    Settings {
        k: 40,
        init,
        restarts: 4,
        max_iterations: 100,
        tolerance: 1e-6,
    }
}

fn fit_with(backend: &mut dyn KMeansBackend, points: &Array2<f32>, init: Init) -> Clustering {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    fit(backend, points.view(), &settings(init), &mut rng).unwrap()
}

#[test]
fn both_backends_recover_planted_clusters() {
    let (points, truth) = planted();
    let engine = Compute::Cpu.engine(points.view()).unwrap();
    for init in [Init::KMeansPlusPlus, Init::Random] {
        let batched = fit_with(&mut Batched::new(points.view(), &*engine), &points, init);
        let linfa = fit_with(&mut LinfaReference::new(points.view()), &points, init);
        for (name, result) in [("batched", &batched), ("linfa", &linfa)] {
            let a = agreement(&truth, &result.labels);
            assert!(a.nmi > 0.95, "{name} with {init}: {a:?}");
            assert_eq!(result.restarts.len(), 4);
            let best = &result.restarts[result.best];
            assert!(best.converged, "{name} with {init}: {best:?}");
            assert!(
                result
                    .restarts
                    .iter()
                    .all(|r| r.final_inertia >= result.inertia)
            );
        }
    }
}

#[test]
fn backends_agree_from_identical_initial_centroids() {
    // Blobs that overlap (some points lie nearer another blob's centre), started from the
    // blobs' means: both updates converge to the same nearby optimum, so the boundary points
    // must come out the same.
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (points, truth) = blobs(30, 80, 24, 1.2, &mut rng);
    let initial = Array2::from_shape_fn((30, 24), |(b, j)| {
        (0..80).map(|i| points[[b * 80 + i, j]]).sum::<f32>() / 80.0
    });
    let engine = Compute::Cpu.engine(points.view()).unwrap();
    let (_, batched_labels, batched) = run_from(
        &mut Batched::new(points.view(), &*engine),
        points.view(),
        initial.clone(),
        300,
        1e-9,
    )
    .unwrap();
    let (_, linfa_labels, linfa) = run_from(
        &mut LinfaReference::new(points.view()),
        points.view(),
        initial,
        300,
        1e-9,
    )
    .unwrap();
    assert!(batched.converged && linfa.converged);
    let differing = (0..truth.len())
        .filter(|&i| batched_labels[i] != linfa_labels[i])
        .count();
    assert_eq!(differing, 0, "points labelled differently");
    let misplaced = (0..truth.len())
        .filter(|&i| batched_labels[i] != truth[i])
        .count();
    assert!(
        misplaced > 0,
        "the blobs should overlap for this test to mean something"
    );
    let relative = (batched.final_inertia - linfa.final_inertia).abs() / linfa.final_inertia;
    assert!(
        relative < 1e-4,
        "{} vs {}",
        batched.final_inertia,
        linfa.final_inertia
    );
    // The first iteration assigns against the same centroids: the same inertia.
    let first = (batched.inertia_per_iteration[0] - linfa.inertia_per_iteration[0]).abs();
    assert!(first / linfa.inertia_per_iteration[0] < 1e-4);
}

#[test]
fn assignment_matches_linfa_on_the_same_centroids() {
    // Random k-means++ start on the planted blobs: after one linfa iteration, linfa's own
    // prediction and the GEMM engine must label every point alike for linfa's centroids.
    let (points, _) = planted();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let initial = initial_centroids(points.view(), 40, Init::KMeansPlusPlus, &mut rng);
    let mut linfa = LinfaReference::new(points.view());
    let step = linfa.step(&initial).unwrap();
    let engine = Compute::Cpu.engine(points.view()).unwrap();
    assert_eq!(
        engine.nearest(step.centroids.view()).unwrap().labels,
        linfa.labels().unwrap()
    );
    let mut batched = Batched::new(points.view(), &*engine);
    let ours = batched.step(&initial).unwrap();
    assert!((ours.inertia - step.inertia).abs() / step.inertia < 1e-5);
}

#[test]
fn torch_engine_iterates_like_the_cpu_engine() {
    let (points, _) = planted();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let initial = initial_centroids(points.view(), 40, Init::Random, &mut rng);
    let cpu = Compute::Cpu.engine(points.view()).unwrap();
    let torch = Compute::Torch(tch::Device::Cpu)
        .engine(points.view())
        .unwrap();
    assert_eq!(torch.len(), points.nrows());
    let run = |engine: &dyn NearestCentroids| {
        run_from(
            &mut Batched::new(points.view(), engine),
            points.view(),
            initial.clone(),
            100,
            1e-9,
        )
        .unwrap()
    };
    let (cpu_centroids, cpu_labels, cpu_run) = run(&*cpu);
    let (torch_centroids, torch_labels, torch_run) = run(&*torch);
    assert_eq!(cpu_labels, torch_labels);
    assert_eq!(
        cpu_run.inertia_per_iteration.len(),
        torch_run.inertia_per_iteration.len()
    );
    let largest = (&cpu_centroids - &torch_centroids)
        .iter()
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(largest < 1e-5, "{largest}");
}

#[test]
fn stopping_rule_and_history() {
    let (points, _) = planted();
    let engine = Compute::Cpu.engine(points.view()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let initial = initial_centroids(points.view(), 40, Init::Random, &mut rng);
    let (centroids, labels, run) = run_from(
        &mut Batched::new(points.view(), &*engine),
        points.view(),
        initial.clone(),
        3,
        0.0,
    )
    .unwrap();
    // A zero tolerance on a run that keeps improving stops at the iteration bound.
    assert_eq!(run.inertia_per_iteration.len(), 3);
    assert!(!run.converged);
    // Lloyd never increases the inertia.
    let h = &run.inertia_per_iteration;
    assert!(
        h[0] >= h[1] && h[1] >= h[2] && h[2] >= run.final_inertia,
        "{h:?}"
    );
    assert_eq!(
        run.final_inertia,
        inertia(points.view(), &centroids, &labels)
    );
}
