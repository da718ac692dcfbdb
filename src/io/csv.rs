//! CSV tables: column names and records from typed rows, reading result
//! files back, writing them atomically, and a lock per output name.

use crate::error::{Error, Result};
use serde::ser::{self, Impossible, Serialize};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A CSV file as (header, rows).
pub type Table = (Vec<String>, Vec<Vec<String>>);

/// Reads an existing CSV as (header, rows); `None` when the file does not exist.
pub fn read_csv(path: &Path) -> Result<Option<Table>> {
    let Some(mut rows) = CsvRows::open(path)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    while let Some(r) = rows.next_row()? {
        out.push(r.iter().map(String::from).collect());
    }
    Ok(Some((rows.header, out)))
}

/// An existing CSV read one row at a time.
pub struct CsvRows {
    path: PathBuf,
    pub header: Vec<String>,
    reader: csv::Reader<File>,
    record: csv::StringRecord,
}

impl CsvRows {
    /// Opens `path` and reads its header; `None` when the file does not exist.
    pub fn open(path: &Path) -> Result<Option<CsvRows>> {
        if !path.exists() {
            return Ok(None);
        }
        let csv_err = |e| Error::Csv {
            path: path.into(),
            source: e,
        };
        let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
        let header = reader
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(String::from)
            .collect();
        Ok(Some(CsvRows {
            path: path.into(),
            header,
            reader,
            record: csv::StringRecord::new(),
        }))
    }

    /// The next row; `None` at the end.
    pub fn next_row(&mut self) -> Result<Option<&csv::StringRecord>> {
        match self.reader.read_record(&mut self.record) {
            Ok(true) => Ok(Some(&self.record)),
            Ok(false) => Ok(None),
            Err(e) => Err(Error::Csv {
                path: self.path.clone(),
                source: e,
            }),
        }
    }
}

/// Writes a CSV atomically (see [`AtomicFile`]).
pub fn write_csv_atomic<'a>(
    path: &Path,
    header: &[String],
    rows: impl IntoIterator<Item = &'a Vec<String>>,
) -> Result<()> {
    let mut out = AtomicFile::create(path)?;
    out.record(header)?;
    for r in rows {
        out.record(r)?;
    }
    out.finish()
}

/// Writes a file atomically (see [`AtomicFile`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut out = AtomicFile::create(path)?;
    out.write(bytes)?;
    out.finish()
}

/// Appends one CSV record (quoted where needed, `\n`-terminated) to `out`:
/// the bytes a CSV writer writes for it.
pub fn encode_record<T: AsRef<[u8]>>(fields: impl IntoIterator<Item = T>, out: &mut Vec<u8>) {
    let mut w = csv::WriterBuilder::new()
        .buffer_capacity(1024)
        .from_writer(out);
    w.write_record(fields).expect("writing to memory");
    w.flush().expect("writing to memory");
}

/// A file written atomically, in a stream: bytes go to a temporary file
/// with a unique name beside it (created exclusively, so no existing file
/// or link is followed); [`AtomicFile::finish`] syncs it to disk and
/// renames it over `path`. On any error, or dropped unfinished, the
/// temporary file is removed and `path` is untouched.
pub struct AtomicFile {
    path: PathBuf,
    out: BufWriter<tempfile::NamedTempFile>,
    record: Vec<u8>,
}

impl AtomicFile {
    /// Starts the temporary file beside `path`.
    pub fn create(path: &Path) -> Result<AtomicFile> {
        let dir = parent_dir(path);
        let name = path
            .file_name()
            .map_or("out".into(), |n| n.to_string_lossy());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| Error::io(dir, e))?;
        Ok(AtomicFile {
            path: path.into(),
            out: BufWriter::with_capacity(1 << 16, tmp),
            record: Vec::new(),
        })
    }

    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))
    }

    /// Appends one CSV record.
    pub fn record<T: AsRef<[u8]>>(&mut self, fields: impl IntoIterator<Item = T>) -> Result<()> {
        let mut rec = std::mem::take(&mut self.record);
        rec.clear();
        encode_record(fields, &mut rec);
        let done = self.write(&rec);
        self.record = rec;
        done
    }

    /// Syncs the file and renames it over the path.
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        let tmp = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        tmp.as_file().sync_all().map_err(|e| Error::io(&path, e))?;
        tmp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
        // The rename is durable once the folder is synced (best effort: not
        // every file system lets a folder be opened for that).
        if let Ok(d) = File::open(parent_dir(&path)) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An exclusive claim on the result files `OUT/NAME.*`, held from before the
/// first write to the end of the run: a second run into the same `--out`
/// and name gets a clear error at once instead of clobbering the first
/// one's rows. An OS file lock, so a killed run never leaves it held.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    _file: File,
}

