//! Reading data files of strangers within bounds. Each file is read from a
//! regular file only (a FIFO would block forever, a device might never end:
//! both refused by name before they are opened), and never beyond what its
//! format allows plus a small margin: the size an IDX header announces, the
//! fixed sizes of the official CIFAR files. Decompression streams through
//! the same bound, so a small `.gz` that inflates to gigabytes is refused
//! after a few kilobytes of output, with an error naming the file.

use super::{FileError, cifar, idx};
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

/// Bytes accepted beyond what a format announces, so that the parsers can name small excesses
/// themselves ("3 bytes after the last of 10 images").
pub const MARGIN: u64 = 64 * 1024;

/// Most images (and labels) an IDX file may announce: 2^20, more than any MNIST-style set
/// (EMNIST ByClass has 697,932); 822 MB of 28x28 images.
pub const MAX_IDX_ITEMS: u64 = 1 << 20;

/// Reads a header: the file's whole length and what it holds, an error when that is more than the
/// reader accepts, None for a header it does not know.
pub type Announcer = fn(&[u8]) -> Result<Option<(u64, String)>, String>;

/// The most bytes a file may hold.
#[derive(Clone, Copy, Debug)]
pub enum Cap {
    /// At most `max` bytes (and [`MARGIN`]); `what` says why, for the error.
    Fixed { max: u64, what: &'static str },
    /// What the file's own header announces: the first `header` bytes go to `announced`, which
    /// gives the whole file's length and what it holds (for the error), an error when the header
    /// announces more than this reader accepts, or `None` for a header it does not know (then
    /// only the header is read, and the parser says what is wrong with it).
    Announced { header: usize, announced: Announcer },
}

/// The bound for the file or archive member with base name `base` (without a `.gz`).
pub fn cap_for(base: &str) -> Cap {
    let bin = |records: usize, label_bytes: usize| (records * (label_bytes + cifar::IMAGE_BYTES)) as u64;
    // a python batch: the (N, 3072) uint8 array, at most twice its bytes when re-pickled with protocol 2
    // (bytes travel as latin-1 text, UTF-8 encoded), the labels, file names and opcodes: under 256 bytes a record
    let py = |records: usize| (records * (2 * cifar::IMAGE_BYTES + 256)) as u64;
    let c10 = cifar::CIFAR10_BATCH_RECORDS;
    let (c100_train, c100_test) = (cifar::CIFAR100_TRAIN_RECORDS, cifar::CIFAR100_TEST_RECORDS);
    match base {
        "data_batch_1.bin" | "data_batch_2.bin" | "data_batch_3.bin" | "data_batch_4.bin" | "data_batch_5.bin"
        | "test_batch.bin" => {
            Cap::Fixed { max: bin(c10, 1), what: "a CIFAR-10 batch holds 10000 records of 3073 bytes" }
        }
        "train.bin" => {
            Cap::Fixed { max: bin(c100_train, 2), what: "CIFAR-100's train.bin holds 50000 records of 3074 bytes" }
        }
        "test.bin" => {
            Cap::Fixed { max: bin(c100_test, 2), what: "CIFAR-100's test.bin holds 10000 records of 3074 bytes" }
        }
        "data_batch_1" | "data_batch_2" | "data_batch_3" | "data_batch_4" | "data_batch_5" | "test_batch" => {
            Cap::Fixed { max: py(c10), what: "a CIFAR-10 python batch pickles 10000 images, at most" }
        }
        "train" => Cap::Fixed { max: py(c100_train), what: "CIFAR-100's python train pickles 50000 images, at most" },
        "test" => Cap::Fixed { max: py(c100_test), what: "CIFAR-100's python test pickles 10000 images, at most" },
        b if idx::FILES.contains(&b) => Cap::Announced { header: 16, announced: idx_announced },
        // class names (batches.meta.txt, fine_label_names.txt, batches.meta, meta): a few KiB
        _ => Cap::Fixed { max: MARGIN * 15, what: "a class-name file is a few KiB" },
    }
}

/// An IDX header's length of the whole file: 16 + n x rows x cols for u8 images in 3 dims, 8 + n for
/// u8 labels in 1 dim.
fn idx_announced(h: &[u8]) -> Result<Option<(u64, String)>, String> {
    let word = |i: usize| h.get(i * 4..i * 4 + 4).map(|b| u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])));
    let (total, n, what) = match (word(0).map(|m| m as u32), word(1)) {
        (Some(idx::IMAGES_MAGIC), Some(n)) => {
            let (Some(rows), Some(cols)) = (word(2), word(3)) else { return Ok(None) };
            (16 + n * rows * cols, n, format!("its header announces {n} images of {rows}x{cols}"))
        }
        (Some(idx::LABELS_MAGIC), Some(n)) => (8 + n, n, format!("its header announces {n} labels")),
        _ => return Ok(None),
    };
    if n > MAX_IDX_ITEMS || total > 16 + MAX_IDX_ITEMS * (idx::SIDE * idx::SIDE) as u64 {
        return Err(format!("{what} ({total} bytes), more than this reader accepts ({MAX_IDX_ITEMS} 28x28 images)"));
    }
    Ok(Some((total, what)))
}

