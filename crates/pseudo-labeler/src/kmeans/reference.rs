//! The reference backend: linfa-clustering's `KMeans`, driven one of its own iterations at a
//! time (precomputed initial centroids, one run, one iteration) so that it shares the loop,
//! the stopping rule and the history with the batched backend. Its update is linfa's
//! m_k-means variant (the old centroid counts as one more member, so no cluster empties).
//! Both updates have the same fixed points (centroids at their members' means), so runs
//! that head for the same optimum converge to the same clustering; trajectories differ.

use linfa::DatasetBase;
use linfa::traits::{Fit, Predict};
use linfa_clustering::{KMeans, KMeansInit};
use linfa_nn::distance::L2Dist;
use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{KMeansBackend, Step};
use crate::error::{Error, Result};

/// linfa's k-means over a set of points.
pub struct LinfaReference<'a> {
    points: ArrayView2<'a, f32>,
    last: Option<KMeans<f32, L2Dist>>,
}

impl<'a> LinfaReference<'a> {
    /// The reference backend over `points`.
    pub fn new(points: ArrayView2<'a, f32>) -> Self {
        LinfaReference { points, last: None }
    }
}

impl KMeansBackend for LinfaReference<'_> {
    fn name(&self) -> &'static str {
        "linfa"
    }

    fn step(&mut self, centroids: &Array2<f32>) -> Result<Step> {
        let dataset = DatasetBase::from(self.points);
        // The generator is never drawn from: precomputed centroids skip linfa's seeding.
        let model = KMeans::params_with_rng(centroids.nrows(), ChaCha8Rng::seed_from_u64(0))
            .init_method(KMeansInit::Precomputed(centroids.clone()))
            .n_runs(1)
            .max_n_iterations(1)
            .fit(&dataset)
            .map_err(|e| Error::Linfa(e.to_string()))?;
        // linfa reports the mean over points; the loop works with the sum.
        let inertia = f64::from(model.inertia()) * self.points.nrows() as f64;
        let step = Step {
            centroids: model.centroids().clone(),
            inertia,
            relocated: 0,
        };
        self.last = Some(model);
        Ok(step)
    }

    fn labels(&mut self) -> Result<Vec<u32>> {
        let model = self.last.as_ref().expect("labels() after step()");
        let labels = model.predict(&self.points);
        Ok(labels.iter().map(|&c| c as u32).collect())
    }
}
