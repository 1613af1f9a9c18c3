//! RUN/metrics.jsonl: one JSON object per line, written by the trainer and read by `plot` and
//! `reproduce` as the same types. Lines are in iteration order, each written before the
//! checkpoint of its iteration, so a resume cuts the file back to its checkpoint.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// A window of training iterations.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainRow {
    /// iterations done at the window's end
    pub iter: u64,
    pub epoch: u64,
    pub lr: f32,
    /// mean mini-batch loss and error (percent) over the window, train mode
    pub train_loss: f64,
    pub train_err: f64,
    pub img_per_s: f64,
}

/// An evaluation of a split after `iter` iterations.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalRow {
    pub iter: u64,
    pub epoch: u64,
    /// "val" or "test"
    pub split: String,
    pub loss: f64,
    /// top-1 error, percent
    pub err: f64,
}

/// One line of metrics.jsonl.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum Row {
    Train(TrainRow),
    Eval(EvalRow),
}

impl Row {
    pub fn iter(&self) -> u64 {
        match self {
            Row::Train(r) => r.iter,
            Row::Eval(r) => r.iter,
        }
    }
}

/// Appends rows to metrics.jsonl, flushed line by line.
pub struct Log(std::fs::File);

impl Log {
    /// Open `path` for appending after cutting it back to the rows of iterations up to `iteration`.
    pub fn open(path: &Path, iteration: u64) -> Result<Log> {
        truncate(path, iteration)?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(Log(f))
    }

    /// One line: a [`Row`], or another run's row type with an `iter` field (the detector's).
    pub fn write<T: serde::Serialize>(&mut self, row: &T) -> Result<()> {
        let line = serde_json::to_string(row)?;
        writeln!(self.0, "{line}")?;
        self.0.flush()?;
        Ok(())
    }
}

/// Every row of a metrics.jsonl (blank lines skipped; a line that is not a row is an error naming it).
pub fn read(path: &Path) -> Result<Vec<Row>> {
    crate::paths::check_regular(path)?;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}: line {} is not a metrics row", path.display(), i + 1))
        })
        .collect()
}

/// Cut `path` back to the rows of iterations up to `iteration`: everything from the first row of
/// a later iteration (or an unfinished last line) on is removed.
pub fn truncate(path: &Path, iteration: u64) -> Result<()> {
    let Ok(text) = std::fs::read(path) else { return Ok(()) };
    let mut keep = 0usize;
    for line in text.split_inclusive(|&b| b == b'\n') {
        if !line.ends_with(b"\n") {
            break;
        }
        let iter =
            serde_json::from_slice::<serde_json::Value>(line).ok().and_then(|v| v.get("iter").and_then(|i| i.as_u64()));
        if iter.is_some_and(|i| i > iteration) {
            break;
        }
        keep += line.len();
    }
    if keep < text.len() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.set_len(keep as u64).with_context(|| format!("truncating {}", path.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_a_log_is_cut_back_to_its_checkpoint() {
        let d = std::env::temp_dir().join(format!("resnet-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("metrics.jsonl");
        let _ = std::fs::remove_file(&p);
        let train =
            |iter| Row::Train(TrainRow { iter, epoch: 0, lr: 0.1, train_loss: 1.5, train_err: 40.0, img_per_s: 9.0 });
        let eval = |iter| Row::Eval(EvalRow { iter, epoch: 1, split: "test".into(), loss: 0.5, err: 12.5 });
        let mut log = Log::open(&p, 0).unwrap();
        for r in [train(2), train(4), eval(4), train(6), train(8)] {
            log.write(&r).unwrap();
        }
        drop(log);
        std::fs::OpenOptions::new().append(true).open(&p).unwrap().write_all(b"{\"iter\":9").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"lr\":0.1,") && text.contains("\"split\":\"test\""), "{text}");
        let mut log = Log::open(&p, 5).unwrap();
        assert_eq!(read(&p).unwrap(), [train(2), train(4), eval(4)], "cut back to iteration 5");
        log.write(&train(6)).unwrap();
        assert_eq!(read(&p).unwrap().last(), Some(&train(6)));
        Log::open(&p, 0).unwrap();
        assert!(read(&p).unwrap().is_empty());
        std::fs::write(&p, "{\"iter\": 1}\n").unwrap();
        assert!(read(&p).unwrap_err().to_string().contains("line 1 is not a metrics row"));
        let _ = std::fs::remove_dir_all(d);
    }
}
