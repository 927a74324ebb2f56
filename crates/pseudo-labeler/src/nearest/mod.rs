//! Nearest-centroid search for a fixed set of points, as a GEMM in blocks:
//! `||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2`, the points x centroids products computed a block
//! at a time and reduced to the best (and second-best) centroid per point at once, so no
//! N x K matrix ever exists. Two engines: ndarray + rayon on the CPU, libtorch on a device.

mod cpu;
mod torch;

use ndarray::ArrayView2;
use stage_kit::DeviceSpec;

pub use cpu::CpuNearest;
pub use torch::TorchNearest;

use crate::error::Result;

/// Search of the nearest centroids (squared Euclidean distance) for the points an engine
/// holds. Ties go to the lower centroid index.
pub trait NearestCentroids {
    /// Number of points.
    fn len(&self) -> usize;

    /// Whether there are no points.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The nearest centroid of every point and the squared distance to it.
    fn nearest(&self, centroids: ArrayView2<'_, f32>) -> Result<Nearest>;

    /// The two nearest centroids of every point, with their distances.
    fn nearest_two(&self, centroids: ArrayView2<'_, f32>) -> Result<Vec<TopTwo>>;
}

/// The nearest centroid of every point.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearest {
    pub labels: Vec<u32>,
    /// Squared Euclidean distance of each point to its centroid, from the blocked product
    /// (`||x||^2 + ||c||^2 - 2 x.c`, clamped at zero): accurate to float rounding of the
    /// norms, as in faiss.
    pub distances: Vec<f32>,
}

/// The closest and second-closest centroid of a point and their squared distances. With a
/// single centroid, `second` is `u32::MAX` at distance infinity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopTwo {
    pub best: u32,
    pub best_distance: f32,
    pub second: u32,
    pub second_distance: f32,
}

impl TopTwo {
    /// No centroid seen yet.
    pub const EMPTY: TopTwo = TopTwo {
        best: u32::MAX,
        best_distance: f32::INFINITY,
        second: u32::MAX,
        second_distance: f32::INFINITY,
    };

    /// Takes centroid `index` at (partial) distance `d` into account; on ties the centroid
    /// seen first stays ahead.
    #[inline]
    pub fn offer(&mut self, index: u32, d: f32) {
        if d < self.best_distance {
            self.second = self.best;
            self.second_distance = self.best_distance;
            self.best = index;
            self.best_distance = d;
        } else if d < self.second_distance {
            self.second = index;
            self.second_distance = d;
        }
    }

    /// Adds `||x||^2` to partial distances `||c||^2 - 2 x.c`, clamping rounding below zero.
    pub fn complete(mut self, squared_norm: f32) -> Self {
        self.best_distance = (self.best_distance + squared_norm).max(0.0);
        self.second_distance = (self.second_distance + squared_norm).max(0.0);
        self
    }
}

/// Where nearest-centroid searches run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    /// ndarray and rayon on this machine's cores.
    Cpu,
    /// libtorch tensors on a device (CUDA in production; its CPU in tests).
    Torch(tch::Device),
}

impl Compute {
    /// Resolves a configured device: `auto` takes CUDA when libtorch sees a GPU.
    pub fn select(spec: DeviceSpec) -> Result<Self> {
        Ok(match feature_extract::device::resolve(spec)? {
            tch::Device::Cpu => Compute::Cpu,
            device => Compute::Torch(device),
        })
    }

    /// An engine holding `points` (rows, contiguous or not).
    pub fn engine<'a>(self, points: ArrayView2<'a, f32>) -> Result<Box<dyn NearestCentroids + 'a>> {
        Ok(match self {
            Compute::Cpu => Box::new(CpuNearest::new(points)),
            Compute::Torch(device) => Box::new(TorchNearest::new(points, device)?),
        })
    }

    /// Short name for logs and reports (`cpu`, `cuda:0`, `torch-cpu`).
    pub fn name(self) -> String {
        match self {
            Compute::Cpu => "cpu".to_owned(),
            Compute::Torch(tch::Device::Cuda(i)) => format!("cuda:{i}"),
            Compute::Torch(device) => format!("torch-{device:?}").to_lowercase(),
        }
    }
}

