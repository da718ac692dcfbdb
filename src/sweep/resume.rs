//! The one prepare/resume path of `run` and `accuracy`: a result file of
//! typed rows, its finished rows by resume key, and the rows of a run kept
//! on disk between rewrites.

use crate::error::{Error, Result};
use crate::io::csv::{columns, encode_record, record, AtomicFile, CsvRows};
use csv::StringRecord;
use serde::Serialize;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A result file whose rows are of one row type.
#[derive(Clone, Debug)]
pub struct ResultFile {
    pub path: PathBuf,
    /// The row type's columns, in order.
    pub columns: Vec<String>,
    /// Each column's value in the row type's default row.
    defaults: Vec<String>,
    /// Derived columns added after files of this type were first written: a
    /// file without them resumes with their defaults, which tell its runner
    /// to compute them.
    derived: Vec<String>,
}

/// Parameter columns added to the result files after results were first
/// written. Each is a parameter whose resume key includes it only when it
/// is not at its default, so a row whose key is wanted but whose file lacks
/// the column had the default: such files resume, the column filled in,
/// and are rewritten with it.
const ADDED_PARAMETERS: &[&str] = &["fs_sigma", "adc_sigma_lsb", "quantize"];

impl ResultFile {
    /// The file `dir/NAME` of rows of type `R`.
    pub fn of<R: Serialize + Default>(dir: &Path, name: &str) -> Self {
        ResultFile {
            path: dir.join(name),
            columns: columns::<R>(),
            defaults: record(&R::default()),
            derived: Vec::new(),
        }
    }

    /// The same file, accepting files that lack the `derived` columns.
    pub fn with_derived(self, derived: Vec<String>) -> Self {
        ResultFile { derived, ..self }
    }

    /// The index of column `name` (a name of the row type's fields).
    pub fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("{name} is not a column of {}", self.path.display()))
    }

    /// Streams the finished rows, when not `fresh`: calls `found(slots,
    /// row)` for each row, with the slots whose resume key (`keys[slot]`)
    /// is the row's (column `key`). Refuses, naming the way out, a file
    /// with other columns or with rows whose keys are not in `keys` (other
    /// parameters, or rows from a zebra whose model gives other results:
    /// their `version` column says which), so no result is ever dropped or
    /// recomputed silently.
    pub fn finished(
        &self,
        key: &str,
        keys: &[String],
        fresh: bool,
        mut found: impl FnMut(&[usize], &StringRecord) -> Result<()>,
    ) -> Result<()> {
        if fresh {
            return Ok(());
        }
        let Some(mut rows) = CsvRows::open(&self.path)? else {
            return Ok(());
        };
        let upgrade = self.upgrade(&rows.header).ok_or_else(|| {
            self.refuse(
                "has other columns than this version of zebra writes for this experiment".into(),
            )
        })?;
        let kc = self.col(key);
        let slots = slots_by_key(keys, |_| true);
        let mut stale = 0;
        let mut upgraded = StringRecord::new();
        while let Some(r) = rows.next_row()? {
            let r = match &upgrade {
                None => r,
                Some(from) => {
                    upgraded.clear();
                    for (at, d) in from.iter().zip(&self.defaults) {
                        upgraded.push_field(at.map_or(d.as_str(), |i| &r[i]));
                    }
                    &upgraded
                }
            };
            match slots.get(&r[kc]) {
                Some(s) => found(s, r)?,
                None => stale += 1,
            }
        }
        if stale > 0 {
            return Err(self.refuse(format!(
                "holds {stale} row(s) whose resume keys this experiment does not produce (other parameters, or results of a zebra version whose model differs: see the version column)"
            )));
        }
        Ok(())
    }

    /// How to read a file with `header`: `Some(None)` as it is, `Some(from)`
    /// taking column `c` from `from[c]` (or its default where `None`) when
    /// the header lacks only [`ADDED_PARAMETERS`], `None` when it cannot.
    #[allow(clippy::option_option)]
    fn upgrade(&self, header: &[String]) -> Option<Option<Vec<Option<usize>>>> {
        if header == self.columns {
            return Some(None);
        }
        let kept: Vec<&String> = self
            .columns
            .iter()
            .filter(|c| {
                header.contains(c)
                    || !(ADDED_PARAMETERS.contains(&c.as_str()) || self.derived.contains(c))
            })
            .collect();
        if kept.len() != header.len() || kept.iter().zip(header).any(|(a, b)| *a != b) {
            return None;
        }
        Some(Some(
            self.columns
                .iter()
                .map(|c| header.iter().position(|h| h == c))
                .collect(),
        ))
    }

    fn refuse(&self, why: String) -> Error {
        Error::Results {
            path: self.path.clone(),
            msg: format!("{why}; pass --fresh to overwrite it or --out DIR to write elsewhere"),
        }
    }

    /// Streams the rows of a companion file (histograms, per-chip
    /// accuracies), when not `fresh`: calls `found(row)` for each. Nothing
    /// when it is missing or has other columns, so its rows are recomputed.
    pub fn companion_rows(
        &self,
        fresh: bool,
        mut found: impl FnMut(&StringRecord) -> Result<()>,
    ) -> Result<()> {
        if fresh {
            return Ok(());
        }
        let Some(mut rows) = CsvRows::open(&self.path)? else {
            return Ok(());
        };
        if rows.header != self.columns {
            return Ok(());
        }
        while let Some(r) = rows.next_row()? {
            found(r)?;
        }
        Ok(())
    }
}

