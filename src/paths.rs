//! File identity for commands that read inputs and write outputs: an output
//! that is one of the inputs (the same path spelled differently, a symbolic
//! link, a hard link) would be overwritten by what is computed from it, so
//! it is refused before anything is read.

use anyhow::{Result, bail};
use std::path::Path;

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
}
