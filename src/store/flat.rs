//! Flat records: row types whose fields are all scalars (integers, floats, booleans, strings,
//! each optionally nullable) get their [`Record`](super::Record) implementation from one macro,
//! [`flat_record!`](crate::flat_record), instead of a hand-written schema and two converters each.
//! [`FlatValue`] is the per-type column mapping the macro uses; a field marked `as id` (a u64
//! id or digest) is stored through [`IdColumn`] instead: as 16 lowercase hex digits, so that it
//! survives every tool a user reads the tables with (pandas turns a nullable 64-bit integer
//! column into float64, HF's JSON reader a u64 above 2^63 into a float; a string stays exact).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Float64Array, ListBuilder, StringArray, StringBuilder,
    UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float64Type, UInt32Type, UInt64Type};

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

/// How a field becomes one column: [`Plain`] for a [`FlatValue`], [`IdColumn`] for an id.
pub trait ColumnCodec<T> {
    /// The column's Arrow type.
    fn data_type() -> DataType;
    /// Whether the column may hold nulls.
    const NULLABLE: bool;
    /// The column holding `values`.
    fn to_array(values: Vec<T>) -> ArrayRef;
    /// The column `name` of a batch, row by row.
    fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<T>, StoreError>;
}

/// A field stored as its own [`FlatValue`] column.
pub struct Plain;

impl<T: FlatValue> ColumnCodec<T> for Plain {
    fn data_type() -> DataType {
        T::data_type()
    }
    const NULLABLE: bool = T::NULLABLE;
    fn to_array(values: Vec<T>) -> ArrayRef {
        T::to_array(values)
    }
    fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<T>, StoreError> {
        T::from_column(columns, name)
    }
}

/// A u64 id or digest stored as 16 lowercase hex digits (Utf8). See the module's head.
pub struct IdColumn;

/// The table form of an id: 16 lowercase hex digits.
pub fn id_text(id: u64) -> String {
    format!("{id:016x}")
}

/// An id back from its table form.
pub fn parse_id(text: &str) -> Option<u64> {
    (text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

/// The id `text` in row `row` of the column `name`, or an error naming both.
fn id_in(columns: &Columns<'_>, name: &str, row: usize, text: &str) -> Result<u64, StoreError> {
    parse_id(text).ok_or_else(|| {
        columns.invalid(
            name,
            format!("row {row}: {text:?} is not a 16-digit hex id"),
        )
    })
}

fn ids_of(columns: &Columns<'_>, name: &str) -> Result<Vec<Option<u64>>, StoreError> {
    let array = columns.utf8(name)?;
    (0..array.len())
        .map(|row| match opt_str(array, row) {
            None => Ok(None),
            Some(text) => id_in(columns, name, row, &text).map(Some),
        })
        .collect()
}

impl ColumnCodec<u64> for IdColumn {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    const NULLABLE: bool = false;
    fn to_array(values: Vec<u64>) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(
            values.into_iter().map(id_text),
        ))
    }
    fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<u64>, StoreError> {
        ids_of(columns, name)?
            .into_iter()
            .enumerate()
            .map(|(row, id)| columns.required(name, row, id))
            .collect()
    }
}

impl ColumnCodec<Option<u64>> for IdColumn {
    fn data_type() -> DataType {
        DataType::Utf8
    }
    const NULLABLE: bool = true;
    fn to_array(values: Vec<Option<u64>>) -> ArrayRef {
        Arc::new(StringArray::from(
            values
                .into_iter()
                .map(|id| id.map(id_text))
                .collect::<Vec<_>>(),
        ))
    }
    fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<Option<u64>>, StoreError> {
        ids_of(columns, name)
    }
}

/// A list of u64 ids stored as a list of hex texts (List<Utf8>), in order.
pub struct IdListColumn;

impl ColumnCodec<Vec<u64>> for IdListColumn {
    fn data_type() -> DataType {
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, false)))
    }
    const NULLABLE: bool = false;
    fn to_array(values: Vec<Vec<u64>>) -> ArrayRef {
        let mut builder = ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new(
            "item",
            DataType::Utf8,
            false,
        )));
        for ids in values {
            for id in ids {
                builder.values().append_value(id_text(id));
            }
            builder.append(true);
        }
        Arc::new(builder.finish())
    }
    fn from_column(columns: &Columns<'_>, name: &str) -> Result<Vec<Vec<u64>>, StoreError> {
        columns
            .utf8_lists(name)?
            .into_iter()
            .enumerate()
            .map(|(row, texts)| {
                texts
                    .iter()
                    .map(|text| id_in(columns, name, row, text))
                    .collect()
            })
            .collect()
    }
}