/// The rows of one result file while a run rewrites it, by slot (one slot
/// per (point, mapping), in file order). Each row is written once, as CSV,
/// to an anonymous temporary file beside the results and found again by
/// byte range, so memory holds a few ranges per slot, not the rows: a
/// rewrite copies them from there.
#[derive(Debug)]
pub struct RowStore {
    dir: PathBuf,
    file: File,
    /// Bytes in `file`.
    len: u64,
    /// Rows not yet in `file`.
    pending: Vec<u8>,
    slots: Vec<Slot>,
}

/// Where a slot's rows lie in the store, in order.
#[derive(Clone, Debug, Default)]
struct Slot {
    spans: Vec<Range<u64>>,
    rows: usize,
}

/// Bytes gathered before they are written to the store's file.
const PENDING: usize = 1 << 16;

impl RowStore {
    /// An empty store of `slots` slots, its file in `dir`.
    pub fn new(dir: &Path, slots: usize) -> Result<RowStore> {
        Ok(RowStore {
            dir: dir.into(),
            file: tempfile::tempfile_in(dir).map_err(|e| Error::io(dir, e))?,
            len: 0,
            pending: Vec::new(),
            slots: vec![Slot::default(); slots],
        })
    }

    /// The number of slots holding rows.
    pub fn filled(&self) -> usize {
        self.slots.iter().filter(|s| s.rows > 0).count()
    }

    /// Rows in `slot`.
    pub fn rows(&self, slot: usize) -> usize {
        self.slots[slot].rows
    }

    /// Empties `slot`.
    pub fn clear(&mut self, slot: usize) {
        self.slots[slot] = Slot::default();
    }

