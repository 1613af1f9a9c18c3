use super::*;
use crate::arch::ArchOptions;
use crate::data::testutil::TempDir;
use crate::testutil::rand_vec;

/// The model's test detector, its transform sized to its images.
fn small_spec() -> DetectorSpec {
    let mut s = crate::detect::model::test_spec();
    (s.preset.image_min_size, s.preset.image_max_size) = (96, 128);
    s
}

fn names() -> Vec<String> {
    vec!["shirt".into(), "shoe".into(), "bag".into()]
}

/// A small detector with every tensor (BN statistics included) random.
fn random_detector(seed: u64) -> FasterRcnn {
    let mut d = FasterRcnn::new(small_spec(), false, seed).unwrap();
    let mut sd = state_dict(&d);
    for (i, (n, t)) in sd.tensors.iter_mut().enumerate() {
        let r = rand_vec(t.data.len(), seed * 1000 + i as u64);
        t.data = if n.ends_with("running_var") {
            r.iter().map(|v| 0.5 + v.abs()).collect()
        } else {
            r.iter().map(|v| 0.1 * v).collect()
        };
    }
    load_state(&mut d, &sd).unwrap();
    d
}

fn meta(d: &FasterRcnn) -> DetMeta {
    let mut m = DetMeta::new(&d.spec, names(), DetTransform::of_preset(&d.spec.preset));
    m.train = Some(TrainMeta { iteration: 7, seed: 3, best_val_ap: Some(0.25) });
    m
}

#[test]
fn names_are_torchvisions() {
    let d = FasterRcnn::new(small_spec(), false, 0).unwrap();
    let sd = state_dict(&d);
    for want in [
        "backbone.body.conv1.weight",
        "backbone.body.bn1.running_var",
        "backbone.body.layer1.0.conv1.weight",
        "backbone.body.layer3.1.bn2.bias",
        "backbone.body.layer3.0.downsample.1.running_mean",
        "rpn.head.conv.0.0.weight",
        "rpn.head.conv.0.0.bias",
        "rpn.head.cls_logits.weight",
        "rpn.head.bbox_pred.bias",
        "roi_heads.box_head.layer4.0.conv1.weight",
        "roi_heads.box_head.layer4.0.downsample.0.weight",
        "roi_heads.box_head.layer4.1.bn2.running_var",
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.bbox_pred.bias",
    ] {
        assert!(sd.get(want).is_some(), "{want}");
    }
    assert_eq!(sd.get("rpn.head.cls_logits.weight").unwrap().shape, [15, 256, 1, 1]);
    assert_eq!(sd.get("roi_heads.box_predictor.bbox_pred.weight").unwrap().shape, [16, 512]);
    assert!(sd.keys().all(|k| !k.contains("fc.") && !k.contains("layer4") || k.starts_with(SUFFIX)));
    assert_eq!(tensor_shapes(&d).len(), sd.tensors.len());
}

