//! `resnet data fashion-det` and `resnet eval-det` through the binary: the same seed gives the same
//! bytes; the set reads back through both readers and scores 1 against itself under every
//! protocol; bad ground truth and results get a clear error naming the file, exit code 2, no panic.
//! Needs data/fashion-mnist (`bash scripts/fetch-fashion-mnist.sh`) and .cache/photos
//! (`bash scripts/fetch-pypi-files.sh photos`).

use resnet::data::detection::Detection;
use resnet::data::{coco, voc};
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

fn needs(rel: &str, script: &str) -> PathBuf {
    let p = root().join(rel);
    assert!(p.exists(), "{} is missing: run `bash scripts/{script}` first", p.display());
    p
}

fn tmpdir(tag: &str) -> Scratch {
    Scratch::new(&format!("detect-{tag}"))
}

fn resnet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).current_dir(root()).output().expect("run resnet")
}

fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push((p.strip_prefix(dir).unwrap_or(&p).to_path_buf(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

fn make(out: &Path, seed: &str) {
    let data = needs("data/fashion-mnist", "fetch-fashion-mnist.sh");
    needs(".cache/photos", "fetch-pypi-files.sh photos");
    let o = resnet(&[
        "data",
        "fashion-det",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--train",
        "12",
        "--val",
        "8",
        "--size",
        "96",
        "--seed",
        seed,
    ]);
    ok(&o);
}

/// `resnet eval-det --gt GT --results R EXTRA... --json`, parsed.
fn eval_det_json(gt: &Path, results: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["eval-det", "--gt", gt.to_str().unwrap(), "--results", results.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.push("--json");
    serde_json::from_str(&ok(&resnet(&args))).unwrap()
}

fn rel(dir: &Path, p: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    all_files(&dir.join(p))
}

#[test]
fn fashion_det_is_byte_identical_per_seed_and_scores_one_against_itself() {
    let d = tmpdir("fdet");
    let (a, b, c) = (d.join("a"), d.join("b"), d.join("c"));
    make(&a, "5");
    make(&b, "5");
    make(&c, "6");
    let fa = rel(&a, Path::new(""));
    assert_eq!(fa, rel(&b, Path::new("")), "same seed, different bytes");
    assert_ne!(fa, rel(&c, Path::new("")));
    assert_eq!(fa.iter().filter(|(p, _)| p.extension().is_some_and(|e| e == "jpg")).count(), 20);

    // every image is there, of its annotated size, for both files
    for split in ["train", "val"] {
        let json = a.join(format!("annotations/instances_{split}.json"));
        ok(&resnet(&["data", "check-det", "--gt", json.to_str().unwrap()]));
        ok(&resnet(&["data", "check-det", "--gt", a.to_str().unwrap(), "--split", split]));
    }

    // both readers agree on the boxes
    let gt = coco::read_instances(&a.join("annotations/instances_val.json")).unwrap();
    let vg = voc::read_voc(&a, "val").unwrap();
    assert_eq!(gt.images.len(), 8);
    assert!(!gt.annotations.is_empty());
    assert_eq!(
        gt.annotations.iter().map(|x| x.bbox).collect::<Vec<_>>(),
        vg.annotations.iter().map(|x| x.bbox).collect::<Vec<_>>()
    );
    assert_eq!(
        gt.annotations.iter().map(|x| x.difficult).collect::<Vec<_>>(),
        vg.annotations.iter().map(|x| x.difficult).collect::<Vec<_>>()
    );

    // the ground truth as detections: AP 1 (to pycocotools' 1 - 2e-16), mAP 1
    let dets: Vec<Detection> = gt
        .annotations
        .iter()
        .map(|x| Detection { image_id: x.image_id, category_id: x.category_id, bbox: x.bbox, score: 0.5 })
        .collect();
    let r = d.join("r.json");
    std::fs::write(&r, serde_json::to_string(&dets).unwrap()).unwrap();
    let gt_json = a.join("annotations/instances_val.json");
    let v = eval_det_json(&gt_json, &r, &[]);
    assert_eq!(v["names"][0], "AP");
    assert!((v["stats"][0].as_f64().unwrap() - 1.0).abs() < 1e-9, "{v}");
    for protocol in ["voc07", "voc"] {
        let v = eval_det_json(&a, &r, &["--split", "val", "--protocol", protocol]);
        assert!((v["map"].as_f64().unwrap() - 1.0).abs() < 1e-9, "{protocol}: {v}");
        assert!(v["ap"].as_object().unwrap().contains_key("Ankle boot"));
    }
    // empty results: zeros, not a crash
    std::fs::write(&r, "[]").unwrap();
    let v = eval_det_json(&gt_json, &r, &[]);
    assert_eq!(v["stats"][0], 0.0);
    let text = ok(&resnet(&["eval-det", "--gt", gt_json.to_str().unwrap(), "--results", r.to_str().unwrap()]));
    assert!(text.contains("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 0.000"), "{text}");
}

#[test]
fn bad_ground_truth_and_results_are_refused_by_name() {
    let d = tmpdir("bad");
    let gt = d.join("gt.json");
    let r = d.join("r.json");
    let good = r#"{"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 3, "name": "cat"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 300, "iscrowd": 0}]}"#;
    std::fs::write(&r, r#"[{"image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.9}]"#).unwrap();
    let run = |gt_text: &str| {
        std::fs::write(&gt, gt_text).unwrap();
        resnet(&["eval-det", "--gt", gt.to_str().unwrap(), "--results", r.to_str().unwrap()])
    };
    ok(&run(good));
    fails(&run(&good[..40]), &["gt.json: byte", "truncated JSON"]);
    fails(&run("<xml/>"), &["gt.json: byte 0: not JSON"]);
    fails(&run(&good.replace(r#""area": 300, "#, "")), &["gt.json", "annotations[0]: missing field `area`"]);
    fails(&run(&good.replace(r#""image_id": 1"#, r#""image_id": 2"#)), &["annotations[0].image_id: no image has id 2"]);
    fails(
        &run(&good.replace(r#""category_id": 3"#, r#""category_id": 4"#)),
        &["annotations[0].category_id: no category has id 4"],
    );
    fails(&run(&good.replace("[10, 10, 20, 20]", "[10, 10, -1, 20]")), &["annotations[0].bbox: width -1 x height 20"]);
    fails(&run(&good.replace("[10, 10, 20, 20]", "[10, 10, 20]")), &["annotations[0].bbox: 3 numbers, not 4"]);
    fails(
        &run(&good.replace(
            r#""categories": [{"id": 3, "name": "cat"}]"#,
            r#""categories": [{"id": 3, "name": "cat"}, {"id": 3, "name": "dog"}]"#,
        )),
        &["categories[1].id: 3 is also the id of categories[0]"],
    );
    fails(
        &run(&good.replace(
            r#""images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}]"#,
            r#""images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}, {"id": 1, "file_name": "b.jpg", "width": 9, "height": 9}]"#,
        )),
        &["gt.json: images[1].id: 1 is also the id of images[0]"],
    );
    fails(
        &run(&good.replace(r#""id": 1, "image_id""#, r#""id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 1, 2, 2], "area": 4, "iscrowd": 0}, {"id": 1, "image_id""#)),
        &["gt.json: annotations[1].id: 1 is also the id of annotations[0]"],
    );
    fails(&run(&good.replace("[10, 10, 20, 20]", "[10, 10, 20, NaN]")), &["gt.json: byte", "not JSON"]);
    // results naming an unknown image
    std::fs::write(&gt, good).unwrap();
    std::fs::write(&r, r#"[{"image_id": 9, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.9}]"#).unwrap();
    fails(
        &resnet(&["eval-det", "--gt", gt.to_str().unwrap(), "--results", r.to_str().unwrap()]),
        &["r.json: [0].image_id: the ground truth has no image 9"],
    );
    // a clipped box is counted on stderr
    std::fs::write(&r, "[]").unwrap();
    let o = run(&good.replace("[10, 10, 20, 20]", "[90, 10, 20, 20]"));
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("1 boxes partly outside their image clipped, 0 wholly outside dropped")
    );
    let o = run(&good.replace("[10, 10, 20, 20]", "[100, 10, 20, 20]"));
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("0 boxes partly outside their image clipped, 1 wholly outside dropped")
    );

    // VOC: an entity declaration, xmin > xmax, an unknown class
    let v = d.join("voc");
    std::fs::create_dir_all(v.join("Annotations")).unwrap();
    std::fs::create_dir_all(v.join("ImageSets/Main")).unwrap();
    std::fs::write(v.join("ImageSets/Main/val.txt"), "000001\n").unwrap();
    let xml = "<annotation><size><width>100</width><height>80</height></size><object><name>dog</name>\
        <bndbox><xmin>5</xmin><ymin>5</ymin><xmax>50</xmax><ymax>40</ymax></bndbox></object></annotation>";
    let run_voc = |x: &str| {
        std::fs::write(v.join("Annotations/000001.xml"), x).unwrap();
        resnet(&["eval-det", "--gt", v.to_str().unwrap(), "--results", r.to_str().unwrap(), "--protocol", "voc07"])
    };
    ok(&run_voc(xml));
    fails(&run_voc(&format!("<!DOCTYPE a [<!ENTITY x \"y\">]>{xml}")), &["000001.xml: byte 0: a DOCTYPE declaration"]);
    fails(
        &run_voc(&xml.replace("<xmin>5</xmin>", "<xmin>60</xmin>")),
        &["000001.xml: object 0 (dog): xmin 60 > xmax 50"],
    );
    fails(&run_voc(&xml.replace("dog", "dgo")), &["000001.xml: object 0: class \"dgo\" is not one of the 20 classes"]);
    // a box wholly outside its image: dropped and counted, as for COCO
    let o = run_voc(
        &xml.replace("<xmin>5</xmin><ymin>5</ymin>", "<xmin>101</xmin><ymin>5</ymin>").replace(">50<", ">120<"),
    );
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("0 boxes partly outside their image clipped, 1 wholly outside dropped")
    );
    // two ids of one image number
    std::fs::write(v.join("ImageSets/Main/val.txt"), "000001\n0000_01\n").unwrap();
    std::fs::copy(v.join("Annotations/000001.xml"), v.join("Annotations/0000_01.xml")).unwrap();
    fails(
        &resnet(&["eval-det", "--gt", v.to_str().unwrap(), "--results", r.to_str().unwrap()]),
        &["val.txt: 0000_01 and 000001 are both image 1"],
    );
    std::fs::write(v.join("ImageSets/Main/val.txt"), "000001\n").unwrap();
    std::fs::remove_file(v.join("Annotations/000001.xml")).unwrap();
    fails(
        &resnet(&["eval-det", "--gt", v.to_str().unwrap(), "--results", r.to_str().unwrap()]),
        &["000001.xml: no such file"],
    );
}

/// A two-image set (100 x 80 and 60 x 40 JPEGs) as a VOC tree at `root` and as COCO JSON at
/// `root/annotations/instances_val.json` (file names relative to `root/JPEGImages`, as
/// `resnet data fashion-det` writes them).
fn two_image_set(root: &Path) -> PathBuf {
    for sub in ["Annotations", "ImageSets/Main", "JPEGImages", "annotations"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    std::fs::write(root.join("ImageSets/Main/val.txt"), "000001\n000002\n").unwrap();
    let mut images = vec![];
    for (i, (w, h)) in [(100u32, 80u32), (60, 40)].into_iter().enumerate() {
        let stem = format!("00000{}", i + 1);
        let xml = format!(
            "<annotation><filename>{stem}.jpg</filename><size><width>{w}</width><height>{h}</height></size>\
             <object><name>dog</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox>\
             </object></annotation>"
        );
        std::fs::write(root.join(format!("Annotations/{stem}.xml")), xml).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb([90, 120, 200]))
            .save(root.join(format!("JPEGImages/{stem}.jpg")))
            .unwrap();
        images.push(serde_json::json!({"id": i + 1, "file_name": format!("{stem}.jpg"), "width": w, "height": h}));
    }
    let gt = serde_json::json!({"images": images, "categories": [{"id": 12, "name": "dog"}],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 12, "bbox": [4, 4, 26, 26], "area": 676, "iscrowd": 0}]});
    let json = root.join("annotations/instances_val.json");
    std::fs::write(&json, gt.to_string()).unwrap();
    json
}

#[test]
fn check_det_names_an_image_that_is_missing_or_of_another_size() {
    let d = tmpdir("check");
    let v = d.join("set");
    let json = two_image_set(&v);
    let (vs, js) = (v.to_str().unwrap(), json.to_str().unwrap());
    let voc = || resnet(&["data", "check-det", "--gt", vs, "--split", "val"]);
    let coco = || resnet(&["data", "check-det", "--gt", js]);
    let out = ok(&voc());
    assert!(out.contains("2 images in") && out.contains("all present and of their annotated size"), "{out}");
    let out = ok(&coco());
    assert!(out.contains("2 images in") && out.contains("1 boxes"), "{out}");

    // another size than the annotation says: the image, both sizes and where the annotation is
    let jpg2 = v.join("JPEGImages/000002.jpg");
    image::RgbImage::new(61, 40).save(&jpg2).unwrap();
    let want = format!("{}: 61 x 40 pixels (width x height), but ", jpg2.display());
    fails(&voc(), &[&want, "Annotations/000002.xml: <size> says 60 x 40"]);
    fails(&coco(), &[&want, "instances_val.json: images[1] says 60 x 40"]);

    // missing, and both images wrong: the first named, the rest counted
    let jpg1 = v.join("JPEGImages/000001.jpg");
    std::fs::remove_file(&jpg1).unwrap();
    let want = format!("{}: no such file (", jpg1.display());
    fails(&voc(), &[&want, "Annotations/000001.xml: <size> names it)", "2 of 2 images are missing or do not match"]);
    fails(&coco(), &[&want, "instances_val.json: images[0] names it)"]);

    // not an image at all
    std::fs::write(&jpg1, b"GIF89a, or anything else").unwrap();
    fails(&coco(), &["000001.jpg: not a readable JPEG or PNG image"]);

    // a file name that leaves the image folder is refused, not looked up
    std::fs::write(&json, std::fs::read_to_string(&json).unwrap().replace("000001.jpg", "../../000001.jpg")).unwrap();
    fails(&coco(), &["images[0] names \"../../000001.jpg\", which is not a path inside the image folder"]);

    // --images elsewhere; a COCO file with no image folder beside it
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    fails(
        &resnet(&["data", "check-det", "--gt", vs, "--split", "val", "--images", elsewhere.to_str().unwrap()]),
        &[&format!("{}: no such file", elsewhere.join("000001.jpg").display())],
    );
    let lone = d.join("lone.json");
    std::fs::copy(&json, &lone).unwrap();
    fails(&resnet(&["data", "check-det", "--gt", lone.to_str().unwrap()]), &["where are the images of", "lone.json"]);
}