/// Why reading stopped: the reader failed, or the bound was reached.
pub enum Stop {
    Io(io::Error),
    Refused(FileError),
}

/// Read `r` (named `name` in errors) within `cap`. `len`, the length the container declares (a
/// file's size, a tar member's), is checked first, so a file too large is refused unread. Returns
/// the bytes and whether `r` was read to its end (not so when an unknown header stopped reading).
pub fn read_capped(name: &str, mut r: impl Read, cap: Cap, len: Option<u64>) -> Result<(Vec<u8>, bool), Stop> {
    let mut out = Vec::new();
    let (expected, why) = match cap {
        Cap::Fixed { max, what } => (max, what.to_string()),
        Cap::Announced { header, announced } => {
            (&mut r).take(header as u64).read_to_end(&mut out).map_err(Stop::Io)?;
            match announced(&out) {
                Ok(Some(a)) => a,
                Ok(None) => return Ok((out, false)),
                Err(msg) => return Err(Stop::Refused(FileError::new(name, Some(4), msg))),
            }
        }
    };
    let limit = expected.saturating_add(MARGIN);
    let refuse = |have: String| {
        Stop::Refused(FileError::new(
            name,
            None,
            format!("{have}, but {why} ({expected} bytes; {MARGIN} more are accepted): refused"),
        ))
    };
    if let Some(len) = len.filter(|&l| l > limit) {
        return Err(refuse(format!("{len} bytes")));
    }
    let rest = (limit + 1).saturating_sub(out.len() as u64);
    (&mut r).take(rest).read_to_end(&mut out).map_err(Stop::Io)?;
    if out.len() as u64 > limit {
        return Err(refuse(format!("more than {limit} bytes (reading stopped there)")));
    }
    Ok((out, true))
}

