//! Hostile or mistaken input through the binary: an output that is one of the inputs, writes that
//! fail, weights holding NaN, decompression bombs and FIFOs in data directories (run under a memory
//! limit and a time limit), and the messages of a few misleading corners. Every fixture is made
//! here (small MNIST-style sets, checkpoints built with the library); nothing is fetched.

use resnet::arch::{ArchOptions, ArchSpec};
use resnet::data::augment::Preprocess;
use resnet::net::Net;
use resnet::train::checkpoint::{self, Meta};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_resnet");

fn resnet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).output().expect("run resnet")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Exit code 2, every needle in stderr, no panic. Returns (stdout, stderr).
fn check_fails(o: &Output, what: &str, needles: &[&str]) -> (String, String) {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(2), "{what}:\n{out}\n{err}");
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{what}: '{n}' not in:\n{err}");
    }
    (out, err)
}

fn fails_with<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], needles: &[&str]) -> (String, String) {
    check_fails(&resnet(args), &format!("{args:?}"), needles)
}

fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let o = resnet(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?} failed:\n{out}\n{err}");
    out
}

/// A fresh, empty directory for one test.
fn tmp(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

// ---- fixtures ----

fn grey_resnet8() -> ArchSpec {
    ArchSpec::parse("resnet8", &ArchOptions { in_channels: Some(1), ..Default::default() }).unwrap()
}

/// Our checkpoint of a grey resnet8 for 28x28 images (what training on MNIST writes), after `poison`.
fn checkpoint_file(path: &Path, poison: impl Fn(&mut Net)) -> PathBuf {
    let spec = grey_resnet8();
    let mut net = Net::new(&spec, 1, 32, 32, false, 3).unwrap();
    poison(&mut net);
    let pre = Preprocess { src: (28, 28, 1), size: 32, mean: vec![0.1; 32 * 32], crop_pad: 4, flip: true };
    let meta = Meta::new(spec, (0..10).map(|i| i.to_string()).collect(), (28, 28, 1), 32);
    std::fs::write(path, checkpoint::to_bytes(&net, None, &pre, &meta).unwrap()).unwrap();
    path.to_path_buf()
}

// ---- (3) an output that is an input ----

#[test]
fn an_output_that_is_an_input_is_refused_before_anything_is_written() {
    let d = tmp("same-file");
    let ck = checkpoint_file(&d.join("w.safetensors"), |_| {});
    let before = std::fs::read(&ck).unwrap();
    std::os::unix::fs::symlink(&ck, d.join("link.safetensors")).unwrap();
    std::fs::hard_link(&ck, d.join("hard.safetensors")).unwrap();
    let dotted = d.join(".").join("w.safetensors");
    for out in [ck.clone(), dotted, d.join("link.safetensors"), d.join("hard.safetensors")] {
        fails_with(&["export", "--weights", s(&ck), "--onnx", s(&out)], &["--weights and --onnx are the same file"]);
        fails_with(&["convert", s(&ck), s(&out)], &["input and output are the same file"]);
    }
    // plot: the figure over a run's metrics (a hard link named .svg)
    let run = d.join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("metrics.jsonl"), "{\"iter\":1,\"train_err\":50.0}\n").unwrap();
    std::fs::hard_link(run.join("metrics.jsonl"), d.join("fig.svg")).unwrap();
    fails_with(&["plot", s(&run), "--out", s(&d.join("fig.svg"))], &["metrics.jsonl and --out are the same file"]);
    // responses: a file it writes is one of the weights
    let out = d.join("fig7");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::copy(&ck, out.join("responses.csv")).unwrap();
    let w = out.join("responses.csv");
    fails_with(
        &["responses", "--weights", s(&w), "--data", s(&d), "--out", s(&out)],
        &["--weights and a file written to --out are the same file"],
    );
    // data folder: an archive given as both
    std::fs::write(d.join("x.tar"), b"").unwrap();
    fails_with(&["data", "folder", "--data", s(&d.join("x.tar")), "--out", s(&d.join("x.tar"))], &["same file"]);
    assert_eq!(std::fs::read(&ck).unwrap(), before, "the input was changed");
    // a real output still works, and the export's input is left as it was
    ok(&["export", "--weights", s(&ck), "--onnx", s(&d.join("w.onnx"))]);
    assert_eq!(std::fs::read(&ck).unwrap(), before);
    let _ = std::fs::remove_dir_all(&d);
}

// ---- (8) a failed write prints no success line ----

#[test]
fn a_convert_that_cannot_write_says_so_and_prints_no_success() {
    let d = tmp("convert-write");
    let ck = checkpoint_file(&d.join("w.safetensors"), |_| {});
    // the output's parent is a regular file (tests run as root: permissions would not stop a write)
    std::fs::write(d.join("afile"), b"x").unwrap();
    let target = d.join("afile").join("out.safetensors");
    let (out, _) = fails_with(&["convert", s(&ck), s(&target)], &["writing", "out.safetensors"]);
    assert!(!out.contains("as torchvision-named"), "a success line was printed: {out}");
    assert_eq!(out, "", "nothing on stdout for a failed convert");
    let left: Vec<String> =
        std::fs::read_dir(&d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(left.iter().all(|n| !n.contains("tmp")), "a temporary file was left: {left:?}");
    // the same with export
    let (out, _) = fails_with(&["export", "--weights", s(&ck), "--onnx", s(&d.join("afile/x.onnx"))], &["x.onnx"]);
    assert_eq!(out, "");
    let _ = std::fs::remove_dir_all(&d);
}
