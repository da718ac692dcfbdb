//! Files at the edges: `.npy` arrays, IDX datasets, CSV tables and plots.
//! Knows no experiment, plan or engine.

pub mod csv;
pub mod dataset;
pub mod npy;
pub mod plot;

/// The bytes of a regular file; folders, devices and pipes (whose reads may
/// never end, as `/dev/zero`'s) are refused with a one-line error.
pub fn read_regular(path: &std::path::Path) -> crate::error::Result<Vec<u8>> {
    use std::io::Read;
    let (mut file, len) = npy::open_regular(path)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| crate::error::Error::io(path, e))?;
    Ok(bytes)
}

/// The text of a regular file (see [`read_regular`]), as UTF-8.
pub fn read_regular_text(path: &std::path::Path) -> crate::error::Result<String> {
    String::from_utf8(read_regular(path)?).map_err(|_| crate::error::Error::Npy {
        path: path.to_path_buf(),
        msg: "is not UTF-8 text; give a TOML file".into(),
    })
}
