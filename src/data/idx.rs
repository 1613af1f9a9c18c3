//! MNIST-style IDX files (MNIST, Fashion-MNIST), plain or gzipped.
//!
//! An IDX file is a big-endian magic (0x00000803: u8 data in 3 dims, the images; 0x00000801: u8 data in
//! 1 dim, the labels), each dim as a big-endian u32, then the data. MNIST images are 28x28, one channel.

use super::{Dataset, FileError, Files, Format, Splits};

/// Magic of an images file: u8 data (0x08), 3 dims.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic of a labels file: u8 data (0x08), 1 dim.
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Image height and width.
pub const SIDE: usize = 28;
/// Number of classes (labels 0..9).
pub const CLASSES: usize = 10;

/// Fashion-MNIST class names, by label.
pub const FASHION_CLASS_NAMES: [&str; CLASSES] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The official file names (each may also end in `.gz`): training images and labels, test images and labels.
pub const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

/// The big-endian u32 at byte `at`.
fn be_u32(name: &str, bytes: &[u8], at: usize, what: &str) -> Result<u32, FileError> {
    match bytes.get(at..at.saturating_add(4)) {
        Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d])),
        _ => Err(FileError::new(
            name,
            Some(at as u64),
            format!("header truncated: file ends at byte {} before the {what}", bytes.len()),
        )),
    }
}

fn check_magic(name: &str, bytes: &[u8], want: u32, what: &str) -> Result<(), FileError> {
    let magic = be_u32(name, bytes, 0, "magic number")?;
    if magic == want {
        return Ok(());
    }
    let hint = if bytes.starts_with(&[0x1f, 0x8b]) { "; the file looks gzipped but its name lacks .gz" } else { "" };
    Err(FileError::new(name, Some(0), format!("magic 0x{magic:08x}, expected 0x{want:08x} ({what}){hint}")))
}

/// The `n` records of `size` bytes that follow a header of `header` bytes, exactly.
fn body<'a>(
    name: &str,
    bytes: &'a [u8],
    header: usize,
    n: u32,
    size: usize,
    what: &str,
) -> Result<&'a [u8], FileError> {
    let data = bytes.get(header..).unwrap_or_default();
    let need = usize::try_from(n).ok().and_then(|n| n.checked_mul(size));
    let Some(need) = need else {
        return Err(FileError::new(name, Some(4), format!("header count {n} is too large")));
    };
    if n == 0 {
        return Err(FileError::new(name, Some(4), format!("header says 0 {what}s")));
    }
    if data.len() < need {
        let (full, part) = (data.len() / size, data.len() % size);
        return Err(if part != 0 {
            FileError::new(
                name,
                Some((header + full * size) as u64),
                format!(
                    "{what} {full} is incomplete: file ends after {part} of its {size} bytes (header says {n} {what}s)"
                ),
            )
        } else {
            FileError::new(name, Some(bytes.len() as u64), format!("file ends after {full} {what}s, header says {n}"))
        });
    }
    match data.get(..need) {
        Some(d) if data.len() == need => Ok(d),
        _ => Err(FileError::new(
            name,
            Some((header + need) as u64),
            format!("{} bytes after the last of {n} {what}s", data.len() - need),
        )),
    }
}

/// An IDX images file (`0x00000803`, n x 28 x 28): the image count and the pixels, (N, 28, 28) row-major.
/// `name` is the file name to report in errors.
pub fn parse_idx_images(name: &str, bytes: &[u8]) -> Result<(usize, Vec<u8>), FileError> {
    check_magic(name, bytes, IMAGES_MAGIC, "u8 images, 3 dims")?;
    let n = be_u32(name, bytes, 4, "image count")?;
    let rows = be_u32(name, bytes, 8, "row count")?;
    let cols = be_u32(name, bytes, 12, "column count")?;
    if (rows, cols) != (SIDE as u32, SIDE as u32) {
        return Err(FileError::new(name, Some(8), format!("images are {rows}x{cols}, expected {SIDE}x{SIDE}")));
    }
    let data = body(name, bytes, 16, n, SIDE * SIDE, "image")?;
    Ok((data.len() / (SIDE * SIDE), data.to_vec()))
}

