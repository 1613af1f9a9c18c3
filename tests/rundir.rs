//! Run directories as a careless or hostile user meets them, through the binary: two trainers on
//! one run, stop signals, hand-edited config.toml, missing or damaged checkpoints, flags that
//! cannot change on resume, and arguments that would have made a run nonsensical.

#[path = "common/runs.rs"]
mod runs;

use runs::{assert_same_last_checkpoint, data_dir, resnet, small_run, strs, tmp, train};
use std::path::Path;
#[path = "common/scratch.rs"]
mod scratch;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_resnet"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// The (iteration, kind) of every metrics line, in file order; kind is "train" or the split.
fn metric_keys(run: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap_or_default();
    // a line being written as we read is not there yet
    let done = text.rfind('\n').map_or("", |end| &text[..end]);
    done.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (v["iter"].as_u64().unwrap(), v["split"].as_str().unwrap_or("train").to_string())
        })
        .collect()
}

/// Wait until the run has logged iteration `it` (or fail after a minute).
fn wait_for_iteration(run: &Path, it: u64) {
    let t = Instant::now();
    while metric_keys(run).last().is_none_or(|(i, _)| *i < it) {
        assert!(t.elapsed() < Duration::from_secs(60), "the run did not reach iteration {it}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    assert!(Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap().success());
}

/// Whether this process ignores SIGHUP (children inherit that).
fn hup_ignored() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).map(|m| m.trim().to_string());
    mask.and_then(|m| u64::from_str_radix(&m, 16).ok()).is_some_and(|m| m & 1 == 1) // bit 0: SIGHUP (1)
}

