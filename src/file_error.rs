//! The error of every reader of files from strangers (data sets, pickles, weights): it names the
//! file and, where known, the byte offset.

use std::fmt;
use std::path::PathBuf;

/// A file that cannot be read as its format says: which file, where in it (byte offset), what.
#[derive(Debug, Clone, PartialEq)]
pub struct FileError {
    pub file: PathBuf,
    pub offset: Option<u64>,
    pub msg: String,
}

impl FileError {
    pub fn new(file: impl Into<PathBuf>, offset: Option<u64>, msg: impl Into<String>) -> FileError {
        FileError { file: file.into(), offset, msg: msg.into() }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{}: byte {o}: {}", self.file.display(), self.msg),
            None => write!(f, "{}: {}", self.file.display(), self.msg),
        }
    }
}
impl std::error::Error for FileError {}
