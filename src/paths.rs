//! Files given on the command line:
//!
//! - identity, for commands that read inputs and write outputs: an output that
//!   is one of the inputs (the same path spelled differently, a symbolic link,
//!   a hard link) would be overwritten by what is computed from it, so it is
//!   refused before anything is read;
//! - kind: inputs are read from regular files only. A FIFO would block the
//!   reader forever, a character device may never end; they are refused by
//!   name before they are opened.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// What `meta` describes when it is not a regular file ("a FIFO", "a directory", ...); None for a
/// regular file.
pub fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    Some(if t.is_file() {
        return None;
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    })
}

/// Check that `path` (through symbolic links) is a regular file before it is opened.
pub fn check_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if let Some(kind) = not_regular(&meta) {
        bail!("{}: {kind}, not a regular file; inputs are read from regular files only", path.display());
    }
    Ok(())
}

/// The bytes of the regular file `path` (see [`check_regular`]).
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    check_regular(path)?;
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// Whether `a` and `b` name the same existing file: the same device and
/// inode (through symbolic links), so `x`, `./x`, `dir/../x`, a link to `x`
/// and a hard link of `x` all count. A path that does not exist is no file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuse writing `output` when it is the file `input` (see [`same_file`]); `what` says which
/// input and output they are (e.g. "--weights and --onnx").
pub fn refuse_same_file(input: &Path, output: &Path, what: &str) -> Result<()> {
    if same_file(input, output) {
        let (i, o) = (input.display(), output.display());
        if i.to_string() == o.to_string() {
            bail!("{what} are the same file ({i}): writing the output would overwrite the input");
        }
        bail!("{what} are the same file ({i} and {o}): writing the output would overwrite the input");
    }
    Ok(())
}

/// [`refuse_same_file`] for every pair of `inputs` and `outputs`.
pub fn refuse_any_same_file<I, O>(inputs: &[I], outputs: &[O], what: &str) -> Result<()>
where
    I: AsRef<Path>,
    O: AsRef<Path>,
{
    for i in inputs {
        for o in outputs {
            refuse_same_file(i.as_ref(), o.as_ref(), what)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::TempDir;

    #[test]
    fn spellings_and_links_of_one_file_are_the_same_file() {
        let t = TempDir::new("paths");
        let a = t.write("d/a.bin", b"x");
        let b = t.write("d/b.bin", b"x");
        std::os::unix::fs::symlink(&a, t.path().join("link")).unwrap();
        std::fs::hard_link(&a, t.path().join("hard")).unwrap();
        let dotted = t.path().join("d/../d/./a.bin");
        for same in [a.clone(), dotted, t.path().join("link"), t.path().join("hard")] {
            assert!(same_file(&a, &same), "{}", same.display());
            let e = refuse_same_file(&a, &same, "input and output").unwrap_err().to_string();
            assert!(e.contains("input and output are the same file") && e.contains("a.bin"), "{e}");
        }
        // same contents, other file; a path that does not exist yet
        assert!(!same_file(&a, &b));
        assert!(refuse_same_file(&a, &t.path().join("new.bin"), "x").is_ok());
        assert!(refuse_any_same_file(&[&a, &b], &[t.path().join("c")], "x").is_ok());
        let e = refuse_any_same_file(&[&b, &a], &[t.path().join("hard")], "--weights and --onnx").unwrap_err();
        assert!(e.to_string().contains("hard") && e.to_string().contains("--weights and --onnx"), "{e}");
    }

    #[test]
    fn only_regular_files_are_read() {
        let t = TempDir::new("paths-kind");
        let a = t.write("a.bin", b"abc");
        assert_eq!(read_regular(&a).unwrap(), b"abc");
        let e = read_regular(t.path()).unwrap_err().to_string();
        assert!(e.contains("a directory, not a regular file"), "{e}");
        let e = format!("{:#}", read_regular(&t.path().join("missing")).unwrap_err());
        assert!(e.contains("missing") && e.contains("No such file"), "{e}");
        let e = read_regular(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.starts_with("/dev/zero: a character device"), "{e}");
        let fifo = t.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let e = read_regular(&fifo).unwrap_err().to_string();
        assert!(e.contains("fifo: a FIFO (named pipe), not a regular file"), "{e}");
    }
}
