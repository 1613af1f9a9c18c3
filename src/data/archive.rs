//! Tar archives (`.tar.gz`, `.tgz`, `.tar`) of the official files, read as a stream: the wanted
//! members are kept (each within its format's bound, `.gz` members decompressed), the others are
//! inflated through without being stored, and the whole stream is bounded too.

use super::{FileError, bounded};
use std::cell::RefCell;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

/// An archive member: its base name, path in the archive and contents.
pub(super) struct Member {
    pub base: String,
    pub path: String,
    pub content: Vec<u8>,
}

/// Most bytes a tar stream may decompress to: the official archives decompress to under 200 MB;
/// members nobody reads are skipped unstored, and this bounds the time spent inflating them.
pub const MAX_TAR_BYTES: u64 = 1 << 30;

/// Where [`TarStream`] keeps a failure of its own: (offset in the compressed file, message).
type Failure = Rc<RefCell<Option<(Option<u64>, String)>>>;

/// A tar stream read from its file, gunzipped or plain; a failure of the gzip layer (with its
/// offset in the compressed file) or the stream growing past [`MAX_TAR_BYTES`] is kept in `failed`,
/// for the error to name it instead of what the tar reader makes of it.
struct TarStream {
    inner: TarInner,
    total: u64,
    failed: Failure,
}

type GzFile = flate2::bufread::MultiGzDecoder<std::io::BufReader<bounded::Counted<std::fs::File>>>;

enum TarInner {
    Plain(std::io::BufReader<std::fs::File>),
    Gz(Box<GzFile>),
}

impl Read for TarStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = match &mut self.inner {
            TarInner::Plain(f) => f.read(buf),
            TarInner::Gz(d) => d.read(buf).inspect_err(|e| {
                *self.failed.borrow_mut() = Some((Some(bounded::consumed(d)), format!("gzip: {e}")));
            }),
        }?;
        self.total += r as u64;
        if self.total > MAX_TAR_BYTES {
            let msg = format!(
                "the archive decompresses to more than {MAX_TAR_BYTES} bytes (the official ones to under 200 MB); refused"
            );
            *self.failed.borrow_mut() = Some((None, msg.clone()));
            return Err(std::io::Error::other(msg));
        }
        Ok(r)
    }
}

/// Read the tar archive `path` (gzipped unless its name ends in `.tar`) as a stream, keeping the
/// contents of the members whose base name is `wanted` (the first of each name), each within the
/// bound of its format ([`bounded::cap_for`]); other members are skipped without being stored.
pub(super) fn read_members(path: &Path, wanted: fn(&str) -> bool) -> Result<Vec<Member>, FileError> {
    let len = bounded::regular_file(path)?.ok_or_else(|| FileError::new(path, None, "no such file"))?;
    let plain_tar = path.to_string_lossy().to_lowercase().ends_with(".tar");
    if len == 0 && !plain_tar {
        return Err(FileError::new(path, Some(0), "empty file, expected gzip data"));
    }
    let file = std::fs::File::open(path).map_err(|e| FileError::new(path, None, format!("cannot read: {e}")))?;
    let inner = if plain_tar {
        TarInner::Plain(std::io::BufReader::new(file))
    } else {
        let counted = std::io::BufReader::new(bounded::Counted { inner: file, count: 0 });
        TarInner::Gz(Box::new(flate2::bufread::MultiGzDecoder::new(counted)))
    };
    let failed = Rc::new(RefCell::new(None));
    let stream = TarStream { inner, total: 0, failed: failed.clone() };
    let in_tar = "(byte offset in the decompressed tar)";
    let tar_err = |at: u64, e: &dyn fmt::Display| match failed.borrow().clone() {
        Some((offset, msg)) => FileError::new(path, offset, msg),
        None => FileError::new(path, Some(at), format!("tar: {e} {in_tar}")),
    };
    let mut members: Vec<Member> = Vec::new();
    let mut archive = tar::Archive::new(stream);
    let entries = archive.entries().map_err(|e| tar_err(0, &e))?;
    let mut next_header = 0u64;
    for entry in entries {
        let mut entry = entry.map_err(|e| tar_err(next_header, &e))?;
        let (start, size) = (entry.raw_file_position(), entry.size());
        next_header = start.saturating_add(size.div_ceil(512).saturating_mul(512));
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path().map_err(|e| tar_err(entry.raw_header_position(), &e))?;
        let member = member.to_string_lossy().into_owned();
        let base = member.rsplit('/').next().unwrap_or_default().to_string();
        if !wanted(&base) || members.iter().any(|m| m.base == base) {
            continue;
        }
        let name = format!("{}:{member}", path.display());
        let content = bounded::read_content(&name, &base, &mut entry, Some(size));
        if let Some((offset, msg)) = failed.borrow().clone() {
            return Err(FileError::new(path, offset, msg));
        }
        let content = match content {
            // a plain member read to its end must hold what its header says
            Ok((bytes, true)) if !base.ends_with(".gz") && (bytes.len() as u64) < size => {
                let have = bytes.len();
                return Err(FileError::new(
                    name,
                    Some(start),
                    format!("member truncated: header says {size} bytes, archive holds {have} {in_tar}"),
                ));
            }
            Ok((bytes, _)) => bytes,
            // larger than its format allows, or damaged: said now, before inflating any further
            Err(e) => return Err(e),
        };
        members.push(Member { base, path: member, content });
    }
    // the rest of the stream (zero blocks, padding): read through, so that a gzip layer is checked
    // to its end (a cut-off or corrupt trailer is an error, as its CRC)
    let mut rest = archive.into_inner();
    if let Err(e) = std::io::copy(&mut rest, &mut std::io::sink()) {
        return Err(tar_err(next_header, &e));
    }
    Ok(members)
}
