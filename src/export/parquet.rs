//! The two datasets' Parquet files: their schemas, and a writer that
//! buffers each column and writes a row group every [`ROW_GROUP`] rows,
//! zstd-compressed. Written through the `parquet` crate's column writers,
//! not Arrow arrays: the rows are already typed, and arrow-rs's array
//! crates would double the build for a copy we do not need.
//!
//! Types are the engines' own: addresses as strings, times as UTC
//! millisecond timestamps, percentages as exact decimals (two places, as
//! the wire carries them), counters as unsigned integers, the day as a
//! date. DuckDB, ClickHouse, Trino and Spark read each as such.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use crate::report::DaySummary;
use crate::report::summary::SizeSummary;
use crate::wire::Row;

/// `rows`: one accepted datagram per row.
const ROWS_SCHEMA: &str = "message vmstats_rows {
    REQUIRED BYTE_ARRAY vm (STRING);
    REQUIRED INT64 recv_ms (TIMESTAMP(MILLIS,true));
    REQUIRED INT64 ts_ms (TIMESTAMP(MILLIS,true));
    REQUIRED INT32 boot_id (INTEGER(32,false));
    REQUIRED INT64 seq (INTEGER(64,false));
    REQUIRED INT32 interval_s (INTEGER(16,false));
    REQUIRED INT32 vcpus (INTEGER(16,false));
    REQUIRED INT32 mem_mib (INTEGER(32,false));
    REQUIRED INT32 cpu_pct (DECIMAL(5,2));
    REQUIRED INT32 mem_pct (DECIMAL(5,2));
    REQUIRED INT64 net_rx_bytes (INTEGER(64,false));
    REQUIRED INT64 net_tx_bytes (INTEGER(64,false));
    REQUIRED INT64 disk_read_bytes (INTEGER(64,false));
    REQUIRED INT64 disk_write_bytes (INTEGER(64,false));
    REQUIRED BOOLEAN final;
    REQUIRED BOOLEAN authenticated;
}";

/// `vm_days`: one VM's day, as the report summarizes it.
const VM_DAYS_SCHEMA: &str = "message vmstats_vm_days {
    REQUIRED BYTE_ARRAY vm (STRING);
    REQUIRED INT32 day (DATE);
    REQUIRED INT64 samples;
    REQUIRED DOUBLE cpu_avg;
    REQUIRED DOUBLE cpu_p95;
    REQUIRED DOUBLE cpu_max;
    REQUIRED DOUBLE mem_max;
    REQUIRED INT64 net_bytes (INTEGER(64,false));
    REQUIRED INT64 disk_bytes (INTEGER(64,false));
    REQUIRED BOOLEAN idle;
    REQUIRED INT32 vcpus (INTEGER(16,false));
    REQUIRED INT32 mem_mib (INTEGER(32,false));
}";

/// Rows per row group: about 100 MB of buffered columns, and groups large
/// enough for the engines to skip by their statistics.
const ROW_GROUP: usize = 1 << 20;

/// zstd's level: 3, its default, compresses these columns within a few
/// percent of level 9 at several times the speed.
const ZSTD_LEVEL: i32 = 3;