/// The codec a field's `as ...` marker names (none: [`Plain`]).
#[doc(hidden)]
#[macro_export]
macro_rules! flat_codec {
    () => {
        $crate::store::flat::Plain
    };
    (id) => {
        $crate::store::flat::IdColumn
    };
    (ids) => {
        $crate::store::flat::IdListColumn
    };
}

/// Implements [`Record`](crate::store::Record) for a struct whose fields are all [`FlatValue`]s:
/// one column per field, named after it, in the order listed. A u64 field marked `as id` is
/// an id or digest, stored as hex text ([`IdColumn`]); a `Vec<u64>` marked `as ids`, a list of
/// them ([`IdListColumn`]).
///
/// ```ignore
/// flat_record!(SelectionRow, "ipc_selection", 1, [problem_id: u64 as id, note: Option<String>]);
/// ```
#[macro_export]
macro_rules! flat_record {
    ($ty:ty, $kind:literal, $version:literal, [$($field:ident : $fty:ty $(as $codec:ident)?),+ $(,)?]) => {
        impl $crate::store::Record for $ty {
            const KIND: &'static str = $kind;
            const SCHEMA_VERSION: u32 = $version;

            fn schema() -> ::arrow::datatypes::SchemaRef {
                ::std::sync::Arc::new(::arrow::datatypes::Schema::new(vec![$(
                    ::arrow::datatypes::Field::new(
                        stringify!($field),
                        <$crate::flat_codec!($($codec)?) as $crate::store::flat::ColumnCodec<$fty>>::data_type(),
                        <$crate::flat_codec!($($codec)?) as $crate::store::flat::ColumnCodec<$fty>>::NULLABLE,
                    )
                ),+]))
            }

            fn to_batch(
                rows: &[Self],
            ) -> Result<::arrow::array::RecordBatch, ::arrow::error::ArrowError> {
                ::arrow::array::RecordBatch::try_new(
                    <Self as $crate::store::Record>::schema(),
                    vec![$(
                        <$crate::flat_codec!($($codec)?) as $crate::store::flat::ColumnCodec<$fty>>::to_array(
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
                    let mut $field = <$crate::flat_codec!($($codec)?) as $crate::store::flat::ColumnCodec<$fty>>::from_column(
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
        [id: u64 as id, count: u32, score: f64, kept: bool, text: String, parent: Option<u64> as id, note: Option<String>]
    );

    /// `Row` as it was written before ids became text.
    #[derive(Debug, Clone, PartialEq)]
    struct LegacyRow {
        id: u64,
        count: u32,
        score: f64,
        kept: bool,
        text: String,
        parent: Option<u64>,
        note: Option<String>,
    }

    crate::flat_record!(
        LegacyRow,
        "flat_test_row",
        1,
        [id: u64, count: u32, score: f64, kept: bool, text: String, parent: Option<u64>, note: Option<String>]
    );

    #[test]
    fn ids_are_hex_text_and_legacy_integer_ids_still_read() {
        use arrow::array::AsArray;
        let row = |id, parent| Row {
            id,
            count: 1,
            score: 0.5,
            kept: true,
            text: "t".into(),
            parent,
            note: None,
        };
        let batch = <Row as crate::store::Record>::to_batch(&[row(u64::MAX - 1, None)]).unwrap();
        assert_eq!(
            batch.column(0).as_string::<i32>().value(0),
            "fffffffffffffffe"
        );
        assert!(batch.column(5).is_null(0));

        let dir = tempfile::tempdir().unwrap();
        let legacy = LegacyRow {
            id: (1 << 63) + 5,
            count: 1,
            score: 0.5,
            kept: true,
            text: "t".into(),
            parent: Some(7),
            note: None,
        };
        Stage::<LegacyRow>::open(dir.path(), 0)
            .unwrap()
            .commit(std::slice::from_ref(&legacy))
            .unwrap();
        let back = Stage::<Row>::read(dir.path()).unwrap();
        assert_eq!(back, vec![row((1 << 63) + 5, Some(7))]);
        assert_eq!(super::parse_id("8000000000000005"), Some((1 << 63) + 5));
        assert_eq!(super::parse_id("8000000000000005 "), None);
        assert_eq!(super::parse_id("+000000000000005"), None);
    }

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