/// Squared Euclidean norm of every row.
pub(crate) fn squared_norms(rows: ArrayView2<'_, f32>) -> Vec<f32> {
    rows.rows().into_iter().map(|r| r.dot(&r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, array};
    use rand::{Rng, SeedableRng};

    /// Nearest and second-nearest centroid by brute force in f64.
    fn brute_force(points: &Array2<f32>, centroids: &Array2<f32>) -> Vec<(usize, f64, usize)> {
        points
            .rows()
            .into_iter()
            .map(|x| {
                let mut d: Vec<(f64, usize)> = centroids
                    .rows()
                    .into_iter()
                    .enumerate()
                    .map(|(j, c)| {
                        let d = x
                            .iter()
                            .zip(c)
                            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                            .sum();
                        (d, j)
                    })
                    .collect();
                d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                (d[0].1, d[0].0, d[1].1)
            })
            .collect()
    }

    fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Array2::from_shape_fn((rows, cols), |_| rng.gen_range(-1.0..1.0))
    }

    fn check_engine(compute: Compute) {
        // More centroids than one CPU centroid block and more points than one point block,
        // neither a multiple of the block sizes.
        let points = random(1300, 24, 1);
        let centroids = random(2500, 24, 2);
        let expected = brute_force(&points, &centroids);
        let engine = compute.engine(points.view()).unwrap();
        assert_eq!(engine.len(), 1300);
        let nearest = engine.nearest(centroids.view()).unwrap();
        let two = engine.nearest_two(centroids.view()).unwrap();
        for (i, (best, distance, second)) in expected.into_iter().enumerate() {
            assert_eq!(nearest.labels[i] as usize, best, "point {i}");
            assert_eq!(nearest.distances[i], two[i].best_distance, "point {i}");
            assert_eq!(two[i].best as usize, best, "point {i}");
            assert_eq!(two[i].second as usize, second, "point {i}");
            assert!(
                (f64::from(two[i].best_distance) - distance).abs() < 1e-4 * distance.max(1.0),
                "point {i}: {} vs {distance}",
                two[i].best_distance
            );
        }
    }

    #[test]
    fn cpu_engine_matches_brute_force() {
        check_engine(Compute::Cpu);
    }

    #[test]
    fn torch_engine_matches_brute_force_on_cpu_tensors() {
        check_engine(Compute::Torch(tch::Device::Cpu));
    }

    #[test]
    fn device_selection_follows_cuda_availability() {
        assert_eq!(Compute::select(DeviceSpec::Cpu).unwrap(), Compute::Cpu);
        if tch::Cuda::is_available() {
            let cuda = Compute::Torch(tch::Device::Cuda(0));
            assert_eq!(Compute::select(DeviceSpec::Auto).unwrap(), cuda);
            assert_eq!(Compute::select(DeviceSpec::Cuda(Some(0))).unwrap(), cuda);
            assert_eq!(cuda.name(), "cuda:0");
        } else {
            assert_eq!(Compute::select(DeviceSpec::Auto).unwrap(), Compute::Cpu);
            let err = Compute::select(DeviceSpec::Cuda(None))
                .unwrap_err()
                .to_string();
            assert!(err.contains("0 CUDA device(s)"), "{err}");
        }
    }

    #[test]
    fn ties_go_to_the_lower_index_and_one_centroid_has_no_second() {
        let points = array![[0.0f32, 0.0], [2.0, 0.0]];
        let centroids = array![[1.0f32, 0.0], [1.0, 0.0], [-1.0, 0.0]];
        for compute in [Compute::Cpu, Compute::Torch(tch::Device::Cpu)] {
            let engine = compute.engine(points.view()).unwrap();
            let nearest = engine.nearest(centroids.view()).unwrap();
            assert_eq!(nearest.labels, vec![0, 0]);
            assert_eq!(nearest.distances, vec![1.0, 1.0]);
            let two = engine.nearest_two(centroids.view()).unwrap();
            assert_eq!((two[0].best, two[0].second), (0, 1), "{compute:?}");
            let single = engine
                .nearest_two(centroids.slice(ndarray::s![2.., ..]))
                .unwrap();
            assert_eq!(single[1].best, 0);
            assert_eq!(single[1].best_distance, 9.0);
            assert_eq!(single[1].second, u32::MAX);
            assert_eq!(single[1].second_distance, f32::INFINITY);
        }
    }
}
