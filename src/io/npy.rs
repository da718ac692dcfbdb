//! `.npy` arrays of integers, checked before use.

use crate::error::{Error, Result};
use std::path::Path;

pub(crate) fn npy_err(path: &Path, msg: String) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        msg,
    }
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
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = npyz::NpyFile::new(&bytes[..])
        .map_err(|e| npy_err(path, format!("not a readable .npy file: {e}")))?;
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
