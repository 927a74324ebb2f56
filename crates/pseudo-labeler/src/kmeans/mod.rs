//! k-means: the iteration loop shared by both backends (initialisation, restarts, the
//! relative-inertia stopping rule, the per-iteration history), and the backend trait.

mod batched;
mod init;
mod reference;

use std::time::Instant;

use ndarray::{Array2, ArrayView2};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

pub use batched::Batched;
pub use init::initial_centroids;
pub use reference::LinfaReference;

use crate::config::Init;
use crate::error::Result;

/// One k-means implementation: Lloyd iterations over the points it was built with.
pub trait KMeansBackend {
    /// Name for logs and reports.
    fn name(&self) -> &'static str;

    /// One iteration from `centroids`: assign every point, move the centroids.
    fn step(&mut self, centroids: &Array2<f32>) -> Result<Step>;

    /// Nearest centroid of every point for the centroids the last [`step`](Self::step)
    /// returned.
    fn labels(&mut self) -> Result<Vec<u32>>;
}

/// The result of one iteration.
#[derive(Debug, Clone)]
pub struct Step {
    /// The moved centroids.
    pub centroids: Array2<f32>,
    /// Sum of squared distances from each point to its nearest centroid before the move.
    pub inertia: f64,
    /// Empty clusters that were given a new centroid.
    pub relocated: usize,
}

/// What the iteration loop needs from the configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub k: usize,
    pub init: Init,
    pub restarts: usize,
    pub max_iterations: usize,
    /// Relative inertia change below which a restart has converged.
    pub tolerance: f64,
}

/// One restart, as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Restart {
    /// Inertia of each iteration's assignment.
    pub inertia_per_iteration: Vec<f64>,
    /// Whether the stopping rule fired before `max_iterations`.
    pub converged: bool,
    /// Inertia of the final centroids.
    pub final_inertia: f64,
    /// Empty clusters re-seeded over all iterations.
    pub relocated: usize,
    pub seconds: f64,
}

/// The best of the restarts.
#[derive(Debug, Clone)]
pub struct Clustering {
    pub centroids: Array2<f32>,
    pub labels: Vec<u32>,
    pub inertia: f64,
    pub restarts: Vec<Restart>,
    /// Index of the restart that won.
    pub best: usize,
}

/// Runs `settings.restarts` restarts from initial centroids drawn from `rng` and keeps the
/// one with the lowest final inertia.
pub fn fit(
    backend: &mut dyn KMeansBackend,
    points: ArrayView2<'_, f32>,
    settings: &Settings,
    rng: &mut ChaCha8Rng,
) -> Result<Clustering> {
    let mut best: Option<Clustering> = None;
    let mut restarts = Vec::with_capacity(settings.restarts);
    for restart in 0..settings.restarts {
        let initial = initial_centroids(points, settings.k, settings.init, rng);
        let (centroids, labels, report) = run_from(
            backend,
            points,
            initial,
            settings.max_iterations,
            settings.tolerance,
        )?;
        tracing::info!(
            "k-means ({}) restart {}/{}: inertia {:.6e} after {} iteration(s){}",
            backend.name(),
            restart + 1,
            settings.restarts,
            report.final_inertia,
            report.inertia_per_iteration.len(),
            if report.converged {
                ""
            } else {
                " (not converged)"
            }
        );
        let inertia = report.final_inertia;
        restarts.push(report);
        if best.as_ref().is_none_or(|b| inertia < b.inertia) {
            best = Some(Clustering {
                centroids,
                labels,
                inertia,
                restarts: Vec::new(),
                best: restart,
            });
        }
    }
    let mut best = best.expect("at least one restart");
    best.restarts = restarts;
    Ok(best)
}

/// Lloyd iterations from `initial` until the inertia changes by less than `tolerance`
/// (relative) or `max_iterations` ran; returns the final centroids, the labels and the
/// restart's history.
pub fn run_from(
    backend: &mut dyn KMeansBackend,
    points: ArrayView2<'_, f32>,
    initial: Array2<f32>,
    max_iterations: usize,
    tolerance: f64,
) -> Result<(Array2<f32>, Vec<u32>, Restart)> {
    let started = Instant::now();
    let mut progress = stage_kit::progress::Progress::new("k-means", max_iterations, "iter");
    let mut centroids = initial;
    let mut history: Vec<f64> = Vec::new();
    let mut relocated = 0;
    let mut converged = false;
    for iteration in 0..max_iterations {
        let step = backend.step(&centroids)?;
        centroids = step.centroids;
        relocated += step.relocated;
        let change = history.last().map(|&previous| {
            (previous - step.inertia).abs() / previous.abs().max(f64::MIN_POSITIVE)
        });
        history.push(step.inertia);
        progress.update(1);
        tracing::debug!(
            iteration,
            inertia = step.inertia,
            relocated = step.relocated,
            "k-means iteration"
        );
        if change.is_some_and(|c| c <= tolerance) || step.inertia == 0.0 {
            converged = true;
            break;
        }
    }
    progress.finish();
    let labels = backend.labels()?;
    let final_inertia = inertia(points, &centroids, &labels);
    Ok((
        centroids,
        labels,
        Restart {
            inertia_per_iteration: history,
            converged,
            final_inertia,
            relocated,
            seconds: started.elapsed().as_secs_f64(),
        },
    ))
}

/// Sum of squared distances from each point to the centroid it is labelled with, in f64.
pub fn inertia(points: ArrayView2<'_, f32>, centroids: &Array2<f32>, labels: &[u32]) -> f64 {
    // Collected first and summed in order, so that the result does not depend on how rayon
    // split the work.
    let distances: Vec<f64> = labels
        .par_iter()
        .enumerate()
        .map(|(i, &label)| squared_distance(points.row(i), centroids.row(label as usize)))
        .collect();
    distances.iter().sum()
}

/// `||a - b||^2` accumulated in f64.
pub(crate) fn squared_distance(
    a: ndarray::ArrayView1<'_, f32>,
    b: ndarray::ArrayView1<'_, f32>,
) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum()
}

#[cfg(test)]
mod tests;
