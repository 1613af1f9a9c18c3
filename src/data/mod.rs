//! Datasets: CIFAR-10/100 and MNIST-style IDX files, decoded into one
//! in-memory form. Parsers check every length and report bad input by file
//! and byte offset; nothing here panics on bad data. Files are read from
//! regular files only and within the size their format announces, gzip
//! included ([`bounded`]); archives as a stream (`archive.rs`).

mod archive;
pub mod augment;
pub mod bounded;
pub mod cifar;
pub mod coco;
pub mod detection;
pub mod fashion_det;
pub mod fetch;
pub mod folder;
pub mod idx;
pub mod image;
pub mod imagenet;
pub mod loader;
pub mod source;
pub mod voc;

use crate::file_error::FileError;
use std::path::{Path, PathBuf};

/// Images as u8, each (H, W, C) row-major (NHWC for the whole set), with labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    pub images: Vec<u8>,
    pub labels: Vec<u16>,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub classes: usize,
    pub class_names: Vec<String>,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Same geometry and classes, no images.
    pub fn clone_empty(&self) -> Dataset {
        Dataset { images: vec![], labels: vec![], class_names: self.class_names.clone(), ..*self }
    }

    /// Pixels of image `i`, (H, W, C).
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.h * self.w * self.c;
        &self.images[i * n..(i + 1) * n]
    }
}

/// The official training and test sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
}

/// What a data path holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    Cifar10,
    Cifar100,
    Mnist,
    FashionMnist,
}

/// Load the training and test sets from `path` (a directory of official
/// files or an official archive), recognising the format unless given.
///
/// `path` may be:
/// - a directory holding `data_batch_1.bin`.. `data_batch_5.bin`, `test_batch.bin` (CIFAR-10), directly or in
///   `cifar-10-batches-bin/`; or `train.bin`, `test.bin` (CIFAR-100), directly or in `cifar-100-binary/`;
///   or the python version of either: `data_batch_1` .. `data_batch_5`, `test_batch`, `batches.meta`,
///   directly or in `cifar-10-batches-py/`; `train`, `test`, `meta`, directly or in `cifar-100-python/`
///   (pickles, parsed without running anything: see [`crate::pickle`]);
///   or the four MNIST IDX files `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
///   `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each plain or `.gz`;
/// - an archive (`.tar.gz`, `.tgz` or `.tar`) holding those files: members are found by their base name.
///
/// Without a `format`, the files present decide (CIFAR-10 before CIFAR-100, and for each the binary version
/// before the python one when both are there; with a CIFAR `format`, the python version is read only when the
/// binary one is absent); MNIST-style files are Fashion-MNIST when the path (as given
/// or made absolute) contains "fashion" in any case, else MNIST. The official CIFAR files must hold the
/// official number of records (10000 per CIFAR-10 batch, 50000 / 10000 in CIFAR-100 train / test), in
/// either version.
/// Returns the format used.
pub fn load(path: &Path, format: Option<Format>) -> Result<(Splits, Format), FileError> {
    load_with(path, format, true)
}

/// [`load`], with the record-count rule for the official CIFAR files switched off when `strict_counts`
/// is false: then each file may hold any non-zero whole number of records (for small test data).
pub fn load_with(path: &Path, format: Option<Format>, strict_counts: bool) -> Result<(Splits, Format), FileError> {
    let src = if path.is_dir() {
        Files::Dir(path.to_path_buf())
    } else if is_archive_name(path) {
        Files::open_archive(path)?
    } else if path.exists() {
        return Err(FileError::new(path, None, "not a directory nor a .tar.gz / .tgz / .tar archive"));
    } else {
        return Err(FileError::new(path, None, "no such file or directory"));
    };
    let (src, format, form) = recognise(src, path, format)?;
    let splits = match (format, form) {
        (Format::Cifar10, CifarForm::Binary) => cifar::load_cifar10(&src, strict_counts)?,
        (Format::Cifar100, CifarForm::Binary) => cifar::load_cifar100(&src, strict_counts)?,
        (Format::Cifar10, CifarForm::Python) => cifar::load_cifar10_py(&src, strict_counts)?,
        (Format::Cifar100, CifarForm::Python) => cifar::load_cifar100_py(&src, strict_counts)?,
        (Format::Mnist | Format::FashionMnist, _) => idx::load_idx(&src, format)?,
    };
    Ok((splits, format))
}

const CIFAR10_SUBDIR: &str = "cifar-10-batches-bin";
const CIFAR100_SUBDIR: &str = "cifar-100-binary";
const CIFAR10_PY_SUBDIR: &str = "cifar-10-batches-py";
const CIFAR100_PY_SUBDIR: &str = "cifar-100-python";

/// Which of the published forms of CIFAR a set of files is (MNIST-style sets have one form, `Binary`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CifarForm {
    /// The binary version ("suitable for C programs").
    #[default]
    Binary,
    /// The Python (pickle) version (read too, never executed).
    Python,
}

