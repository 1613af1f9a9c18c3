//! Image-folder datasets (the ImageNet layout): `PATH/train/<class>/*.jpg`
//! and `PATH/val/<class>/*.jpg`, or a single root of class folders that a
//! seeded `--val N` split divides. Classes are the folder names, sorted (as
//! torchvision's `ImageFolder` sorts them), and each must hold an image (as
//! `ImageFolder` requires); files are JPEG or PNG (by extension,
//! case-insensitive) and regular files (a FIFO named `x.png` is refused by
//! name), sorted within a class. Nothing is decoded here: the loader decodes
//! in its workers.

use super::FileError;
use std::path::{Path, PathBuf};

/// The files of one split, each with its class index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Folder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    pub files: Vec<(PathBuf, u32)>,
}

/// The splits of an image folder.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderSplits {
    pub train: Folder,
    /// `PATH/val` when it exists
    pub val: Option<Folder>,
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let rd = std::fs::read_dir(dir).map_err(|e| FileError::new(dir, None, format!("cannot list: {e}")))?;
    let mut out: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    out.sort();
    Ok(out)
}

/// Whether `dir` looks like a root of class folders holding images.
pub fn looks_like_folder(dir: &Path) -> bool {
    let root = if dir.join("train").is_dir() { dir.join("train") } else { dir.to_path_buf() };
    sorted_entries(&root)
        .is_ok_and(|e| e.iter().any(|c| c.is_dir() && sorted_entries(c).is_ok_and(|f| f.iter().any(|p| is_image(p)))))
}

/// Read one split: a directory of class folders. `classes`, when given,
/// fixes the class list (the val split takes the train split's).
pub fn scan(root: &Path, classes: Option<&[String]>) -> Result<Folder, FileError> {
    let dirs: Vec<PathBuf> = sorted_entries(root)?.into_iter().filter(|p| p.is_dir()).collect();
    let names: Vec<String> =
        dirs.iter().filter_map(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_string)).collect();
    if names.len() != dirs.len() {
        return Err(FileError::new(root, None, "a class folder name is not valid UTF-8"));
    }
    let classes: Vec<String> = match classes {
        Some(c) => {
            if let Some(extra) = names.iter().find(|n| !c.contains(n)) {
                return Err(FileError::new(
                    root,
                    None,
                    format!("class folder '{extra}' is not a class of the training split"),
                ));
            }
            c.to_vec()
        }
        None => names.clone(),
    };
    if classes.is_empty() {
        return Err(FileError::new(root, None, "no class folders (expected ROOT/<class>/<image>.jpg|png)"));
    }
    let mut files = vec![];
    for (d, name) in dirs.iter().zip(&names) {
        let label = classes.iter().position(|c| c == name).expect("checked above") as u32;
        let before = files.len();
        for p in sorted_entries(d)?.into_iter().filter(|p| is_image(p)) {
            // regular files only: a FIFO would block its reader forever, a device never end (what is not
            // there, a dangling link, and directories named like images are skipped, as before)
            let Some(meta) = std::fs::metadata(&p).ok().filter(|m| !m.is_dir()) else { continue };
            if let Some(kind) = crate::paths::not_regular(&meta) {
                let msg =
                    format!("{kind} named like an image, not a regular file; images are read from regular files only");
                return Err(FileError::new(p, None, msg));
            }
            files.push((p, label));
        }
        if files.len() == before {
            // torchvision's ImageFolder refuses an empty class too: it would be a class nothing can teach
            return Err(FileError::new(
                d,
                None,
                "class folder with no JPEG or PNG files (every class folder needs images; remove it or add some)",
            ));
        }
    }
    Ok(Folder { root: root.to_path_buf(), classes, files })
}

/// `PATH/train` + `PATH/val` if both exist, else `PATH` as the training split.
pub fn load(path: &Path) -> Result<FolderSplits, FileError> {
    let (train_dir, val_dir) = (path.join("train"), path.join("val"));
    if train_dir.is_dir() {
        let train = scan(&train_dir, None)?;
        let val = if val_dir.is_dir() { Some(scan(&val_dir, Some(&train.classes))?) } else { None };
        return Ok(FolderSplits { train, val });
    }
    Ok(FolderSplits { train: scan(path, None)?, val: None })
}

