//! Initial centroids of a k-means restart, drawn on the host so that both backends start
//! from the same ones.

use ndarray::{Array2, ArrayView2, Axis};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::squared_distance;
use crate::config::Init;

/// `k` initial centroids for `points` (`k <= points.nrows()`).
pub fn initial_centroids(
    points: ArrayView2<'_, f32>,
    k: usize,
    init: Init,
    rng: &mut ChaCha8Rng,
) -> Array2<f32> {
    assert!(
        k >= 1 && k <= points.nrows(),
        "k = {k} for {} points",
        points.nrows()
    );
    let rows = match init {
        Init::Random => rand::seq::index::sample(rng, points.nrows(), k).into_vec(),
        Init::KMeansPlusPlus => kmeans_plus_plus(points, k, rng),
    };
    points.select(Axis(0), &rows)
}

/// k-means++ seeding: each next centroid is a point drawn with probability proportional to
/// its squared distance to the closest centroid chosen so far.
fn kmeans_plus_plus(points: ArrayView2<'_, f32>, k: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    let n = points.nrows();
    let mut progress = stage_kit::progress::Progress::new("k-means++", k, "centroid");
    let mut chosen = vec![rng.gen_range(0..n)];
    let mut closest: Vec<f64> = vec![f64::INFINITY; n];
    while chosen.len() < k {
        let newest = points.row(*chosen.last().expect("one chosen"));
        closest.par_iter_mut().enumerate().for_each(|(i, d)| {
            *d = d.min(squared_distance(points.row(i), newest));
        });
        let total: f64 = closest.iter().sum();
        let next = if total > 0.0 {
            let target = rng.gen_range(0.0..total);
            let mut cumulative = 0.0;
            let mut pick = None;
            for (i, &d) in closest.iter().enumerate() {
                if d > 0.0 {
                    pick = Some(i);
                    cumulative += d;
                    if cumulative > target {
                        break;
                    }
                }
            }
            pick.expect("a point at positive distance")
        } else {
            // Every point coincides with a chosen centroid: any point will do.
            rng.gen_range(0..n)
        };
        chosen.push(next);
        progress.update(1);
    }
    progress.finish();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;
    use rand::SeedableRng;

    #[test]
    fn random_init_draws_distinct_points_reproducibly() {
        let points = Array2::from_shape_fn((50, 3), |(i, j)| (i * 3 + j) as f32);
        let mut a = ChaCha8Rng::seed_from_u64(3);
        let mut b = ChaCha8Rng::seed_from_u64(3);
        let ca = initial_centroids(points.view(), 10, Init::Random, &mut a);
        let cb = initial_centroids(points.view(), 10, Init::Random, &mut b);
        assert_eq!(ca, cb);
        let mut firsts: Vec<i64> = ca.column(0).iter().map(|&v| v as i64).collect();
        firsts.sort_unstable();
        firsts.dedup();
        assert_eq!(firsts.len(), 10);
    }

    #[test]
    fn kmeans_plus_plus_spreads_over_separated_groups() {
        // Three tight, far-apart groups: the D^2 weighting picks one point in each.
        let points = array![
            [0.0f32, 0.0],
            [0.1, 0.0],
            [0.0, 0.1],
            [100.0, 0.0],
            [100.1, 0.0],
            [0.0, 100.0],
            [0.0, 100.1]
        ];
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let c = initial_centroids(points.view(), 3, Init::KMeansPlusPlus, &mut rng);
            let mut groups: Vec<u8> = c
                .rows()
                .into_iter()
                .map(|r| match (r[0] > 50.0, r[1] > 50.0) {
                    (false, false) => 0,
                    (true, _) => 1,
                    (_, true) => 2,
                })
                .collect();
            groups.sort_unstable();
            assert_eq!(groups, vec![0, 1, 2], "seed {seed}");
        }
    }
}
