//! CIFAR-10 and CIFAR-100, binary and python versions.
//!
//! Binary version: each record is the label byte(s) then 3072 pixel bytes: the 1024 red, then green, then blue values of a
//! 32x32 image, row-major. CIFAR-10 (`cifar-10-batches-bin/`): one label byte; `data_batch_1.bin` ..
//! `data_batch_5.bin` (training, in that order) and `test_batch.bin`, 10000 records each; class names in
//! `batches.meta.txt`. CIFAR-100 (`cifar-100-binary/`): coarse then fine label byte (the fine label is used,
//! 100 classes); `train.bin` (50000 records), `test.bin` (10000); class names in `fine_label_names.txt`.
//!
//! Python version: the same data as pickled dicts (see [`parse_cifar_py`]), read by [`crate::pickle`], which
//! parses the known structure and never runs anything. CIFAR-10 (`cifar-10-batches-py/`): `data_batch_1` ..
//! `data_batch_5`, `test_batch`, names under `label_names` in `batches.meta`. CIFAR-100 (`cifar-100-python/`):
//! `train`, `test` (fine labels used), names under `fine_label_names` in `meta`.

use super::{Dataset, FileError, Files, Splits};
use crate::pickle::{self, Kind, Value};

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

/// Every file the python version reads.
pub(super) const PY_FILES: [&str; 10] = [
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
    "train",
    "test",
    "meta",
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
) -> Result<Dataset, FileError> {
    if label_bytes == 0 {
        return Err(FileError::new(name, None, "a CIFAR record needs at least one label byte"));
    }
    let record = label_bytes + IMAGE_BYTES;
    if bytes.is_empty() {
        return Err(FileError::new(name, Some(0), "empty file"));
    }
    let (records, part) = (bytes.len() / record, bytes.len() % record);
    if part != 0 {
        return Err(FileError::new(
            name,
            Some((records * record) as u64),
            format!("record {records} is incomplete: file ends after {part} of its {record} bytes"),
        ));
    }
    if let Some(want) = expect_records.filter(|&w| w != records) {
        return Err(FileError::new(
            name,
            Some(bytes.len() as u64),
            format!("file holds {records} records, the official file {want} ({} bytes)", want.saturating_mul(record)),
        ));
    }
    let mut images = Vec::with_capacity(records * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(records);
    for (r, rec) in bytes.chunks_exact(record).enumerate() {
        let bad = || FileError::new(name, Some((r * record) as u64), "malformed record");
        let (label, pixels) = rec.split_at_checked(label_bytes).ok_or_else(bad)?;
        let label = *label.last().ok_or_else(bad)?;
        if usize::from(label) >= classes {
            let at = r * record + label_bytes - 1;
            return Err(FileError::new(name, Some(at as u64), format!("label {label} out of range 0..{classes}")));
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
fn parse_names(name: &str, bytes: &[u8], classes: usize) -> Result<Vec<String>, FileError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| FileError::new(name, Some(e.valid_up_to() as u64), "not UTF-8 text"))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != classes {
        return Err(FileError::new(name, None, format!("{} class names, expected {classes}", names.len())));
    }
    Ok(names)
}

/// One file of `src`, parsed; `expect` is applied only when `strict`.
fn file(
    src: &Files,
    base: &str,
    label_bytes: usize,
    classes: usize,
    expect: usize,
    strict: bool,
) -> Result<Dataset, FileError> {
    let (name, bytes) = src.require(&[base])?;
    parse_cifar_bin(&name, &bytes, label_bytes, classes, strict.then_some(expect))
}

/// Class names from `base` when it is there.
fn names_from(src: &Files, base: &str, classes: usize, splits: &mut Splits) -> Result<(), FileError> {
    if let Some((name, bytes)) = src.read(base)? {
        let names = parse_names(&name, &bytes, classes)?;
        splits.train.class_names.clone_from(&names);
        splits.test.class_names = names;
    }
    Ok(())
}

/// The standard class names for `classes` classes: CIFAR-10's for 10, else "class0", "class1", ...
fn default_names(classes: usize) -> Vec<String> {
    if classes == CIFAR10_CLASS_NAMES.len() {
        CIFAR10_CLASS_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..classes).map(|i| format!("class{i}")).collect()
    }
}

/// The keys of a dict, quoted, for messages.
fn key_list(v: &Value<'_>) -> String {
    let keys: Vec<String> = v.text_keys().iter().map(|k| format!("'{}'", k.escape_debug())).collect();
    if keys.is_empty() { "none are text".into() } else { keys.join(", ") }
}

/// The entry `key` of the top-level dict of a pickle, or an error naming the file and the keys there are.
fn entry<'v, 'a>(name: &str, root: &'v Value<'a>, key: &str) -> Result<&'v Value<'a>, FileError> {
    if !matches!(root.kind, Kind::Dict(_)) {
        return Err(FileError::new(
            name,
            Some(root.offset),
            format!("the pickle holds a {}, expected a dict", root.type_name()),
        ));
    }
    root.get(key).ok_or_else(|| {
        FileError::new(
            name,
            Some(root.offset),
            format!("no key '{key}' in the pickled dict (keys: {})", key_list(root)),
        )
    })
}

/// Parse one python-version CIFAR batch: a pickled dict (Python 2's protocol 2 as distributed, or a Python 3
/// re-pickle) holding the images under `data`, a numpy uint8 array of shape (N, 3072) whose rows are the 1024
/// red, then green, then blue values of a 32x32 image, and N labels under `label_key` (a list of ints:
/// `labels` for CIFAR-10, `fine_labels` for CIFAR-100). Images are converted to (32, 32, 3) HWC.
///
/// Labels must be below `classes`. With `expect_records`, N must be exactly that (the official files); without,
/// any non-zero N. Errors name `name` and the byte offset of the opcode that made the offending value (the
/// label, the list, the array); a pickle that names anything but numpy's array reconstruction or
/// `_codecs.encode` is refused. Class names are as for [`parse_cifar_bin`].
pub fn parse_cifar_py(
    name: &str,
    bytes: &[u8],
    label_key: &str,
    classes: usize,
    expect_records: Option<usize>,
) -> Result<Dataset, FileError> {
    let root = pickle::parse(name, bytes)?;
    let at = |v: &Value<'_>, msg: String| FileError::new(name, Some(v.offset), msg);
    let data = entry(name, &root, "data")?;
    let Some(array) = data.as_array() else {
        return Err(at(data, format!("'data' is a {}, expected a numpy uint8 array", data.type_name())));
    };
    if array.type_str() != "u1" {
        return Err(at(data, format!("'data' has dtype {}, expected uint8 (u1)", array.dtype)));
    }
    let records = match array.shape[..] {
        [n, IMAGE_BYTES] if n > 0 => n,
        _ => {
            return Err(at(
                data,
                format!("'data' has shape {:?}, expected (N, {IMAGE_BYTES}) with N > 0", array.shape),
            ));
        }
    };
    let labels_value = entry(name, &root, label_key)?;
    let Some(items) = labels_value.items() else {
        let what = labels_value.type_name();
        return Err(at(labels_value, format!("'{label_key}' is a {what}, expected a list of ints")));
    };
    if items.len() != records {
        let msg = format!("{} labels in '{label_key}' for {records} images in 'data'", items.len());
        return Err(at(labels_value, msg));
    }
    if let Some(want) = expect_records.filter(|&w| w != records) {
        return Err(at(data, format!("file holds {records} images, the official file {want}")));
    }
    let mut labels = Vec::with_capacity(records);
    for item in items {
        match item.as_int() {
            Some(l) if (0..classes as i64).contains(&l) => labels.push(l as u16),
            Some(l) => return Err(at(item, format!("label {l} out of range 0..{classes}"))),
            None => return Err(at(item, format!("a label is a {}, expected an int", item.type_name()))),
        }
    }
    let plane = SIDE * SIDE;
    let mut images = Vec::with_capacity(records * IMAGE_BYTES);
    if array.fortran_order && records > 1 {
        // column-major: element (i, j) at j * records + i
        let px = |i: usize, j: usize| array.data.get(j * records + i).copied().unwrap_or_default();
        for i in 0..records {
            for p in 0..plane {
                images.extend([px(i, p), px(i, plane + p), px(i, 2 * plane + p)]);
            }
        }
    } else {
        for row in array.data.chunks_exact(IMAGE_BYTES) {
            let (red, rest) = row.split_at(plane);
            let (green, blue) = rest.split_at(plane);
            for ((&r, &g), &b) in red.iter().zip(green).zip(blue) {
                images.extend([r, g, b]);
            }
        }
    }
    if images.len() != records * IMAGE_BYTES {
        return Err(at(data, "array data shorter than its shape".into()));
    }
    let class_names = default_names(classes);
    Ok(Dataset { images, labels, h: SIDE, w: SIDE, c: 3, classes, class_names })
}

/// Class names from a python-version meta pickle: the list of byte or text strings under `key`
/// (`label_names` in CIFAR-10's `batches.meta`, `fine_label_names` in CIFAR-100's `meta`), `classes` of them.
pub fn parse_py_names(name: &str, bytes: &[u8], key: &str, classes: usize) -> Result<Vec<String>, FileError> {
    let root = pickle::parse(name, bytes)?;
    let list = entry(name, &root, key)?;
    let at = |v: &Value<'_>, msg: String| FileError::new(name, Some(v.offset), msg);
    let Some(items) = list.items() else {
        return Err(at(list, format!("'{key}' is a {}, expected a list of names", list.type_name())));
    };
    if items.len() != classes {
        return Err(at(list, format!("{} class names in '{key}', expected {classes}", items.len())));
    }
    items
        .iter()
        .map(|v| {
            v.text()
                .map(String::from)
                .ok_or_else(|| at(v, format!("a class name is a {}, not UTF-8 text", v.type_name())))
        })
        .collect()
}

/// One python-version batch of `src`, parsed; `expect` is applied only when `strict`.
fn py_file(
    src: &Files,
    base: &str,
    label_key: &str,
    classes: usize,
    expect: usize,
    strict: bool,
) -> Result<Dataset, FileError> {
    let (name, bytes) = src.require(&[base])?;
    parse_cifar_py(&name, &bytes, label_key, classes, strict.then_some(expect))
}

/// Class names from the meta pickle `base` when it is there.
fn py_names_from(src: &Files, base: &str, key: &str, classes: usize, splits: &mut Splits) -> Result<(), FileError> {
    if let Some((name, bytes)) = src.read(base)? {
        let names = parse_py_names(&name, &bytes, key, classes)?;
        splits.train.class_names.clone_from(&names);
        splits.test.class_names = names;
    }
    Ok(())
}

/// CIFAR-10, python version: `data_batch_1` .. `data_batch_5` in order, `test_batch`, names from
/// `batches.meta` if present.
pub(super) fn load_cifar10_py(src: &Files, strict: bool) -> Result<Splits, FileError> {
    let mut train = py_file(src, "data_batch_1", "labels", 10, CIFAR10_BATCH_RECORDS, strict)?;
    for i in 2..=5 {
        let batch = py_file(src, &format!("data_batch_{i}"), "labels", 10, CIFAR10_BATCH_RECORDS, strict)?;
        train.images.extend_from_slice(&batch.images);
        train.labels.extend_from_slice(&batch.labels);
    }
    let test = py_file(src, "test_batch", "labels", 10, CIFAR10_BATCH_RECORDS, strict)?;
    let mut splits = Splits { train, test };
    py_names_from(src, "batches.meta", "label_names", 10, &mut splits)?;
    Ok(splits)
}

/// CIFAR-100, python version, fine labels: `train`, `test`, names from `meta` if present.
pub(super) fn load_cifar100_py(src: &Files, strict: bool) -> Result<Splits, FileError> {
    let train = py_file(src, "train", "fine_labels", 100, CIFAR100_TRAIN_RECORDS, strict)?;
    let test = py_file(src, "test", "fine_labels", 100, CIFAR100_TEST_RECORDS, strict)?;
    let mut splits = Splits { train, test };
    py_names_from(src, "meta", "fine_label_names", 100, &mut splits)?;
    Ok(splits)
}

/// CIFAR-10: the five training batches in order, the test batch, names from `batches.meta.txt` if present.
pub(super) fn load_cifar10(src: &Files, strict: bool) -> Result<Splits, FileError> {
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
pub(super) fn load_cifar100(src: &Files, strict: bool) -> Result<Splits, FileError> {
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

    // ---- python version ----

    use crate::pickle::build::{self as pk, Pickler, Style};

    /// CHW rows (no label bytes) of records `first..first + n`.
    fn rows(first: usize, n: usize) -> Vec<u8> {
        records(first, &vec![&[][..]; n])
    }

    /// A CIFAR-10 python batch of records `first..` with these labels.
    fn py10(style: Style, first: usize, labels: &[i64]) -> Vec<u8> {
        pk::batch(style, &[("labels", labels)], &rows(first, labels.len()), &[labels.len(), IMAGE_BYTES])
    }

    /// The python version of [`cifar10_files`]: the same images, labels and names.
    fn cifar10_py_files(style: Style) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for b in 1..=5usize {
            files.push((format!("data_batch_{b}"), py10(style, (b - 1) * 2, &[b as i64, ((b + 4) % 10) as i64])));
        }
        files.push(("test_batch".into(), py10(style, 100, &[9, 0, 5])));
        let names: Vec<&str> = META.lines().filter(|l| !l.is_empty()).collect();
        files.push(("batches.meta".into(), pk::meta(style, "label_names", &names)));
        files
    }

    /// The python version of [`cifar100_files`].
    fn cifar100_py_files(style: Style) -> Vec<(String, Vec<u8>)> {
        let batch = |first: usize, fine: &[i64], coarse: &[i64]| {
            let labels: [(&str, &[i64]); 2] = [("fine_labels", fine), ("coarse_labels", coarse)];
            pk::batch(style, &labels, &rows(first, fine.len()), &[fine.len(), IMAGE_BYTES])
        };
        let names: Vec<String> = (0..100).map(|i| format!("fine{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        vec![
            ("train".into(), batch(0, &[99, 0, 42], &[3, 19, 0])),
            ("test".into(), batch(50, &[7], &[1])),
            ("meta".into(), pk::meta(style, "fine_label_names", &names)),
        ]
    }

    fn fixture(name: &str) -> Vec<u8> {
        let p = format!("{}/tests/fixtures/cifar-py/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// `files` as archive members under `dir/`.
    fn members<'f>(dir: &str, files: &'f [(String, Vec<u8>)]) -> Vec<(String, &'f [u8])> {
        files.iter().map(|(f, b)| (format!("{dir}/{f}"), &b[..])).collect()
    }

    fn tar_gz_of(members: &[(String, &[u8])]) -> Vec<u8> {
        let m: Vec<(&str, &[u8])> = members.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        tar_gz(&m)
    }

    #[test]
    fn python_batches_decode_like_binary_ones() {
        let bin = parse_cifar_bin("b", &records(7, &[&[4], &[2], &[9]]), 1, 10, None).unwrap();
        for style in [Style::Py2, Style::Py3] {
            let d = parse_cifar_py("p", &py10(style, 7, &[4, 2, 9]), "labels", 10, Some(3)).unwrap();
            assert_eq!(d, bin, "{style:?}");
            check_pixels(&d, 7);
            // the first pixel's R, G, B are bytes 0, 1024, 2048 of the row
            let row = rows(7, 1);
            assert_eq!(&d.images[..3], &[row[0], row[1024], row[2048]]);
            let files = cifar100_py_files(style);
            let d = parse_cifar_py("t", &files[0].1, "fine_labels", 100, None).unwrap();
            assert_eq!((d.labels.clone(), d.classes, d.class_names[99].as_str()), (vec![99, 0, 42], 100, "class99"));
            check_pixels(&d, 0);
        }
    }

    #[test]
    fn python_fortran_order_data() {
        let data = rows(0, 2);
        let mut fortran = Vec::with_capacity(data.len());
        for j in 0..IMAGE_BYTES {
            fortran.extend([data[j], data[IMAGE_BYTES + j]]);
        }
        let c_order = pk::batch(Style::Py2, &[("labels", &[1, 2])], &data, &[2, IMAGE_BYTES]);
        let f_order = pk::batch(Style::Py2, &[("labels", &[1, 2])], &fortran, &[2, IMAGE_BYTES]);
        // the order flag is the NEWFALSE just before the data's BINSTRING (6144 = 0x1800 bytes)
        let flag = f_order.windows(6).position(|w| w == [0x89, b'T', 0, 0x18, 0, 0]).unwrap();
        let mut f_order = f_order;
        f_order[flag] = 0x88;
        let c = parse_cifar_py("c", &c_order, "labels", 10, None).unwrap();
        let f = parse_cifar_py("f", &f_order, "labels", 10, None).unwrap();
        assert_eq!(c, f);
        check_pixels(&f, 0);
    }

    #[test]
    fn python_files_written_by_numpy() {
        // scripts/make_pickle_fixtures.py: Python 3, numpy 2, protocol 2
        let d = parse_cifar_py("f", &fixture("data_batch_py3_proto2"), "labels", 10, None).unwrap();
        assert_eq!(d.labels, vec![3, 8]);
        check_pixels(&d, 0);
        let d = parse_cifar_py("f", &fixture("cifar100_train_py3_proto2"), "fine_labels", 100, None).unwrap();
        assert_eq!(d.labels, vec![42]);
        check_pixels(&d, 5);
        let names = parse_py_names("m", &fixture("batches.meta"), "label_names", 10).unwrap();
        assert_eq!(names, META.lines().filter(|l| !l.is_empty()).collect::<Vec<_>>());
        let names = parse_py_names("m", &fixture("meta"), "fine_label_names", 100).unwrap();
        assert_eq!((names[0].as_str(), names[99].as_str()), ("fine0", "fine99"));
        // a directory of them, recognised and loaded
        let dir = TempDir::new("c10-numpy");
        for f in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"] {
            dir.write(&format!("x/cifar-10-batches-py/{f}"), &fixture("data_batch_py3_proto2"));
        }
        dir.write("x/cifar-10-batches-py/batches.meta", &fixture("batches.meta"));
        let (s, f) = load_with(&dir.path().join("x"), None, false).unwrap();
        assert_eq!((f, s.train.len(), s.test.len(), s.train.class_names[1].as_str()), (Format::Cifar10, 10, 2, "car"));
        assert_eq!(s.train.labels[8..], [3, 8]);
        check_pixels(&s.test, 0);
    }

    #[test]
    fn cifar10_python_dir_and_tar() {
        let meta: Vec<&str> = META.lines().filter(|l| !l.is_empty()).collect();
        for style in [Style::Py2, Style::Py3] {
            let files = cifar10_py_files(style);
            for sub in ["flat", "top/cifar-10-batches-py"] {
                let dir = TempDir::new("c10py");
                write_all(&dir, sub, &files);
                let root = dir.path().join(sub.trim_end_matches("/cifar-10-batches-py"));
                let (s, f) = load_with(&root, None, false).unwrap();
                assert_eq!(f, Format::Cifar10);
                check_cifar10(&s, &meta);
                // without batches.meta: the standard names; the format given
                std::fs::remove_file(dir.path().join(sub).join("batches.meta")).unwrap();
                let (s, _) = load_with(&root, Some(Format::Cifar10), false).unwrap();
                check_cifar10(&s, &CIFAR10_CLASS_NAMES);
            }
            let dir = TempDir::new("c10py-tar");
            let mut m = members("cifar-10-batches-py", &files);
            m.push(("cifar-10-batches-py/readme.html".into(), b"<html>"));
            for name in ["cifar-10-python.tar.gz", "c.tgz"] {
                let p = dir.write(name, &tar_gz_of(&m));
                let (s, f) = load_with(&p, None, false).unwrap();
                assert_eq!(f, Format::Cifar10);
                check_cifar10(&s, &meta);
            }
            // strict: the small batches are not official; the file and the array's offset are named
            let e = load(&dir.path().join("c.tgz"), None).unwrap_err();
            assert!(e.file.ends_with("c.tgz:cifar-10-batches-py/data_batch_1"), "{e}");
            assert_eq!(e.msg, "file holds 2 images, the official file 10000");
            // the offset is the REDUCE that made the array, just after numpy.ndarray's (0,) and b'b'
            let at = e.offset.unwrap() as usize;
            assert_eq!(files[0].1[at], b'R');
            assert!(style == Style::Py3 || files[0].1[..at].ends_with(b"K\x00\x85U\x01b\x87"), "{e}");
        }
    }

    #[test]
    fn cifar100_python_dir_and_tar() {
        for style in [Style::Py2, Style::Py3] {
            let files = cifar100_py_files(style);
            let dir = TempDir::new("c100py");
            write_all(&dir, "x/cifar-100-python", &files);
            let (s, f) = load_with(&dir.path().join("x"), None, false).unwrap();
            assert_eq!(f, Format::Cifar100);
            assert_eq!((s.train.labels.clone(), s.test.labels.clone()), (vec![99, 0, 42], vec![7]));
            check_pixels(&s.train, 0);
            check_pixels(&s.test, 50);
            assert_eq!(
                (s.train.classes, s.train.class_names[42].as_str(), s.test.class_names.len()),
                (100, "fine42", 100)
            );
            // directly in the directory, without names
            std::fs::remove_file(dir.path().join("x/cifar-100-python/meta")).unwrap();
            let (s, f) = load_with(&dir.path().join("x/cifar-100-python"), None, false).unwrap();
            assert_eq!((f, s.train.class_names[7].as_str()), (Format::Cifar100, "class7"));
            let p = dir.write("cifar-100-python.tar.gz", &tar_gz_of(&members("cifar-100-python", &files)));
            let (s, f) = load_with(&p, None, false).unwrap();
            assert_eq!(
                (f, s.train.labels.clone(), s.test.class_names[3].as_str()),
                (Format::Cifar100, vec![99, 0, 42], "fine3")
            );
            let e = load(&p, None).unwrap_err();
            assert!(
                e.file.ends_with("cifar-100-python.tar.gz:cifar-100-python/train") && e.msg.contains("50000"),
                "{e}"
            );
            // a given format whose python files are there
            let (_, f) = load_with(&p, Some(Format::Cifar100), false).unwrap();
            assert_eq!(f, Format::Cifar100);
        }
    }

    #[test]
    fn binary_version_wins_over_python() {
        let dir = TempDir::new("c-both");
        let mut py = cifar10_py_files(Style::Py2);
        py[0].1.truncate(10); // a broken data_batch_1: reading it would fail
        write_all(&dir, "sub/cifar-10-batches-bin", &cifar10_files());
        write_all(&dir, "sub/cifar-10-batches-py", &py);
        write_all(&dir, "flat", &cifar10_files());
        write_all(&dir, "flat", &py);
        let meta: Vec<&str> = META.lines().filter(|l| !l.is_empty()).collect();
        for (root, format) in
            [("sub", None), ("flat", None), ("sub", Some(Format::Cifar10)), ("flat", Some(Format::Cifar10))]
        {
            let (s, f) = load_with(&dir.path().join(root), format, false).unwrap();
            assert_eq!(f, Format::Cifar10);
            check_cifar10(&s, &meta);
        }
        let bin = cifar10_files();
        let mut m = members("cifar-10-batches-py", &py);
        m.extend(members("cifar-10-batches-bin", &bin));
        let p = dir.write("both.tar.gz", &tar_gz_of(&m));
        check_cifar10(&load_with(&p, None, false).unwrap().0, &meta);
        // the python one alone is read, and its broken batch named
        std::fs::remove_dir_all(dir.path().join("sub/cifar-10-batches-bin")).unwrap();
        let e = load_with(&dir.path().join("sub"), None, false).unwrap_err();
        assert!(e.file.ends_with("sub/cifar-10-batches-py/data_batch_1"), "{e}");
        assert_eq!(e.msg, "SHORT_BINSTRING needs 11 more bytes, the pickle has 2 left");
        // CIFAR-100 binary over python, in one directory
        let dir = TempDir::new("c100-both");
        let mut py = cifar100_py_files(Style::Py3);
        py[0].1 = b"junk".to_vec();
        write_all(&dir, "d", &cifar100_files());
        write_all(&dir, "d", &py);
        let (s, f) = load_with(&dir.path().join("d"), None, false).unwrap();
        assert_eq!((f, s.train.labels), (Format::Cifar100, vec![99, 0, 42]));
    }

    #[test]
    fn python_batches_that_execute_code_are_refused() {
        let dir = TempDir::new("c-evil");
        let mut files = cifar10_py_files(Style::Py3);
        let marker = dir.path().join("pwned");
        let cmd = format!("touch {}", marker.display());
        let mut evil = b"\x80\x02cos\nsystem\nX".to_vec();
        evil.extend((cmd.len() as u32).to_le_bytes());
        evil.extend(cmd.as_bytes());
        evil.extend(b"\x85R.");
        files[2].1 = evil;
        write_all(&dir, "cifar-10-batches-py", &files);
        let e = load_with(dir.path(), None, false).unwrap_err();
        assert!(e.file.ends_with("cifar-10-batches-py/data_batch_3") && e.offset == Some(2), "{e}");
        assert!(e.msg.starts_with("refused global os.system"), "{e}");
        assert!(!marker.exists());
        // in a meta file too
        files[2] = ("data_batch_3".into(), py10(Style::Py3, 4, &[3, 7]));
        files[6].1 = b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R.".to_vec();
        write_all(&dir, "cifar-10-batches-py", &files);
        let e = load_with(dir.path(), None, false).unwrap_err();
        assert!(e.file.ends_with("batches.meta") && e.msg.contains("__builtin__.eval"), "{e}");
    }

    #[test]
    fn python_every_truncation_is_an_error() {
        for style in [Style::Py2, Style::Py3] {
            let full = py10(style, 0, &[1, 2]);
            for len in 0..full.len() {
                let e = fails(parse_cifar_py("d/data_batch_2", &full[..len], "labels", 10, None), len);
                assert!(e.to_string().starts_with("d/data_batch_2: byte "), "{len}: {e}");
            }
        }
        // through load, in a directory (sampled lengths)
        let dir = TempDir::new("c10py-trunc");
        write_all(&dir, "cifar-10-batches-py", &cifar10_py_files(Style::Py2));
        let p = dir.path().join("cifar-10-batches-py/test_batch");
        let full = std::fs::read(&p).unwrap();
        for len in (0..full.len()).step_by(61).chain([full.len() - 1]) {
            std::fs::write(&p, &full[..len]).unwrap();
            let e = fails(load_with(dir.path(), None, false), len);
            assert!(e.file.ends_with("cifar-10-batches-py/test_batch") && e.offset.is_some(), "{len}: {e}");
        }
    }

    #[test]
    fn python_bad_content_names_file_and_offset() {
        // a label out of range: the offset of its opcode
        let b = py10(Style::Py2, 0, &[1, 10]);
        let e = parse_cifar_py("f", &b, "labels", 10, None).unwrap_err();
        let at = e.offset.unwrap() as usize;
        assert_eq!((&b[at..at + 2], e.msg.as_str()), (&[b'K', 10][..], "label 10 out of range 0..10"));
        let b = py10(Style::Py3, 0, &[-1]);
        assert!(parse_cifar_py("f", &b, "labels", 10, None).unwrap_err().msg.contains("label -1 out of range"));
        // label and image counts differ
        let b = pk::batch(Style::Py3, &[("labels", &[1, 2, 3])], &rows(0, 2), &[2, IMAGE_BYTES]);
        let e = parse_cifar_py("f", &b, "labels", 10, None).unwrap_err();
        assert_eq!(e.msg, "3 labels in 'labels' for 2 images in 'data'");
        assert_eq!(b[e.offset.unwrap() as usize], b']');
        // a missing key names the keys there are
        let b = py10(Style::Py2, 0, &[1]);
        let e = parse_cifar_py("f", &b, "fine_labels", 100, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "f: byte 2: no key 'fine_labels' in the pickled dict (keys: 'batch_label', 'labels', 'data', 'filenames')"
        );
        // wrong shape, wrong dtype, no images, not a dict, labels not a list, a label not an int
        let b = pk::batch(Style::Py2, &[("labels", &[1, 2])], &rows(0, 1), &[2, IMAGE_BYTES / 2]);
        assert!(
            parse_cifar_py("f", &b, "labels", 10, None)
                .unwrap_err()
                .msg
                .contains("shape [2, 1536], expected (N, 3072)")
        );
        let b = pk::batch(Style::Py2, &[("labels", &[])], &[], &[0, IMAGE_BYTES]);
        assert!(parse_cifar_py("f", &b, "labels", 10, None).unwrap_err().msg.contains("with N > 0"));
        let mut b = py10(Style::Py2, 0, &[1]);
        let at = b.windows(4).position(|w| w == b"U\x02u1").unwrap();
        b[at + 2] = b'i';
        assert!(parse_cifar_py("f", &b, "labels", 10, None).unwrap_err().msg.contains("dtype |i1, expected uint8"));
        let e = parse_cifar_py("f", b"\x80\x02]q\x01.", "labels", 10, None).unwrap_err();
        assert_eq!(e.msg, "the pickle holds a list, expected a dict");
        let mut p = Pickler::new(Style::Py2);
        p.begin_dict();
        p.key("data");
        p.ndarray_u8(&[1, IMAGE_BYTES], &rows(0, 1));
        p.key("labels");
        p.raw(b"K\x01N\x86");
        p.end_dict();
        let tuple_labels = p.finish();
        let e = parse_cifar_py("f", &tuple_labels, "labels", 10, None).unwrap_err();
        assert_eq!(e.msg, "2 labels in 'labels' for 1 images in 'data'");
        let mut p = Pickler::new(Style::Py2);
        p.begin_dict();
        p.key("data");
        p.ndarray_u8(&[1, IMAGE_BYTES], &rows(0, 1));
        p.key("labels");
        p.raw(b"N\x85");
        p.end_dict();
        let e = parse_cifar_py("f", &p.finish(), "labels", 10, None).unwrap_err();
        assert_eq!(e.msg, "a label is a None, expected an int");
        let mut p = Pickler::new(Style::Py2);
        p.begin_dict();
        p.key("data");
        p.raw(b"K\x01");
        p.end_dict();
        let e = parse_cifar_py("f", &p.finish(), "labels", 10, None).unwrap_err();
        assert_eq!(e.msg, "'data' is a int, expected a numpy uint8 array");
        // meta: wrong count, a name that is not text
        let e = parse_py_names("m", &pk::meta(Style::Py2, "label_names", &["a", "b"]), "label_names", 10).unwrap_err();
        assert_eq!(e.msg, "2 class names in 'label_names', expected 10");
        let mut p = Pickler::new(Style::Py3);
        p.begin_dict();
        p.key("label_names");
        p.raw(b"(");
        p.unicode("cat");
        p.raw(b"C\x01\xfft");
        p.end_dict();
        let b = p.finish();
        let e = parse_py_names("m", &b, "label_names", 2).unwrap_err();
        assert_eq!(e.msg, "a class name is a bytes, not UTF-8 text");
        assert_eq!(b[e.offset.unwrap() as usize], b'C');
        assert_eq!(parse_py_names("m", &b, "label_names", 1).unwrap_err().offset, Some(b.len() as u64 - 3));
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
