//! Hostile or mistaken input through the binary: an output that is one of the inputs, writes that
//! fail, weights holding NaN, decompression bombs and FIFOs in data directories (run under a memory
//! limit and a time limit), and the messages of a few misleading corners. Every fixture is made
//! here (small MNIST-style sets, checkpoints built with the library); nothing is fetched.

use resnet::arch::{ArchOptions, ArchSpec};
use resnet::data::augment::Preprocess;
use resnet::net::Net;
use resnet::weights::checkpoint::{self, Meta};
use resnet::weights::{self, StateDict};
use std::io::Write;
use std::path::{Path, PathBuf};
#[path = "common/scratch.rs"]
mod scratch;
use scratch::Scratch;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

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
fn tmp(name: &str) -> Scratch {
    Scratch::new(&format!("hostile-{name}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Run the binary with at most `mem_kib` KiB of address space (`ulimit -v`), killed after `secs`
/// seconds (a test failure: it hung).
fn run_limited(args: &[&str], mem_kib: u64, secs: u64) -> Output {
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(format!("ulimit -v {mem_kib} && exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
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
}

// ---- (5) bounded readers: decompression bombs, FIFOs ----

/// Address space for the bomb tests: the binary loads its data well within it, and a bomb inflated
/// to memory (1 GiB) would not fit.
const MEM_KIB: u64 = 600_000;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// `head` gzipped, then 1 GiB of zeros as further gzip members (one stream to a gzip reader):
/// about 1 MB on disk.
fn bomb(head: &[u8]) -> Vec<u8> {
    let zeros = gzip(&vec![0u8; 16 << 20]);
    let mut b = gzip(head);
    for _ in 0..64 {
        b.extend_from_slice(&zeros);
    }
    b
}

#[test]
fn an_idx_gzip_bomb_is_refused_at_the_size_its_header_announces() {
    let d = tmp("idx-bomb");
    let data = mnist(&d.join("m"));
    std::fs::remove_file(data.join("train-images-idx3-ubyte")).unwrap();
    // a header announcing 20 images, then 1 GiB of zeros
    let header: Vec<u8> = [0x803u32, 20, 28, 28].iter().flat_map(|v| v.to_be_bytes()).collect();
    let gz = bomb(&header);
    assert!(gz.len() < 2 << 20);
    std::fs::write(data.join("train-images-idx3-ubyte.gz"), &gz).unwrap();
    let run = d.join("run");
    let args =
        ["train", "--arch", "resnet8", "--in-channels", "1", "--data", s(&data), "--iters", "1", "--out", s(&run)];
    let o = run_limited(&args, MEM_KIB, 60);
    check_fails(&o, "train on an IDX bomb", &["train-images-idx3-ubyte.gz", "its header announces 20 images of 28x28"]);
    let o = run_limited(&["data", "folder", "--data", s(&data), "--out", s(&d.join("f"))], MEM_KIB, 60);
    check_fails(&o, "data folder on an IDX bomb", &["train-images-idx3-ubyte.gz", "announces 20 images"]);
    // the same file in a tar.gz, as a member
    let mut tar = tar::Builder::new(Vec::new());
    for f in ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        tar.append_path_with_name(data.join(f), format!("mnist/{f}")).unwrap();
    }
    tar.append_path_with_name(data.join("train-images-idx3-ubyte.gz"), "mnist/train-images-idx3-ubyte.gz").unwrap();
    std::fs::write(d.join("mnist.tar.gz"), gzip(&tar.into_inner().unwrap())).unwrap();
    let o =
        run_limited(&["data", "folder", "--data", s(&d.join("mnist.tar.gz")), "--out", s(&d.join("g"))], MEM_KIB, 60);
    check_fails(
        &o,
        "an IDX bomb in a tar.gz",
        &["mnist.tar.gz:mnist/train-images-idx3-ubyte.gz", "announces 20 images"],
    );
}

#[test]
fn a_cifar_archive_bomb_is_refused_by_its_member_size_and_its_total() {
    let d = tmp("cifar-bomb");
    // a member declaring 1 GiB where a CIFAR-10 batch has 30730000 bytes: refused from its header
    let mut h = tar::Header::new_gnu();
    h.set_path("cifar-10-batches-bin/data_batch_1.bin").unwrap();
    h.set_size(1 << 30);
    h.set_mode(0o644);
    h.set_cksum();
    let p = d.join("cifar-10-binary.tar.gz");
    std::fs::write(&p, bomb(h.as_bytes())).unwrap();
    let out = d.join("f");
    let o = run_limited(&["data", "folder", "--data", s(&p), "--out", s(&out)], MEM_KIB, 60);
    check_fails(
        &o,
        "a CIFAR member bomb",
        &["cifar-10-binary.tar.gz:cifar-10-batches-bin/data_batch_1.bin: 1073741824 bytes", "30730000 bytes"],
    );
    let o = run_limited(
        &["train", "--arch", "resnet8", "--data", s(&p), "--iters", "1", "--out", s(&d.join("r"))],
        MEM_KIB,
        60,
    );
    check_fails(&o, "train on a CIFAR member bomb", &["data_batch_1.bin: 1073741824 bytes"]);
    // a member nobody reads, 2 GiB of zeros: inflated without being kept, and stopped at 1 GiB
    let mut h = tar::Header::new_gnu();
    h.set_path("cifar-10-batches-bin/padding.bin").unwrap();
    h.set_size(2 << 30);
    h.set_mode(0o644);
    h.set_cksum();
    let zeros = gzip(&vec![0u8; 16 << 20]);
    let mut b = gzip(h.as_bytes());
    for _ in 0..130 {
        b.extend_from_slice(&zeros);
    }
    std::fs::write(&p, b).unwrap();
    let o = run_limited(&["data", "folder", "--data", s(&p), "--out", s(&out)], MEM_KIB, 60);
    check_fails(
        &o,
        "a tar.gz inflating beyond 1 GiB",
        &["cifar-10-binary.tar.gz: the archive decompresses to more than"],
    );
    assert!(!out.exists());
}

fn mkfifo(p: &Path) {
    let st = Command::new("mkfifo").arg(p).status().expect("run mkfifo");
    assert!(st.success(), "mkfifo {}", p.display());
}

#[test]
fn fifos_among_the_inputs_are_refused_by_name_without_hanging() {
    let d = tmp("fifo");
    let data = mnist(&d.join("m"));
    std::fs::remove_file(data.join("t10k-labels-idx1-ubyte")).unwrap();
    mkfifo(&data.join("t10k-labels-idx1-ubyte"));
    let want = format!("{}: a FIFO (named pipe), not a regular file", s(&data.join("t10k-labels-idx1-ubyte")));
    let run = d.join("run");
    let args =
        ["train", "--arch", "resnet8", "--in-channels", "1", "--data", s(&data), "--iters", "1", "--out", s(&run)];
    check_fails(&run_limited(&args, MEM_KIB, 60), "train, FIFO in the data", &[&want]);
    let o = run_limited(&["data", "folder", "--data", s(&data), "--out", s(&d.join("f"))], MEM_KIB, 60);
    check_fails(&o, "data folder, FIFO in the data", &[&want]);
    // an archive that is a FIFO
    mkfifo(&d.join("c.tar.gz"));
    let o = run_limited(&["data", "folder", "--data", s(&d.join("c.tar.gz")), "--out", s(&d.join("g"))], MEM_KIB, 60);
    check_fails(&o, "a FIFO archive", &["c.tar.gz: a FIFO"]);
    // an image folder holding a FIFO named like an image; a FIFO given as an image or as weights
    let folder = d.join("folder");
    std::fs::create_dir_all(folder.join("a")).unwrap();
    std::fs::create_dir_all(folder.join("b")).unwrap();
    png(&folder.join("a/1.png"));
    mkfifo(&folder.join("b/2.png"));
    let ck = checkpoint_file(&d.join("w.safetensors"), |_| {});
    let o = run_limited(&["eval", "--weights", s(&ck), "--data", s(&folder)], MEM_KIB, 60);
    check_fails(&o, "eval, FIFO in an image folder", &["b/2.png", "a FIFO (named pipe) named like an image"]);
    let o = run_limited(&["predict", "--weights", s(&ck), s(&folder.join("b/2.png"))], MEM_KIB, 60);
    check_fails(&o, "predict a FIFO", &["2.png: a FIFO"]);
    mkfifo(&d.join("fifo.safetensors"));
    let o =
        run_limited(&["predict", "--weights", s(&d.join("fifo.safetensors")), s(&folder.join("a/1.png"))], MEM_KIB, 60);
    check_fails(&o, "FIFO weights", &["fifo.safetensors: a FIFO"]);
    let o = run_limited(&["convert", s(&d.join("fifo.safetensors")), s(&d.join("x.safetensors"))], MEM_KIB, 60);
    check_fails(&o, "convert FIFO weights", &["fifo.safetensors: a FIFO"]);
}

// ---- (11) messages ----

#[test]
fn an_empty_class_folder_is_refused_naming_it() {
    let d = tmp("empty-class");
    let folder = d.join("folder");
    for c in ["a", "b"] {
        std::fs::create_dir_all(folder.join(c)).unwrap();
    }
    png(&folder.join("a/1.png"));
    png(&folder.join("a/2.png"));
    let want = format!("{}: class folder with no JPEG or PNG files", s(&folder.join("b")));
    let run = d.join("run");
    let args = ["train", "--arch", "resnet8", "--in-channels", "1", "--data", s(&folder), "--input-size", "32"];
    fails_with(&[&args[..], &["--iters", "1", "--out", s(&run)]].concat(), &[&want]);
    let ck = checkpoint_file(&d.join("w.safetensors"), |_| {});
    fails_with(&["eval", "--weights", s(&ck), "--data", s(&folder)], &[&want]);
}

#[test]
fn depths_and_sizes_out_of_reach_get_the_real_reason() {
    let d = tmp("reasons");
    let data = mnist(&d.join("m"));
    let out = d.join("rep");
    let args = ["reproduce", "degradation", "--data", s(&data), "--depths", "1000004", "--out", s(&out)];
    let (_, err) = fails_with(&args, &["depth 1000004 is beyond what this crate builds"]);
    assert!(!err.contains("6n+2"), "{err}");
    let args = ["reproduce", "degradation", "--data", s(&data), "--depths", "21", "--out", s(&out)];
    fails_with(&args, &["no network of depth 21"]);
    // a batch that fits nowhere, not even one image: no "about 0 would fit"
    let (_, err) = fails_with(
        &["bench", "--arch", "resnet20", "--input-size", "100000", "--steps", "1"],
        &["even one image needs about", "smaller input size"],
    );
    assert!(!err.contains("about 0 would fit"), "{err}");
}

/// With --skip-bad, an unreadable image the mean-image pass leaves out is skipped; it must also be
/// counted, even when training never draws it (the mean-image pass hands its indices to
/// `FolderSource::with_unreadable`).
#[test]
fn an_unreadable_image_left_out_of_the_mean_image_is_counted() {
    let d = tmp("skip-count");
    let folder = d.join("folder");
    for c in ["a", "b"] {
        std::fs::create_dir_all(folder.join(c)).unwrap();
        for i in 0..8 {
            png(&folder.join(format!("{c}/{i}.png")));
        }
    }
    let good = std::fs::read(folder.join("a/0.png")).unwrap();
    std::fs::write(folder.join("a/9-truncated.png"), &good[..good.len() / 2]).unwrap();
    let run = d.join("run");
    let args = ["train", "--arch", "resnet8", "--in-channels", "1", "--data", s(&folder), "--input-size", "32"];
    let extra = ["--iters", "1", "--batch", "2", "--skip-bad", "--quiet", "--out", s(&run)];
    let out = ok(&[&args[..], &extra[..]].concat());
    assert!(out.contains("1 unreadable image(s) skipped"), "{out}");
}

// ---- (5) the detection readers: FIFOs, files beyond their bounds, nesting, entity declarations ----

/// The time guard of the detection tests: long, as the runs take well under a second but the
/// machine is shared (a process may be paused for minutes); a FIFO read would block forever.
const DET_SECS: u64 = 600;

/// A VOC tree with one 100 x 80 image and its COCO JSON (`gt.json`), and a results file
/// (`r.json`) in `d`.
fn det_set(d: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let v = d.join("voc");
    for sub in ["Annotations", "ImageSets/Main", "JPEGImages"] {
        std::fs::create_dir_all(v.join(sub)).unwrap();
    }
    std::fs::write(v.join("ImageSets/Main/val.txt"), "000001\n").unwrap();
    std::fs::write(v.join("Annotations/000001.xml"), det_xml("")).unwrap();
    image::RgbImage::new(100, 80).save(v.join("JPEGImages/000001.jpg")).unwrap();
    let gt = d.join("gt.json");
    std::fs::write(
        &gt,
        r#"{"images": [{"id": 1, "file_name": "000001.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 12, "name": "dog"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 12, "bbox": [4, 4, 26, 26], "area": 676, "iscrowd": 0}]}"#,
    )
    .unwrap();
    let r = d.join("r.json");
    std::fs::write(&r, r#"[{"image_id": 1, "category_id": 12, "bbox": [4, 4, 26, 26], "score": 0.9}]"#).unwrap();
    (v, gt, r)
}

/// A VOC annotation of a 100 x 80 image with one dog, `head` before it.
fn det_xml(head: &str) -> String {
    format!(
        "{head}<annotation><size><width>100</width><height>80</height></size><object><name>dog</name>\
         <bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>"
    )
}

#[test]
fn fifos_given_to_the_detection_readers_are_refused_by_name_without_hanging() {
    let d = tmp("det-fifo");
    let (v, gt, r) = det_set(&d);
    let (vs, gts, rs) = (s(&v), s(&gt), s(&r));
    // the set as made is fine
    ok(&["eval-det", "--gt", gts, "--results", rs]);
    ok(&["eval-det", "--gt", vs, "--results", rs, "--protocol", "voc"]);
    ok(&["data", "check-det", "--gt", vs]);
    let fifo = |p: &Path| {
        std::fs::remove_file(p).unwrap();
        mkfifo(p);
        format!("{}: a FIFO (named pipe), not a regular file", s(p))
    };
    let run = |args: &[&str], what: &str, want: &str| {
        check_fails(&run_limited(args, MEM_KIB, DET_SECS), what, &[want]);
    };
    // COCO JSON, results, VOC XML, a VOC image list, an image
    let want = fifo(&r);
    run(&["eval-det", "--gt", gts, "--results", rs], "a FIFO as results", &want);
    let want = fifo(&gt);
    run(&["eval-det", "--gt", gts, "--results", rs], "a FIFO as COCO JSON", &want);
    run(&["data", "check-det", "--gt", gts, "--images", s(&v.join("JPEGImages"))], "check-det, FIFO JSON", &want);
    std::fs::remove_file(&r).unwrap();
    std::fs::write(&r, "[]").unwrap();
    let want = fifo(&v.join("Annotations/000001.xml"));
    run(&["eval-det", "--gt", vs, "--results", rs, "--protocol", "voc07"], "a FIFO as VOC XML", &want);
    run(&["data", "check-det", "--gt", vs], "check-det, a FIFO as VOC XML", &want);
    std::fs::remove_file(v.join("Annotations/000001.xml")).unwrap();
    std::fs::write(v.join("Annotations/000001.xml"), det_xml("")).unwrap();
    let want = fifo(&v.join("JPEGImages/000001.jpg"));
    run(&["data", "check-det", "--gt", vs], "check-det, a FIFO as an image", &want);
    let want = fifo(&v.join("ImageSets/Main/val.txt"));
    run(&["eval-det", "--gt", vs, "--split", "val", "--results", rs], "a FIFO as the VOC image list", &want);
}

/// A PNG that says it is `w x h` (a valid IHDR, CRC and all) and holds no pixels.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut b = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    // IHDR, then an IDAT (where a decoder stops reading the header) of a zlib stream's first bytes, IEND
    for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", vec![0x78, 0x9c]), (b"IEND", vec![])] {
        let mut chunk = kind.to_vec();
        chunk.extend(&data);
        b.extend((data.len() as u32).to_be_bytes());
        b.extend(&chunk);
        b.extend(crc32(&chunk).to_be_bytes());
    }
    b
}

#[test]
fn detection_inputs_beyond_their_bounds_are_refused_within_a_memory_limit() {
    let d = tmp("det-bounds");
    let (v, gt, r) = det_set(&d);
    let (vs, gts, rs) = (s(&v), s(&gt), s(&r));
    let run = |args: &[&str], what: &str, want: &[&str]| {
        check_fails(&run_limited(args, MEM_KIB, DET_SECS), what, want);
    };
    let sparse = |p: &Path, len: u64| {
        let f = std::fs::OpenOptions::new().write(true).truncate(true).create(true).open(p).unwrap();
        f.set_len(len).unwrap();
    };
    // files far larger than a reader accepts (sparse: 2 GiB on disk costs nothing) are refused
    // from their size, unread
    let (gt_orig, r_orig) = (std::fs::read(&gt).unwrap(), std::fs::read(&r).unwrap());
    sparse(&r, 2 << 30);
    run(
        &["eval-det", "--gt", gts, "--results", rs],
        "2 GiB of results",
        &[&format!("{rs}: 2147483648 bytes, but a results file"), "refused"],
    );
    std::fs::write(&r, &r_orig).unwrap();
    sparse(&gt, 2 << 30);
    run(
        &["eval-det", "--gt", gts, "--results", rs],
        "2 GiB of COCO JSON",
        &[&format!("{gts}: 2147483648 bytes, but COCO's largest instances file is 448 MB"), "refused"],
    );
    std::fs::write(&gt, &gt_orig).unwrap();
    // a VOC annotation is bounded at 1 MiB: 4 MiB of real XML (an object repeated) is refused
    let xml = v.join("Annotations/000001.xml");
    let object =
        "<object><name>dog</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object>";
    let big =
        det_xml("").replace("</annotation>", &format!("{}</annotation>", object.repeat((4 << 20) / object.len())));
    std::fs::write(&xml, &big).unwrap();
    run(
        &["eval-det", "--gt", vs, "--results", rs, "--protocol", "voc07"],
        "4 MiB of VOC XML",
        &[&format!("{}: {} bytes, but a VOC annotation is a few KiB", s(&xml), big.len())],
    );
    sparse(&v.join("ImageSets/Main/val.txt"), 1 << 30);
    run(
        &["eval-det", "--gt", vs, "--results", rs, "--protocol", "voc07"],
        "1 GiB image list",
        &["val.txt: 1073741824 bytes, but an image list of a million ids is under 64 MiB"],
    );
    std::fs::write(v.join("ImageSets/Main/val.txt"), "000001\n").unwrap();
    // deep nesting (in a key nobody reads, where a recursive reader would overflow its stack) and
    // the XML reader's 16 levels: refused by name, no crash
    let nested = |head: &str| format!("{head}{}", "[{\"a\": ".repeat(1 << 19));
    std::fs::write(&gt, nested(r#"{"info": "#)).unwrap();
    run(
        &["eval-det", "--gt", gts, "--results", rs],
        "half a million nested JSON values",
        &[gts, "info: truncated JSON"],
    );
    std::fs::write(&gt, &gt_orig).unwrap();
    std::fs::write(&r, nested(r#"[{"image_id": 1, "extra": "#)).unwrap();
    run(&["eval-det", "--gt", gts, "--results", rs], "nested JSON results", &[rs, "[0].extra: truncated JSON"]);
    std::fs::write(&r, &r_orig).unwrap();
    std::fs::write(&xml, det_xml("").replace("<annotation>", &format!("<annotation>{}", "<a>".repeat(100_000))))
        .unwrap();
    run(
        &["eval-det", "--gt", vs, "--results", rs, "--protocol", "voc07"],
        "nested XML",
        &[s(&xml), "elements nested more than 16 deep"],
    );
    std::fs::write(&xml, det_xml("")).unwrap();
    // an image whose header announces 65535 x 65535 pixels (16 GB decoded): its size is checked
    // from the header, nothing decoded
    std::fs::write(v.join("JPEGImages/000001.jpg"), png_header(65535, 65535)).unwrap();
    run(
        &["data", "check-det", "--gt", vs],
        "an image announcing 65535 x 65535",
        &["000001.jpg: 65535 x 65535 pixels (width x height), but", "000001.xml: <size> says 100 x 80"],
    );
}

#[test]
fn xml_entity_declarations_and_references_are_refused_unexpanded() {
    let d = tmp("det-xml");
    let (v, _, r) = det_set(&d);
    let xml = v.join("Annotations/000001.xml");
    let eval = || run_limited(&["eval-det", "--gt", s(&v), "--results", s(&r), "--protocol", "voc"], MEM_KIB, DET_SECS);
    // billion laughs: ten levels of ten references would expand to 10^9 "lol"s
    let mut dtd = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE annotation [\n  <!ENTITY lol0 \"lol\">\n");
    for i in 1..10 {
        dtd += &format!("  <!ENTITY lol{i} \"{}\">\n", format!("&lol{};", i - 1).repeat(10));
    }
    dtd += "]>\n";
    std::fs::write(&xml, det_xml(&dtd).replace("<name>dog</name>", "<name>dog</name><pose>&lol9;</pose>")).unwrap();
    check_fails(&eval(), "billion laughs", &[&format!("{}: byte 22: a DOCTYPE declaration", s(&xml))]);
    // an external entity (a file of the machine read into the annotation)
    let ext = "<!DOCTYPE annotation [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>";
    std::fs::write(&xml, det_xml(ext).replace("<name>dog</name>", "<name>&x;</name>")).unwrap();
    check_fails(&eval(), "an external entity", &["000001.xml: byte 0: a DOCTYPE declaration"]);
    // a parameter entity DTD fetched from elsewhere
    std::fs::write(&xml, det_xml("<!DOCTYPE annotation SYSTEM \"http://example.com/evil.dtd\">")).unwrap();
    check_fails(&eval(), "an external DTD", &["000001.xml: byte 0: a DOCTYPE declaration"]);
    // a reference to an undeclared entity, without a DOCTYPE
    std::fs::write(&xml, det_xml("").replace("<name>dog</name>", "<name>&x;</name>")).unwrap();
    check_fails(&eval(), "an entity reference", &["000001.xml", "an entity reference &x;: entities are not expanded"]);
    // XML's own five and character references are text
    std::fs::write(&xml, det_xml("").replace("<name>dog</name>", "<name>&#100;o&#x67;</name><pose>&lt;&amp;</pose>"))
        .unwrap();
    ok(&["eval-det", "--gt", s(&v), "--results", s(&r), "--protocol", "voc"]);
}
