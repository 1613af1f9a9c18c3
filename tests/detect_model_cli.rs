//! `resnet detect` through the binary, on a tiny random-weight detector written through the library
//! (ResNet-18 C4 backbone, 3 classes + background, images resized to 128 / at most 160): the JSON's
//! shape (boxes inside the original image, labels and class ids of the checkpoint, scores in order),
//! the text output, the drawn PNGs at each image's own size, the score threshold, and refusals (a
//! missing image, a file that is not an image, weights that are not a detector checkpoint, --draw
//! onto a file or over an input): exit code 2, the culprit named, no panic.
//! Uses .cache/photos/astronaut.png (`bash scripts/fetch-pypi-files.sh photos`) and a generated PNG.

use resnet::arch::{ArchOptions, ArchSpec};
use resnet::detect::checkpoint::{self, DetMeta, DetTransform};
use resnet::detect::model::{DetectorSpec, FasterRcnn};
use resnet::detect::preset::Preset;
use resnet::net::Freeze;
use serde_json::Value;
use std::path::{Path, PathBuf};
#[path = "common/scratch.rs"]
mod scratch;
use scratch::Scratch;
#[path = "common/outcome.rs"]
mod outcome;

use outcome::{fails, ok};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_resnet");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tmpdir(tag: &str) -> Scratch {
    Scratch::new(&format!("detect-model-{tag}"))
}

fn resnet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).output().expect("run resnet")
}

const NAMES: [&str; 3] = ["shirt", "shoe", "bag"];

/// A random-weight detector checkpoint at `path`.
fn tiny_checkpoint(path: &Path) {
    let mut preset = Preset::torchvision();
    preset.rpn.post_nms_top_n_test = 50;
    preset.rpn.post_nms_top_n_train = 50;
    preset.image_min_size = 128;
    preset.image_max_size = 160;
    let spec = DetectorSpec {
        arch: ArchSpec::parse("resnet18", &ArchOptions::default()).unwrap(),
        classes: 4,
        preset,
        freeze: Freeze { bn: true, at: 2 },
        max_image: (128, 160),
    };
    let mut d = FasterRcnn::new(spec, false, 7).unwrap();
    // class scores independent of the image: softmax([0, 1, 0.6, 0.3]) = (0.145, 0.394, 0.264, 0.196)
    d.predictor.set_torch("cls_score.weight", &[4, 512], &[0.0; 4 * 512]).unwrap();
    d.predictor.set_torch("cls_score.bias", &[4], &[0.0, 1.0, 0.6, 0.3]).unwrap();
    let names = NAMES.iter().map(|s| s.to_string()).collect();
    let meta = DetMeta::new(&d.spec, names, DetTransform::of_preset(&d.spec.preset));
    checkpoint::save(path, &d, &meta).unwrap();
}

