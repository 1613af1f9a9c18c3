//! `resnet train-det` and `resnet eval-det --weights` through the binary, on a small synthetic
//! COCO data set the test writes: 96 x 96 PNGs of grey noise with one or two objects each, a red
//! square (class "square") or a blue bar three times as wide as high (class "bar"), 14-40 px.
//!
//! - Overfitting (issue 18's CI test): a CIFAR-family ResNet-20 detector trained on 32 such images
//!   (BN frozen at statistics measured on them) reaches training-set AP50 >= 0.9 by the COCO
//!   protocol of `eval-det --weights`.
//! - Resume: a run stopped at iteration 7 (--stop-at) and resumed writes the same final checkpoint,
//!   byte for byte, and the same metrics lines as an uninterrupted run; so does one stopped by SIGINT
//!   (exit 130).
//! - Refusals: a data set without a box, a checkpoint whose classes differ from the data's, a run
//!   directory that already holds a run, --resume of a directory without a run: exit 2, named.

#[path = "common/outcome.rs"]
mod outcome;

use outcome::{fails, ok};
use resnet::rng::splitmix64;
use serde_json::{Value, json};
use std::path::Path;
#[path = "common/scratch.rs"]
mod scratch;
use scratch::Scratch;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_resnet");

fn resnet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).output().expect("run resnet")
}

fn tmpdir(tag: &str) -> Scratch {
    Scratch::new(&format!("train-det-{tag}"))
}