impl OutputLock {
    /// Takes the lock file `OUT/NAME.lock`, creating `OUT` if needed.
    pub fn acquire(out_dir: &Path, name: &str) -> Result<OutputLock> {
        std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
        let path = out_dir.join(format!("{name}.lock"));
        loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let held_by = std::fs::read_to_string(&path).unwrap_or_default();
                    let who = match held_by.trim() {
                        "" => String::new(),
                        pid => format!(" (process {pid})"),
                    };
                    return Err(Error::Results {
                        path: out_dir.join(name),
                        msg: format!(
                            "another zebra run{who} is writing these results; wait for it to finish, or pass --out DIR to write elsewhere"
                        ),
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
            }
            // A run that finished between our open and lock removed the
            // file we hold: lock the one now at `path` instead.
            if !same_file(&file, &path) {
                continue;
            }
            file.set_len(0).map_err(|e| Error::io(&path, e))?;
            write!(file, "{}", std::process::id()).map_err(|e| Error::io(&path, e))?;
            return Ok(OutputLock { path, _file: file });
        }
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked, so no other run can hold this file.
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// The column names of row type `R`: its field names in order, the fields
/// of nested structs in their place. The header of a file and the values
/// of its rows both come from the one struct, so they cannot disagree.
pub fn columns<R: Serialize + Default>() -> Vec<String> {
    let mut names = Vec::new();
    R::default()
        .serialize(FieldNames {
            out: &mut names,
            name: None,
        })
        .expect("a row type is a struct of plain fields");
    names
}

/// One row as CSV fields, in the order of [`columns`].
pub fn record<R: Serialize>(row: &R) -> Vec<String> {
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    w.serialize(row)
        .expect("a row type is a struct of plain fields");
    let bytes = w.into_inner().expect("writing to memory");
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&bytes[..]);
    let rec = r
        .records()
        .next()
        .expect("one record")
        .expect("a record just written");
    rec.iter().map(String::from).collect()
}

/// Collects field names: a serializer that records the name of every plain
/// value it is given and descends into structs.
struct FieldNames<'a> {
    out: &'a mut Vec<String>,
    name: Option<&'static str>,
}

#[derive(Debug)]
struct NotARow(String);

impl std::fmt::Display for NotARow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotARow {}

impl ser::Error for NotARow {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        NotARow(msg.to_string())
    }
}

impl FieldNames<'_> {
    fn leaf(self) -> Result<(), NotARow> {
        match self.name {
            Some(n) => {
                self.out.push(n.to_string());
                Ok(())
            }
            None => Err(NotARow("a row must be a struct".into())),
        }
    }
}

macro_rules! leaves {
    ($($method:ident($($t:ty)?)),* $(,)?) => {
        $(fn $method(self $(, _v: $t)?) -> Result<(), NotARow> { self.leaf() })*
    };
}

impl<'a> ser::Serializer for FieldNames<'a> {
    type Ok = ();
    type Error = NotARow;
    type SerializeSeq = Impossible<(), NotARow>;
    type SerializeTuple = Impossible<(), NotARow>;
    type SerializeTupleStruct = Impossible<(), NotARow>;
    type SerializeTupleVariant = Impossible<(), NotARow>;
    type SerializeMap = Impossible<(), NotARow>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), NotARow>;

    leaves!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
    );

    fn serialize_some<T: ?Sized + Serialize>(self, _v: &T) -> Result<(), NotARow> {
        self.leaf()
    }
    fn serialize_unit_struct(self, _n: &'static str) -> Result<(), NotARow> {
        self.leaf()
    }
    fn serialize_unit_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
    ) -> Result<(), NotARow> {
        self.leaf()
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        _v: &T,
    ) -> Result<(), NotARow> {
        self.leaf()
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _value: &T,
    ) -> Result<(), NotARow> {
        self.leaf()
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, NotARow> {
        Err(NotARow("a row field cannot be a sequence".into()))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, NotARow> {
        Err(NotARow("a row field cannot be a tuple".into()))
    }
    fn serialize_tuple_struct(
        self,
        _n: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, NotARow> {
        Err(NotARow("a row field cannot be a tuple struct".into()))
    }
    fn serialize_tuple_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, NotARow> {
        Err(NotARow("a row field cannot be a tuple variant".into()))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, NotARow> {
        Err(NotARow("a row field cannot be a map".into()))
    }
    fn serialize_struct(self, _n: &'static str, _len: usize) -> Result<Self, NotARow> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _n: &'static str,
        _i: u32,
        _v: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, NotARow> {
        Err(NotARow("a row field cannot be a struct variant".into()))
    }
}

impl ser::SerializeStruct for FieldNames<'_> {
    type Ok = ();
    type Error = NotARow;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), NotARow> {
        value.serialize(FieldNames {
            out: self.out,
            name: Some(key),
        })
    }
    fn end(self) -> Result<(), NotARow> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Default, Serialize)]
    struct Inner {
        b: f64,
        c: Option<u32>,
    }

    #[derive(Default, Serialize)]
    struct Row {
        a: String,
        inner: Inner,
        d: bool,
    }

    #[test]
    fn columns_and_records_flatten_nested_structs_in_order() {
        assert_eq!(columns::<Row>(), ["a", "b", "c", "d"]);
        let row = Row {
            a: "x,y".into(),
            inner: Inner { b: 1.5, c: None },
            d: true,
        };
        assert_eq!(record(&row), ["x,y", "1.5", "", "true"]);
    }

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let header = vec!["a".to_string(), "b".to_string()];
        write_csv_atomic(&path, &header, &[vec!["1".into(), "2".into()]]).unwrap();
        write_csv_atomic(&path, &header, &[vec!["3".into(), "4".into()]]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a,b\n3,4\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["r.csv"]);
    }

    #[cfg(unix)]
    #[test]
    fn atomic_writes_do_not_follow_an_old_temporary_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.txt");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("r.csv.tmp")).unwrap();
        let path = dir.path().join("r.csv");
        write_csv_atomic(&path, &["a".to_string()], &[vec!["1".into()]]).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\n1\n");
    }

    #[test]
    fn a_second_lock_on_one_name_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = OutputLock::acquire(dir.path(), "exp").unwrap();
        let err = OutputLock::acquire(dir.path(), "exp")
            .unwrap_err()
            .to_string();
        assert!(err.contains("another zebra run"), "{err}");
        assert!(err.contains(&std::process::id().to_string()), "{err}");
        OutputLock::acquire(dir.path(), "other").unwrap();
        drop(first);
        assert!(!dir.path().join("exp.lock").exists());
        OutputLock::acquire(dir.path(), "exp").unwrap();
    }
}
