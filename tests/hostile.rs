//! Hostile or mistaken input through the binary: an output that is one of the inputs, writes that
//! fail, weights holding NaN, decompression bombs and FIFOs in data directories (run under a memory
//! limit and a time limit), and the messages of a few misleading corners. Every fixture is made
//! here (small MNIST-style sets, checkpoints built with the library); nothing is fetched.

use resnet::arch::{ArchOptions, ArchSpec};
use resnet::data::augment::Preprocess;
use resnet::net::Net;
use resnet::train::checkpoint::{self, Meta};
use resnet::weights::{self, StateDict};
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

fn idx_images(n: u32) -> Vec<u8> {
    let mut b: Vec<u8> = [0x803u32, n, 28, 28].iter().flat_map(|v| v.to_be_bytes()).collect();
    b.extend((0..n as usize * 784).map(|i| (i * 7 % 251) as u8));
    b
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut b: Vec<u8> = [0x801u32, n].iter().flat_map(|v| v.to_be_bytes()).collect();
    b.extend((0..n).map(|i| (i % 10) as u8));
    b
}

/// A small MNIST-style set (20 training, 10 test images) in `dir`.
fn mnist(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (f, b) in [
        ("train-images-idx3-ubyte", idx_images(20)),
        ("train-labels-idx1-ubyte", idx_labels(20)),
        ("t10k-images-idx3-ubyte", idx_images(10)),
        ("t10k-labels-idx1-ubyte", idx_labels(10)),
    ] {
        std::fs::write(dir.join(f), b).unwrap();
    }
    dir.to_path_buf()
}

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

/// Set element `i` of tensor `name` to `v`.
fn set(net: &mut Net, name: &str, i: usize, v: f32) {
    let mut data = net.get_torch(name).unwrap();
    let shape = net.tensor_info(name).unwrap().0.shape.clone();
    data[i] = v;
    net.set_torch(name, &shape, &data).unwrap();
}

fn png(path: &Path) -> PathBuf {
    image::GrayImage::from_fn(28, 28, |x, y| image::Luma([(x * 9 + y * 5) as u8])).save(path).unwrap();
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

// ---- (6) non-finite weights ----

#[test]
fn weights_holding_nan_or_inf_are_refused_by_every_command_that_loads_them() {
    let d = tmp("nan");
    let data = mnist(&d.join("mnist"));
    let img = png(&d.join("x.png"));
    let one = checkpoint_file(&d.join("one-nan.safetensors"), |net| set(net, "conv1.weight", 4, f32::NAN));
    let all = checkpoint_file(&d.join("all-nan.safetensors"), |net| {
        for name in net.tensor_names() {
            let shape = net.tensor_info(&name).unwrap().0.shape.clone();
            let n = shape.iter().product();
            net.set_torch(&name, &shape, &vec![f32::NAN; n]).unwrap();
        }
    });
    let stat = checkpoint_file(&d.join("inf-var.safetensors"), |net| set(net, "bn1.running_var", 0, f32::INFINITY));
    let (o, a, st) = (s(&one), s(&all), s(&stat));
    fails_with(&["predict", "--weights", o, s(&img)], &[o, "conv1.weight", "1 non-finite"]);
    fails_with(&["predict", "--weights", a, s(&img)], &[a, "non-finite"]);
    fails_with(&["predict", "--weights", st, s(&img)], &[st, "bn1.running_var", "1 non-finite"]);
    fails_with(&["eval", "--weights", a, "--data", s(&data)], &[a, "non-finite"]);
    fails_with(&["eval", "--weights", o, "--data", s(&data)], &[o, "conv1.weight"]);
    fails_with(&["convert", o, s(&d.join("tv.safetensors"))], &[o, "conv1.weight"]);
    fails_with(&["export", "--weights", o, "--onnx", s(&d.join("x.onnx"))], &[o, "conv1.weight"]);
    let run = d.join("run");
    fails_with(
        &["train", "--arch", "resnet8", "--in-channels", "1", "--data", s(&data), "--iters", "1", "--batch", "4"]
            .into_iter()
            .chain(["--init-from", o, "--out", s(&run), "--quiet"])
            .collect::<Vec<_>>(),
        &[o, "conv1.weight"],
    );
    assert!(!d.join("tv.safetensors").exists() && !d.join("x.onnx").exists());
    // torchvision-named safetensors (the state_dict reader): the tensor is named
    let spec = ArchSpec::parse("resnet18", &ArchOptions { classes: Some(10), ..Default::default() }).unwrap();
    let mut net = Net::new(&spec, 1, 32, 32, false, 0).unwrap();
    set(&mut net, "layer2.0.bn1.weight", 7, f32::NEG_INFINITY);
    let tv = d.join("tv-inf.safetensors");
    std::fs::write(&tv, weights::safetensors_bytes(&StateDict::of_net(&net), None).unwrap()).unwrap();
    fails_with(&["predict", "--weights", s(&tv), s(&img)], &[s(&tv), "layer2.0.bn1.weight", "1 non-finite"]);
    fails_with(&["convert", s(&tv), s(&d.join("ours.safetensors"))], &["layer2.0.bn1.weight"]);
    // finite weights still load
    let fine = checkpoint_file(&d.join("fine.safetensors"), |_| {});
    let out = ok(&["predict", "--weights", s(&fine), s(&img)]);
    assert!(out.contains('%') && !out.contains("NaN"), "{out}");
    let _ = std::fs::remove_dir_all(&d);
}
