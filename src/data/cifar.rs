//! CIFAR-10 and CIFAR-100, binary version.
//!
//! Each record is the label byte(s) then 3072 pixel bytes: the 1024 red, then green, then blue values of a
//! 32x32 image, row-major. CIFAR-10 (`cifar-10-batches-bin/`): one label byte; `data_batch_1.bin` ..
//! `data_batch_5.bin` (training, in that order) and `test_batch.bin`, 10000 records each; class names in
//! `batches.meta.txt`. CIFAR-100 (`cifar-100-binary/`): coarse then fine label byte (the fine label is used,
//! 100 classes); `train.bin` (50000 records), `test.bin` (10000); class names in `fine_label_names.txt`.

use super::{DataError, Dataset, Source, Splits};

/// Image height and width.
pub const SIDE: usize = 32;
/// Pixel bytes per record: three 32x32 planes.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
/// Records in each official CIFAR-10 batch file (training and test).
pub const CIFAR10_BATCH_RECORDS: usize = 10000;
/// Records in the official CIFAR-100 `train.bin` and `test.bin`.
pub const CIFAR100_TRAIN_RECORDS: usize = 50000;
pub const CIFAR100_TEST_RECORDS: usize = 10000;

/// The standard CIFAR-10 class names, used when `batches.meta.txt` is absent.
pub const CIFAR10_CLASS_NAMES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Every file either version reads.
pub(super) const FILES: [&str; 10] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
    "batches.meta.txt",
    "train.bin",
    "test.bin",
    "fine_label_names.txt",
];

/// Parse one binary CIFAR file: records of `label_bytes` label bytes (the last one is the label used: 1 for
/// CIFAR-10, 2 for CIFAR-100's coarse + fine) and 3072 pixel bytes, converted to (32, 32, 3) HWC.
///
/// Labels must be below `classes`. With `expect_records`, the file must hold exactly that many records (the
/// official layout); without, any non-zero whole number. Errors name `name` and the byte offset: where an
/// incomplete record starts, the file length for a wrong record count, the offending label byte.
/// Class names are the standard CIFAR-10 ones for one label byte and 10 classes, else "class0", "class1", ...
pub fn parse_cifar_bin(
    name: &str,
    bytes: &[u8],
    label_bytes: usize,
    classes: usize,
    expect_records: Option<usize>,
) -> Result<Dataset, DataError> {
    if label_bytes == 0 {
        return Err(DataError::new(name, None, "a CIFAR record needs at least one label byte"));
    }
    let record = label_bytes + IMAGE_BYTES;
    if bytes.is_empty() {
        return Err(DataError::new(name, Some(0), "empty file"));
    }
    let (records, part) = (bytes.len() / record, bytes.len() % record);
    if part != 0 {
        return Err(DataError::new(
            name,
            Some((records * record) as u64),
            format!("record {records} is incomplete: file ends after {part} of its {record} bytes"),
        ));
    }
    if let Some(want) = expect_records.filter(|&w| w != records) {
        return Err(DataError::new(
            name,
            Some(bytes.len() as u64),
            format!("file holds {records} records, the official file {want} ({} bytes)", want.saturating_mul(record)),
        ));
    }
    let mut images = Vec::with_capacity(records * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(records);
    for (r, rec) in bytes.chunks_exact(record).enumerate() {
        let bad = || DataError::new(name, Some((r * record) as u64), "malformed record");
        let (label, pixels) = rec.split_at_checked(label_bytes).ok_or_else(bad)?;
        let label = *label.last().ok_or_else(bad)?;
        if usize::from(label) >= classes {
            let at = r * record + label_bytes - 1;
            return Err(DataError::new(name, Some(at as u64), format!("label {label} out of range 0..{classes}")));
        }
        labels.push(u16::from(label));
        let mut planes = pixels.chunks_exact(SIDE * SIDE);
        let (Some(red), Some(green), Some(blue)) = (planes.next(), planes.next(), planes.next()) else {
            return Err(bad());
        };
        for ((&r, &g), &b) in red.iter().zip(green).zip(blue) {
            images.extend([r, g, b]);
        }
    }
    let class_names = if label_bytes == 1 && classes == CIFAR10_CLASS_NAMES.len() {
        CIFAR10_CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..classes).map(|i| format!("class{i}")).collect()
    };
    Ok(Dataset { images, labels, h: SIDE, w: SIDE, c: 3, classes, class_names })
}

