//! One table per Parquet file, tagged with the kind and version of its schema in the file's
//! key-value metadata (`speech_dino.schema = "<kind>/<version>"`). Readers refuse files of
//! another kind or of a newer version, by name; columns are looked up by name with errors
//! that name the file and the column.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Int64Array, RecordBatch, StringArray, UInt16Array,
    UInt32Array, UInt64Array,
};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{ManifestError, Result};

/// Metadata key holding `<kind>/<version>`.
pub const SCHEMA_KEY: &str = "speech_dino.schema";

/// The kind and version of a table's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableKind {
    pub name: &'static str,
    pub version: u32,
}

impl TableKind {
    fn tag(&self) -> String {
        format!("{}/{}", self.name, self.version)
    }
}

/// Writes `columns` (name, array) as one table of `kind` with extra `metadata`, atomically.
pub fn write(
    path: &Path,
    kind: TableKind,
    metadata: &[(&str, String)],
    columns: Vec<(&str, ArrayRef)>,
) -> Result<()> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array)| {
            Field::new(
                *name,
                array.data_type().clone(),
                array.null_count() > 0 || is_nullable(name),
            )
        })
        .collect();
    let mut meta: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    meta.insert(SCHEMA_KEY.to_owned(), kind.tag());
    let schema = Arc::new(Schema::new_with_metadata(fields, meta));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .map_err(|source| ManifestError::Arrow {
        path: path.to_path_buf(),
        source,
    })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    stage_kit::write_atomically(path, |partial| -> Result<()> {
        let file = File::create(partial).map_err(|source| ManifestError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let parquet_err = |source| ManifestError::ParquetWrite {
            path: path.to_path_buf(),
            source,
        };
        let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(parquet_err)?;
        writer.write(&batch).map_err(parquet_err)?;
        writer.close().map_err(parquet_err)?;
        Ok(())
    })
}

/// Columns whose nulls are meaningful stay nullable even in a file that has none.
fn is_nullable(name: &str) -> bool {
    matches!(name, "speaker" | "session" | "emotion" | "fold" | "channel")
}

/// A table read back: its metadata and its record batches.
pub struct Table {
    pub path: PathBuf,
    pub metadata: HashMap<String, String>,
    pub batches: Vec<RecordBatch>,
}

/// Reads a table, checking that it is of `kind` with a version this build understands.
pub fn read(path: &Path, kind: TableKind) -> Result<Table> {
    let parquet_err = |source| ManifestError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let (builder, metadata) = open_checked(path, kind)?;
    let reader = builder.build().map_err(parquet_err)?;
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| ManifestError::Arrow {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Table {
        path: path.to_path_buf(),
        metadata,
        batches,
    })
}

/// The key-value metadata of a table of `kind`, read from the file footer alone.
pub fn read_metadata(path: &Path, kind: TableKind) -> Result<HashMap<String, String>> {
    open_checked(path, kind).map(|(_, metadata)| metadata)
}

/// Opens a table and checks its kind and version.
fn open_checked(
    path: &Path,
    kind: TableKind,
) -> Result<(
    ParquetRecordBatchReaderBuilder<File>,
    HashMap<String, String>,
)> {
    let file = File::open(path).map_err(|source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let parquet_err = |source| ManifestError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
    let metadata: HashMap<String, String> = builder
        .schema()
        .metadata()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let tag = metadata.get(SCHEMA_KEY).ok_or_else(|| {
        ManifestError::invalid(
            path,
            format!("not a speech-dino table (no {SCHEMA_KEY} in its metadata)"),
        )
    })?;
    let (name, version) = tag
        .split_once('/')
        .and_then(|(n, v)| Some((n, v.parse::<u32>().ok()?)))
        .ok_or_else(|| ManifestError::invalid(path, format!("malformed schema tag {tag:?}")))?;
    if name != kind.name {
        return Err(ManifestError::invalid(
            path,
            format!("is a {name} table, expected {}", kind.name),
        ));
    }
    if version > kind.version {
        return Err(ManifestError::invalid(
            path,
            format!(
                "{name} schema version {version} is newer than this build understands ({})",
                kind.version
            ),
        ));
    }
    Ok((builder, metadata))
}

impl Table {
    /// A metadata value that must be present.
    pub fn required_metadata(&self, key: &str) -> Result<&str> {
        self.metadata.get(key).map(String::as_str).ok_or_else(|| {
            ManifestError::invalid(&self.path, format!("metadata key {key} is missing"))
        })
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Typed access to a batch's columns by name.
pub struct Columns<'a> {
    path: &'a Path,
    batch: &'a RecordBatch,
}

impl<'a> Columns<'a> {
    pub fn new(path: &'a Path, batch: &'a RecordBatch) -> Self {
        Columns { path, batch }
    }

    fn column<T: Array + 'static>(&self, name: &str, type_name: &str) -> Result<&'a T> {
        let column = self.batch.column_by_name(name).ok_or_else(|| {
            ManifestError::invalid(self.path, format!("column {name} is missing"))
        })?;
        column.as_any().downcast_ref::<T>().ok_or_else(|| {
            ManifestError::invalid(
                self.path,
                format!(
                    "column {name} is {}, expected {type_name}",
                    column.data_type()
                ),
            )
        })
    }

    /// A column that may be absent from older files (`None` then).
    fn optional_column<T: Array + 'static>(
        &self,
        name: &str,
        type_name: &str,
    ) -> Result<Option<&'a T>> {
        match self.batch.column_by_name(name) {
            None => Ok(None),
            Some(_) => self.column(name, type_name).map(Some),
        }
    }

    pub fn utf8(&self, name: &str) -> Result<&'a StringArray> {
        self.column(name, "Utf8")
    }

    pub fn optional_utf8(&self, name: &str) -> Result<Option<&'a StringArray>> {
        self.optional_column(name, "Utf8")
    }

    pub fn u64(&self, name: &str) -> Result<&'a UInt64Array> {
        self.column(name, "UInt64")
    }

    pub fn u32(&self, name: &str) -> Result<&'a UInt32Array> {
        self.column(name, "UInt32")
    }

    pub fn u16(&self, name: &str) -> Result<&'a UInt16Array> {
        self.column(name, "UInt16")
    }

    pub fn optional_u16(&self, name: &str) -> Result<Option<&'a UInt16Array>> {
        self.optional_column(name, "UInt16")
    }

    pub fn i64(&self, name: &str) -> Result<&'a Int64Array> {
        self.column(name, "Int64")
    }

    pub fn f32(&self, name: &str) -> Result<&'a Float32Array> {
        self.column(name, "Float32")
    }

    pub fn boolean(&self, name: &str) -> Result<&'a BooleanArray> {
        self.column(name, "Boolean")
    }

    /// Fails if `array` has a null at `row` in a column that must not have one.
    pub fn require<'s>(&self, array: &'s StringArray, name: &str, row: usize) -> Result<&'s str> {
        if array.is_null(row) {
            return Err(ManifestError::invalid(
                self.path,
                format!("column {name} has a null at row {row}"),
            ));
        }
        Ok(array.value(row))
    }
}

/// Builds a Utf8 column from optional values.
pub fn optional_strings<'a>(values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

/// Builds a Utf8 column.
pub fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// Value of a nullable Utf8 column at `row`.
pub fn optional_value(array: &StringArray, row: usize) -> Option<String> {
    (!array.is_null(row)).then(|| array.value(row).to_owned())
}