    /// Makes `rows` the rows of `slot`.
    pub fn set<R, T>(&mut self, slot: usize, rows: impl IntoIterator<Item = R>) -> Result<()>
    where
        R: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.clear(slot);
        for r in rows {
            let span = self.append(r)?;
            self.extend(slot, span);
        }
        Ok(())
    }

    /// Makes `row` the one row of every slot in `slots`.
    pub fn put(&mut self, slots: &[usize], row: &StringRecord) -> Result<()> {
        let span = self.append(row)?;
        for &s in slots {
            self.clear(s);
            self.extend(s, span.clone());
        }
        Ok(())
    }

    /// Adds `row` after the rows of every slot in `slots`.
    pub fn add(&mut self, slots: &[usize], row: &StringRecord) -> Result<()> {
        let span = self.append(row)?;
        for &s in slots {
            self.extend(s, span.clone());
        }
        Ok(())
    }

    fn extend(&mut self, slot: usize, span: Range<u64>) {
        let s = &mut self.slots[slot];
        s.rows += 1;
        match s.spans.last_mut() {
            Some(last) if last.end == span.start => last.end = span.end,
            _ => s.spans.push(span),
        }
    }

    /// Stores one row; returns its bytes' range.
    fn append<T: AsRef<[u8]>>(&mut self, row: impl IntoIterator<Item = T>) -> Result<Range<u64>> {
        let start = self.len + self.pending.len() as u64;
        encode_record(row, &mut self.pending);
        let end = self.len + self.pending.len() as u64;
        if self.pending.len() >= PENDING {
            self.flush()?;
        }
        Ok(start..end)
    }

    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let io = |e| Error::io(&self.dir, e);
        // Copies move the cursor: append at the end.
        self.file.seek(SeekFrom::End(0)).map_err(io)?;
        self.file.write_all(&self.pending).map_err(io)?;
        self.len += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Rewrites `file` atomically with the rows of every slot, in order.
    pub fn write(&mut self, file: &ResultFile) -> Result<()> {
        self.flush()?;
        let mut out = AtomicFile::create(&file.path)?;
        out.record(&file.columns)?;
        let mut buf = vec![0u8; PENDING];
        for slot in &self.slots {
            for span in &slot.spans {
                let io = |e| Error::io(&self.dir, e);
                self.file.seek(SeekFrom::Start(span.start)).map_err(io)?;
                let mut left = span.end - span.start;
                while left > 0 {
                    let part = &mut buf[..left.min(PENDING as u64) as usize];
                    self.file.read_exact(part).map_err(io)?;
                    out.write(part)?;
                    left -= part.len() as u64;
                }
            }
        }
        out.finish()
    }
}

/// The slots of each key in `keys`, for the slots `keep` accepts.
pub fn slots_by_key(keys: &[String], keep: impl Fn(usize) -> bool) -> HashMap<&str, Vec<usize>> {
    let mut out: HashMap<&str, Vec<usize>> = HashMap::new();
    for (slot, k) in keys.iter().enumerate().filter(|(s, _)| keep(*s)) {
        out.entry(k.as_str()).or_default().push(slot);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::output::ResultRow;

    /// A file written before the added parameter columns existed resumes,
    /// its rows given the defaults; a file lacking any other column does not.
    #[test]
    fn files_without_added_parameter_columns_resume_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = ResultFile::of::<ResultRow>(dir.path(), "r.csv");
        let old: Vec<usize> = (0..file.columns.len())
            .filter(|&c| !ADDED_PARAMETERS.contains(&file.columns[c].as_str()))
            .collect();
        assert_eq!(old.len() + ADDED_PARAMETERS.len(), file.columns.len());
        let key = file.col("point_key");
        let write = |cols: &[usize]| {
            let mut row: Vec<String> = (0..file.columns.len()).map(|c| format!("v{c}")).collect();
            row[key] = "k1".into();
            let text = [
                cols.iter()
                    .map(|&c| file.columns[c].clone())
                    .collect::<Vec<_>>(),
                cols.iter().map(|&c| row[c].clone()).collect(),
            ]
            .iter()
            .map(|r| r.join(","))
            .collect::<Vec<_>>()
            .join("\n");
            std::fs::write(&file.path, format!("{text}\n")).unwrap();
        };
        write(&old);
        let mut got = Vec::new();
        file.finished("point_key", &["k1".to_string()], false, |s, r| {
            got.push((s.to_vec(), r.iter().map(String::from).collect::<Vec<_>>()));
            Ok(())
        })
        .unwrap();
        assert_eq!(got.len(), 1);
        let (slots, row) = &got[0];
        assert_eq!(slots, &[0]);
        for (c, name) in file.columns.iter().enumerate() {
            let want = if ADDED_PARAMETERS.contains(&name.as_str()) {
                file.defaults[c].clone()
            } else if c == key {
                "k1".to_string()
            } else {
                format!("v{c}")
            };
            assert_eq!(row[c], want, "column {name}");
        }
        assert_eq!(row[file.col("fs_sigma")], "0");
        assert_eq!(row[file.col("quantize")], "none");
        // Without another column (here `seed`), it is refused.
        let seed = file.col("seed");
        write(
            &old.iter()
                .copied()
                .filter(|&c| c != seed)
                .collect::<Vec<_>>(),
        );
        let err = file
            .finished("point_key", &["k1".to_string()], false, |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("has other columns"), "{err}");
    }
}