/// One column's buffered values.
enum Values {
    Bool(Vec<bool>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Str(Vec<ByteArray>),
}

/// A Parquet file being written under a temporary name, renamed to its
/// own by [`Table::finish`].
struct Table {
    writer: SerializedFileWriter<File>,
    columns: Vec<Values>,
    rows: usize,
    tmp: PathBuf,
    path: PathBuf,
}

impl Table {
    fn create(path: &Path, schema: &str) -> Result<Table, ParquetError> {
        let schema = Arc::new(parse_message_type(schema)?);
        let columns = schema
            .get_fields()
            .iter()
            .map(|f| match f.get_physical_type() {
                parquet::basic::Type::BOOLEAN => Values::Bool(Vec::new()),
                parquet::basic::Type::INT32 => Values::I32(Vec::new()),
                parquet::basic::Type::INT64 => Values::I64(Vec::new()),
                parquet::basic::Type::DOUBLE => Values::F64(Vec::new()),
                _ => Values::Str(Vec::new()),
            })
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(ZSTD_LEVEL)?))
            .set_created_by(format!("vmstats {}", crate::VERSION))
            .build();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("part");
        let tmp = path.with_file_name(format!(".{name}.tmp"));
        let file = File::create(&tmp)?;
        let writer = SerializedFileWriter::new(file, schema, Arc::new(props))?;
        Ok(Table {
            writer,
            columns,
            rows: 0,
            tmp,
            path: path.to_path_buf(),
        })
    }

    fn bool(&mut self, col: usize, v: bool) {
        match &mut self.columns[col] {
            Values::Bool(c) => c.push(v),
            _ => unreachable!("column {col} is not BOOLEAN"),
        }
    }

    fn i32(&mut self, col: usize, v: i32) {
        match &mut self.columns[col] {
            Values::I32(c) => c.push(v),
            _ => unreachable!("column {col} is not INT32"),
        }
    }

    fn i64(&mut self, col: usize, v: i64) {
        match &mut self.columns[col] {
            Values::I64(c) => c.push(v),
            _ => unreachable!("column {col} is not INT64"),
        }
    }

    fn f64(&mut self, col: usize, v: f64) {
        match &mut self.columns[col] {
            Values::F64(c) => c.push(v),
            _ => unreachable!("column {col} is not DOUBLE"),
        }
    }

    fn str(&mut self, col: usize, v: &ByteArray) {
        match &mut self.columns[col] {
            Values::Str(c) => c.push(v.clone()),
            _ => unreachable!("column {col} is not BYTE_ARRAY"),
        }
    }

    /// Ends a row (every column pushed once), writing a row group when
    /// [`ROW_GROUP`] rows are buffered.
    fn end_row(&mut self) -> Result<(), ParquetError> {
        self.rows += 1;
        if self.rows >= ROW_GROUP {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ParquetError> {
        if self.rows == 0 {
            return Ok(());
        }
        let mut group = self.writer.next_row_group()?;
        let mut columns = self.columns.iter_mut();
        while let Some(mut col) = group.next_column()? {
            match columns.next().expect("a buffer per column") {
                Values::Bool(v) => col.typed::<BoolType>().write_batch(v, None, None)?,
                Values::I32(v) => col.typed::<Int32Type>().write_batch(v, None, None)?,
                Values::I64(v) => col.typed::<Int64Type>().write_batch(v, None, None)?,
                Values::F64(v) => col.typed::<DoubleType>().write_batch(v, None, None)?,
                Values::Str(v) => col.typed::<ByteArrayType>().write_batch(v, None, None)?,
            };
            col.close()?;
        }
        group.close()?;
        for c in &mut self.columns {
            match c {
                Values::Bool(v) => v.clear(),
                Values::I32(v) => v.clear(),
                Values::I64(v) => v.clear(),
                Values::F64(v) => v.clear(),
                Values::Str(v) => v.clear(),
            }
        }
        self.rows = 0;
        Ok(())
    }

    /// Writes what is buffered and the footer, then renames the file to
    /// its name: a reader sees the whole file or the one before.
    fn finish(mut self) -> Result<(), ParquetError> {
        self.flush()?;
        self.writer.finish()?;
        std::fs::rename(&self.tmp, &self.path)?;
        Ok(())
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // Not finished (an error on the way): no half file left behind.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A `rows` file.
pub struct RowsFile(Table);

impl RowsFile {
    pub fn create(path: &Path) -> Result<RowsFile, ParquetError> {
        Table::create(path, ROWS_SCHEMA).map(RowsFile)
    }

    pub fn push(&mut self, vm: &ByteArray, row: &Row) -> Result<(), ParquetError> {
        let s = &row.stat;
        let t = &mut self.0;
        t.str(0, vm);
        t.i64(1, row.recv_ms as i64);
        // The VM's own clock, which may claim anything: past i64 it is
        // kept at the largest timestamp rather than wrapped to a past one.
        t.i64(2, s.timestamp_ms.min(i64::MAX as u64) as i64);
        // Unsigned values travel as their bit patterns; the logical
        // types tell the engines to read them back unsigned.
        t.i32(3, s.boot_id as i32);
        t.i64(4, s.seq as i64);
        t.i32(5, i32::from(s.interval_s));
        t.i32(6, i32::from(s.vcpus));
        t.i32(7, s.mem_mib as i32);
        t.i32(8, i32::from(s.cpu_pct_x100));
        t.i32(9, i32::from(s.mem_pct_x100));
        t.i64(10, s.net_rx_bytes as i64);
        t.i64(11, s.net_tx_bytes as i64);
        t.i64(12, s.disk_read_bytes as i64);
        t.i64(13, s.disk_write_bytes as i64);
        t.bool(14, s.is_final());
        t.bool(15, row.verified);
        t.end_row()
    }

    pub fn finish(self) -> Result<(), ParquetError> {
        self.0.finish()
    }
}

/// A `vm_days` file.
pub struct VmDaysFile(Table);

impl VmDaysFile {
    pub fn create(path: &Path) -> Result<VmDaysFile, ParquetError> {
        Table::create(path, VM_DAYS_SCHEMA).map(VmDaysFile)
    }

    pub fn push(
        &mut self,
        vm: &ByteArray,
        d: &DaySummary,
        idle: bool,
        size: &SizeSummary,
    ) -> Result<(), ParquetError> {
        let t = &mut self.0;
        t.str(0, vm);
        t.i32(1, d.day.min(i32::MAX as u64) as i32);
        t.i64(2, d.samples as i64);
        t.f64(3, d.cpu_avg);
        t.f64(4, d.cpu_p95);
        t.f64(5, d.cpu_max);
        t.f64(6, d.mem_max);
        t.i64(7, d.net_bytes as i64);
        t.i64(8, d.disk_bytes as i64);
        t.bool(9, idle);
        t.i32(10, i32::from(size.vcpus));
        t.i32(11, size.mem_mib as i32);
        t.end_row()
    }

    pub fn finish(self) -> Result<(), ParquetError> {
        self.0.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn a_file_holds_its_rows_in_row_groups_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.parquet");
        let mut rows = RowsFile::create(&path).unwrap();
        let vm = ByteArray::from("127.0.0.1");
        let row = crate::wire::parse_row(
            b"1700000000000,1700000000000,7,42,60,4,8192,12.34,56.78,1,2,3,4,1",
        )
        .unwrap();
        for _ in 0..3 {
            rows.push(&vm, &row).unwrap();
        }
        rows.finish().unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x.parquet"]);
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 3);
        assert_eq!(meta.file_metadata().schema_descr().num_columns(), 16);
        let values: Vec<String> = reader
            .get_row_iter(None)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .get_column_iter()
            .map(|(name, v)| format!("{name}={v}"))
            .collect();
        let text = values.join(" ");
        for expect in [
            "vm=\"127.0.0.1\"",
            "boot_id=7",
            "seq=42",
            "cpu_pct=12.34",
            "final=true",
        ] {
            assert!(text.contains(expect), "{expect} not in {text}");
        }
    }

    #[test]
    fn an_unfinished_file_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let days = VmDaysFile::create(&dir.path().join("d.parquet")).unwrap();
        drop(days);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