fn is_archive_name(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    name.ends_with(".tar.gz") || name.ends_with(".tgz") || name.ends_with(".tar")
}

/// Fashion-MNIST when the path, as given or made absolute, contains "fashion" (any case), else MNIST.
fn idx_format(path: &Path) -> Format {
    let has = |p: &Path| p.to_string_lossy().to_lowercase().contains("fashion");
    if has(path) || path.canonicalize().is_ok_and(|p| has(&p)) { Format::FashionMnist } else { Format::Mnist }
}

/// Decide the format (unless given) and the CIFAR version and, for CIFAR in a directory, step into the
/// official subdirectory when there is one. The binary version wins when both are there.
fn recognise(src: Files, path: &Path, format: Option<Format>) -> Result<(Files, Format, CifarForm), FileError> {
    let sub = |name: &str| match &src {
        Files::Dir(d) if d.join(name).is_dir() => Some(d.join(name)),
        _ => None,
    };
    let (sub10, sub100) = (sub(CIFAR10_SUBDIR), sub(CIFAR100_SUBDIR));
    let (sub10_py, sub100_py) = (sub(CIFAR10_PY_SUBDIR), sub(CIFAR100_PY_SUBDIR));
    let bin10 = sub10.is_some() || src.has("data_batch_1.bin");
    let bin100 = sub100.is_some() || (src.has("train.bin") && src.has("test.bin"));
    let py10 = sub10_py.is_some() || src.has("data_batch_1");
    let py100 = sub100_py.is_some() || (src.has("train") && src.has("test"));
    let format = match format {
        Some(f) => f,
        None if bin10 || py10 => Format::Cifar10,
        None if bin100 || py100 => Format::Cifar100,
        None if idx::FILES.iter().any(|f| src.has(f) || src.has(&format!("{f}.gz"))) => idx_format(path),
        None => {
            let (what, subdirs) = match src {
                Files::Dir(_) => (
                    "files",
                    ", or the subdirectory cifar-10-batches-bin/, cifar-10-batches-py/, cifar-100-binary/ or \
                     cifar-100-python/",
                ),
                Files::Archive { .. } => ("members", ""),
            };
            return Err(FileError::new(
                path,
                None,
                format!(
                    "no dataset recognised: looked for {what} data_batch_1.bin or data_batch_1 (CIFAR-10), \
                     train.bin + test.bin or train + test (CIFAR-100), {}[.gz] (MNIST / Fashion-MNIST){subdirs}",
                    idx::FILES.join("[.gz], ")
                ),
            ));
        }
    };
    let (form, dir) = match format {
        Format::Cifar10 if !bin10 && py10 => (CifarForm::Python, sub10_py),
        Format::Cifar10 => (CifarForm::Binary, sub10),
        Format::Cifar100 if !bin100 && py100 => (CifarForm::Python, sub100_py),
        Format::Cifar100 => (CifarForm::Binary, sub100),
        Format::Mnist | Format::FashionMnist => (CifarForm::Binary, None),
    };
    let src = match dir {
        Some(d) => Files::Dir(d),
        None => src,
    };
    Ok((src, format, form))
}

/// Where the official files of a data set are read from (a directory or an archive).
enum Files {
    /// A directory; files are looked up directly in it.
    Dir(PathBuf),
    /// An archive, read once at open: the wanted members' contents (decompressed, for `.gz` members).
    Archive { path: PathBuf, members: Vec<archive::Member> },
}

/// A file's name for errors and its bytes (borrowed from an archive, or read from a directory).
type Named<'a> = (String, std::borrow::Cow<'a, [u8]>);

/// Base names of every member any format reads; archive members with other names are skipped.
fn wanted_member(base: &str) -> bool {
    cifar::FILES.contains(&base)
        || cifar::PY_FILES.contains(&base)
        || idx::FILES.iter().any(|f| base.strip_suffix(".gz").unwrap_or(base) == *f)
}

impl Files {
    /// Read a tar archive (gzipped unless its name ends in `.tar`): see [`archive::read_members`].
    fn open_archive(path: &Path) -> Result<Files, FileError> {
        Ok(Files::Archive { path: path.to_path_buf(), members: archive::read_members(path, wanted_member)? })
    }

    /// Whether `base` is there (in a directory: anything by that name but a directory, so that a
    /// FIFO or a device is named when it is read rather than reported missing).
    fn has(&self, base: &str) -> bool {
        match self {
            Files::Dir(d) => std::fs::metadata(d.join(base)).is_ok_and(|m| !m.is_dir()),
            Files::Archive { members, .. } => members.iter().any(|m| m.base == base),
        }
    }

