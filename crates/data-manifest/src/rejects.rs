//! `rejects.parquet`: files a stage could not use, with the reason, so nothing is dropped
//! silently.

use std::path::Path;

use arrow_array::ArrayRef;

use crate::error::Result;
use crate::table::{self, Columns, TableKind, strings};

pub const KIND: TableKind = TableKind {
    name: "rejects",
    version: 1,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The file, relative to the corpus root when it is under it.
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RejectList {
    pub rejects: Vec<Reject>,
}

impl RejectList {
    pub fn write(&self, path: &Path) -> Result<()> {
        let r = &self.rejects;
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("path", strings(r.iter().map(|x| x.path.as_str()))),
            ("reason", strings(r.iter().map(|x| x.reason.as_str()))),
        ];
        table::write(path, KIND, &[], columns)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let table = table::read(path, KIND)?;
        let mut rejects = Vec::with_capacity(table.num_rows());
        for batch in &table.batches {
            let c = Columns::new(path, batch);
            let (file, reason) = (c.utf8("path")?, c.utf8("reason")?);
            for row in 0..batch.num_rows() {
                rejects.push(Reject {
                    path: c.require(file, "path", row)?.to_owned(),
                    reason: c.require(reason, "reason", row)?.to_owned(),
                });
            }
        }
        Ok(RejectList { rejects })
    }
}