#[test]
fn round_trip_is_bit_identical() {
    let t = TempDir::new("det-ckpt");
    let mut d = random_detector(1);
    let m = meta(&d);
    let path = t.path().join("last.safetensors");
    save(&path, &d, &m).unwrap();
    let ck = read(&path).unwrap();
    assert_eq!(ck.meta, m);
    assert_eq!(ck.spec.preset, d.spec.preset);
    assert_eq!(ck.spec.max_image, d.spec.max_image);
    assert_eq!(ck.spec.freeze, d.spec.freeze);
    // only the values that differ from the named preset are recorded
    let keys: Vec<&str> = ck.meta.preset.overrides.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["image_max_size", "image_min_size", "rpn.post_nms_top_n_test", "rpn.post_nms_top_n_train"],
        "{:?}",
        ck.meta.preset
    );
    let mut back = ck.build(false).unwrap();
    let (a, b) = (state_dict(&d), state_dict(&back));
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((n1, t1), (n2, t2)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(n1, n2);
        assert_eq!(t1.shape, t2.shape);
        assert!(t1.data.iter().zip(&t2.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{n1}");
    }
    let image = rand_vec(96 * 128 * 3, 5);
    let want = d.detect(&image, 96, 128).unwrap();
    assert!(!want.boxes.is_empty());
    assert_eq!(back.detect(&image, 96, 128).unwrap(), want);
    // built for training, the same
    let mut trained = ck.build(true).unwrap();
    assert_eq!(trained.detect(&image, 96, 128).unwrap(), want);
    // a second save of the detector read back (as recorded: built for training) is the same file,
    // byte for byte (regression: safetensors wrote its metadata map in hash order)
    let again = t.path().join("again.safetensors");
    save(&again, &trained, &ck.meta).unwrap();
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&path).unwrap(), "the bytes differ");
    let ck2 = read(&again).unwrap();
    assert_eq!(ck2.meta, ck.meta);
    assert_eq!(ck2.weights.tensors.len(), ck.weights.tensors.len());
    for ((n1, t1), (n2, t2)) in ck.weights.tensors.iter().zip(&ck2.weights.tensors) {
        assert!(n1 == n2 && t1.shape == t2.shape, "{n1} {n2}");
        assert!(t1.data.iter().zip(&t2.data).all(|(x, y)| x.to_bits() == y.to_bits()), "{n1}");
    }
    // built for inference: buffers for the transform's largest image (shorter side at most its
    // min size, longer at most its max size, either orientation), the record as it was
    assert_eq!(back.spec.max_image, (96, 128));
    assert_eq!(back.spec.preset, d.spec.preset);
    assert_eq!(ck.meta.label(2), "shoe");
    assert_eq!(ck.meta.label(0), "background");
}

#[test]
fn presets_record_their_overrides_and_refuse_unknown_ones() {
    for p in [Preset::paper(), Preset::torchvision()] {
        let r = PresetRecord::of(&p);
        assert!(r.overrides.is_empty(), "{r:?}");
        assert_eq!(r.preset().unwrap(), p);
    }
    let mut p = Preset::paper();
    p.roi_op = RoiOp::Align { aligned: true, sampling_ratio: 0 };
    p.anchor_sizes = &[64.0, 128.0];
    p.head.box_weights = [1.0, 2.0, 3.0, 4.0];
    p.rpn.allowed_border = None;
    let r = PresetRecord::of(&p);
    assert_eq!(r.overrides.len(), 4, "{r:?}");
    assert_eq!(r.preset().unwrap(), p);
    let json = serde_json::to_string(&r).unwrap();
    let back: PresetRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back.preset().unwrap(), p);
    let mut bad = r.clone();
    bad.overrides.insert("rpn.no_such".into(), 1.into());
    assert!(bad.preset().unwrap_err().contains("rpn.no_such"));
    let mut bad = r.clone();
    bad.overrides.insert("stride".into(), "sixteen".into());
    assert!(bad.preset().unwrap_err().contains("sixteen"));
    let bad = PresetRecord { name: "detectron".into(), ..r };
    assert!(bad.preset().unwrap_err().contains("detectron"));
}

/// A file with `sd`'s tensors and `format` / `detector` metadata as given.
fn write_raw(path: &Path, sd: &StateDict, format: Option<&str>, detector: Option<String>) {
    let mut md = HashMap::new();
    if let Some(f) = format {
        md.insert("format".to_string(), f.to_string());
    }
    if let Some(d) = detector {
        md.insert("detector".to_string(), d);
    }
    std::fs::write(path, weights::safetensors_bytes(sd, Some(md)).unwrap()).unwrap();
}

