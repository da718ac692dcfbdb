//! The shipped Fashion-MNIST test set and the dataset readers.

use std::path::Path;
use zebra_cim::io::dataset::{read_idx_u8, Dataset};

#[test]
fn shipped_fashion_mnist_test_set_reads_whole() {
    let d = Dataset::from_idx(
        Path::new("data/fashion-mnist/t10k-images-idx3-ubyte.gz"),
        Path::new("data/fashion-mnist/t10k-labels-idx1-ubyte.gz"),
    )
    .unwrap();
    assert_eq!((d.n, d.channels, d.rows, d.cols), (10_000, 1, 28, 28));
    // The test set is balanced: 1000 images of each class.
    let mut counts = [0usize; 10];
    for &l in &d.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [1000; 10]);
    assert!(d.image(0).iter().any(|&p| p > 0));
}

#[test]
fn idx_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("x.idx");
    // Unsigned bytes, 2 dims (2, 3), but only 5 data bytes.
    std::fs::write(&raw, [0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 1, 2, 3, 4, 5]).unwrap();
    let msg = read_idx_u8(&raw).unwrap_err().to_string();
    assert!(
        msg.contains("need 6 bytes of data, the file has 5"),
        "{msg}"
    );
    std::fs::write(&raw, [0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]).unwrap();
    assert!(read_idx_u8(&raw)
        .unwrap_err()
        .to_string()
        .contains("only unsigned bytes"));
    std::fs::write(&raw, b"hello").unwrap();
    assert!(read_idx_u8(&raw)
        .unwrap_err()
        .to_string()
        .contains("bad magic"));
    // Raw (not gzipped) IDX reads too.
    std::fs::write(&raw, [0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]).unwrap();
    assert_eq!(read_idx_u8(&raw).unwrap(), (vec![3], vec![7, 8, 9]));
}

#[test]
fn npy_image_label_pairs_are_checked() {
    let bad = Dataset::from_npy(
        Path::new("tests/data/w_8x4.npy"),
        Path::new("tests/data/w_8x4.npy"),
    );
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("images must be (n, rows, cols)"));
}

/// Channels-last images (n, rows, cols, channels) are rearranged to
/// (n, channels, rows, cols) pixel for pixel.
#[test]
fn channels_last_images_are_rearranged() {
    let (n, h, w, c) = (2, 2, 3, 3);
    let pixels: Vec<u8> = (0..n * h * w * c).map(|i| i as u8).collect();
    // As read from a (n, h, w, c) array: "channels" = h, "rows" = w, "cols" = c.
    let d = Dataset {
        n,
        channels: h,
        rows: w,
        cols: c,
        pixels: pixels.clone(),
        labels: vec![0, 1],
    };
    let d = d.channels_last_to_first();
    assert_eq!((d.channels, d.rows, d.cols), (c, h, w));
    for i in 0..n {
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    assert_eq!(
                        d.pixels[((i * c + ch) * h + y) * w + x],
                        pixels[((i * h + y) * w + x) * c + ch]
                    );
                }
            }
        }
    }
}

/// An IDX header declaring more data than the file holds (or, gzipped, more
/// than deflate can expand it to) is refused before anything is allocated;
/// so are empty dimensions and files that are not regular files.
#[test]
fn idx_sizes_are_checked_before_allocating() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("huge.idx");
    // Three dimensions of 2^32 - 1: about 2^96 bytes declared, 4 present.
    let header = [
        0u8, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
    ];
    let mut bytes = header.to_vec();
    bytes.extend([1, 2, 3, 4]);
    std::fs::write(&raw, &bytes).unwrap();
    let msg = read_idx_u8(&raw).unwrap_err().to_string();
    assert!(msg.contains("the file has 4"), "{msg}");
    let gz = dir.path().join("huge.idx.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&bytes).unwrap();
    std::fs::write(&gz, enc.finish().unwrap()).unwrap();
    let msg = read_idx_u8(&gz).unwrap_err().to_string();
    assert!(msg.contains("the file can hold at most"), "{msg}");
    std::fs::write(&raw, [0, 0, 8, 2, 0, 0, 0, 0, 0, 0, 0, 3]).unwrap();
    let msg = read_idx_u8(&raw).unwrap_err().to_string();
    assert!(msg.contains("have no elements"), "{msg}");
    let msg = read_idx_u8(Path::new("/dev/zero")).unwrap_err().to_string();
    assert!(msg.contains("is not a regular file"), "{msg}");
}