impl Folder {
    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Hold out `n` seeded random files as a validation split (the rest stay, in order).
    pub fn split_off(&mut self, n: usize, seed: u64) -> Result<Folder, FileError> {
        if n >= self.files.len() {
            return Err(FileError::new(
                &self.root,
                None,
                format!("--val {n} leaves no training images (the folder has {})", self.files.len()),
            ));
        }
        let perm = super::augment::permutation(self.files.len(), seed ^ 0x7A1, 0);
        let mut take = vec![false; self.files.len()];
        for &i in &perm[..n] {
            take[i as usize] = true;
        }
        let (mut val, mut train) = (vec![], vec![]);
        for (f, t) in std::mem::take(&mut self.files).into_iter().zip(take) {
            if t { val.push(f) } else { train.push(f) }
        }
        self.files = train;
        Ok(Folder { root: self.root.clone(), classes: self.classes.clone(), files: val })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::TempDir;

    #[test]
    fn layouts_classes_and_splits() {
        let t = TempDir::new("folder");
        for (split, class, file) in [
            ("train", "dog", "b.png"),
            ("train", "dog", "a.JPG"),
            ("train", "cat", "x.jpeg"),
            ("train", "cat", "notes.txt"),
            ("val", "cat", "v.png"),
        ] {
            t.write(&format!("{split}/{class}/{file}"), b"x");
        }
        assert!(looks_like_folder(t.path()));
        let s = load(t.path()).unwrap();
        assert_eq!(s.train.classes, vec!["cat", "dog"]);
        let names: Vec<(String, u32)> =
            s.train.files.iter().map(|(p, l)| (p.file_name().unwrap().to_string_lossy().into_owned(), *l)).collect();
        assert_eq!(names, vec![("x.jpeg".to_string(), 0), ("a.JPG".into(), 1), ("b.png".into(), 1)]);
        let v = s.val.unwrap();
        assert_eq!((v.classes.len(), v.files.len(), v.files[0].1), (2, 1, 0));
        // a single root splits with --val, seeded
        let mut single = scan(&t.path().join("train"), None).unwrap();
        let held = single.split_off(1, 5).unwrap();
        assert_eq!((single.len(), held.len()), (2, 1));
        let mut again = scan(&t.path().join("train"), None).unwrap();
        assert_eq!(again.split_off(1, 5).unwrap(), held);
        assert!(again.split_off(2, 5).is_err());
    }

    #[test]
    fn bad_layouts_are_clear_errors() {
        let t = TempDir::new("folder-bad");
        t.write("train/only.txt", b"x");
        let e = load(t.path()).unwrap_err();
        assert!(e.msg.contains("no class folders"), "{e}");
        t.write("train/a/readme.md", b"x");
        let e = load(t.path()).unwrap_err();
        assert!(e.file.ends_with("train/a") && e.msg.starts_with("class folder with no JPEG or PNG"), "{e}");
        t.write("train/a/1.png", b"x");
        t.write("val/zebra/1.png", b"x");
        let e = load(t.path()).unwrap_err();
        assert!(e.msg.contains("'zebra' is not a class"), "{e}");
        assert!(!looks_like_folder(&t.path().join("missing")));
    }

    #[test]
    fn an_empty_class_folder_and_a_fifo_are_refused_by_name() {
        let t = TempDir::new("folder-hostile");
        t.write("train/cat/1.png", b"x");
        std::fs::create_dir_all(t.path().join("train/dog")).unwrap();
        t.write("train/eel/notes.txt", b"x");
        let e = load(t.path()).unwrap_err();
        assert!(e.file.ends_with("train/dog") && e.msg.contains("no JPEG or PNG"), "{e}");
        t.write("train/dog/2.jpg", b"x");
        let e = load(t.path()).unwrap_err();
        assert!(e.file.ends_with("train/eel"), "{e}");
        t.write("train/eel/3.jpeg", b"x");
        assert_eq!(load(t.path()).unwrap().train.len(), 3);
        // an empty class folder in val/ too
        std::fs::create_dir_all(t.path().join("val/cat")).unwrap();
        assert!(load(t.path()).unwrap_err().file.ends_with("val/cat"));
        std::fs::remove_dir(t.path().join("val/cat")).unwrap();
        let fifo = t.path().join("train/cat/0.png");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let e = load(t.path()).unwrap_err();
        assert!(e.file == fifo && e.msg.starts_with("a FIFO (named pipe) named like an image"), "{e}");
        let e = format!("{:#}", crate::data::image::open(&fifo).unwrap_err());
        assert!(e.contains("0.png: a FIFO (named pipe), not a regular file"), "{e}");
    }
}
