//! One stage folder of Parquet parts: [`StageDir`] commits and reads record batches of one Arrow
//! schema; [`Stage`] does the same for rows of a [`Record`] type.
//!
//! Parts are `part-<worker:04>-<seq:06>.parquet`. A writer owns one worker id; its next sequence
//! number continues after the highest committed part of that worker, so a resumed writer never
//! overwrites what an earlier run committed. Temp files left by a crash are removed when the same
//! worker reopens the stage, and are never read.

use std::fs::{self, File};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, new_null_array};
use arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use super::atomic::{is_temp_name, write_atomic_with};
use super::record::Record;
use super::{RECORD_KIND_KEY, SCHEMA_VERSION_KEY, StoreError};

/// The file name of part `seq` of `worker`.
pub fn part_name(worker: u32, seq: u64) -> String {
    format!("part-{worker:04}-{seq:06}.parquet")
}

/// `(worker, seq)` when `name` is a committed part's name.
fn parse_part_name(name: &str) -> Option<(u32, u64)> {
    let stem = name.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let (worker, seq) = stem.split_once('-')?;
    if worker.is_empty()
        || seq.is_empty()
        || !worker
            .bytes()
            .chain(seq.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    Some((worker.parse().ok()?, seq.parse().ok()?))
}

/// A folder of committed Parquet parts sharing one Arrow schema.
#[derive(Debug)]
pub struct StageDir {
    dir: PathBuf,
    schema: SchemaRef,
    kind: String,
    schema_version: u32,
    worker: u32,
    next_seq: u64,
}

/// Rows committed in the stage folder `dir` (0 when it does not exist), from the parts' Parquet
/// footers: nothing is written and no data is read.
pub fn committed_rows(dir: &Path) -> Result<u64, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StoreError::io(dir)(e)),
    };
    let mut rows = 0u64;
    for entry in entries {
        let entry = entry.map_err(StoreError::io(dir))?;
        if parse_part_name(&entry.file_name().to_string_lossy()).is_none() {
            continue;
        }
        let path = entry.path();
        let file = File::open(&path).map_err(StoreError::io(&path))?;
        let footer = parquet::file::reader::SerializedFileReader::new(file).map_err(|e| {
            StoreError::DamagedPart {
                path: path.clone(),
                source: Box::new(e),
            }
        })?;
        use parquet::file::reader::FileReader;
        rows += footer.metadata().file_metadata().num_rows().max(0) as u64;
    }
    Ok(rows)
}