/// An IDX labels file (`0x00000801`, n): the labels, each checked to be below `classes`.
/// `name` is the file name to report in errors.
pub fn parse_idx_labels(name: &str, bytes: &[u8], classes: usize) -> Result<Vec<u16>, FileError> {
    check_magic(name, bytes, LABELS_MAGIC, "u8 labels, 1 dim")?;
    let n = be_u32(name, bytes, 4, "label count")?;
    let data = body(name, bytes, 8, n, 1, "label")?;
    if let Some(i) = data.iter().position(|&l| usize::from(l) >= classes) {
        let l = data.get(i).copied().unwrap_or_default();
        return Err(FileError::new(name, Some(8 + i as u64), format!("label {l} out of range 0..{classes}")));
    }
    Ok(data.iter().map(|&l| u16::from(l)).collect())
}

/// One IDX file, plain or (when only the `.gz` is there) gzipped: its name for errors, its contents
/// (decompressed, never beyond what its header announces: see [`super::bounded`]) and whether it was
/// gzipped.
fn read_idx<'a>(src: &'a Files, base: &str) -> Result<(String, std::borrow::Cow<'a, [u8]>, bool), FileError> {
    let gz = format!("{base}.gz");
    let (name, bytes) = src.require(&[base, &gz])?;
    let gzipped = name.ends_with(".gz");
    Ok((name, bytes, gzipped))
}

/// Offsets in a gzipped file's errors count decompressed bytes: say so.
fn note_gz(gz: bool) -> impl Fn(FileError) -> FileError {
    move |mut e| {
        if gz && e.offset.is_some() {
            e.msg.push_str(" (byte offset in the decompressed data)");
        }
        e
    }
}

/// One split: its images and labels files.
fn load_split(src: &Files, images: &str, labels: &str, format: Format) -> Result<Dataset, FileError> {
    let (iname, ibytes, igz) = read_idx(src, images)?;
    let (n, pixels) = parse_idx_images(&iname, &ibytes).map_err(note_gz(igz))?;
    drop(ibytes);
    let (lname, lbytes, lgz) = read_idx(src, labels)?;
    let labels = parse_idx_labels(&lname, &lbytes, CLASSES).map_err(note_gz(lgz))?;
    if labels.len() != n {
        return Err(note_gz(lgz)(FileError::new(
            lname,
            Some(4),
            format!("{} labels, but {iname} holds {n} images", labels.len()),
        )));
    }
    let class_names = match format {
        Format::FashionMnist => FASHION_CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        _ => (0..CLASSES).map(|i| i.to_string()).collect(),
    };
    Ok(Dataset { images: pixels, labels, h: SIDE, w: SIDE, c: 1, classes: CLASSES, class_names })
}

