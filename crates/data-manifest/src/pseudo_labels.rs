//! `pseudo_labels.parquet`: the cluster each utterance was assigned to, its cosine similarity
//! to the cluster centroid, and whether the clean-up kept it for supervised fine-tuning.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float32Array, Int64Array};

use crate::error::Result;
use crate::table::{self, Columns, TableKind, strings};

pub const KIND: TableKind = TableKind {
    name: "pseudo_labels",
    version: 1,
};

#[derive(Debug, Clone, PartialEq)]
pub struct PseudoLabel {
    pub utt_id: String,
    pub cluster: i64,
    pub similarity: f32,
    pub kept: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PseudoLabels {
    pub labels: Vec<PseudoLabel>,
}

impl PseudoLabels {
    pub fn write(&self, path: &Path) -> Result<()> {
        let l = &self.labels;
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("utt_id", strings(l.iter().map(|x| x.utt_id.as_str()))),
            (
                "cluster",
                Arc::new(Int64Array::from_iter_values(l.iter().map(|x| x.cluster))),
            ),
            (
                "similarity",
                Arc::new(Float32Array::from_iter_values(
                    l.iter().map(|x| x.similarity),
                )),
            ),
            (
                "kept",
                Arc::new(BooleanArray::from_iter(l.iter().map(|x| Some(x.kept)))),
            ),
        ];
        table::write(path, KIND, &[], columns)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let table = table::read(path, KIND)?;
        let mut labels = Vec::with_capacity(table.num_rows());
        for batch in &table.batches {
            let c = Columns::new(path, batch);
            let (utt_id, cluster, similarity, kept) = (
                c.utf8("utt_id")?,
                c.i64("cluster")?,
                c.f32("similarity")?,
                c.boolean("kept")?,
            );
            for row in 0..batch.num_rows() {
                labels.push(PseudoLabel {
                    utt_id: c.require(utt_id, "utt_id", row)?.to_owned(),
                    cluster: cluster.value(row),
                    similarity: similarity.value(row),
                    kept: kept.value(row),
                });
            }
        }
        Ok(PseudoLabels { labels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pseudo_labels.parquet");
        let labels = PseudoLabels {
            labels: vec![
                PseudoLabel {
                    utt_id: "a".into(),
                    cluster: 3,
                    similarity: 0.9,
                    kept: true,
                },
                PseudoLabel {
                    utt_id: "b".into(),
                    cluster: 3,
                    similarity: 0.2,
                    kept: false,
                },
            ],
        };
        labels.write(&path).unwrap();
        assert_eq!(PseudoLabels::read(&path).unwrap(), labels);
    }
}