/// Counts the bytes read through it.
pub struct Counted<R> {
    pub inner: R,
    pub count: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Bytes of compressed input a gzip decoder has consumed (its buffer's unread bytes left out).
pub fn consumed<R>(d: &flate2::bufread::MultiGzDecoder<BufReader<Counted<R>>>) -> u64 {
    let b = d.get_ref();
    b.get_ref().count.saturating_sub(b.buffer().len() as u64)
}

/// Decompress gzip data (one or more members) from `r` within `cap` (which bounds the decompressed
/// bytes). An error in the data gives the offset in the compressed input where decoding stopped.
pub fn gunzip(name: &str, r: impl Read, cap: Cap) -> Result<Vec<u8>, FileError> {
    let mut input = BufReader::new(Counted { inner: r, count: 0 });
    if input.fill_buf().is_ok_and(|b| b.is_empty()) {
        return Err(FileError::new(name, Some(0), "empty file, expected gzip data"));
    }
    let mut dec = flate2::bufread::MultiGzDecoder::new(input);
    match read_capped(name, &mut dec, cap, None) {
        Ok((bytes, _)) => Ok(bytes),
        Err(Stop::Refused(mut e)) => {
            e.msg = match e.msg.strip_prefix("more than ") {
                Some(rest) => format!("decompresses to more than {rest}"),
                None => format!("decompressed: {}", e.msg),
            };
            Err(e)
        }
        Err(Stop::Io(e)) => Err(FileError::new(name, Some(consumed(&dec)), format!("gzip: {e}"))),
    }
}

/// The length of the regular file `path`, None when it does not exist; anything else that is
/// there (a FIFO, a device, a socket, a directory) is an error naming it, before it is opened.
pub fn regular_file(path: &Path) -> Result<Option<u64>, FileError> {
    match std::fs::metadata(path) {
        Ok(m) => match crate::paths::not_regular(&m) {
            None => Ok(Some(m.len())),
            Some(kind) => Err(FileError::new(
                path,
                None,
                format!("{kind}, not a regular file; data is read from regular files only"),
            )),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::new(path, None, format!("cannot read: {e}"))),
    }
}

/// The contents of file or archive member `base` read from `r` (named `name` in errors; `len` its
/// declared length): a `.gz` name is decompressed, each within [`cap_for`] its base name.
/// Returns the bytes and whether `r` was read to its end.
pub fn read_content(name: &str, base: &str, r: impl Read, len: Option<u64>) -> Result<(Vec<u8>, bool), FileError> {
    match base.strip_suffix(".gz") {
        Some(plain) => Ok((gunzip(name, r, cap_for(plain))?, true)),
        None => read_capped(name, r, cap_for(base), len).map_err(|s| match s {
            Stop::Refused(e) => e,
            Stop::Io(e) => FileError::new(name, None, format!("cannot read: {e}")),
        }),
    }
}

/// The contents of the data file `path` (base name `base`), None when it does not exist; regular
/// files only, within [`cap_for`] its base name.
pub fn read_file(path: &Path, base: &str) -> Result<Option<Vec<u8>>, FileError> {
    let Some(len) = regular_file(path)? else { return Ok(None) };
    let f = std::fs::File::open(path).map_err(|e| FileError::new(path, None, format!("cannot read: {e}")))?;
    let name = path.display().to_string();
    Ok(Some(read_content(&name, base, f, Some(len))?.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::gzip;

    fn idx_images_header(n: u32) -> Vec<u8> {
        [idx::IMAGES_MAGIC, n, 28, 28].iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    #[test]
    fn fixed_caps_refuse_before_and_while_reading() {
        let cap = Cap::Fixed { max: 10, what: "ten" };
        let limit = 10 + MARGIN as usize;
        let (b, end) = read_capped("f", &vec![1u8; limit][..], cap, Some(limit as u64)).ok().unwrap();
        assert_eq!((b.len(), end), (limit, true));
        // declared too long: refused unread; undeclared: refused after the limit + 1 bytes
        let Err(Stop::Refused(e)) = read_capped("f", &[][..], cap, Some(limit as u64 + 1)) else { panic!() };
        assert_eq!(e.to_string(), "f: 65547 bytes, but ten (10 bytes; 65536 more are accepted): refused");
        let mut endless = io::repeat(0);
        let Err(Stop::Refused(e)) = read_capped("f", &mut endless, cap, None) else { panic!() };
        assert!(e.to_string().starts_with("f: more than 65546 bytes (reading stopped there), but ten"), "{e}");
    }

    #[test]
    fn idx_headers_bound_the_read() {
        let cap = cap_for("train-images-idx3-ubyte");
        let mut file = idx_images_header(2);
        file.extend([7u8; 2 * 784]);
        let (b, _) = read_capped("i", &file[..], cap, None).ok().unwrap();
        assert_eq!(b, file);
        // an endless body after a header announcing 2 images stops at 2 images + the margin
        let header = idx_images_header(2);
        let mut endless = (&header[..]).chain(io::repeat(0));
        let Err(Stop::Refused(e)) = read_capped("i", &mut endless, cap, None) else { panic!() };
        assert_eq!(
            e.msg,
            "more than 67120 bytes (reading stopped there), but its header announces 2 images of 28x28 (1584 bytes; \
             65536 more are accepted): refused"
        );
        // too many announced: refused from the header alone
        let Err(Stop::Refused(e)) = read_capped("i", &idx_images_header(u32::MAX)[..], cap, None) else { panic!() };
        assert!(e.msg.contains("more than this reader accepts") && e.offset == Some(4), "{e}");
        let huge: Vec<u8> = [idx::IMAGES_MAGIC, 10, 1 << 20, 1 << 20].iter().flat_map(|v| v.to_be_bytes()).collect();
        assert!(matches!(read_capped("i", &huge[..], cap, None), Err(Stop::Refused(_))));
        // an unknown or short header: only the header is read, the parser says why
        let mut junk = (&b"not an idx header"[..]).chain(io::repeat(1));
        let (b, end) = read_capped("i", &mut junk, cap, None).ok().unwrap();
        assert_eq!((b.len(), end), (16, false));
        let (b, _) = read_capped("i", &[0u8, 0, 8, 3, 0][..], cap, None).ok().unwrap();
        assert_eq!(b.len(), 5);
        // labels
        let labels: Vec<u8> = [idx::LABELS_MAGIC, 3].iter().flat_map(|v| v.to_be_bytes()).chain([1, 2, 3]).collect();
        let (b, _) = read_capped("l", &labels[..], cap_for("t10k-labels-idx1-ubyte"), None).ok().unwrap();
        assert_eq!(b, labels);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_announced_size() {
        // 2 images announced, 64 MiB of zeros: refused having inflated 2 images + the margin
        let mut raw = idx_images_header(2);
        raw.extend(vec![0u8; 64 << 20]);
        let gz = gzip(&raw);
        assert!(gz.len() < 200_000);
        let e = gunzip("bomb.gz", &gz[..], cap_for("train-images-idx3-ubyte")).unwrap_err();
        assert!(
            e.msg.starts_with("decompresses to more than 67120 bytes") && e.msg.contains("announces 2 images"),
            "{e}"
        );
        // intact and damaged gzip
        assert_eq!(
            gunzip("ok.gz", &gzip(&raw[..16 + 1568])[..], cap_for("train-images-idx3-ubyte")).unwrap().len(),
            1584
        );
        let e = gunzip("e.gz", &[][..], cap_for("train.bin")).unwrap_err();
        assert_eq!((e.offset, e.msg.as_str()), (Some(0), "empty file, expected gzip data"));
        let e = gunzip("t.gz", &gzip(b"hello")[..12], cap_for("meta")).unwrap_err();
        assert!(e.msg.starts_with("gzip: ") && e.offset.is_some(), "{e}");
    }

    #[test]
    fn fifos_and_devices_are_refused_by_name_unopened() {
        let t = crate::data::testutil::TempDir::new("bounded");
        let fifo = t.path().join("data_batch_1.bin");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = read_file(&fifo, "data_batch_1.bin").unwrap_err();
        assert!(
            e.to_string().ends_with(
                "data_batch_1.bin: a FIFO (named pipe), not a regular file; data is read from regular files only"
            ),
            "{e}"
        );
        let e = read_file(Path::new("/dev/zero"), "train.bin").unwrap_err();
        assert!(e.msg.starts_with("a character device"), "{e}");
        assert_eq!(read_file(&t.path().join("missing"), "train.bin").unwrap(), None);
        let p = t.write("test.bin", b"abc");
        assert_eq!(read_file(&p, "test.bin").unwrap().unwrap(), b"abc");
    }
}