/// MNIST or Fashion-MNIST (`format` picks the class names) from the four official files.
pub(super) fn load_idx(src: &Files, format: Format) -> Result<Splits, FileError> {
    let [train_images, train_labels, test_images, test_labels] = FILES;
    let train = load_split(src, train_images, train_labels, format)?;
    let test = load_split(src, test_images, test_labels, format)?;
    Ok(Splits { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{TempDir, fails, gzip, tar_gz};
    use crate::data::{load, load_with};

    /// An images file of `n` 28x28 images; pixel (i, y, x) = (i * 7 + y * 3 + x) % 256.
    fn images_file(n: usize) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [IMAGES_MAGIC, n as u32, 28, 28] {
            b.extend(v.to_be_bytes());
        }
        for i in 0..n {
            for y in 0..28 {
                for x in 0..28 {
                    b.push(((i * 7 + y * 3 + x) % 256) as u8);
                }
            }
        }
        b
    }

    fn labels_file(labels: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [LABELS_MAGIC, labels.len() as u32] {
            b.extend(v.to_be_bytes());
        }
        b.extend(labels);
        b
    }

    /// The four files, test labels 9 - train labels.
    fn write_set(dir: &TempDir, sub: &str, gz: bool) {
        let train_labels = [3, 1, 4, 1, 5];
        let test_labels: Vec<u8> = train_labels.iter().map(|l| 9 - l).collect();
        let files = [images_file(5), labels_file(&train_labels), images_file(3), labels_file(&test_labels[..3])];
        for (f, bytes) in FILES.iter().zip(files) {
            if gz {
                dir.write(&format!("{sub}/{f}.gz"), &gzip(&bytes));
            } else {
                dir.write(&format!("{sub}/{f}"), &bytes);
            }
        }
    }

    fn check_pixels(d: &Dataset, n: usize) {
        assert_eq!((d.len(), d.h, d.w, d.c, d.classes), (n, 28, 28, 1, 10));
        assert_eq!(d.images.len(), n * 784);
        for i in 0..n {
            let img = d.image(i);
            for (y, x) in [(0, 0), (5, 17), (27, 27)] {
                assert_eq!(img[y * 28 + x], ((i * 7 + y * 3 + x) % 256) as u8);
            }
        }
    }

    #[test]
    fn parses_images_and_labels() {
        let (n, px) = parse_idx_images("img", &images_file(5)).unwrap();
        assert_eq!((n, px.len()), (5, 5 * 784));
        assert_eq!(px[784 + 2 * 28 + 3], (7 + 6 + 3) as u8);
        assert_eq!(parse_idx_labels("lab", &labels_file(&[0, 9, 2]), 10).unwrap(), vec![0, 9, 2]);
    }

    #[test]
    fn loads_plain_and_gzipped_dirs() {
        for gz in [false, true] {
            let dir = TempDir::new("idx");
            write_set(&dir, "mnist", gz);
            let (s, f) = load(&dir.path().join("mnist"), None).unwrap();
            assert_eq!(f, Format::Mnist);
            check_pixels(&s.train, 5);
            check_pixels(&s.test, 3);
            assert_eq!(s.train.labels, vec![3, 1, 4, 1, 5]);
            assert_eq!(s.test.labels, vec![6, 8, 5]);
            assert_eq!(s.train.class_names, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
            assert_eq!(s.test.class_names, s.train.class_names);
        }
    }

    #[test]
    fn fashion_by_path_or_by_caller() {
        let dir = TempDir::new("idx-fashion");
        write_set(&dir, "My-FASHION-set", true);
        let (s, f) = load(&dir.path().join("My-FASHION-set"), None).unwrap();
        assert_eq!(f, Format::FashionMnist);
        assert_eq!(s.train.class_names[0], "T-shirt/top");
        assert_eq!(s.test.class_names[9], "Ankle boot");
        // the caller's format wins over the path
        let (s, f) = load(&dir.path().join("My-FASHION-set"), Some(Format::Mnist)).unwrap();
        assert_eq!((f, s.train.class_names[0].as_str()), (Format::Mnist, "0"));
        write_set(&dir, "plain", false);
        let (s, f) = load(&dir.path().join("plain"), Some(Format::FashionMnist)).unwrap();
        assert_eq!((f, s.train.class_names[1].as_str()), (Format::FashionMnist, "Trouser"));
    }

    #[test]
    fn loads_from_tar_gz() {
        let dir = TempDir::new("idx-tar");
        let files = [images_file(2), labels_file(&[7, 8]), images_file(1), labels_file(&[0])];
        let gzs: Vec<Vec<u8>> = files.iter().map(|f| gzip(f)).collect();
        let members: Vec<(String, &[u8])> =
            FILES.iter().zip(&gzs).map(|(f, b)| (format!("fashion/{f}.gz"), &b[..])).collect();
        let members: Vec<(&str, &[u8])> = members.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let p = dir.write("fashion-mnist.tar.gz", &tar_gz(&members));
        let (s, f) = load(&p, None).unwrap();
        assert_eq!(f, Format::FashionMnist);
        check_pixels(&s.train, 2);
        assert_eq!((s.train.labels.clone(), s.test.labels.clone()), (vec![7, 8], vec![0]));
    }

    #[test]
    fn missing_file_is_named() {
        let dir = TempDir::new("idx-missing");
        write_set(&dir, "m", false);
        std::fs::remove_file(dir.path().join("m/t10k-labels-idx1-ubyte")).unwrap();
        let e = load(&dir.path().join("m"), None).unwrap_err();
        assert!(e.to_string().contains("t10k-labels-idx1-ubyte"), "{e}");
        assert!(e.to_string().contains("no such file"), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let img = images_file(5);
        for len in 0..img.len() {
            let e = fails(parse_idx_images("dir/train-images-idx3-ubyte", &img[..len]), len);
            assert!(e.to_string().starts_with("dir/train-images-idx3-ubyte: byte "), "{len}: {e}");
        }
        let lab = labels_file(&[1, 2, 3, 4, 5]);
        for len in 0..lab.len() {
            let e = fails(parse_idx_labels("lab", &lab[..len], 10), len);
            assert!(e.to_string().starts_with("lab: byte "), "{len}: {e}");
        }
        // a partial image is reported where it starts
        let e = parse_idx_images("f", &img[..16 + 2 * 784 + 100]).unwrap_err();
        assert_eq!(e.offset, Some(16 + 2 * 784), "{e}");
        // trailing bytes too
        let mut long = img.clone();
        long.push(0);
        assert_eq!(parse_idx_images("f", &long).unwrap_err().offset, Some(img.len() as u64));
    }

    #[test]
    fn every_truncation_of_gzipped_files_through_load_is_an_error() {
        let dir = TempDir::new("idx-trunc");
        write_set(&dir, "m", true);
        let m = dir.path().join("m");
        for f in FILES {
            let p = m.join(format!("{f}.gz"));
            let full = std::fs::read(&p).unwrap();
            for len in 0..full.len() {
                std::fs::write(&p, &full[..len]).unwrap();
                let e = fails(load(&m, Some(Format::Mnist)), format!("{f} {len}"));
                assert!(e.file.ends_with(format!("{f}.gz")), "{f} {len}: {e}");
                assert!(e.offset.is_some(), "{f} {len}: {e}");
            }
            std::fs::write(&p, &full).unwrap();
        }
        assert!(load_with(&m, None, true).is_ok());
    }

    #[test]
    fn header_errors() {
        // wrong magic: a labels file given as images, and the other way round
        let e = parse_idx_images("x", &labels_file(&[1])).unwrap_err();
        assert_eq!(e.offset, Some(0));
        assert!(e.msg.contains("magic 0x00000801"), "{e}");
        let e = parse_idx_labels("x", &images_file(1), 10).unwrap_err();
        assert!(e.msg.contains("magic 0x00000803"), "{e}");
        // gzipped data under a plain name
        let e = parse_idx_images("x", &gzip(&images_file(1))).unwrap_err();
        assert!(e.msg.contains("gzipped"), "{e}");
        // wrong dims
        let mut b = images_file(1);
        b[8..12].copy_from_slice(&32u32.to_be_bytes());
        let e = parse_idx_images("x", &b).unwrap_err();
        assert_eq!(e.offset, Some(8));
        assert!(e.msg.contains("32x28"), "{e}");
        // zero and huge counts
        let mut b = images_file(1);
        b[4..8].copy_from_slice(&0u32.to_be_bytes());
        assert_eq!(parse_idx_images("x", &b).unwrap_err().offset, Some(4));
        b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = parse_idx_images("x", &b).unwrap_err();
        assert!(e.msg.contains("file ends after 1 images"), "{e}");
    }

    #[test]
    fn label_out_of_range_names_its_offset() {
        let e = parse_idx_labels("lab", &labels_file(&[1, 2, 10, 3]), 10).unwrap_err();
        assert_eq!(e.to_string(), "lab: byte 10: label 10 out of range 0..10");
        let dir = TempDir::new("idx-range");
        write_set(&dir, "m", true);
        dir.write("m/train-labels-idx1-ubyte.gz", &gzip(&labels_file(&[1, 2, 3, 4, 255])));
        let e = load(&dir.path().join("m"), None).unwrap_err();
        assert!(e.file.ends_with("train-labels-idx1-ubyte.gz"), "{e}");
        assert_eq!(e.offset, Some(12));
        assert!(e.msg.contains("decompressed"), "{e}");
    }

    #[test]
    fn count_mismatch_between_images_and_labels() {
        let dir = TempDir::new("idx-count");
        write_set(&dir, "m", false);
        dir.write("m/t10k-labels-idx1-ubyte", &labels_file(&[1, 2]));
        let e = load(&dir.path().join("m"), None).unwrap_err();
        assert!(e.file.ends_with("t10k-labels-idx1-ubyte"), "{e}");
        assert!(e.msg.contains("2 labels") && e.msg.contains("3 images"), "{e}");
    }

    /// Needs `scripts/fetch-fashion-mnist.sh` to have been run.
    #[test]
    #[ignore]
    fn real_fashion_mnist() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("data/fashion-mnist");
        let (s, f) = load(&root, None).unwrap();
        assert_eq!(f, Format::FashionMnist);
        assert_eq!((s.train.len(), s.test.len()), (60000, 10000));
        assert_eq!((s.train.h, s.train.w, s.train.c, s.train.images.len()), (28, 28, 1, 60000 * 784));
        let mut counts = [0usize; 10];
        s.train.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert_eq!(counts, [6000; 10]);
    }
}