impl StageDir {
    /// Opens (creating it if needed) the stage folder `dir` for `worker`, removing that worker's
    /// leftover temp files from an interrupted run.
    pub fn open(
        dir: &Path,
        kind: &str,
        schema: SchemaRef,
        schema_version: u32,
        worker: u32,
    ) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let mut next_seq = 0;
        let own_prefix = format!(".part-{worker:04}-");
        for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
            let entry = entry.map_err(StoreError::io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some((w, seq)) = parse_part_name(&name) {
                if w == worker {
                    next_seq = next_seq.max(seq + 1);
                }
            } else if is_temp_name(&name) && name.starts_with(&own_prefix) {
                fs::remove_file(entry.path()).map_err(StoreError::io(entry.path()))?;
            }
        }
        Ok(StageDir {
            dir: dir.to_path_buf(),
            schema,
            kind: kind.to_string(),
            schema_version,
            worker,
            next_seq,
        })
    }

    /// The stage folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Commits `batch` as this worker's next part and returns its path. The part exists under
    /// its final name only once it is complete and durable.
    pub fn commit(&mut self, batch: &RecordBatch) -> Result<PathBuf, StoreError> {
        let dest = self.dir.join(part_name(self.worker, self.next_seq));
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_key_value_metadata(Some(vec![
                KeyValue::new(
                    SCHEMA_VERSION_KEY.to_string(),
                    self.schema_version.to_string(),
                ),
                KeyValue::new(RECORD_KIND_KEY.to_string(), self.kind.clone()),
            ]))
            .build();
        let parquet_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Parquet { path, source }
        };
        write_atomic_with::<_, StoreError>(&dest, |file| {
            let mut writer = ArrowWriter::try_new(&mut *file, self.schema.clone(), Some(props))
                .map_err(parquet_err(&dest))?;
            writer.write(batch).map_err(parquet_err(&dest))?;
            writer.close().map_err(parquet_err(&dest))?;
            Ok(())
        })?;
        self.next_seq += 1;
        Ok(dest)
    }

    /// The committed parts of every worker, in (worker, seq) order. Temp files are ignored.
    pub fn committed_parts(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut parts = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(StoreError::io(&self.dir))? {
            let entry = entry.map_err(StoreError::io(&self.dir))?;
            if let Some(key) = parse_part_name(&entry.file_name().to_string_lossy()) {
                parts.push((key, entry.path()));
            }
        }
        parts.sort();
        Ok(parts.into_iter().map(|(_, p)| p).collect())
    }

    /// Reads every committed part, projected onto this stage's schema (columns a part lacks are
    /// filled with nulls when nullable), with the path each batch came from.
    pub fn read_all(&self) -> Result<Vec<(PathBuf, RecordBatch)>, StoreError> {
        let mut out = Vec::new();
        for path in self.committed_parts()? {
            for batch in self.read_part(&path)? {
                out.push((path.clone(), batch));
            }
        }
        Ok(out)
    }

    fn read_part(&self, path: &Path) -> Result<Vec<RecordBatch>, StoreError> {
        let damaged = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::DamagedPart {
            path: path.to_path_buf(),
            source,
        };
        let parquet_err = |e: parquet::errors::ParquetError| damaged(Box::new(e));
        let file = File::open(path).map_err(StoreError::io(path))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(parquet_err)?;
        let kv = builder.metadata().file_metadata().key_value_metadata();
        let lookup = |key: &str| {
            kv.and_then(|kv| kv.iter().find(|e| e.key == key))
                .and_then(|e| e.value.clone())
        };
        let version: u32 = lookup(SCHEMA_VERSION_KEY)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::NoSchemaVersion {
                path: path.to_path_buf(),
            })?;
        if version > self.schema_version {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found: version,
                supported: self.schema_version,
            });
        }
        let found_kind = lookup(RECORD_KIND_KEY).unwrap_or_default();
        if found_kind != self.kind {
            return Err(StoreError::WrongRecord {
                path: path.to_path_buf(),
                expected: self.kind.clone(),
                found: found_kind,
            });
        }
        let reader = builder.build().map_err(parquet_err)?;
        let mut batches = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| damaged(Box::new(e)))?;
            batches.push(self.project(batch, path)?);
        }
        Ok(batches)
    }

    /// `batch` in this stage's schema: columns by name, missing nullable columns as nulls.
    fn project(&self, batch: RecordBatch, path: &Path) -> Result<RecordBatch, StoreError> {
        if batch.schema() == self.schema {
            return Ok(batch);
        }
        let column_err = |column: &str, problem: String| StoreError::Column {
            path: path.to_path_buf(),
            column: column.to_string(),
            problem,
        };
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for field in self.schema.fields() {
            match batch.column_by_name(field.name()) {
                Some(col) if col.data_type() == field.data_type() => columns.push(col.clone()),
                // Ids were UInt64 columns before they became hex text: read as their text.
                Some(col) if is_legacy_id(col.data_type(), field.data_type()) => {
                    let ids = col.as_primitive::<arrow::datatypes::UInt64Type>();
                    columns.push(Arc::new(arrow::array::StringArray::from(
                        ids.iter()
                            .map(|id| id.map(super::flat::id_text))
                            .collect::<Vec<_>>(),
                    )))
                }
                Some(col) => {
                    return Err(column_err(
                        field.name(),
                        format!(
                            "type {} where {} is expected",
                            col.data_type(),
                            field.data_type()
                        ),
                    ));
                }
                None if field.is_nullable() => {
                    columns.push(new_null_array(field.data_type(), batch.num_rows()))
                }
                None => {
                    return Err(column_err(
                        field.name(),
                        "missing (and not nullable)".to_string(),
                    ));
                }
            }
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|source| {
            StoreError::Arrow {
                path: path.to_path_buf(),
                source,
            }
        })
    }
}

/// A column written as UInt64 where the record now has Utf8: an id of a part written before ids
/// became hex text (see [`super::flat::IdColumn`]).
fn is_legacy_id(found: &arrow::datatypes::DataType, expected: &arrow::datatypes::DataType) -> bool {
    use arrow::datatypes::DataType;
    *found == DataType::UInt64 && *expected == DataType::Utf8
}

/// A stage folder of rows of one [`Record`] type.
#[derive(Debug)]
pub struct Stage<R: Record> {
    inner: StageDir,
    rows: PhantomData<fn() -> R>,
}

impl<R: Record> Stage<R> {
    /// Opens the stage folder `dir` for `worker` (see [`StageDir::open`]).
    pub fn open(dir: &Path, worker: u32) -> Result<Self, StoreError> {
        Ok(Stage {
            inner: StageDir::open(dir, R::KIND, R::schema(), R::SCHEMA_VERSION, worker)?,
            rows: PhantomData,
        })
    }