/// `n` images under `root` (COCO layout: annotations/instances_<split>.json, JPEGImages/); images
/// listed in `empty` get no object. Category ids 3 ("square") and 7 ("bar"), sparse as COCO's are.
fn write_shapes(root: &Path, split: &str, n: usize, empty: &[usize]) {
    const S: u32 = 96;
    std::fs::create_dir_all(root.join("annotations")).unwrap();
    std::fs::create_dir_all(root.join("JPEGImages")).unwrap();
    let (mut images, mut anns) = (vec![], vec![]);
    for i in 0..n {
        let r = |k: u64| splitmix64((i as u64) << 16 | k);
        let mut img = image::RgbImage::from_fn(S, S, |x, y| {
            let v = 90 + (splitmix64(r(1000) ^ u64::from(y * S + x)) % 60) as u8;
            image::Rgb([v, v, v])
        });
        let count = if empty.contains(&i) { 0 } else { 1 + (r(1) % 2) as usize };
        let mut placed: Vec<[u32; 4]> = vec![];
        for k in 0..count {
            let class = (r(10 + k as u64) % 2) as usize;
            let side = 14 + (r(20 + k as u64) % 20) as u32;
            let (w, h) = if class == 0 { (side, side) } else { ((side * 3 / 2).min(44), (side / 2).max(8)) };
            // a free spot (left, then right half), else no second object
            let span = u64::from((S / 2 - 4).saturating_sub(w).max(1));
            let x0 = (if k == 0 { 2 } else { S / 2 + 2 }) + (r(30 + k as u64) % span) as u32;
            let y0 = 4 + (r(40 + k as u64) % u64::from(S - h - 8)) as u32;
            let b = [x0, y0, (x0 + w).min(S - 1), y0 + h];
            if placed.iter().any(|p| b[0] < p[2] && p[0] < b[2] && b[1] < p[3] && p[1] < b[3]) {
                continue;
            }
            for y in b[1]..b[3] {
                for x in b[0]..b[2] {
                    img.put_pixel(x, y, if class == 0 { image::Rgb([220, 40, 30]) } else { image::Rgb([30, 60, 220]) });
                }
            }
            placed.push(b);
            let (bw, bh) = (b[2] - b[0], b[3] - b[1]);
            anns.push(json!({"id": anns.len() + 1, "image_id": i + 1, "category_id": if class == 0 { 3 } else { 7 },
                "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0}));
        }
        let name = format!("{split}-{i:03}.png");
        img.save(root.join("JPEGImages").join(&name)).unwrap();
        images.push(json!({"id": i + 1, "file_name": name, "width": S, "height": S}));
    }
    let doc = json!({"images": images, "annotations": anns,
        "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]});
    std::fs::write(root.join(format!("annotations/instances_{split}.json")), doc.to_string()).unwrap();
}

/// The detector's flags for 96 x 96 shapes: ResNet-20 C4 (stride 2), anchors fitting 14-44 px.
const DETECTOR: [&str; 14] = [
    "--arch",
    "resnet20",
    "--min-size",
    "96",
    "--max-size",
    "96",
    "--anchor-sizes",
    "12,24,48",
    "--freeze-at",
    "0",
    "--preset",
    "torchvision",
    "--rois-per-image",
    "64",
];

fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<String> = ["train-det", "--quiet", "--data"].iter().map(|s| s.to_string()).collect();
    args.push(data.display().to_string());
    args.push("--out".into());
    args.push(out.display().to_string());
    args.extend(DETECTOR.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    resnet(&args)
}

/// Training-set AP50 >= 0.9 after a short run (the overfitting test).
#[test]
fn a_detector_overfits_a_few_dozen_images() {
    let dir = tmpdir("overfit");
    let data = dir.join("shapes");
    write_shapes(&data, "train", 32, &[]);
    let run = dir.join("run");
    let o = train(&data, &run, &["--iters", "640", "--lr", "0.01", "--log-every", "64", "--json"]);
    let out: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!((out["iteration"].as_u64(), out["finished"].as_bool()), (Some(640), Some(true)), "{out}");
    let o = resnet(&[
        "eval-det",
        "--weights",
        run.join("last.safetensors").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--split",
        "train",
        "--json",
    ]);
    let e: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    let ap50 = e["AP50"].as_f64().or_else(|| e["stats"][1].as_f64()).unwrap_or_else(|| panic!("{e}"));
    eprintln!("training-set evaluation: {e}");
    assert!(ap50 >= 0.9, "training-set AP50 {ap50} < 0.9: {e}");
    // the metrics: loss lines every 64 iterations, falling
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let losses: Vec<f64> =
        text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()?.get("loss")?.as_f64()).collect();
    assert_eq!(losses.len(), 10, "{text}");
    assert!(losses[9] < 0.5 * losses[0], "{losses:?}");
}

/// Stopped and resumed (at an iteration, or by SIGINT) = uninterrupted, byte for byte.
#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let dir = tmpdir("resume");
    let data = dir.join("shapes");
    write_shapes(&data, "train", 6, &[4]);
    write_shapes(&data, "val", 3, &[]);
    let common = ["--iters", "14", "--eval-every", "5", "--log-every", "2", "--calibrate-bn", "4", "--lr", "0.01"];
    let whole = dir.join("whole");
    ok(&train(&data, &whole, &common));
    let parts = dir.join("parts");
    let o = train(&data, &parts, &[&common[..], &["--stop-at", "7", "--json"]].concat());
    let out: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!((out["iteration"].as_u64(), out["finished"].as_bool()), (Some(7), Some(false)));
    assert_eq!(out["skipped_empty"].as_u64(), Some(1), "{out}");
    ok(&resnet(&["train-det", "--quiet", "--resume", parts.to_str().unwrap()]));
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert!(read(&whole, "last.safetensors") == read(&parts, "last.safetensors"), "the final checkpoints differ");
    // the same lines, but for the window the stop cut in two (rows at 7 and 8 instead of one at 8)
    let rows = |d: &Path| -> Vec<Value> {
        let text = String::from_utf8(read(d, "metrics.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("img_per_s");
                v
            })
            .filter(|v| v.get("ap").is_some() || !matches!(v["iter"].as_u64(), Some(7 | 8)))
            .collect()
    };
    let (w, p) = (rows(&whole), rows(&parts));
    assert_eq!(w.len(), 7 + 3 - 1, "{w:?}");
    assert_eq!(w, p);
    // SIGINT: a resumable checkpoint, exit 130, the same end
    let sig = dir.join("sig");
    let mut args: Vec<String> = vec!["train-det".into(), "--quiet".into(), "--data".into(), data.display().to_string()];
    args.extend(["--out".into(), sig.display().to_string()]);
    args.extend(DETECTOR.iter().chain(&common).map(|s| s.to_string()));
    let mut child = Command::new(BIN).args(&args).spawn().unwrap();
    let metrics = sig.join("metrics.jsonl");
    while std::fs::read_to_string(&metrics).map_or(true, |t| t.lines().count() < 1) {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the run ended before it was interrupted: {st}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let st = child.wait().unwrap();
    let last = sig.join("last.safetensors");
    if st.code() == Some(130) {
        assert!(last.exists());
    } else {
        // the run may have finished before the signal arrived
        assert_eq!(st.code(), Some(0));
    }
    ok(&resnet(&["train-det", "--quiet", "--resume", sig.to_str().unwrap()]));
    assert!(read(&whole, "last.safetensors") == std::fs::read(&last).unwrap(), "SIGINT + resume differs");
    // the checkpoint runs through `resnet detect`
    let img = data.join("JPEGImages/val-000.png");
    let o = resnet(&["detect", "--json", "--weights", last.to_str().unwrap(), img.to_str().unwrap()]);
    let v: Value = serde_json::from_str(&ok(&o)).unwrap();
    assert!(v[0]["detections"].is_array(), "{v}");
}

#[test]
fn bad_runs_are_refused_by_name() {
    let dir = tmpdir("bad");
    let data = dir.join("shapes");
    write_shapes(&data, "train", 3, &[0, 1, 2]);
    fails(
        &train(&data, &dir.join("r0"), &[]),
        &["instances_train.json", "none of its 3 images has a box", "--keep-empty"],
    );
    let missing = dir.join("nowhere");
    fails(&train(&missing, &dir.join("r1"), &[]), &["nowhere", "not a directory"]);
    fails(&resnet(&["train-det", "--resume", dir.to_str().unwrap()]), &["holds no run"]);
    // a resumed run keeps its configuration, cadence included (config.toml)
    fails(&resnet(&["train-det", "--resume", dir.to_str().unwrap(), "--log-every", "5"]), &["--resume", "--log-every"]);
    // a trained checkpoint judged on data of other classes
    let good = dir.join("good");
    write_shapes(&good, "train", 4, &[]);
    let run = dir.join("run");
    ok(&train(&good, &run, &["--iters", "2", "--calibrate-bn", "2", "--ckpt-every", "1"]));
    fails(&train(&good, &run, &["--iters", "2"]), &["already holds a run", "--resume"]);
    let other = dir.join("other");
    write_shapes(&other, "val", 2, &[]);
    let inst = other.join("annotations/instances_val.json");
    let text = std::fs::read_to_string(&inst).unwrap().replace("\"bar\"", "\"disc\"");
    std::fs::write(&inst, text).unwrap();
    let w = run.join("last.safetensors");
    let o = resnet(&["eval-det", "--weights", w.to_str().unwrap(), "--data", other.to_str().unwrap()]);
    fails(&o, &["last.safetensors", "classes", "square, bar", "square, disc"]);
    // a damaged last.safetensors: the run continues from the newest iteration checkpoint, saying so
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
    let o = resnet(&["train-det", "--resume", run.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    ok(&o);
    assert!(err.contains("cannot be loaded") && err.contains("iter-0000002.safetensors (iteration 2)"), "{err}");
}
