//! A run directory held by one process at a time, and how a run in it continues.
//!
//! The hold is an OS advisory lock (`flock`) on `RUN/.lock`: the operating system releases it when
//! the holding process ends, however it ends, so a crashed run never leaves a stale lock. The file
//! holds the holder's pid, for the message a second writer gets.
//!
//! Continuing: `last.safetensors` when it loads, else the newest loadable epoch / iteration
//! checkpoint (saying why), else iteration 0 (saying so).

use crate::weights::checkpoint::{self, Loaded};
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The lock file inside a run directory.
pub const LOCK: &str = ".lock";

/// A run directory this process holds (the lock lasts as long as the value).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    /// None: a data-parallel rank other than 0, which writes nothing there
    _lock: Option<File>,
}

/// Where a run continues from (a classifier's checkpoint unless `T` says otherwise).
pub struct ResumePoint<T = Loaded> {
    /// the checkpoint file and its contents; None: no checkpoint, iteration 0
    pub checkpoint: Option<(PathBuf, T)>,
    /// why this is not `last.safetensors` (missing, damaged), or that the run starts at 0
    pub note: Option<String>,
}

impl RunDir {
    /// Hold `path` for a new run, creating it (and its parents) if needed. Refused while another
    /// process holds it, and when it holds a run that wrote a checkpoint (continue that one with
    /// `--resume`); a run that never wrote one is replaced (nothing of it could be continued).
    /// Returns the directory and whether an earlier, checkpoint-less run was replaced.
    pub fn create(path: &Path) -> Result<(RunDir, bool)> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        let dir = RunDir { path: path.to_path_buf(), _lock: Some(lock(path)?) };
        let replaced = Self::check_free_held(path)?;
        Ok((dir, replaced))
    }

    /// Whether a new run may start in `path`: refused when it holds a run that wrote a checkpoint;
    /// true when it holds one that never did (to be replaced). [`create`](Self::create) checks
    /// this under the lock; a caller may check it early, before loading data.
    /// A run that a live process holds is refused as "in use" here too: "continue it with
    /// --resume" would be the wrong advice (a regression: a fresh start while a run trained got
    /// it once the run had written its first checkpoint).
    pub fn check_free(path: &Path) -> Result<bool> {
        let held = Self::check_free_held(path);
        if held.is_err() {
            // probe the lock (taken and let go at once): "in use" wins over "holds a run"
            drop(lock(path)?);
        }
        held
    }

    /// [`check_free`](Self::check_free) for a caller that holds the lock.
    fn check_free_held(path: &Path) -> Result<bool> {
        let held = path.join("config.toml").exists();
        if held && !checkpoints(path)?.is_empty() {
            bail!("{} already holds a run; continue it with --resume {0}", path.display());
        }
        Ok(held)
    }

    /// Hold the existing run in `path` (it must have a config.toml).
    pub fn open(path: &Path) -> Result<RunDir> {
        let config = path.join("config.toml");
        if !config.is_file() {
            bail!("{} holds no run (no config.toml); start one with --out {0}", path.display());
        }
        Ok(RunDir { path: path.to_path_buf(), _lock: Some(lock(path)?) })
    }

    /// The run in `path` as seen by a data-parallel rank other than 0: not held (rank 0 holds it)
    /// and never written.
    pub fn follower(path: &Path) -> RunDir {
        RunDir { path: path.to_path_buf(), _lock: None }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Where the run continues: `last.safetensors` if it loads; otherwise the newest loadable
    /// epoch or iteration checkpoint, with a note saying why; with no checkpoint at all, iteration
    /// 0 (noted). A damaged `last` with nothing to fall back on is an error: the run is never
    /// restarted from zero behind the user's back.
    pub fn resume_point(&self) -> Result<ResumePoint> {
        self.resume_from(checkpoint::read, |ck| ck.meta.iteration)
    }

    /// [`RunDir::resume_point`] for checkpoints that `read` loads (a classifier's, a detector's),
    /// `iteration` saying where one stands.
    pub fn resume_from<T>(
        &self,
        read: impl Fn(&Path) -> Result<T>,
        iteration: impl Fn(&T) -> u64,
    ) -> Result<ResumePoint<T>> {
        let last = self.join("last.safetensors");
        let why = if last.exists() {
            match read(&last) {
                Ok(ck) => return Ok(ResumePoint { checkpoint: Some((last, ck)), note: None }),
                Err(e) => format!("{} cannot be loaded ({e:#})", last.display()),
            }
        } else {
            format!("{} is missing", last.display())
        };
        // the others, newest first by the iteration their header records
        let mut others: Vec<(u64, PathBuf)> = checkpoints(&self.path)?
            .into_iter()
            .filter(|p| p.file_name().is_some_and(|n| n != "last.safetensors" && n != "best.safetensors"))
            .filter_map(|p| header_iteration(&p).map(|it| (it, p)))
            .collect();
        others.sort_by(|a, b| b.cmp(a));
        for (_, p) in others {
            if let Ok(ck) = read(&p) {
                let note = format!(
                    "{why}: continuing from {} (iteration {})",
                    p.file_name().unwrap_or_default().to_string_lossy(),
                    iteration(&ck)
                );
                return Ok(ResumePoint { checkpoint: Some((p, ck)), note: Some(note) });
            }
        }
        if last.exists() {
            bail!("{why}, and no epoch or iteration checkpoint of the run loads: it cannot continue");
        }
        Ok(ResumePoint {
            checkpoint: None,
            note: Some(format!("{}: no checkpoint yet, starting at iteration 0", self.path.display())),
        })
    }
}

