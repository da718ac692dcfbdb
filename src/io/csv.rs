//! CSV tables: reading result files back, and writing them atomically.

use crate::error::{Error, Result};
use std::path::Path;

/// A CSV file as (header, rows).
pub type Table = (Vec<String>, Vec<Vec<String>>);

/// Reads an existing CSV as (header, rows); `None` when the file does not exist.
pub fn read_csv(path: &Path) -> Result<Option<Table>> {
    if !path.exists() {
        return Ok(None);
    }
    let mut rdr = csv::Reader::from_path(path).map_err(|e| Error::Csv {
        path: path.into(),
        source: e,
    })?;
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| Error::Csv {
            path: path.into(),
            source: e,
        })?
        .iter()
        .map(String::from)
        .collect();
    let mut rows = Vec::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| Error::Csv {
            path: path.into(),
            source: e,
        })?;
        rows.push(rec.iter().map(String::from).collect());
    }
    Ok(Some((header, rows)))
}

/// Writes a CSV atomically: a temporary file beside it, then a rename.
pub fn write_csv_atomic(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let tmp = path.with_extension("csv.tmp");
    {
        let mut w = csv::Writer::from_path(&tmp).map_err(|e| Error::Csv {
            path: tmp.clone(),
            source: e,
        })?;
        w.write_record(header).map_err(|e| Error::Csv {
            path: tmp.clone(),
            source: e,
        })?;
        for r in rows {
            w.write_record(r).map_err(|e| Error::Csv {
                path: tmp.clone(),
                source: e,
            })?;
        }
        w.flush().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