fn stderr_of(child: Child) -> (Option<i32>, String) {
    let o = child.wait_with_output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn failure(args: &[&str]) -> String {
    let o = resnet(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{args:?} should fail cleanly: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// Every metrics line once, iterations in order.
fn assert_once_in_order(keys: &[(u64, String)]) {
    let unique: std::collections::HashSet<_> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "metrics.jsonl holds a line twice: {keys:?}");
    assert!(keys.windows(2).all(|w| w[0].0 <= w[1].0), "iterations out of order: {keys:?}");
}

#[test]
fn a_second_trainer_is_refused_and_the_first_is_unaffected() {
    let data = data_dir("lock");
    let run = tmp("lock");
    let r = run.to_str().unwrap();
    let args = small_run(&data, &run, &["--iters", "100000", "--log-every", "1"]);
    let first = spawn(&strs(&args));
    wait_for_iteration(&run, 3);
    // a resume and a fresh start into the same directory while it trains
    let err = failure(&["train", "--resume", r, "--quiet"]);
    assert!(err.contains("in use by process") && err.contains(&first.id().to_string()), "{err}");
    let err = failure(&strs(&small_run(&data, &run, &["--iters", "10"])));
    assert!(err.contains("in use by process"), "{err}");
    wait_for_iteration(&run, 20);
    signal(&first, "TERM");
    let (code, err) = stderr_of(first);
    assert_eq!(code, Some(143), "{err}");
    // the first run's metrics: every line once, in order
    let keys = metric_keys(&run);
    assert_once_in_order(&keys);
    assert!(keys.len() >= 20);

    // two fresh runs started together into one new directory: exactly one trains
    let both = tmp("lock-both");
    std::fs::remove_dir(&both).unwrap();
    let args = small_run(&data, &both, &["--iters", "30"]);
    let (a, b) = (spawn(&strs(&args)), spawn(&strs(&args)));
    let (ra, rb) = (stderr_of(a), stderr_of(b));
    let ok = [&ra, &rb].iter().filter(|r| r.0 == Some(0)).count();
    assert_eq!(ok, 1, "{ra:?} {rb:?}");
    let refused = if ra.0 == Some(0) { &rb } else { &ra };
    assert!(refused.1.contains("in use by process") || refused.1.contains("already holds a run"), "{refused:?}");
    let keys = metric_keys(&both);
    assert_eq!(keys.iter().filter(|(i, k)| *i == 30 && k == "train").count(), 1, "{keys:?}");
}

/// SIGTERM and SIGHUP save and exit with 143 / 129; resuming gives the uninterrupted run's weights
/// bit for bit and its metrics lines exactly once each.
#[test]
fn sigterm_and_sighup_then_resume_is_bit_identical() {
    let data = data_dir("signals");
    let (a, b) = (tmp("signals-straight"), tmp("signals-stopped"));
    let extra = ["--iters", "300", "--log-every", "5"];
    train(&strs(&small_run(&data, &a, &extra)));
    let b_str = b.to_str().unwrap();
    let mut child = spawn(&strs(&small_run(&data, &b, &extra)));
    for (sig, code, at) in [("TERM", 143, 40), ("HUP", 129, 120)] {
        if sig == "HUP" && hup_ignored() {
            // a child inherits an ignored SIGHUP (nohup) and, as documented, keeps ignoring it
            eprintln!("SKIPPED the SIGHUP part: this test process ignores SIGHUP (started under nohup?)");
            continue;
        }
        wait_for_iteration(&b, at);
        signal(&child, sig);
        let (got, err) = stderr_of(child);
        assert_eq!(got, Some(code), "SIG{sig}: {err}");
        assert!(err.contains(&format!("stopping on SIG{sig}")), "{err}");
        let ck = resnet::weights::checkpoint::read(&b.join("last.safetensors")).unwrap();
        assert!(ck.meta.iteration >= at && ck.meta.iteration < 300, "SIG{sig} saved at {}", ck.meta.iteration);
        child = spawn(&["train", "--resume", b_str, "--quiet"]);
    }
    let (code, err) = stderr_of(child);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(assert_same_last_checkpoint(&a, &b), 300);
    assert_eq!(metric_keys(&a), metric_keys(&b), "the same metrics lines, each once");
}

/// A config.toml edited by hand is checked with the command line's rules, and against the
/// checkpoint for what cannot change; the cadence flags apply on resume and are recorded.
#[test]
fn hand_edited_configs_and_resume_flags() {
    let data = data_dir("config");
    let run = tmp("config");
    let r = run.to_str().unwrap();
    train(&strs(&small_run(&data, &run, &["--iters", "30", "--stop-at", "8"])));
    let config = run.join("config.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    let edit = |from: &str, to: &str| {
        assert!(good.contains(from), "{from} in {good}");
        std::fs::write(&config, good.replacen(from, to, 1)).unwrap();
        failure(&["train", "--resume", r, "--quiet"])
    };
    for (from, to, says) in [
        ("log_every = 50", "log_every = 0", "log_every must be at least 1"),
        ("keep = 3", "keep = 0", "keep must be at least 1"),
        ("iters = 30", "iters = 0", "at least one iteration"),
        ("batch = 16", "batch = 0", "batch must be at least 1"),
        ("lr = 0.1", "lr = nan", "positive number"),
        ("batch = 16", "batch = 8", "batch 8 but"),
        ("seed = 0", "seed = 7", "seed 7 but"),
        ("name = \"resnet8\"", "name = \"resnet14\"", "cannot change"),
    ] {
        let err = edit(from, to);
        assert!(err.contains(says) && err.contains("config.toml"), "{to}: {err}");
    }
    std::fs::write(&config, &good).unwrap();
    // what cannot change on resume is refused; the cadence can change and is recorded
    let err = failure(&["train", "--resume", r, "--shortcut", "b"]);
    assert!(err.contains("cannot change"), "{err}");
    let err = failure(&["train", "--resume", r, "--log-every", "0"]);
    assert!(err.contains("log_every must be at least 1"), "{err}");
    train(&["train", "--resume", r, "--quiet", "--log-every", "4", "--keep", "1", "--ckpt-every", "10"]);
    let cfg = std::fs::read_to_string(&config).unwrap();
    assert!(cfg.contains("log_every = 4") && cfg.contains("keep = 1") && cfg.contains("ckpt_every = 10"), "{cfg}");
    let names: Vec<String> =
        std::fs::read_dir(&run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("epoch-")).count(), 1, "{names:?}");
    assert!(names.iter().any(|n| n == "iter-0000020.safetensors"), "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let trains: Vec<u64> =
        metric_keys(&run).into_iter().filter(|(_, k)| k == "train").map(|(i, _)| i).filter(|&i| i > 8).collect();
    assert_eq!(trains, [12, 16, 20, 24, 28, 30], "--log-every 4 from the resume on");
}

/// Without last.safetensors, or with a damaged one, a resume continues from the newest epoch
/// checkpoint (saying so) and ends where an uninterrupted run ends, bit for bit.
#[test]
fn resume_falls_back_to_the_newest_epoch_checkpoint() {
    let data = data_dir("fallback");
    let straight = tmp("fallback-straight");
    train(&strs(&small_run(&data, &straight, &["--iters", "20"])));
    for damage in ["delete", "truncate"] {
        let run = tmp(&format!("fallback-{damage}"));
        let r = run.to_str().unwrap();
        // 96 images / 16 = 6 iterations an epoch: epoch-0001 at 6, last at 9
        train(&strs(&small_run(&data, &run, &["--iters", "20", "--stop-at", "9"])));
        let last = run.join("last.safetensors");
        if damage == "delete" {
            std::fs::remove_file(&last).unwrap();
        } else {
            let bytes = std::fs::read(&last).unwrap();
            std::fs::write(&last, &bytes[..bytes.len() / 2]).unwrap();
        }
        let o = resnet(&["train", "--resume", r]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        let why = if damage == "delete" { "is missing" } else { "cannot be loaded" };
        assert!(err.contains(why) && err.contains("continuing from epoch-0001.safetensors (iteration 6)"), "{err}");
        assert_eq!(assert_same_last_checkpoint(&straight, &run), 20);
        assert_eq!(metric_keys(&straight), metric_keys(&run), "metrics cut back to iteration 6, then continued");
    }
}

/// config.toml stores the data path absolute: the run resumes from another working directory.
#[test]
fn a_run_resumes_from_another_directory() {
    let data = data_dir("cwd");
    let run = tmp("cwd");
    let parent = data.parent().unwrap();
    let name = data.file_name().unwrap().to_str().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .current_dir(parent)
        .args(strs(&small_run(Path::new(name), &run, &["--iters", "12", "--stop-at", "6"])))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg["data"].as_str(), Some(data.to_str().unwrap()));
    let o = Command::new(env!("CARGO_BIN_EXE_resnet"))
        .current_dir(&run)
        .args(["train", "--resume", ".", "--quiet"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // a data path that has gone: the error says it came from config.toml
    std::fs::rename(&data, data.with_extension("moved")).unwrap();
    let mut edited = std::fs::read_to_string(run.join("config.toml")).unwrap();
    edited = edited.replace("iters = 12", "iters = 18");
    std::fs::write(run.join("config.toml"), edited).unwrap();
    let err = failure(&["train", "--resume", run.to_str().unwrap()]);
    assert!(err.contains("named in") && err.contains("config.toml"), "{err}");
    // (the moved data lies beside its scratch directory, not in it)
    let _ = std::fs::remove_dir_all(data.with_extension("moved"));
}

/// Arguments that would make a nonsensical run are refused before anything is written.
#[test]
fn nonsensical_arguments_are_refused_up_front() {
    let data = data_dir("args");
    let run = tmp("args");
    std::fs::remove_dir(&run).unwrap();
    for (flags, says) in [
        (&["--lr", "nan"][..], "positive number"),
        (&["--lr", "0"], "positive number"),
        (&["--lr=-1"], "positive number"),
        (&["--crop-pad", "100000"], "crop_pad 100000"),
        (&["--epochs", "1152921504606846976"], "too many iterations"),
        (&["--log-every", "0"], "log_every must be at least 1"),
        (&["--keep", "0"], "keep must be at least 1"),
    ] {
        let err = failure(&strs(&small_run(&data, &run, flags)));
        assert!(err.contains(says), "{flags:?}: {err}");
        assert!(!run.exists(), "{flags:?} left {}", run.display());
    }
}

/// The tests' scratch directories (tests/common/scratch.rs): removed when a test passes, kept
/// when it fails.
#[test]
fn scratch_directories_go_when_a_test_passes_and_stay_when_it_fails() {
    use scratch::Scratch;
    let path = {
        let s = Scratch::new("scratch-pass");
        std::fs::write(s.join("f"), b"x").unwrap();
        s.to_path_buf()
    };
    assert!(!path.exists(), "{} outlived its test", path.display());
    let kept = std::thread::spawn(|| {
        let s = Scratch::new("scratch-fail");
        std::fs::write(s.join("f"), b"x").unwrap();
        std::panic::panic_any(s.to_path_buf())
    })
    .join()
    .unwrap_err();
    let kept = kept.downcast::<std::path::PathBuf>().unwrap();
    assert!(kept.join("f").exists(), "a failed test's directory was removed");
    std::fs::remove_dir_all(*kept).unwrap();
}