/// Class names, one a line (empty lines ignored); there must be `classes` of them.
fn parse_names(name: &str, bytes: &[u8], classes: usize) -> Result<Vec<String>, DataError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| DataError::new(name, Some(e.valid_up_to() as u64), "not UTF-8 text"))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != classes {
        return Err(DataError::new(name, None, format!("{} class names, expected {classes}", names.len())));
    }
    Ok(names)
}

/// One file of `src`, parsed; `expect` is applied only when `strict`.
fn file(
    src: &Source,
    base: &str,
    label_bytes: usize,
    classes: usize,
    expect: usize,
    strict: bool,
) -> Result<Dataset, DataError> {
    let (name, bytes) = src.require(&[base])?;
    parse_cifar_bin(&name, &bytes, label_bytes, classes, strict.then_some(expect))
}

/// Class names from `base` when it is there.
fn names_from(src: &Source, base: &str, classes: usize, splits: &mut Splits) -> Result<(), DataError> {
    if let Some((name, bytes)) = src.read(base)? {
        let names = parse_names(&name, &bytes, classes)?;
        splits.train.class_names.clone_from(&names);
        splits.test.class_names = names;
    }
    Ok(())
}

/// CIFAR-10: the five training batches in order, the test batch, names from `batches.meta.txt` if present.
pub(super) fn load_cifar10(src: &Source, strict: bool) -> Result<Splits, DataError> {
    let mut train = file(src, "data_batch_1.bin", 1, 10, CIFAR10_BATCH_RECORDS, strict)?;
    for i in 2..=5 {
        let batch = file(src, &format!("data_batch_{i}.bin"), 1, 10, CIFAR10_BATCH_RECORDS, strict)?;
        train.images.extend_from_slice(&batch.images);
        train.labels.extend_from_slice(&batch.labels);
    }
    let test = file(src, "test_batch.bin", 1, 10, CIFAR10_BATCH_RECORDS, strict)?;
    let mut splits = Splits { train, test };
    names_from(src, "batches.meta.txt", 10, &mut splits)?;
    Ok(splits)
}

