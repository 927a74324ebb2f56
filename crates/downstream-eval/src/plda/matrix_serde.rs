//! Serde for `Array2<f64>` as a list of rows, so that model files are plain JSON without
//! ndarray's serde feature.

use ndarray::Array2;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

/// Writes the rows of `m`.
pub fn serialize<S: Serializer>(m: &Array2<f64>, serializer: S) -> Result<S::Ok, S::Error> {
    let rows: Vec<Vec<f64>> = m.rows().into_iter().map(|r| r.to_vec()).collect();
    rows.serialize(serializer)
}

/// Reads rows of equal length.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Array2<f64>, D::Error> {
    let rows: Vec<Vec<f64>> = Vec::deserialize(deserializer)?;
    let cols = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != cols) {
        return Err(D::Error::custom("matrix rows of different lengths"));
    }
    let n = rows.len();
    Array2::from_shape_vec((n, cols), rows.into_iter().flatten().collect())
        .map_err(|e| D::Error::custom(e.to_string()))
}
