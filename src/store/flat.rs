//! Flat records: row types whose fields are all scalars (integers, floats, booleans, strings,
//! each optionally nullable) get their [`Record`](super::Record) implementation from one macro,
//! [`flat_record!`](crate::flat_record), instead of a hand-written schema and two converters each.
//! [`FlatValue`] is the per-type column mapping the macro uses.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, StringArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Float64Type, UInt32Type, UInt64Type};

use super::StoreError;
use super::record::{Columns, opt_primitive, opt_str};

/// A scalar that is stored as one Arrow column.
pub trait FlatValue: Sized {
    /// The column's Arrow type.
    fn data_type() -> DataType;
    /// Whether the column may hold nulls.
    const NULLABLE: bool;
    /// The column holding `values`.
    fn to_array(values: Vec<Self>) -> ArrayRef;
    /// The column `name` of a batch, row by row.
    fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<Self>, StoreError>;
}

macro_rules! primitive_flat_value {
    ($native:ty, $arrow:ty, $array:ty, $data_type:expr) => {
        impl FlatValue for $native {
            fn data_type() -> DataType {
                $data_type
            }
            const NULLABLE: bool = false;
            fn to_array(values: Vec<Self>) -> ArrayRef {
                Arc::new(<$array>::from(values))
            }
            fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<Self>, StoreError> {
                let array = columns.primitive::<$arrow>(name)?;
                (0..array.len())
                    .map(|row| columns.required(name, row, opt_primitive(array, row)))
                    .collect()
            }
        }

        impl FlatValue for Option<$native> {
            fn data_type() -> DataType {
                $data_type
            }
            const NULLABLE: bool = true;
            fn to_array(values: Vec<Self>) -> ArrayRef {
                Arc::new(<$array>::from(values))
            }
            fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<Self>, StoreError> {
                let array = columns.primitive::<$arrow>(name)?;
                Ok((0..array.len())
                    .map(|row| opt_primitive(array, row))
                    .collect())
            }
        }
    };
}

primitive_flat_value!(u64, UInt64Type, UInt64Array, DataType::UInt64);
primitive_flat_value!(u32, UInt32Type, UInt32Array, DataType::UInt32);
primitive_flat_value!(f64, Float64Type, Float64Array, DataType::Float64);

impl FlatValue for bool {
    fn data_type() -> DataType {
        DataType::Boolean
    }
    const NULLABLE: bool = false;
    fn to_array(values: Vec<Self>) -> ArrayRef {
        Arc::new(BooleanArray::from(values))
    }
    fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<Self>, StoreError> {
        let array = columns.boolean(name)?;
        (0..array.len())
            .map(|row| {
                let value = (!array.is_null(row)).then(|| array.value(row));
                columns.required(name, row, value)
            })
            .collect()
    }
}

impl FlatValue for String {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    const NULLABLE: bool = false;
    fn to_array(values: Vec<Self>) -> ArrayRef {
        Arc::new(StringArray::from(values))
    }
    fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<Self>, StoreError> {
        let array = columns.utf8(name)?;
        (0..array.len())
            .map(|row| columns.required(name, row, opt_str(array, row)))
            .collect()
    }
}

impl FlatValue for Option<String> {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    const NULLABLE: bool = true;
    fn to_array(values: Vec<Self>) -> ArrayRef {
        Arc::new(StringArray::from(values))
    }
    fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<Self>, StoreError> {
        let array = columns.utf8(name)?;
        Ok((0..array.len()).map(|row| opt_str(array, row)).collect())
    }
}

/// Implements [`Record`](crate::store::Record) for a struct whose fields are all [`FlatValue`]s:
/// one column per field, named after it, in the order listed.
///
/// ```ignore
/// flat_record!(SelectionRow, "ipc_selection", 1, [problem_id: u64, note: Option<String>]);
/// ```
#[macro_export]
macro_rules! flat_record {
    ($ty:ty, $kind:literal, $version:literal, [$($field:ident : $fty:ty),+ $(,)?]) => {
        impl $crate::store::Record for $ty {
            const KIND: &'static str = $kind;
            const SCHEMA_VERSION: u32 = $version;

            fn schema() -> ::arrow::datatypes::SchemaRef {
                ::std::sync::Arc::new(::arrow::datatypes::Schema::new(vec![$(
                    ::arrow::datatypes::Field::new(
                        stringify!($field),
                        <$fty as $crate::store::flat::FlatValue>::data_type(),
                        <$fty as $crate::store::flat::FlatValue>::NULLABLE,
                    )
                ),+]))
            }

            fn to_batch(
                rows: &[Self],
            ) -> Result<::arrow::array::RecordBatch, ::arrow::error::ArrowError> {
                ::arrow::array::RecordBatch::try_new(
                    <Self as $crate::store::Record>::schema(),
                    vec![$(
                        <$fty as $crate::store::flat::FlatValue>::to_array(
                            rows.iter().map(|row| row.$field.clone()).collect(),
                        )
                    ),+],
                )
            }

            fn from_batch(
                batch: &::arrow::array::RecordBatch,
                path: &::std::path::Path,
            ) -> Result<Vec<Self>, $crate::store::StoreError> {
                let columns = $crate::store::record::Columns::new(batch, path);
                $(
                    let mut $field = <$fty as $crate::store::flat::FlatValue>::from_column(
                        &columns,
                        stringify!($field),
                    )?
                    .into_iter();
                )+
                Ok((0..batch.num_rows())
                    .map(|_| Self {
                        $($field: $field.next().expect("every column has num_rows values")),+
                    })
                    .collect())
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::store::Stage;

    #[derive(Debug, Clone, PartialEq)]
    struct Row {
        id: u64,
        count: u32,
        score: f64,
        kept: bool,
        text: String,
        parent: Option<u64>,
        note: Option<String>,
    }

    crate::flat_record!(
        Row,
        "flat_test_row",
        1,
        [id: u64, count: u32, score: f64, kept: bool, text: String, parent: Option<u64>, note: Option<String>]
    );

    #[test]
    fn flat_rows_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let rows = vec![
            Row {
                id: u64::MAX,
                count: 3,
                score: -1.5,
                kept: true,
                text: "ünïcode\n".into(),
                parent: None,
                note: Some(String::new()),
            },
            Row {
                id: 0,
                count: 0,
                score: f64::INFINITY,
                kept: false,
                text: String::new(),
                parent: Some(7),
                note: None,
            },
        ];
        let mut stage = Stage::<Row>::open(dir.path(), 0).unwrap();
        stage.commit(&rows).unwrap();
        stage.commit(&rows[..1]).unwrap();
        let back = stage.read_all().unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(&back[..2], &rows[..]);
        assert_eq!(back[2], rows[0]);
    }
}
