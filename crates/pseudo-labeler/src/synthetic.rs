//! Synthetic data with known structure, for tests and the k-means benchmark.

use ndarray::Array2;
use rand::Rng;
use rand_distr::StandardNormal;

/// Gaussian blobs: `clusters` centres drawn from N(0, I) in `dim` dimensions, `per_cluster`
/// points around each with per-component standard deviation `spread`; points are in blob
/// order and the returned labels name each point's blob.
pub fn blobs(
    clusters: usize,
    per_cluster: usize,
    dim: usize,
    spread: f32,
    rng: &mut impl Rng,
) -> (Array2<f32>, Vec<u32>) {
    let centres = gaussian(clusters, dim, rng);
    let labels: Vec<u32> = (0..clusters as u32)
        .flat_map(|c| std::iter::repeat_n(c, per_cluster))
        .collect();
    let points = Array2::from_shape_fn((labels.len(), dim), |(i, j)| {
        let noise: f32 = rng.sample(StandardNormal);
        centres[[labels[i] as usize, j]] + spread * noise
    });
    (points, labels)
}

/// A `rows` x `dim` matrix of independent standard normal values.
pub fn gaussian(rows: usize, dim: usize, rng: &mut impl Rng) -> Array2<f32> {
    Array2::from_shape_simple_fn((rows, dim), || rng.sample(StandardNormal))
}

/// Speakers whose utterances vary strongly along a few shared directions (a recording
/// channel): speaker centres from N(0, I) in `dim` dimensions, and per utterance standard
/// deviation `channel_spread` along the first `channel_dims` axes and `spread` along the
/// others. Cosine merging cannot join one speaker's parts split along the channel axes;
/// a PLDA learns that those axes vary within speakers. Points in speaker order.
pub fn anisotropic_speakers(
    speakers: usize,
    per_speaker: usize,
    dim: usize,
    (channel_dims, channel_spread): (usize, f32),
    spread: f32,
    rng: &mut impl Rng,
) -> (Array2<f32>, Vec<u32>) {
    let centres = gaussian(speakers, dim, rng);
    let labels: Vec<u32> = (0..speakers as u32)
        .flat_map(|c| std::iter::repeat_n(c, per_speaker))
        .collect();
    let points = Array2::from_shape_fn((labels.len(), dim), |(i, j)| {
        let noise: f32 = rng.sample(StandardNormal);
        let scale = if j < channel_dims {
            channel_spread
        } else {
            spread
        };
        centres[[labels[i] as usize, j]] + scale * noise
    });
    (points, labels)
}
