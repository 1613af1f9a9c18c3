//! `resnet reproduce cifar10` end to end on a tiny generated archive in the exact
//! CIFAR-10 binary format (cifar-10-binary.tar.gz: five data batches, a test
//! batch, batches.meta.txt; records of a label byte and 3072 pixel bytes),
//! with a handful of iterations; then again, skipping the finished runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
#[path = "common/scratch.rs"]
mod scratch;
use scratch::Scratch;

fn tiny_cifar10(dir: &std::path::Path) -> PathBuf {
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("cifar-10-batches-bin/{name}"), bytes).unwrap();
    };
    for (b, name) in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ]
    .iter()
    .enumerate()
    {
        let mut bytes = vec![];
        for r in 0..20usize {
            let label = ((r + b) % 10) as u8;
            bytes.push(label);
            // a class-dependent brightness, so the nets have something to learn
            bytes.extend((0..3072).map(|i| ((label as usize * 20 + i * 7 + r) % 256) as u8));
        }
        add(name, &bytes);
    }
    add("batches.meta.txt", b"airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n");
    let path = dir.join("cifar-10-binary.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().unwrap()).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    path
}

/// A fresh scratch directory holding a tiny CIFAR-10 archive.
fn scratch_with_cifar10(name: &str) -> (Scratch, PathBuf) {
    let dir = Scratch::new(name);
    let data = tiny_cifar10(&dir);
    (dir, data)
}

/// `resnet reproduce WHAT` on `data` into `out`: 3 iterations of batch 8 per net, then `extra`
/// (argument 9 is the iteration count).
fn tiny_reproduce<'a>(
    what: &'a str,
    data: &'a Path,
    out: &'a Path,
    depths: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let base =
        ["reproduce", what, "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--depths", depths];
    base.into_iter().chain(["--iters", "3", "--batch", "8"]).chain(extra.iter().copied()).collect()
}

/// `resnet ARGS`: the exit code and stderr.
fn resnet(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_resnet")).args(args).output().expect("run resnet");
    (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn reproduce_cifar10_runs_end_to_end_and_skips_finished_runs() {
    let (dir, data) = scratch_with_cifar10("reproduce");
    let out = dir.join("table6");
    let args = tiny_reproduce("cifar10", &data, &out, "8,20", &["--yes", "--lenient-counts"]);
    let (code, err) = resnet(&args);
    assert!(code == Some(0), "{err}");
    assert!(err.contains("estimated duration on this machine"), "{err}");
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    for row in ["| plain8 |", "| plain20 |", "| resnet8 |", "| resnet20 | "] {
        assert!(report.contains(row), "{row} missing:\n{report}");
    }
    // the paper's Table 6 beside ours where it has the net
    assert!(report.contains("| 8.75 |") && report.contains("paper's test error"), "{report}");
    for f in ["fig6-plain.png", "fig6-resnet.png", "fig7-responses.png", "fig7-responses-sorted.png"] {
        let len = std::fs::metadata(out.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 5000, "{f}: {len} bytes");
        assert!(report.contains(&format!("]({f})")), "{f} not in the report");
    }
    // again: every run is finished and skipped, the report is the same
    let (code, err) = resnet(&args);
    assert!(code == Some(0) && err.matches("skipped").count() == 4, "{err}");
    assert_eq!(std::fs::read_to_string(out.join("REPORT.md")).unwrap(), report);
    // a different recipe on the same directory is refused, not mixed in
    let mut other: Vec<&str> = args.to_vec();
    other[9] = "5";
    let (code, err) = resnet(&other);
    assert!(code == Some(2) && err.contains("holds a run of plain8") && err.contains("3 iterations"), "{err}");
    // cifar10 takes CIFAR-10 only
    let fm = dir.join("fm");
    std::fs::create_dir_all(&fm).unwrap();
    let (code, err) =
        resnet(&["reproduce", "cifar10", "--data", dir.to_str().unwrap(), "--out", fm.to_str().unwrap(), "--yes"]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn reproduce_degradation_reports_what_held_and_keeps_its_recipe() {
    let (dir, data) = scratch_with_cifar10("degradation");
    let out = dir.join("deg");
    let extra = ["--crop-pad", "0", "--no-flip", "--train-images", "40", "--eval-every", "2", "--lenient-counts"];
    let args = tiny_reproduce("degradation", &data, &out, "8,14", &extra);
    let (code, err) = resnet(&args);
    assert!(code == Some(0), "{err}");
    let report = std::fs::read_to_string(out.join("REPORT.md")).unwrap();
    for row in ["| plain8 |", "| plain14 |", "| resnet8 |", "| resnet14 |"] {
        assert!(report.contains(row), "{row} missing:\n{report}");
    }
    assert!(report.contains("; no augmentation)") && report.contains("the mini-batches' error"), "{report}");
    assert!(report.contains("(40 of its training images") && report.contains("(the 40 images trained on)"), "{report}");
    assert!(report.contains("plain-14's training error is") && report.contains("ResNet-14's training error is"));
    let cfg = std::fs::read_to_string(out.join("runs/resnet14/config.toml")).unwrap();
    assert!(cfg.contains("flip = false") && cfg.contains("crop_pad = 0") && cfg.contains("train_images = 40"), "{cfg}");
    // test evaluations at iteration 2 and after the last (3), not at every epoch's end (5 batches of 8)
    let metrics = std::fs::read_to_string(out.join("runs/resnet14/metrics.jsonl")).unwrap();
    let tests: Vec<&str> = metrics.lines().filter(|l| l.contains("\"split\":\"test\"")).collect();
    assert!(tests.len() == 2 && tests[0].contains("\"iter\":2,") && tests[1].contains("\"iter\":3,"), "{metrics}");
    // the same directory with flips: refused, naming the difference
    let with_flips: Vec<&str> = args.iter().copied().filter(|a| *a != "--no-flip").collect();
    let (code, err) = resnet(&with_flips);
    assert!(code == Some(2) && err.contains("flips off") && err.contains("flips on"), "{err}");
    // ... and with another subset
    let other: Vec<&str> = args.iter().map(|a| if *a == "40" { "60" } else { a }).collect();
    let (code, err) = resnet(&other);
    assert!(code == Some(2) && err.contains("training images 40") && err.contains("training images 60"), "{err}");
    // all 100 training images is no subset: nothing recorded, the report says nothing of one
    let all = dir.join("deg-all");
    let mut every: Vec<&str> = args.iter().map(|a| if *a == "40" { "100" } else { a }).collect();
    every[5] = all.to_str().unwrap();
    let (code, err) = resnet(&every);
    assert_eq!(code, Some(0), "{err}");
    let cfg = std::fs::read_to_string(all.join("runs/plain8/config.toml")).unwrap();
    let report = std::fs::read_to_string(all.join("REPORT.md")).unwrap();
    assert!(!cfg.contains("train_images") && !report.contains("of its training images"), "{cfg}\n{report}");
    // reproduce cifar10 stays the paper's protocol
    let (code, err) = resnet(&[
        "reproduce",
        "cifar10",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-flip",
    ]);
    assert!(code == Some(2) && err.contains("reproduce degradation"), "{err}");
}
