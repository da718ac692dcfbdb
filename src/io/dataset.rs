//! Image datasets for the accuracy experiments: IDX files (gzipped or not,
//! as Fashion-MNIST ships) and `.npy` image/label pairs.

use crate::error::{Error, Result};
use crate::io::npy::{open_regular, read_npy_ints};
use std::io::{Read, Seek};
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

/// Deflate never compresses more than about 1032:1, so a gzip file of
/// `len` bytes cannot hold more than this many bytes of data.
const GZIP_MAX_RATIO: u64 = 1032;

/// An IDX file opened past its header: the rest of its (decompressed)
/// bytes, how many it can hold at most, whether it is gzipped, and its
/// dimensions.
struct Idx {
    data: Box<dyn Read>,
    capacity: u64,
    gz: bool,
    dims: Vec<usize>,
}

/// Opens an IDX file of unsigned bytes (gzipped or not) and reads its header.
fn open_idx(path: &Path) -> Result<Idx> {
    let (file, len) = open_regular(path)?;
    let mut file = std::io::BufReader::new(file);
    let mut magic = [0u8; 2];
    let gz = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    file.seek(std::io::SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    let (mut r, capacity): (Box<dyn Read>, u64) = if gz {
        (
            Box::new(flate2::read::GzDecoder::new(file)),
            len.saturating_mul(GZIP_MAX_RATIO),
        )
    } else {
        (Box::new(file), len)
    };
    let gz_err = |e| idx_read_error(path, gz, e);
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut r, &mut magic).map_err(gz_err)?;
    if got < 4 || magic[0] != 0 || magic[1] != 0 {
        return Err(bad(path, "not an IDX file (bad magic number)"));
    }
    if magic[2] != 0x08 {
        return Err(bad(
            path,
            format!(
                "IDX element type {:#04x} is not accepted; only unsigned bytes (0x08)",
                magic[2]
            ),
        ));
    }
    let ndim = magic[3] as usize;
    let mut dims_raw = vec![0u8; 4 * ndim];
    if read_up_to(&mut r, &mut dims_raw).map_err(gz_err)? < dims_raw.len() {
        return Err(bad(path, "IDX header is truncated"));
    }
    let dims: Vec<usize> = dims_raw
        .chunks(4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .collect();
    if dims.contains(&0) {
        return Err(bad(
            path,
            format!("IDX dimensions {dims:?} have no elements; every dimension must be at least 1"),
        ));
    }
    Ok(Idx {
        data: r,
        capacity,
        gz,
        dims,
    })
}

fn idx_read_error(path: &Path, gz: bool, e: std::io::Error) -> Error {
    if gz {
        bad(path, format!("not a readable gzip file: {e}"))
    } else {
        Error::io(path, e)
    }
}

/// The number of images in an images file (IDX, or `.npy` by its
/// extension), from its header alone.
pub fn image_count(path: &Path) -> Result<usize> {
    let dims = if path.extension().is_some_and(|e| e == "npy") {
        crate::io::npy::read_npy_shape(path)?
    } else {
        open_idx(path)?.dims
    };
    Ok(dims.first().copied().unwrap_or(0))
}

/// An IDX array of unsigned bytes: (dimensions, data). The header is read
/// first and the size it declares is checked against the file's length (or,
/// gzipped, against what the file can hold) before the data is allocated.
pub fn read_idx_u8(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let Idx {
        data: r,
        capacity,
        gz,
        dims,
    } = open_idx(path)?;
    let ndim = dims.len();
    let gz_err = |e| idx_read_error(path, gz, e);
    let header = 4 + 4 * ndim as u64;
    let count = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    let room = capacity.saturating_sub(header);
    if count > room || (!gz && count != room) {
        return Err(bad(
            path,
            format!(
                "IDX dimensions {dims:?} need {count} bytes of data, the file {} {room}",
                if gz { "can hold at most" } else { "has" }
            ),
        ));
    }
    let mut data = Vec::with_capacity(count as usize);
    r.take(count + 1).read_to_end(&mut data).map_err(gz_err)?;
    if data.len() as u64 != count {
        return Err(bad(
            path,
            format!(
                "IDX dimensions {dims:?} need {count} bytes of data, the file has {}{}",
                data.len(),
                if data.len() as u64 > count {
                    " or more"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok((dims, data))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..])? {
            0 => break,
            n => at += n,
        }
    }
    Ok(at)
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
