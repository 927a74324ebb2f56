//! `trials.parquet`: a speaker-verification trial list (enrolment utterance, test utterance,
//! whether they share a speaker), by utterance id.

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray};

use crate::error::Result;
use crate::table::{self, Columns, TableKind, strings};

pub const KIND: TableKind = TableKind {
    name: "trials",
    version: 1,
};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Trial {
    pub enroll: String,
    pub test: String,
    pub target: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrialList {
    pub trials: Vec<Trial>,
}

impl TrialList {
    pub fn write(&self, path: &Path) -> Result<()> {
        let t = &self.trials;
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("enroll", strings(t.iter().map(|x| x.enroll.as_str()))),
            ("test", strings(t.iter().map(|x| x.test.as_str()))),
            (
                "target",
                Arc::new(BooleanArray::from_iter(t.iter().map(|x| Some(x.target)))),
            ),
        ];
        table::write(path, KIND, &[], columns)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let table = table::read(path, KIND)?;
        let mut trials = Vec::with_capacity(table.num_rows());
        for batch in &table.batches {
            let c = Columns::new(path, batch);
            let (enroll, test, target) = (c.utf8("enroll")?, c.utf8("test")?, c.boolean("target")?);
            for row in 0..batch.num_rows() {
                trials.push(Trial {
                    enroll: c.require(enroll, "enroll", row)?.to_owned(),
                    test: c.require(test, "test", row)?.to_owned(),
                    target: target.value(row),
                });
            }
        }
        Ok(TrialList { trials })
    }

    /// Number of target and non-target trials.
    pub fn counts(&self) -> (usize, usize) {
        let targets = self.trials.iter().filter(|t| t.target).count();
        (targets, self.trials.len() - targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trials.parquet");
        let list = TrialList {
            trials: vec![
                Trial {
                    enroll: "a/1".into(),
                    test: "a/2".into(),
                    target: true,
                },
                Trial {
                    enroll: "a/1".into(),
                    test: "b/1".into(),
                    target: false,
                },
            ],
        };
        list.write(&path).unwrap();
        assert_eq!(TrialList::read(&path).unwrap(), list);
        assert_eq!(list.counts(), (1, 1));
    }
}
