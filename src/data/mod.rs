//! Datasets: CIFAR-10/100 and MNIST-style IDX files, decoded into one
//! in-memory form. Parsers check every length and report bad input by file
//! and byte offset; nothing here panics on bad data.

pub mod cifar;
pub mod idx;

use std::fmt;
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

/// Bad or missing data: which file, where in it, what.
#[derive(Debug, Clone, PartialEq)]
pub struct DataError {
    pub file: PathBuf,
    pub offset: Option<u64>,
    pub msg: String,
}

impl DataError {
    pub fn new(file: impl Into<PathBuf>, offset: Option<u64>, msg: impl Into<String>) -> DataError {
        DataError { file: file.into(), offset, msg: msg.into() }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(f, "{}: byte {o}: {}", self.file.display(), self.msg),
            None => write!(f, "{}: {}", self.file.display(), self.msg),
        }
    }
}
impl std::error::Error for DataError {}

/// Load the training and test sets from `path` (a directory of official
/// files or an official archive), recognising the format unless given.
pub fn load(path: &Path, format: Option<Format>) -> Result<(Splits, Format), DataError> {
    let _ = (path, format);
    todo!("filled in by the data parsers")
}
