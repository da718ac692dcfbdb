//! Image datasets for the accuracy experiments: IDX files (gzipped or not,
//! as Fashion-MNIST ships) and `.npy` image/label pairs.

use crate::error::{Error, Result};
use crate::io::npy::read_npy_ints;
use std::io::Read;
use std::path::Path;

/// Images `[n][channels][rows][cols]` as u8, and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    pub n: usize,
    pub channels: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Npy {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// The bytes of a file, gunzipped when it starts with the gzip magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| bad(path, format!("not a readable gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// An IDX array of unsigned bytes: (dimensions, data).
pub fn read_idx_u8(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(path, "not an IDX file (bad magic number)"));
    }
    if bytes[2] != 0x08 {
        return Err(bad(
            path,
            format!(
                "IDX element type {:#04x} is not accepted; only unsigned bytes (0x08)",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(bad(path, "IDX header is truncated"));
    }
    let dims: Vec<usize> = (0..ndim)
        .map(|d| u32::from_be_bytes(bytes[4 + 4 * d..8 + 4 * d].try_into().unwrap()) as usize)
        .collect();
    let count: usize = dims.iter().product();
    if bytes.len() != header + count {
        return Err(bad(
            path,
            format!(
                "IDX dimensions {dims:?} need {count} bytes of data, the file has {}",
                bytes.len() - header
            ),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

impl Dataset {
    /// Images (n, rows, cols) and labels (n) from IDX files, as Fashion-MNIST and MNIST ship them.
    pub fn from_idx(images: &Path, labels: &Path) -> Result<Dataset> {
        let (idims, pixels) = read_idx_u8(images)?;
        let [n, rows, cols] = idims[..] else {
            return Err(bad(
                images,
                format!("images must be 3-D (n, rows, cols), got {idims:?}"),
            ));
        };
        let (ldims, labels_v) = read_idx_u8(labels)?;
        if ldims != [n] {
            return Err(bad(
                labels,
                format!("labels must be 1-D with {n} entries (one per image), got {ldims:?}"),
            ));
        }
        Ok(Dataset {
            n,
            channels: 1,
            rows,
            cols,
            pixels,
            labels: labels_v,
        })
    }

    /// The same images with their axes read as (n, rows, cols, channels):
    /// rearranged to (n, channels, rows, cols).
    pub fn channels_last_to_first(self) -> Dataset {
        // As read, the axes are (n, "channels", "rows", "cols") = (n, h, w, c).
        let (h, w, c) = (self.channels, self.rows, self.cols);
        let mut pixels = vec![0u8; self.pixels.len()];
        for (src, dst) in self
            .pixels
            .chunks(h * w * c)
            .zip(pixels.chunks_mut(h * w * c))
        {
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        dst[(ch * h + y) * w + x] = src[(y * w + x) * c + ch];
                    }
                }
            }
        }
        Dataset {
            channels: c,
            rows: h,
            cols: w,
            pixels,
            ..self
        }
    }

    /// Images from a `.npy` of shape (n, rows, cols) or (n, channels, rows, cols)
    /// with values 0..=255, and labels from a `.npy` of shape (n,).
    pub fn from_npy(images: &Path, labels: &Path) -> Result<Dataset> {
        let (shape, data) = read_npy_ints(images)?;
        let (n, channels, rows, cols) = match shape[..] {
            [n, r, c] => (n, 1, r, c),
            [n, ch, r, c] => (n, ch, r, c),
            _ => {
                return Err(bad(
                    images,
                    format!(
                    "images must be (n, rows, cols) or (n, channels, rows, cols), got {shape:?}"
                ),
                ))
            }
        };
        if let Some((i, v)) = data
            .iter()
            .enumerate()
            .find(|(_, v)| !(0..=255).contains(*v))
        {
            return Err(bad(
                images,
                format!("element {i} is {v}; pixels must be in [0, 255]"),
            ));
        }
        let (lshape, ldata) = read_npy_ints(labels)?;
        if lshape != [n] {
            return Err(bad(
                labels,
                format!("labels must be (n,) with n = {n} images, got {lshape:?}"),
            ));
        }
        if let Some((i, v)) = ldata
            .iter()
            .enumerate()
            .find(|(_, v)| !(0..=255).contains(*v))
        {
            return Err(bad(
                labels,
                format!("label {i} is {v}; labels must be class indices in [0, 255]"),
            ));
        }
        Ok(Dataset {
            n,
            channels,
            rows,
            cols,
            pixels: data.into_iter().map(|v| v as u8).collect(),
            labels: ldata.into_iter().map(|v| v as u8).collect(),
        })
    }

    /// Pixels of image `i`, `[channels][rows][cols]`.
    pub fn image(&self, i: usize) -> &[u8] {
        let size = self.channels * self.rows * self.cols;
        &self.pixels[i * size..(i + 1) * size]
    }
}