    /// Commits `rows` as one part; an empty slice commits nothing and returns `None`.
    pub fn commit(&mut self, rows: &[R]) -> Result<Option<PathBuf>, StoreError> {
        if rows.is_empty() {
            return Ok(None);
        }
        self.commit_table(rows).map(Some)
    }

    /// Commits `rows` as one part, an empty one included: a result table then always has a part
    /// that carries its schema, so readers that glob `part-*.parquet` (polars, DuckDB, HF) work on a
    /// table with no rows.
    pub fn commit_table(&mut self, rows: &[R]) -> Result<PathBuf, StoreError> {
        let batch = R::to_batch(rows).map_err(|source| StoreError::Arrow {
            path: self.inner.dir.clone(),
            source,
        })?;
        self.inner.commit(&batch)
    }

    /// Every committed row of the stage folder `dir`, in part order, without opening it for
    /// writing (no folder is created, no temp file removed); a missing folder has no rows.
    pub fn read(dir: &Path) -> Result<Vec<R>, StoreError> {
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        Stage::<R> {
            inner: StageDir {
                dir: dir.to_path_buf(),
                schema: R::schema(),
                kind: R::KIND.to_string(),
                schema_version: R::SCHEMA_VERSION,
                worker: u32::MAX,
                next_seq: 0,
            },
            rows: PhantomData,
        }
        .read_all()
    }

    /// Every committed row, in part order.
    pub fn read_all(&self) -> Result<Vec<R>, StoreError> {
        let mut rows = Vec::new();
        for (path, batch) in self.inner.read_all()? {
            rows.extend(R::from_batch(&batch, &path)?);
        }
        Ok(rows)
    }

