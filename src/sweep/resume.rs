//! The one prepare/resume path of `run` and `accuracy`: a result file of
//! typed rows, its finished rows by resume key, and a lock per output name.

use crate::error::{Error, Result};
use crate::io::csv::{columns, read_csv, write_csv_atomic};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A result file whose rows are of one row type.
#[derive(Clone, Debug)]
pub struct ResultFile {
    pub path: PathBuf,
    /// The row type's columns, in order.
    pub columns: Vec<String>,
}

impl ResultFile {
    /// The file `dir/NAME` of rows of type `R`.
    pub fn of<R: Serialize + Default>(dir: &Path, name: &str) -> Self {
        ResultFile {
            path: dir.join(name),
            columns: columns::<R>(),
        }
    }

    /// The index of column `name` (a name of the row type's fields).
    pub fn col(&self, name: &str) -> usize {
        self.columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("{name} is not a column of {}", self.path.display()))
    }

    /// The finished rows by resume key (column `key`), when not `fresh`.
    /// Refuses, naming the way out, a file with other columns or with rows
    /// whose keys are not `wanted` (other parameters, or rows from a zebra
    /// whose model gives other results: their `version` column says which),
    /// so no result is ever dropped or recomputed silently.
    pub fn finished(
        &self,
        key: &str,
        wanted: &[String],
        fresh: bool,
    ) -> Result<HashMap<String, Vec<String>>> {
        let mut done = HashMap::new();
        if fresh {
            return Ok(done);
        }
        let Some((header, rows)) = read_csv(&self.path)? else {
            return Ok(done);
        };
        if header != self.columns {
            return Err(self.refuse(
                "has other columns than this version of zebra writes for this experiment".into(),
            ));
        }
        let kc = self.col(key);
        let wanted: std::collections::HashSet<&str> = wanted.iter().map(|s| s.as_str()).collect();
        let stale = rows
            .iter()
            .filter(|r| !wanted.contains(r[kc].as_str()))
            .count();
        if stale > 0 {
            return Err(self.refuse(format!(
                "holds {stale} row(s) whose resume keys this experiment does not produce (other parameters, or results of a zebra version whose model differs: see the version column)"
            )));
        }
        for r in rows {
            done.insert(r[kc].clone(), r);
        }
        Ok(done)
    }

    fn refuse(&self, why: String) -> Error {
        Error::Results {
            path: self.path.clone(),
            msg: format!("{why}; pass --fresh to overwrite it or --out DIR to write elsewhere"),
        }
    }

    /// The rows of a companion file (histograms, per-chip accuracies): empty
    /// when it is missing or has other columns, so its rows are recomputed.
    pub fn companion_rows(&self, fresh: bool) -> Result<Vec<Vec<String>>> {
        if fresh {
            return Ok(Vec::new());
        }
        Ok(read_csv(&self.path)?
            .filter(|(h, _)| *h == self.columns)
            .map(|(_, r)| r)
            .unwrap_or_default())
    }

    /// Rewrites the file atomically with `rows`.
    pub fn write<'a>(&self, rows: impl IntoIterator<Item = &'a Vec<String>>) -> Result<()> {
        write_csv_atomic(&self.path, &self.columns, rows)
    }
}
