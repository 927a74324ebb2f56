//! Before clustering: set aside unusable embeddings (with the reason) and scale the rest to
//! unit length, so that squared Euclidean distance orders pairs as cosine similarity does.

use ndarray::Array2;
use serde::Serialize;

/// An embedding that cannot be clustered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub utt_id: String,
    pub reason: String,
}

/// Rows of `vectors` that can be clustered, and the others with their reasons.
pub fn screen(vectors: &Array2<f32>, utt_ids: &[String]) -> (Vec<usize>, Vec<Rejected>) {
    let mut usable = Vec::with_capacity(vectors.nrows());
    let mut rejected = Vec::new();
    for (i, row) in vectors.rows().into_iter().enumerate() {
        let reason = if row.iter().any(|v| !v.is_finite()) {
            Some("embedding has NaN or infinite components")
        } else if row.iter().all(|&v| v == 0.0) {
            Some("embedding is the zero vector (no direction)")
        } else {
            None
        };
        match reason {
            Some(reason) => rejected.push(Rejected {
                utt_id: utt_ids[i].clone(),
                reason: reason.to_owned(),
            }),
            None => usable.push(i),
        }
    }
    (usable, rejected)
}

/// Scales every row to unit Euclidean length (all-zero rows stay zero).
pub fn normalize_rows(points: &mut Array2<f32>) {
    for mut row in points.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row /= norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn screening_names_the_bad_rows() {
        let vectors = array![[1.0f32, 0.0], [f32::NAN, 1.0], [0.0, 0.0], [3.0, 4.0]];
        let ids: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let (usable, rejected) = screen(&vectors, &ids);
        assert_eq!(usable, vec![0, 3]);
        assert_eq!(rejected.len(), 2);
        assert_eq!(rejected[0].utt_id, "b");
        assert!(rejected[0].reason.contains("NaN"));
        assert!(rejected[1].reason.contains("zero vector"));

        let mut unit = vectors.select(ndarray::Axis(0), &usable);
        normalize_rows(&mut unit);
        assert_eq!(unit, array![[1.0f32, 0.0], [0.6, 0.8]]);
    }
}