/// Every checkpoint file of the run: last, best, epoch-*, iter-*.
fn checkpoints(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = vec![];
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let ours = name == "last.safetensors"
            || name == "best.safetensors"
            || ((name.starts_with("epoch-") || name.starts_with("iter-")) && name.ends_with(".safetensors"));
        if ours && p.is_file() {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// Take the run directory's lock (created if missing) and record our pid in it.
fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            // the holder writes its pid right after taking the lock: give it a moment to appear
            let mut pid = None;
            for _ in 0..50 {
                pid = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u32>().ok());
                if pid.is_some() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let who = match pid {
                Some(pid) => format!("process {pid}"),
                None => "another process".to_string(),
            };
            bail!(
                "{} is in use by {who} (a resnet training it holds the lock {}); wait for it to end or stop it first",
                dir.display(),
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    f.set_len(0).and_then(|_| writeln!(f, "{}", std::process::id())).and_then(|_| f.flush()).ok();
    Ok(f)
}

/// The iteration a checkpoint's header records, reading only the header (None: not readable).
fn header_iteration(path: &Path) -> Option<u64> {
    let mut f = File::open(path).ok()?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).ok()?;
    let n = u64::from_le_bytes(n);
    if n > 100 << 20 {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let md = v.get("__metadata__")?;
    // a classifier's checkpoint: "meta" {"iteration"}; a detector's: "detector" {"train": {"iteration"}}
    if let Some(meta) = md.get("meta") {
        let meta: serde_json::Value = serde_json::from_str(meta.as_str()?).ok()?;
        return meta.get("iteration")?.as_u64();
    }
    let det: serde_json::Value = serde_json::from_str(md.get("detector")?.as_str()?).ok()?;
    det.get("train")?.get("iteration")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("resnet-rundir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let d = scratch("lock");
        let (first, replaced) = RunDir::create(&d).unwrap();
        assert!(!replaced);
        let e = RunDir::create(&d).unwrap_err().to_string();
        assert!(e.contains("in use") && e.contains(&std::process::id().to_string()), "{e}");
        std::fs::write(d.join("config.toml"), "x").unwrap();
        assert!(RunDir::open(&d).unwrap_err().to_string().contains("in use"));
        drop(first);
        // free again; a run without a checkpoint may be replaced, one with a checkpoint not
        let (_again, replaced) = RunDir::create(&d).unwrap();
        assert!(replaced);
        drop(_again);
        std::fs::write(d.join("epoch-0001.safetensors"), "x").unwrap();
        let e = RunDir::create(&d).unwrap_err().to_string();
        assert!(e.contains("already holds a run") && e.contains("--resume"), "{e}");
        assert!(RunDir::check_free(&d).unwrap_err().to_string().contains("already holds a run"));
        // while a process holds the run, the early check says so, not "--resume"
        let held = RunDir::open(&d).unwrap();
        let e = RunDir::check_free(&d).unwrap_err().to_string();
        assert!(e.contains("in use") && !e.contains("--resume"), "{e}");
        drop(held);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn open_needs_a_run() {
        let d = scratch("norun");
        std::fs::create_dir_all(&d).unwrap();
        let e = RunDir::open(&d).unwrap_err().to_string();
        assert!(e.contains("no config.toml"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn resume_point_says_when_there_is_no_checkpoint_and_refuses_a_lone_damaged_last() {
        let d = scratch("resume");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.toml"), "x").unwrap();
        let dir = RunDir::open(&d).unwrap();
        let p = dir.resume_point().unwrap();
        assert!(p.checkpoint.is_none() && p.note.unwrap().contains("iteration 0"));
        std::fs::write(d.join("last.safetensors"), "truncated").unwrap();
        let e = dir.resume_point().err().unwrap().to_string();
        assert!(e.contains("last.safetensors cannot be loaded") && e.contains("cannot continue"), "{e}");
        let _ = std::fs::remove_dir_all(d);
    }
}
