//! The [`Record`] trait: how a row type maps to an Arrow schema and back, so that one generic
//! [`super::Stage`] stores every record type. Also the column accessors implementations use, which
//! turn a missing or mistyped column into an error naming the file and the column.

use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::SchemaRef;

use super::StoreError;

/// A row type stored as Parquet parts.
pub trait Record: Sized {
    /// The name written into each part's metadata (a stage folder holds one kind).
    const KIND: &'static str;
    /// Bumped whenever a nullable column is added; older parts still read.
    const SCHEMA_VERSION: u32;
    /// The Arrow schema of one part.
    fn schema() -> SchemaRef;
    /// Columnar form of `rows`, in [`Record::schema`].
    fn to_batch(rows: &[Self]) -> Result<RecordBatch, arrow::error::ArrowError>;
    /// Rows back from a batch in [`Record::schema`] (older parts are already projected onto it,
    /// with added nullable columns filled with nulls). `path` is for error messages.
    fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>, StoreError>;
}

/// Column accessors with errors that name the file and column.
pub struct Columns<'a> {
    batch: &'a RecordBatch,
    path: &'a Path,
}

impl<'a> Columns<'a> {
    pub fn new(batch: &'a RecordBatch, path: &'a Path) -> Self {
        Columns { batch, path }
    }

    /// An error naming the file and `column`.
    pub fn invalid(&self, column: &str, problem: impl Into<String>) -> StoreError {
        StoreError::Column {
            path: self.path.to_path_buf(),
            column: column.to_string(),
            problem: problem.into(),
        }
    }

    fn get(&self, name: &str) -> Result<&'a ArrayRef, StoreError> {
        self.batch
            .column_by_name(name)
            .ok_or_else(|| self.invalid(name, "missing"))
    }

    /// A Utf8 column.
    pub fn utf8(&self, name: &str) -> Result<&'a arrow::array::StringArray, StoreError> {
        self.get(name)?
            .as_string_opt::<i32>()
            .ok_or_else(|| self.invalid(name, "expected Utf8"))
    }

    /// A primitive column (`UInt32Type`, `Float64Type`, ...).
    pub fn primitive<T: arrow::datatypes::ArrowPrimitiveType>(
        &self,
        name: &str,
    ) -> Result<&'a arrow::array::PrimitiveArray<T>, StoreError> {
        self.get(name)?
            .as_primitive_opt::<T>()
            .ok_or_else(|| self.invalid(name, format!("expected {}", T::DATA_TYPE)))
    }

    /// A Boolean column.
    pub fn boolean(&self, name: &str) -> Result<&'a arrow::array::BooleanArray, StoreError> {
        self.get(name)?
            .as_boolean_opt()
            .ok_or_else(|| self.invalid(name, "expected Boolean"))
    }

    /// A List<Utf8> column, row by row.
    pub fn utf8_lists(&self, name: &str) -> Result<Vec<Vec<String>>, StoreError> {
        let list = self
            .get(name)?
            .as_list_opt::<i32>()
            .ok_or_else(|| self.invalid(name, "expected List<Utf8>"))?;
        (0..list.len())
            .map(|row| {
                if list.is_null(row) {
                    return Ok(Vec::new());
                }
                let values = list.value(row);
                let strings = values
                    .as_string_opt::<i32>()
                    .ok_or_else(|| self.invalid(name, "expected List<Utf8>"))?;
                Ok(strings
                    .iter()
                    .map(|s| s.unwrap_or_default().to_string())
                    .collect())
            })
            .collect()
    }

    /// A non-null value or an error naming the row.
    pub fn required<T>(&self, name: &str, row: usize, value: Option<T>) -> Result<T, StoreError> {
        value.ok_or_else(|| self.invalid(name, format!("null in row {row}")))
    }
}

/// `Option<&str>` for a nullable Utf8 value.
pub fn opt_str(array: &arrow::array::StringArray, row: usize) -> Option<String> {
    (!array.is_null(row)).then(|| array.value(row).to_string())
}

/// `Option<T::Native>` for a nullable primitive value.
pub fn opt_primitive<T: arrow::datatypes::ArrowPrimitiveType>(
    array: &arrow::array::PrimitiveArray<T>,
    row: usize,
) -> Option<T::Native> {
    (!array.is_null(row)).then(|| array.value(row))
}