    /// The untyped stage.
    pub fn dir(&self) -> &StageDir {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{Columns, opt_str};
    use arrow::array::{StringArray, UInt32Array};
    use arrow::datatypes::{DataType, Field, Schema, UInt32Type};

    #[derive(Debug, Clone, PartialEq)]
    struct Row {
        id: u32,
        text: String,
        note: Option<String>,
    }

    fn schema_v1() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::UInt32, false),
            Field::new("text", DataType::Utf8, false),
        ]))
    }

    impl Record for Row {
        const KIND: &'static str = "test_row";
        const SCHEMA_VERSION: u32 = 2;
        fn schema() -> SchemaRef {
            let mut fields: Vec<Field> = schema_v1()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.push(Field::new("note", DataType::Utf8, true));
            Arc::new(Schema::new(fields))
        }
        fn to_batch(rows: &[Self]) -> Result<RecordBatch, arrow::error::ArrowError> {
            RecordBatch::try_new(
                Self::schema(),
                vec![
                    Arc::new(UInt32Array::from_iter_values(rows.iter().map(|r| r.id))),
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| r.text.as_str()),
                    )),
                    Arc::new(StringArray::from_iter(
                        rows.iter().map(|r| r.note.as_deref()),
                    )),
                ],
            )
        }
        fn from_batch(batch: &RecordBatch, path: &Path) -> Result<Vec<Self>, StoreError> {
            let c = Columns::new(batch, path);
            let (id, text, note) = (
                c.primitive::<UInt32Type>("id")?,
                c.utf8("text")?,
                c.utf8("note")?,
            );
            Ok((0..batch.num_rows())
                .map(|i| Row {
                    id: id.value(i),
                    text: text.value(i).to_string(),
                    note: opt_str(note, i),
                })
                .collect())
        }
    }

    fn rows(ids: std::ops::Range<u32>) -> Vec<Row> {
        ids.map(|id| Row {
            id,
            text: format!("row {id}"),
            note: (id % 2 == 0).then(|| "even".to_string()),
        })
        .collect()
    }

    #[test]
    fn round_trip_across_parts_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut stage = Stage::<Row>::open(dir.path(), 0).unwrap();
        let first = stage.commit(&rows(0..3)).unwrap().unwrap();
        stage.commit(&rows(3..5)).unwrap();
        assert!(stage.commit(&[]).unwrap().is_none());
        assert_eq!(first.file_name().unwrap(), "part-0000-000000.parquet");
        drop(stage);
        // A resumed writer continues the sequence and never overwrites.
        let mut stage = Stage::<Row>::open(dir.path(), 0).unwrap();
        let third = stage.commit(&rows(5..6)).unwrap().unwrap();
        assert_eq!(third.file_name().unwrap(), "part-0000-000002.parquet");
        // Another worker's parts are read too, ordered by (worker, seq).
        let mut other = Stage::<Row>::open(dir.path(), 1).unwrap();
        other.commit(&rows(6..7)).unwrap();
        assert_eq!(stage.read_all().unwrap(), rows(0..7));
    }

    #[test]
    fn a_damaged_part_is_named_with_the_way_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let mut stage = Stage::<Row>::open(dir.path(), 0).unwrap();
        stage.commit(&rows(0..3)).unwrap();
        let part = stage.commit(&rows(3..5)).unwrap().unwrap();
        let bytes = std::fs::read(&part).unwrap();
        std::fs::write(&part, &bytes[..bytes.len() / 2]).unwrap();
        let err = stage.read_all().unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, StoreError::DamagedPart { .. }), "{message}");
        assert!(
            message.contains(&part.display().to_string())
                && message.contains("delete this file and run the same command again"),
            "{message}"
        );
        // Deleting it is the recovery: the rest reads back.
        std::fs::remove_file(&part).unwrap();
        assert_eq!(stage.read_all().unwrap(), rows(0..3));
    }

    #[test]
    fn crash_leftover_temp_is_never_read_and_is_cleaned_on_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut stage = Stage::<Row>::open(dir.path(), 0).unwrap();
        stage.commit(&rows(0..2)).unwrap();
        // Simulate a crash mid-commit: a complete-looking Parquet file under the temp name, and
        // a truncated one, as a writer killed before its rename leaves them.
        let full = stage.dir().committed_parts().unwrap()[0].clone();
        let bytes = fs::read(&full).unwrap();
        let tmp_complete = dir.path().join(".part-0000-000001.parquet.tmp-99999");
        let tmp_truncated = dir.path().join(".part-0000-000002.parquet.tmp-99998");
        fs::write(&tmp_complete, &bytes).unwrap();
        fs::write(&tmp_truncated, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(stage.dir().committed_parts().unwrap(), vec![full.clone()]);
        assert_eq!(
            stage.read_all().unwrap(),
            rows(0..2),
            "temp files are not results"
        );
        drop(stage);
        let mut stage = Stage::<Row>::open(dir.path(), 0).unwrap();
        assert!(
            !tmp_complete.exists() && !tmp_truncated.exists(),
            "own temps removed on reopen"
        );
        stage.commit(&rows(2..3)).unwrap();
        assert_eq!(stage.read_all().unwrap(), rows(0..3));
    }

    #[test]
    fn older_parts_read_with_new_nullable_columns_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = StageDir::open(dir.path(), Row::KIND, schema_v1(), 1, 0).unwrap();
        let batch = RecordBatch::try_new(
            schema_v1(),
            vec![
                Arc::new(UInt32Array::from(vec![7])),
                Arc::new(StringArray::from(vec!["old"])),
            ],
        )
        .unwrap();
        old.commit(&batch).unwrap();
        let stage = Stage::<Row>::open(dir.path(), 0).unwrap();
        assert_eq!(
            stage.read_all().unwrap(),
            vec![Row {
                id: 7,
                text: "old".into(),
                note: None
            }]
        );
    }

    #[test]
    fn newer_schema_and_foreign_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut newer = StageDir::open(dir.path(), Row::KIND, Row::schema(), 3, 0).unwrap();
        newer.commit(&Row::to_batch(&rows(0..1)).unwrap()).unwrap();
        let err = Stage::<Row>::open(dir.path(), 1)
            .unwrap()
            .read_all()
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NewerSchema {
                    found: 3,
                    supported: 2,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("part-0000-000000.parquet"));

        let dir = tempfile::tempdir().unwrap();
        let mut other = StageDir::open(dir.path(), "something_else", Row::schema(), 1, 0).unwrap();
        other.commit(&Row::to_batch(&rows(0..1)).unwrap()).unwrap();
        let err = Stage::<Row>::open(dir.path(), 0)
            .unwrap()
            .read_all()
            .unwrap_err();
        assert!(matches!(err, StoreError::WrongRecord { .. }), "{err}");

        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("part-0000-000000.parquet"),
            b"PAR1 not really",
        )
        .unwrap();
        let err = Stage::<Row>::open(dir.path(), 0)
            .unwrap()
            .read_all()
            .unwrap_err();
        assert!(
            err.to_string().contains("part-0000-000000.parquet"),
            "{err}"
        );
    }

    #[test]
    fn part_names_parse_strictly() {
        assert_eq!(parse_part_name("part-0003-000012.parquet"), Some((3, 12)));
        assert_eq!(parse_part_name(&part_name(12, 345)), Some((12, 345)));
        for bad in [
            "part-0003-000012.parquet.tmp",
            ".part-0003-000012.parquet.tmp-1",
            "part--1.parquet",
            "part-a-1.parquet",
        ] {
            assert_eq!(parse_part_name(bad), None, "{bad}");
        }
    }
}
