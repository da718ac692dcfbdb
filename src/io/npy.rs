//! `.npy` arrays of integers, checked before use.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

pub(crate) fn npy_err(path: &Path, msg: String) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        msg,
    }
}

/// Opens `path` for reading with its length, refusing folders, devices and
/// pipes: their length says nothing about what a read would return (a read
/// of `/dev/zero` never ends).
pub fn open_regular(path: &Path) -> Result<(std::fs::File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(npy_err(path, "is a folder; give a file".into()));
    }
    if !meta.is_file() {
        return Err(npy_err(
            path,
            "is not a regular file (a device, pipe or socket); give a file".into(),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok((file, meta.len()))
}

/// A reader that counts the bytes taken from it (to find where a header ends).
struct Counting<R> {
    inner: R,
    taken: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.taken += n as u64;
        Ok(n)
    }
}

/// The first line of a library's (possibly multi-line, parser-diagram) message.
fn one_line(msg: impl std::fmt::Display) -> String {
    let text = msg.to_string();
    let first = text.lines().map(str::trim).find(|l| !l.is_empty());
    // A parser's position arrow (" --> 1:2") starts its diagram.
    let first = first.unwrap_or("").split("-->").next().unwrap_or("");
    first.trim().trim_end_matches(':').to_string()
}

/// The shape a `.npy` header declares, checked against the file's length,
/// without reading the data.
pub fn read_npy_shape(path: &Path) -> Result<Vec<usize>> {
    let (file, len) = open_regular(path)?;
    let mut r = Counting {
        inner: std::io::BufReader::new(file),
        taken: 0,
    };
    let header = checked_header(path, &mut r, len)?;
    Ok(header.shape().iter().map(|&s| s as usize).collect())
}

/// Reads a `.npy` header and checks that the shape it declares has elements
/// and fits the file's length, before anything is allocated for the data.
fn checked_header<R: Read>(
    path: &Path,
    r: &mut Counting<R>,
    file_len: u64,
) -> Result<npyz::NpyHeader> {
    let header = npyz::NpyHeader::from_reader(&mut *r).map_err(|e| {
        npy_err(
            path,
            format!(
                "not a readable .npy file ({}); write it with numpy.save",
                one_line(e)
            ),
        )
    })?;
    let shape = header.shape().to_vec();
    if shape.contains(&0) {
        return Err(npy_err(
            path,
            format!("shape {shape:?} has no elements; every dimension must be at least 1"),
        ));
    }
    let item = header.dtype().num_bytes().unwrap_or(usize::MAX) as u64;
    let need = shape
        .iter()
        .try_fold(item, |acc, &d| acc.checked_mul(d))
        .unwrap_or(u64::MAX);
    let have = file_len.saturating_sub(r.taken);
    if need != have {
        let need = if need == u64::MAX {
            "more than 2^64".to_string()
        } else {
            need.to_string()
        };
        return Err(npy_err(
            path,
            format!(
                "the header declares shape {shape:?} of {} ({need} bytes of data) but the file has {have} bytes of data",
                header.dtype().descr()
            ),
        ));
    }
    Ok(header)
}

/// A `(K, N)` weight matrix from a `.npy` file, checked against `weight_bits`.
pub fn read_weights(path: &Path, weight_bits: u32) -> Result<(usize, usize, Vec<i32>)> {
    let qmax = (1i64 << (weight_bits - 1)) - 1;
    let (shape, data) = read_npy_ints(path)?;
    if shape.len() != 2 {
        return Err(npy_err(
            path,
            format!("weights must be 2-D (K, N), got shape {shape:?}"),
        ));
    }
    check_values(
        path,
        &data,
        -qmax,
        qmax,
        &format!("{weight_bits}-bit weights"),
    )?;
    Ok((
        shape[0],
        shape[1],
        data.into_iter().map(|v| v as i32).collect(),
    ))
}

pub(crate) fn check_values(path: &Path, data: &[i64], lo: i64, hi: i64, what: &str) -> Result<()> {
    if let Some((i, v)) = data.iter().enumerate().find(|(_, &v)| v < lo || v > hi) {
        return Err(npy_err(
            path,
            format!("element {i} is {v}; {what} must be in [{lo}, {hi}]"),
        ));
    }
    Ok(())
}

/// Reads a C-order `.npy` array of integers (any integer dtype, or floats holding integers).
pub fn read_npy_ints(path: &Path) -> Result<(Vec<usize>, Vec<i64>)> {
    let (file, len) = open_regular(path)?;
    let mut r = Counting {
        inner: std::io::BufReader::new(file),
        taken: 0,
    };
    let header = checked_header(path, &mut r, len)?;
    let file = npyz::NpyFile::with_header(header, r);
    if file.order() == npyz::Order::Fortran {
        return Err(npy_err(
            path,
            "Fortran-order arrays are not accepted; save np.ascontiguousarray(a)".into(),
        ));
    }
    let shape: Vec<usize> = file.shape().iter().map(|&s| s as usize).collect();
    let dtype = file.dtype().descr();
    let bad = |e: std::io::Error| npy_err(path, format!("cannot read data: {e}"));
    macro_rules! try_ints {
        ($file:expr, $($t:ty),*) => {{
            let f = $file;
            $(
                let f = match f.try_data::<$t>() {
                    Ok(r) => {
                        let v: Vec<$t> = r.collect::<std::io::Result<_>>().map_err(bad)?;
                        return Ok((shape, v.into_iter().map(|x| x as i64).collect()));
                    }
                    Err(f) => f,
                };
            )*
            f
        }};
    }
    let file = try_ints!(file, i8, i16, i32, i64, u8, u16, u32);
    macro_rules! try_floats {
        ($file:expr, $($t:ty),*) => {{
            let f = $file;
            $(
                let f = match f.try_data::<$t>() {
                    Ok(r) => {
                        let v: Vec<$t> = r.collect::<std::io::Result<_>>().map_err(bad)?;
                        if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| x.fract() != 0.0 || !x.is_finite()) {
                            return Err(npy_err(path, format!("element {i} is {x}; values must be integers (quantise first)")));
                        }
                        return Ok((shape, v.into_iter().map(|x| x as i64).collect()));
                    }
                    Err(f) => f,
                };
            )*
            f
        }};
    }
    let _ = try_floats!(file, f32, f64);
    Err(npy_err(path, format!("dtype {dtype} is not accepted; use an integer dtype (int8..int64, uint8..uint32) or float32/float64 holding integers")))
}