#[test]
fn detect_prints_json_and_text_and_draws_pngs() {
    let dir = tmpdir("ok");
    let weights = dir.join("last.safetensors");
    tiny_checkpoint(&weights);
    let photo = root().join(".cache/photos/astronaut.png");
    assert!(photo.exists(), "{} is missing: run `bash scripts/fetch-pypi-files.sh photos` first", photo.display());
    let generated = dir.join("gen.png");
    image::RgbImage::from_fn(90, 60, |x, y| image::Rgb([(x * 2) as u8, (y * 4) as u8, ((x + y) % 256) as u8]))
        .save(&generated)
        .unwrap();
    let sizes = [(512.0, 512.0), (90.0, 60.0)];
    let images = [photo.to_str().unwrap(), generated.to_str().unwrap()];
    let w = weights.to_str().unwrap();

    let out = ok(&resnet(&[&["detect", "--weights", w, "--json"][..], &images].concat()));
    let v: Value = serde_json::from_str(&out).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let mut total = 0;
    for ((r, img), (iw, ih)) in arr.iter().zip(images).zip(sizes) {
        assert_eq!(r["image"], img);
        let dets = r["detections"].as_array().unwrap();
        total += dets.len();
        // every RoI scores 0.39 / 0.26 / 0.20 for the three classes: each class is detected
        for name in NAMES {
            assert!(dets.iter().any(|d| d["label"] == name), "{name} in {r}");
        }
        let mut last = f64::INFINITY;
        for d in dets {
            let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            assert_eq!(b.len(), 4);
            // inside the original image (the resized image's clip, scaled back)
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[0] <= b[2] && b[1] <= b[3], "{d}");
            assert!(b[2] <= iw + 1e-3 && b[3] <= ih + 1e-3, "{d} in {iw} x {ih}");
            let id = d["class_id"].as_u64().unwrap() as usize;
            assert!((1..=3).contains(&id), "{d}");
            assert_eq!(d["label"], NAMES[id - 1]);
            let s = d["score"].as_f64().unwrap();
            assert!(s > 0.05 && s <= 1.0 && s <= last, "{d}");
            last = s;
        }
    }

    // a threshold keeps the detections at or above it
    let out = ok(&resnet(&[&["detect", "--weights", w, "--json", "--score-threshold", "0.3"][..], &images].concat()));
    let v: Value = serde_json::from_str(&out).unwrap();
    let kept: usize = v.as_array().unwrap().iter().map(|r| r["detections"].as_array().unwrap().len()).sum();
    assert!(kept > 0 && kept < total, "{kept} of {total}");
    for d in v.as_array().unwrap().iter().flat_map(|r| r["detections"].as_array().unwrap()) {
        assert!(d["score"].as_f64().unwrap() >= 0.3 && d["label"] == "shirt", "{d}");
    }

    // text and drawings
    let drawn = dir.join("drawn");
    let out = ok(&resnet(&[&["detect", "--weights", w, "--draw", drawn.to_str().unwrap()][..], &images].concat()));
    assert!(out.contains("astronaut.png: ") && out.contains("gen.png: ") && out.contains(" detection"), "{out}");
    for (name, (iw, ih)) in [("astronaut.png", sizes[0]), ("gen.png", sizes[1])] {
        let img = image::open(drawn.join(name)).unwrap();
        assert_eq!((img.width() as f64, img.height() as f64), (iw, ih), "{name}");
    }
}

#[test]
fn bad_inputs_are_refused_by_name() {
    let dir = tmpdir("bad");
    let weights = dir.join("last.safetensors");
    tiny_checkpoint(&weights);
    let w = weights.to_str().unwrap();
    let img = dir.join("in.png");
    image::RgbImage::new(40, 30).save(&img).unwrap();
    let i = img.to_str().unwrap();

    fails(&resnet(&["detect", "--weights", w, dir.join("missing.jpg").to_str().unwrap()]), &["missing.jpg"]);
    let text = dir.join("notes.png");
    std::fs::write(&text, b"not an image").unwrap();
    fails(&resnet(&["detect", "--weights", w, text.to_str().unwrap()]), &["notes.png", "not a JPEG or PNG"]);
    fails(&resnet(&["detect", "--weights", w, dir.to_str().unwrap()]), &["a directory"]);
    // weights that are not a detector checkpoint: an image, a missing file
    fails(&resnet(&["detect", "--weights", i, i]), &["in.png", "not a detector checkpoint"]);
    fails(&resnet(&["detect", "--weights", dir.join("nope.safetensors").to_str().unwrap(), i]), &["nope.safetensors"]);
    // --draw onto a file, or over an input
    fails(&resnet(&["detect", "--weights", w, "--draw", i, i]), &["in.png"]);
    fails(&resnet(&["detect", "--weights", w, "--draw", dir.to_str().unwrap(), i]), &["same file", "in.png"]);
    assert!(image::open(&img).unwrap().width() == 40, "the input is untouched");
    fails(&resnet(&["detect", "--weights", w, "--score-threshold", "2", i]), &["--score-threshold"]);
}