fn err(path: &Path) -> String {
    match read(path).and_then(|ck| ck.build(false).map(|_| ())) {
        Ok(()) => panic!("{} was accepted", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn bad_checkpoints_are_refused_naming_file_and_what() {
    let t = TempDir::new("det-ckpt-bad");
    let d = random_detector(2);
    let m = meta(&d);
    let sd = state_dict(&d);
    let mjson = serde_json::to_string(&m).unwrap();
    let p = |n: &str| t.path().join(n);

    std::fs::write(p("text.safetensors"), b"hello world, not a checkpoint").unwrap();
    let e = err(&p("text.safetensors"));
    assert!(e.contains("text.safetensors") && e.contains("not a detector checkpoint"), "{e}");

    write_raw(&p("cls.safetensors"), &sd, Some(weights::checkpoint::FORMAT), None);
    let e = err(&p("cls.safetensors"));
    assert!(e.contains("cls.safetensors") && e.contains("classification checkpoint"), "{e}");

    write_raw(&p("plain.safetensors"), &sd, None, None);
    assert!(err(&p("plain.safetensors")).contains("without our metadata"));

    // missing, unexpected and mis-shaped tensors: all named at once
    let mut cut = sd.clone();
    cut.tensors.retain(|(n, _)| n != "rpn.head.cls_logits.bias" && n != "backbone.body.layer2.1.bn1.running_mean");
    cut.tensors.push(("roi_heads.box_head.fc6.weight".into(), Tensor { shape: vec![2], data: vec![0.0; 2] }));
    let i = cut.tensors.iter().position(|(n, _)| n == "roi_heads.box_head.layer4.0.conv1.weight").unwrap();
    cut.tensors[i].1 = Tensor { shape: vec![4], data: vec![0.0; 4] };
    write_raw(&p("cut.safetensors"), &cut, Some(FORMAT), Some(mjson.clone()));
    let e = err(&p("cut.safetensors"));
    for want in [
        "cut.safetensors",
        "missing from the file (2)",
        "rpn.head.cls_logits.bias",
        "backbone.body.layer2.1.bn1.running_mean",
        "unexpected in the file (1)",
        "roi_heads.box_head.fc6.weight",
        "roi_heads.box_head.layer4.0.conv1.weight: network [512, 256, 3, 3], file [4]",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }

    // classes: a record of 6 classes over a predictor of 4; names not matching the count
    let mut six = m.clone();
    six.classes = 6;
    six.class_names = vec!["a".into(); 5];
    write_raw(&p("six.safetensors"), &sd, Some(FORMAT), Some(serde_json::to_string(&six).unwrap()));
    let e = err(&p("six.safetensors"));
    assert!(e.contains("roi_heads.box_predictor.cls_score.weight: network [6, 512], file [4, 512]"), "{e}");
    let mut short = m.clone();
    short.class_names.pop();
    write_raw(&p("names.safetensors"), &sd, Some(FORMAT), Some(serde_json::to_string(&short).unwrap()));
    let e = err(&p("names.safetensors"));
    assert!(e.contains("names.safetensors") && e.contains("4 classes") && e.contains("the file has 2"), "{e}");

    // metadata that does not resolve
    let mut arch = m.clone();
    arch.arch.depth = 19;
    write_raw(&p("arch.safetensors"), &sd, Some(FORMAT), Some(serde_json::to_string(&arch).unwrap()));
    assert!(err(&p("arch.safetensors")).contains("inconsistent detector metadata"));
    write_raw(&p("json.safetensors"), &sd, Some(FORMAT), Some("{\"arch\": 3}".into()));
    assert!(err(&p("json.safetensors")).contains("bad detector metadata"));
    let mut tr = m.clone();
    tr.transform.std = vec![1.0, 0.0, 1.0];
    write_raw(&p("std.safetensors"), &sd, Some(FORMAT), Some(serde_json::to_string(&tr).unwrap()));
    assert!(err(&p("std.safetensors")).contains("positive stds"));

    // a NaN weight
    let mut nan = sd.clone();
    nan.tensors[3].1.data[0] = f32::NAN;
    write_raw(&p("nan.safetensors"), &nan, Some(FORMAT), Some(mjson.clone()));
    assert!(err(&p("nan.safetensors")).contains("non-finite"));

    // the data's classes
    save(&p("ok.safetensors"), &d, &m).unwrap();
    let ck = read(&p("ok.safetensors")).unwrap();
    ck.check_classes(&names()).unwrap();
    let e = ck.check_classes(&["shirt".into(), "bag".into()]).unwrap_err().to_string();
    assert!(e.contains("3 classes (shirt, shoe, bag)") && e.contains("data's 2 (shirt, bag)"), "{e}");
}

#[test]
fn backbones_initialise_from_classification_weights_with_their_statistics() {
    let t = TempDir::new("det-ckpt-init");
    let spec = small_spec();
    let net = crate::net::Net::new(&spec.arch, 1, 64, 64, false, 9).unwrap();
    let mut sd = StateDict::of_net(&net);
    // torchvision-style: prefixed, statistics not the defaults
    for (i, (n, tensor)) in sd.tensors.iter_mut().enumerate() {
        if n.ends_with("running_mean") {
            tensor.data = rand_vec(tensor.data.len(), 100 + i as u64);
        }
        *n = format!("module.{n}");
    }
    let pth = t.path().join("resnet18.safetensors");
    std::fs::write(&pth, weights::safetensors_bytes(&sd, None).unwrap()).unwrap();
    let mut d = FasterRcnn::new(spec.clone(), false, 4).unwrap();
    let rpn_before = d.rpn.get_torch("conv.0.0.weight").unwrap();
    let n = init_backbone(&mut d, &pth).unwrap();
    assert_eq!(n, d.prefix.tensors().len() + d.suffix.tensors().len());
    for (name, part_name) in [
        ("module.layer2.0.bn1.running_mean", None),
        ("module.conv1.weight", None),
        ("module.layer4.1.bn2.running_mean", Some(())),
    ] {
        let want = &sd.get(name).unwrap().data;
        let short = name.strip_prefix("module.").unwrap();
        let got = if part_name.is_some() { d.suffix.get_torch(short) } else { d.prefix.get_torch(short) };
        assert_eq!(&got.unwrap(), want, "{name}");
    }
    assert_eq!(d.rpn.get_torch("conv.0.0.weight").unwrap(), rpn_before, "the RPN keeps its initialisation");

    // another network's weights do not fit; a detector checkpoint is not a backbone
    let r50 = crate::net::Net::new(&ArchSpec::parse("resnet50", &ArchOptions::default()).unwrap(), 1, 64, 64, false, 0)
        .unwrap();
    let p50 = t.path().join("resnet50.safetensors");
    std::fs::write(&p50, weights::safetensors_bytes(&StateDict::of_net(&r50), None).unwrap()).unwrap();
    let e = format!("{:#}", init_backbone(&mut d, &p50).unwrap_err());
    assert!(e.contains("resnet50.safetensors") && e.contains("C4 prefix"), "{e}");
    let det = t.path().join("det.safetensors");
    save(&det, &d, &meta(&d)).unwrap();
    let e = format!("{:#}", init_backbone(&mut d, &det).unwrap_err());
    assert!(e.contains("a detector checkpoint"), "{e}");
}

/// A CIFAR-family detector (resnet20, stride 2) records its resolved preset as overrides of the
/// named one and reloads as it was built; a file whose stride contradicts the backbone is
/// refused by name.
#[test]
fn a_cifar_family_detector_reloads_and_a_wrong_stride_is_refused() {
    let t = TempDir::new("det-ckpt-cifar");
    let arch = ArchSpec::parse("resnet20", &ArchOptions::default()).unwrap();
    let preset = Preset::for_backbone(PresetName::Torchvision, &arch);
    let spec = DetectorSpec { arch, classes: 4, preset, freeze: Freeze { bn: true, at: 0 }, max_image: (128, 128) };
    let mut d = FasterRcnn::new(spec, false, 4).unwrap();
    let m = DetMeta::new(&d.spec, names(), DetTransform::of_preset(&d.spec.preset));
    let path = t.path().join("cifar.safetensors");
    save(&path, &d, &m).unwrap();
    let ck = read(&path).unwrap();
    let keys: Vec<&str> = ck.meta.preset.overrides.keys().map(String::as_str).collect();
    assert_eq!(keys, ["anchor_sizes", "image_max_size", "image_min_size", "stride"]);
    assert_eq!(ck.spec.preset, d.spec.preset);
    let mut back = ck.build(false).unwrap();
    let image = rand_vec(128 * 128 * 3, 9);
    assert_eq!(back.detect(&image, 128, 128).unwrap(), d.detect(&image, 128, 128).unwrap());
    // the stride edited to 16: refused when read, naming both strides
    let mut meta = ck.meta.clone();
    meta.preset.overrides.remove("stride");
    write_raw(&path, &ck.weights, Some(FORMAT), Some(serde_json::to_string(&meta).unwrap()));
    let e = err(&path);
    assert!(e.contains("cifar.safetensors") && e.contains("stride 16") && e.contains("has stride 2"), "{e}");
}