    /// The name to report for `base` in errors: its path, or "archive:member/path".
    fn name(&self, base: &str) -> String {
        match self {
            Files::Dir(d) => d.join(base).display().to_string(),
            Files::Archive { path, members, .. } => match members.iter().find(|m| m.base == base) {
                Some(m) => format!("{}:{}", path.display(), m.path),
                None => format!("{}:{base}", path.display()),
            },
        }
    }

    /// The contents of file `base` (decompressed when its name ends in `.gz`) with its name for
    /// errors, or None when it is not there. Read within the bound of its format.
    fn read(&self, base: &str) -> Result<Option<Named<'_>>, FileError> {
        let name = self.name(base);
        match self {
            Files::Dir(d) => Ok(bounded::read_file(&d.join(base), base)?.map(|b| (name, b.into()))),
            Files::Archive { members, .. } => match members.iter().find(|m| m.base == base) {
                Some(m) => Ok(Some((name, m.content[..].into()))),
                None => Ok(None),
            },
        }
    }

    /// The first of `bases` that is there; when none is, an error naming the first.
    fn require(&self, bases: &[&str]) -> Result<Named<'_>, FileError> {
        for base in bases {
            if let Some(found) = self.read(base)? {
                return Ok(found);
            }
        }
        let first = bases.first().copied().unwrap_or_default();
        let also = match bases.get(1..) {
            Some(rest) if !rest.is_empty() => format!(" (nor {})", rest.join(", ")),
            _ => String::new(),
        };
        let msg = match self {
            Files::Dir(_) => format!("no such file{also}"),
            Files::Archive { .. } => format!("no such member in the archive{also}"),
        };
        Err(FileError::new(self.name(first), None, msg))
    }
}

/// Scratch directories and gzip for the data tests.
#[cfg(test)]
pub(crate) mod testutil {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("resnet-data-{tag}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
        pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// The error of `r`; a test failure naming `what` (without printing the data) if it succeeded.
    pub fn fails<T>(r: Result<T, super::FileError>, what: impl std::fmt::Display) -> super::FileError {
        match r {
            Ok(_) => panic!("expected an error: {what}"),
            Err(e) => e,
        }
    }

    pub fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// A tar.gz of `files` (path in the archive, bytes).
    pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
        gzip(&tar(files))
    }

    pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, path, *bytes).unwrap();
        }
        b.into_inner().unwrap()
    }
}

#[cfg(test)]
mod load_tests {
    use super::testutil::{TempDir, gzip, tar_gz};
    use super::*;

    #[test]
    fn unknown_and_missing_paths() {
        let dir = TempDir::new("load");
        dir.write("empty/readme.txt", b"hi");
        let e = load(&dir.path().join("empty"), None).unwrap_err();
        assert!(e.msg.contains("no dataset recognised") && e.msg.contains("data_batch_1.bin"), "{e}");
        assert!(e.msg.contains("train-images-idx3-ubyte[.gz]"), "{e}");
        let e = load(&dir.path().join("nope"), None).unwrap_err();
        assert!(e.file.ends_with("nope") && e.msg.contains("no such file"), "{e}");
        let p = dir.write("x.bin", b"1234");
        assert!(load(&p, None).unwrap_err().msg.contains("not a directory"));
        // a given format whose files are absent: the first missing file is named
        let e = load(&dir.path().join("empty"), Some(Format::Cifar100)).unwrap_err();
        assert!(e.file.ends_with("empty/train.bin"), "{e}");
        let e = load(&dir.path().join("empty"), Some(Format::FashionMnist)).unwrap_err();
        assert!(e.file.ends_with("train-images-idx3-ubyte") && e.msg.contains(".gz"), "{e}");
        // archives: empty, not gzip, nothing wanted inside
        let p = dir.write("a.tar.gz", b"");
        assert_eq!(load(&p, None).unwrap_err().offset, Some(0));
        let p = dir.write("b.tgz", b"plain text, not gzip");
        let e = load(&p, None).unwrap_err();
        assert!(e.file.ends_with("b.tgz") && e.msg.contains("gzip"), "{e}");
        let p = dir.write("c.tar.gz", &tar_gz(&[("x/readme.html", b"<html>")]));
        let e = load(&p, None).unwrap_err();
        assert!(e.msg.contains("no dataset recognised: looked for members"), "{e}");
        let p = dir.write("d.tar.gz", &gzip(b"not a tar"));
        assert!(load(&p, None).unwrap_err().file.ends_with("d.tar.gz"));
        let p = dir.write("e.tar", &[7u8; 2000]);
        assert!(load(&p, None).unwrap_err().file.ends_with("e.tar"));
    }

    #[test]
    fn fashion_detection() {
        assert_eq!(idx_format(Path::new("data/Fashion-MNIST")), Format::FashionMnist);
        assert_eq!(idx_format(Path::new("data/mnist")), Format::Mnist);
        assert_eq!(idx_format(Path::new("/nonexistent/fashion.tar.gz")), Format::FashionMnist);
    }
}