/// CIFAR-100 with fine labels: `train.bin`, `test.bin`, names from `fine_label_names.txt` if present.
pub(super) fn load_cifar100(src: &Source, strict: bool) -> Result<Splits, DataError> {
    let train = file(src, "train.bin", 2, 100, CIFAR100_TRAIN_RECORDS, strict)?;
    let test = file(src, "test.bin", 2, 100, CIFAR100_TEST_RECORDS, strict)?;
    let mut splits = Splits { train, test };
    names_from(src, "fine_label_names.txt", 100, &mut splits)?;
    Ok(splits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{TempDir, fails, tar, tar_gz};
    use crate::data::{Format, load, load_with};

    /// Pixel of record `i` (a global index), channel `ch`, at (y, x).
    fn px(i: usize, ch: usize, y: usize, x: usize) -> u8 {
        ((i * 31 + ch * 97 + y * 5 + x * 3) % 251) as u8
    }

    /// Records `first..first + n` with the given label bytes in front, planes R, G, B (CHW).
    fn records(first: usize, labels: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        for (k, l) in labels.iter().enumerate() {
            b.extend_from_slice(l);
            for ch in 0..3 {
                for y in 0..32 {
                    for x in 0..32 {
                        b.push(px(first + k, ch, y, x));
                    }
                }
            }
        }
        b
    }

    /// Checks HWC pixels of records `first..` of `d`, sampled.
    fn check_pixels(d: &Dataset, first: usize) {
        assert_eq!((d.h, d.w, d.c), (32, 32, 3));
        assert_eq!(d.images.len(), d.len() * 3072);
        for k in 0..d.len() {
            let img = d.image(k);
            for (y, x) in [(0, 0), (0, 1), (3, 7), (31, 0), (31, 31)] {
                for ch in 0..3 {
                    assert_eq!(img[(y * 32 + x) * 3 + ch], px(first + k, ch, y, x), "image {k} ({y}, {x}) ch {ch}");
                }
            }
        }
    }

    const META: &str = "plane\ncar\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";

    /// CIFAR-10 files: batch b (1..=5) holds 2 records with labels b, b+4 (mod 10), test holds 3.
    fn cifar10_files() -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for b in 1..=5usize {
            let labels = [[b as u8], [((b + 4) % 10) as u8]];
            files.push((format!("data_batch_{b}.bin"), records((b - 1) * 2, &[&labels[0], &labels[1]])));
        }
        files.push(("test_batch.bin".into(), records(100, &[&[9], &[0], &[5]])));
        files.push(("batches.meta.txt".into(), META.as_bytes().to_vec()));
        files
    }

    fn cifar100_files() -> Vec<(String, Vec<u8>)> {
        vec![
            ("train.bin".into(), records(0, &[&[3, 99], &[19, 0], &[0, 42]])),
            ("test.bin".into(), records(50, &[&[1, 7]])),
            ("fine_label_names.txt".into(), (0..100).map(|i| format!("fine{i}\n")).collect::<String>().into_bytes()),
        ]
    }

    fn write_all(dir: &TempDir, sub: &str, files: &[(String, Vec<u8>)]) {
        for (f, b) in files {
            dir.write(&format!("{sub}/{f}"), b);
        }
    }

    fn check_cifar10(s: &Splits, names: &[&str]) {
        assert_eq!(s.train.len(), 10);
        assert_eq!(s.train.labels, vec![1, 5, 2, 6, 3, 7, 4, 8, 5, 9]);
        assert_eq!(s.test.labels, vec![9, 0, 5]);
        check_pixels(&s.train, 0);
        check_pixels(&s.test, 100);
        assert_eq!((s.train.classes, s.test.classes), (10, 10));
        assert_eq!(s.train.class_names, names);
        assert_eq!(s.test.class_names, names);
    }

    #[test]
    fn chw_to_hwc() {
        let d = parse_cifar_bin("x", &records(0, &[&[4], &[2]]), 1, 10, None).unwrap();
        assert_eq!(d.labels, vec![4, 2]);
        check_pixels(&d, 0);
        // the first pixel's R, G, B are bytes 1, 1025, 2049 of the record
        let raw = records(0, &[&[4]]);
        assert_eq!(&d.images[..3], &[raw[1], raw[1025], raw[2049]]);
        assert_eq!(d.class_names, CIFAR10_CLASS_NAMES);
        let d = parse_cifar_bin("x", &records(0, &[&[1, 2]]), 2, 100, None).unwrap();
        assert_eq!((d.labels.clone(), d.class_names[99].as_str()), (vec![2], "class99"));
    }

    #[test]
    fn cifar10_dir_direct_and_in_subdir() {
        let meta: Vec<&str> = META.lines().filter(|l| !l.is_empty()).collect();
        for sub in ["flat", "top/cifar-10-batches-bin"] {
            let dir = TempDir::new("c10");
            write_all(&dir, sub, &cifar10_files());
            let root = dir.path().join(sub.trim_end_matches("/cifar-10-batches-bin"));
            let (s, f) = load_with(&root, None, false).unwrap();
            assert_eq!(f, Format::Cifar10);
            check_cifar10(&s, &meta);
            // without batches.meta.txt: the standard names
            std::fs::remove_file(dir.path().join(sub).join("batches.meta.txt")).unwrap();
            let (s, _) = load_with(&root, Some(Format::Cifar10), false).unwrap();
            check_cifar10(&s, &CIFAR10_CLASS_NAMES);
        }
    }

    #[test]
    fn cifar10_tar_gz() {
        let dir = TempDir::new("c10-tar");
        let files = cifar10_files();
        let mut members: Vec<(String, &[u8])> =
            files.iter().map(|(f, b)| (format!("cifar-10-batches-bin/{f}"), &b[..])).collect();
        members.push(("cifar-10-batches-bin/readme.html".into(), b"<html>"));
        let members: Vec<(&str, &[u8])> = members.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let meta: Vec<&str> = META.lines().filter(|l| !l.is_empty()).collect();
        for name in ["cifar-10-binary.tar.gz", "c.tgz"] {
            let p = dir.write(name, &tar_gz(&members));
            let (s, f) = load_with(&p, None, false).unwrap();
            assert_eq!(f, Format::Cifar10);
            check_cifar10(&s, &meta);
        }
        // strict: the small batches are not official
        let e = load(&dir.path().join("c.tgz"), None).unwrap_err();
        assert!(e.to_string().contains("c.tgz:cifar-10-batches-bin/data_batch_1.bin: byte 6146: "), "{e}");
    }

    #[test]
    fn cifar100_dir_and_tar() {
        let dir = TempDir::new("c100");
        write_all(&dir, "x/cifar-100-binary", &cifar100_files());
        let (s, f) = load_with(&dir.path().join("x"), None, false).unwrap();
        assert_eq!(f, Format::Cifar100);
        assert_eq!((s.train.labels.clone(), s.test.labels.clone()), (vec![99, 0, 42], vec![7]));
        check_pixels(&s.train, 0);
        check_pixels(&s.test, 50);
        assert_eq!((s.train.classes, s.train.class_names[42].as_str()), (100, "fine42"));
        assert_eq!(s.test.class_names.len(), 100);
        // directly in the directory, without names
        std::fs::remove_file(dir.path().join("x/cifar-100-binary/fine_label_names.txt")).unwrap();
        let (s, f) = load_with(&dir.path().join("x/cifar-100-binary"), None, false).unwrap();
        assert_eq!((f, s.train.class_names[7].as_str()), (Format::Cifar100, "class7"));
        let files = cifar100_files();
        let members: Vec<(String, &[u8])> =
            files.iter().map(|(f, b)| (format!("cifar-100-binary/{f}"), &b[..])).collect();
        let members: Vec<(&str, &[u8])> = members.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let p = dir.write("cifar-100-binary.tar.gz", &tar_gz(&members));
        let (s, f) = load_with(&p, None, false).unwrap();
        assert_eq!(
            (f, s.train.labels.clone(), s.test.class_names[3].as_str()),
            (Format::Cifar100, vec![99, 0, 42], "fine3")
        );
    }

    #[test]
    fn every_truncation_is_an_error_naming_the_file() {
        let full = records(0, &[&[1], &[2], &[3]]);
        for len in 0..full.len() {
            let e = fails(parse_cifar_bin("d/data_batch_2.bin", &full[..len], 1, 10, Some(3)), len);
            assert!(e.to_string().starts_with("d/data_batch_2.bin: byte "), "{len}: {e}");
            let at = e.offset.unwrap();
            if len % 3073 != 0 {
                assert_eq!(at, (len / 3073 * 3073) as u64, "{len}: {e}");
                assert!(parse_cifar_bin("d", &full[..len], 1, 10, None).is_err());
            } else {
                assert_eq!(at, len as u64, "{len}: {e}");
            }
        }
        // without a count, whole records are fine
        assert_eq!(parse_cifar_bin("d", &full[..3073 * 2], 1, 10, None).unwrap().len(), 2);
        let full = records(0, &[&[1, 2], &[3, 4]]);
        for len in 0..full.len() {
            let e = fails(parse_cifar_bin("t.bin", &full[..len], 2, 100, Some(2)), len);
            assert!(e.to_string().starts_with("t.bin: byte "), "{len}: {e}");
        }
    }

    #[test]
    fn every_truncation_of_a_file_in_a_dir_through_load() {
        let dir = TempDir::new("c10-trunc");
        write_all(&dir, "cifar-10-batches-bin", &cifar10_files());
        let p = dir.path().join("cifar-10-batches-bin/data_batch_4.bin");
        let full = std::fs::read(&p).unwrap();
        for len in (0..full.len()).filter(|l| l % 3073 != 0 || *l == 0) {
            std::fs::write(&p, &full[..len]).unwrap();
            let e = fails(load_with(dir.path(), None, false), len);
            assert!(e.file.ends_with("cifar-10-batches-bin/data_batch_4.bin"), "{len}: {e}");
            assert_eq!(e.offset, Some((len / 3073 * 3073) as u64));
        }
    }

    #[test]
    fn every_truncation_of_a_tar_gz() {
        let dir = TempDir::new("c100-tgz");
        let files = cifar100_files();
        let members: Vec<(&str, &[u8])> = files.iter().map(|(f, b)| (f.as_str(), &b[..])).collect();
        let full = tar_gz(&members);
        let p = dir.path().join("cifar-100-binary.tar.gz");
        for len in 0..full.len() {
            std::fs::write(&p, &full[..len]).unwrap();
            let e = fails(load_with(&p, None, false), len);
            assert!(e.to_string().starts_with(&format!("{}", p.display())), "{len}: {e}");
        }
        // the tar itself cut short (in a whole gzip stream): an error naming the archive, never a panic
        // (the last member's data, 690 bytes, starts 2048 bytes before the end: 2 blocks, then 2 zero blocks)
        let raw = tar(&members);
        assert_eq!((files[2].1.len(), &raw[raw.len() - 2048..][..690]), (690, &files[2].1[..]));
        let last_data_end = raw.len() - 2048 + 690;
        for len in (0..last_data_end).step_by(97).chain([512, 1024, 1536, last_data_end - 1]) {
            std::fs::write(&p, crate::data::testutil::gzip(&raw[..len])).unwrap();
            let e = fails(load_with(&p, None, false), len);
            assert!(e.to_string().starts_with(&format!("{}", p.display())), "{len}: {e}");
        }
    }

    #[test]
    fn labels_out_of_range_name_their_offset() {
        let b = records(0, &[&[1], &[10]]);
        assert_eq!(
            parse_cifar_bin("f", &b, 1, 10, None).unwrap_err().to_string(),
            "f: byte 3073: label 10 out of range 0..10"
        );
        let b = records(0, &[&[1, 2], &[3, 4], &[5, 100]]);
        let e = parse_cifar_bin("f", &b, 2, 100, None).unwrap_err();
        assert_eq!(e.offset, Some(2 * 3074 + 1));
        // through load, in an archive: the member is named
        let dir = TempDir::new("c100-range");
        let mut files = cifar100_files();
        files[1].1 = b;
        let members: Vec<(String, &[u8])> = files.iter().map(|(f, b)| (format!("c/{f}"), &b[..])).collect();
        let members: Vec<(&str, &[u8])> = members.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let p = dir.write("a.tar.gz", &tar_gz(&members));
        let e = load_with(&p, None, false).unwrap_err();
        assert_eq!(e.to_string(), format!("{}:c/test.bin: byte 6149: label 100 out of range 0..100", p.display()));
    }

    #[test]
    fn strict_counts_name_the_file() {
        let dir = TempDir::new("c-strict");
        write_all(&dir, "c10", &cifar10_files());
        let e = load(&dir.path().join("c10"), None).unwrap_err();
        assert!(e.file.ends_with("c10/data_batch_1.bin"), "{e}");
        assert_eq!(e.offset, Some(2 * 3073));
        assert!(e.msg.contains("10000"), "{e}");
        write_all(&dir, "c100", &cifar100_files());
        let e = load(&dir.path().join("c100"), None).unwrap_err();
        assert!(e.file.ends_with("c100/train.bin") && e.msg.contains("50000"), "{e}");
        assert_eq!(parse_cifar_bin("x", &records(0, &[&[0, 0]]), 2, 100, Some(1)).unwrap().len(), 1);
        let e = parse_cifar_bin("x", &records(0, &[&[0, 0]]), 2, 100, Some(CIFAR100_TEST_RECORDS)).unwrap_err();
        assert_eq!(e.to_string(), "x: byte 3074: file holds 1 records, the official file 10000 (30740000 bytes)");
    }

    #[test]
    fn missing_batch_and_bad_names() {
        let dir = TempDir::new("c-missing");
        write_all(&dir, "c10", &cifar10_files());
        std::fs::remove_file(dir.path().join("c10/data_batch_5.bin")).unwrap();
        let e = load_with(&dir.path().join("c10"), None, false).unwrap_err();
        assert!(e.file.ends_with("c10/data_batch_5.bin") && e.msg.contains("no such file"), "{e}");
        write_all(&dir, "c10", &cifar10_files());
        dir.write("c10/batches.meta.txt", b"a\nb\n");
        let e = load_with(&dir.path().join("c10"), None, false).unwrap_err();
        assert!(e.file.ends_with("batches.meta.txt") && e.msg.contains("2 class names"), "{e}");
        dir.write("c10/batches.meta.txt", b"a\xff\n");
        assert_eq!(load_with(&dir.path().join("c10"), None, false).unwrap_err().offset, Some(1));
        // an archive lacking a member names it
        let files = cifar10_files();
        let members: Vec<(&str, &[u8])> =
            files.iter().filter(|(f, _)| f != "test_batch.bin").map(|(f, b)| (f.as_str(), &b[..])).collect();
        let p = dir.write("c.tar.gz", &tar_gz(&members));
        let e = load_with(&p, None, false).unwrap_err();
        assert!(e.to_string().contains("c.tar.gz:test_batch.bin: no such member"), "{e}");
    }
}
