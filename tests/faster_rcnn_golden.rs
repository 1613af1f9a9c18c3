//! The whole detector against torchvision's own `FasterRCNN` in float64 (issue 18): a ResNet-50 C4
//! backbone (v1.5, frozen BN, conv1 + layer1 frozen), layer4 + average pooling as the box head,
//! RoIAlign 14 x 14 (adaptive sampling, not aligned), a 5-class predictor, counter-based weights,
//! one real photo. Fixture tests/golden/faster_rcnn_c4.json, written by
//! scripts/faster_rcnn_fixtures.py (CI never runs PyTorch); docs/detection/GOLDEN.md is its summary.
//! Input and every weight are rebuilt here from the fixture's documented rules (as
//! scripts/faster_rcnn_fixture_check.py does in Python), nothing else is taken from torchvision.
//!
//! Tolerance, per array: max |ours - ref| <= 1e-4 * max |ref| (gradient entries against the
//! largest entry of that gradient; norms and losses relative). Eval: RPN objectness and deltas;
//! the proposals and their scores as a set of boxes; the head's logits and deltas on the fixture's
//! 300 proposals; the detections as a set (two scores differ by < 1e-6, so float32 may swap their
//! order). Train: the fixture's sampled anchors and RoIs replayed ([`Sampling::Given`]); the four
//! losses, every trainable gradient's norm and 16 sampled entries, zero gradients elsewhere.
//! Every comparison is printed (`--nocapture`) and every failure listed before the test fails.

use resnet::arch::{ArchOptions, ArchSpec, StrideIn};
use resnet::detect::Box4;
use resnet::detect::checkpoint::{gradient, load_state, tensor_shapes};
use resnet::detect::model::{DetectorSpec, FasterRcnn, Sampling};
use resnet::detect::preset::{Preset, RoiOp};
use resnet::detect::roi_head::{RoiSamples, assign_rois};
use resnet::detect::rpn::{AnchorTargets, ProposalParams, anchor_targets, proposals};
use resnet::net::Freeze;
use resnet::rng::{counter_uniform, fnv1a64, splitmix64};
use resnet::weights::{StateDict, Tensor};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/faster_rcnn_c4.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(num).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn boxes(v: &Value) -> Vec<Box4> {
    f64s(v).chunks_exact(4).map(|c| [c[0] as f32, c[1] as f32, c[2] as f32, c[3] as f32]).collect()
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|x| *x as f64).collect()
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Every comparison, its measured error (as a fraction of its scale) and the failures.
#[derive(Default)]
struct Report {
    fails: Vec<String>,
    worst: Vec<(String, f64)>,
}

impl Report {
    /// max |ours - ref| <= 1e-4 * scale.
    fn close(&mut self, what: &str, ours: &[f64], reference: &[f64], scale: f64) {
        assert_eq!(ours.len(), reference.len(), "{what}: {} values, the fixture has {}", ours.len(), reference.len());
        // (a NaN anywhere makes err NaN, which fails)
        let err = ours
            .iter()
            .zip(reference)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, |m: f64, e| if e > m || e.is_nan() { e } else { m });
        let rel = err / scale.max(f64::MIN_POSITIVE);
        eprintln!("{what}: {rel:.2e} of {scale:.4e} ({} values)", ours.len());
        self.worst.push((what.to_string(), rel));
        let within = err <= 1e-4 * scale;
        if !within {
            self.fails.push(format!("{what}: max error {err:.3e} = {rel:.2e} of {scale:.4e}"));
        }
    }

    /// Per array against its own largest magnitude.
    fn array(&mut self, what: &str, ours: &[f64], reference: &[f64]) {
        self.close(what, ours, reference, max_abs(reference));
    }

    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.fails.push(what);
        }
    }

    fn finish(self, part: &str) {
        let mut w = self.worst;
        w.sort_by(|a, b| b.1.total_cmp(&a.1));
        eprintln!("{part}: worst errors (of max |ref|):");
        for (what, rel) in w.iter().take(8) {
            eprintln!("  {rel:.2e}  {what}");
        }
        assert!(self.fails.is_empty(), "{part}: {} comparisons off:\n{}", self.fails.len(), self.fails.join("\n"));
    }
}

/// The detector's specification from the fixture's `config` (every value checked or set from it).
fn spec(c: &Value) -> DetectorSpec {
    let (r, h, roi) = (&c["rpn"], &c["head"], &c["roi"]);
    let f = |v: &Value| num(v) as f32;
    let mut p = Preset::torchvision();
    assert_eq!(f64s(&c["anchor_sizes"]), wide(p.anchor_sizes), "anchor sizes");
    assert_eq!(f64s(&c["aspect_ratios"]), wide(p.aspect_ratios), "aspect ratios");
    assert_eq!(wide(&p.cell_anchors().concat()), f64s(&c["cell_anchors"]), "rounded cell anchors");
    assert_eq!(c["stride"].as_u64(), Some(p.stride as u64));
    assert_eq!(num(&roi["spatial_scale"]), 1.0 / p.stride as f64);
    assert_eq!(r["allow_low_quality_matches"], Value::Bool(true));
    assert_eq!(h["gt_boxes_appended_to_proposals"], Value::Bool(true));
    assert_eq!(f64s(&r["box_weights"]), vec![1.0; 4], "the RPN coder's weights");
    for clip in [&r["bbox_xform_clip"], &h["bbox_xform_clip"]] {
        assert_eq!(num(clip), (1000.0f64 / 16.0).ln(), "the coders' clamp");
    }
    let size = |v: &Value| v.as_u64().unwrap() as usize;
    (p.rpn.fg_iou, p.rpn.bg_iou) = (f(&r["fg_iou_thresh"]), f(&r["bg_iou_thresh"]));
    (p.rpn.batch_per_image, p.rpn.positive_fraction) = (size(&r["batch_size_per_image"]), f(&r["positive_fraction"]));
    (p.rpn.pre_nms_top_n_train, p.rpn.pre_nms_top_n_test) =
        (size(&r["pre_nms_top_n_train"]), size(&r["pre_nms_top_n_test"]));
    (p.rpn.post_nms_top_n_train, p.rpn.post_nms_top_n_test) =
        (size(&r["post_nms_top_n_train"]), size(&r["post_nms_top_n_test"]));
    (p.rpn.nms_thresh, p.rpn.score_thresh, p.rpn.min_size) =
        (f(&r["nms_thresh"]), f(&r["score_thresh"]), f(&r["min_size"]));
    p.rpn.beta = f(&r["smooth_l1_beta"]);
    (p.head.fg_iou, p.head.bg_iou_high, p.head.bg_iou_low) = (f(&h["fg_iou_thresh"]), f(&h["bg_iou_thresh"]), 0.0);
    (p.head.batch_per_image, p.head.positive_fraction) = (size(&h["batch_size_per_image"]), f(&h["positive_fraction"]));
    let bw = f64s(&h["box_weights"]);
    p.head.box_weights = [bw[0] as f32, bw[1] as f32, bw[2] as f32, bw[3] as f32];
    (p.head.beta, p.head.score_thresh, p.head.nms_thresh) =
        (f(&h["smooth_l1_beta"]), f(&h["score_thresh"]), f(&h["nms_thresh"]));
    (p.head.detections_per_image, p.head.min_size) = (size(&h["detections_per_img"]), f(&h["min_size"]));
    (p.image_min_size, p.image_max_size) = (size(&c["transform"]["min_size"]), size(&c["transform"]["max_size"]));
    p.roi_size = size(&roi["output_size"]);
    let sampling_ratio = roi["sampling_ratio"].as_i64().unwrap() as i32;
    p.roi_op = RoiOp::Align { aligned: roi["aligned"].as_bool().unwrap(), sampling_ratio };
    assert_eq!(c["frozen"], serde_json::json!(["backbone.body.conv1", "backbone.body.layer1"]));
    let v15 = ArchOptions { stride_in: Some(StrideIn::ThreeByThree), ..Default::default() };
    DetectorSpec {
        arch: ArchSpec::parse("resnet50", &v15).unwrap(),
        classes: size(&h["num_classes"]),
        preset: p,
        freeze: Freeze { bn: true, at: 2 },
        max_image: (p.image_min_size, p.image_max_size),
    }
}

/// The value the fixture's rule puts at flat index `i` (torchvision layout) of tensor `name`.
fn weight(fx: &Value, name: &str, shape: &[usize]) -> Vec<f32> {
    let (g, v) = (&fx["weights"]["gains"], fx["weights"]["rpn_variant"].as_u64().unwrap());
    let gain = |k: &str| num(&g[k]);
    let stream = match name.strip_prefix("rpn.head.") {
        Some(_) if v > 0 => format!("frcnn/rpn-v{v}/{name}"),
        _ => format!("frcnn/{name}"),
    };
    let parts: Vec<&str> = name.split('.').collect();
    let (leaf, module) = (parts[parts.len() - 1], parts[parts.len() - 2]);
    let sqrt3 = 3f64.sqrt();
    let rule = |u: f64| -> f64 {
        let s = 2.0 * u - 1.0;
        if shape.len() == 4 {
            let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
            let gain = match (name.starts_with("rpn.head."), module) {
                (true, "cls_logits") => gain("G_OBJ"),
                (true, "bbox_pred") => gain("G_RPN_DELTA"),
                _ => 1.0,
            };
            return s * sqrt3 * gain * (2.0 / fan_in).sqrt();
        }
        if name.starts_with("rpn.head.") {
            return 0.1 * s;
        }
        if name.starts_with("roi_heads.box_predictor.") {
            if leaf == "bias" {
                return 0.1 * s;
            }
            let gain = if module == "cls_score" { gain("G_CLS") } else { gain("G_BOX") };
            return s * sqrt3 * gain / (shape[1] as f64).sqrt();
        }
        match leaf {
            "weight" => (1.0 + 0.1 * s) * if module == "bn3" { gain("G_BN3") } else { 1.0 },
            "bias" | "running_mean" => 0.1 * s,
            "running_var" => 0.5 + u,
            _ => panic!("no rule for {name}"),
        }
    };
    let n: usize = shape.iter().product();
    (0..n).map(|i| rule(counter_uniform(&stream, i as u64) as f64) as f32).collect()
}

/// A detector of the fixture's configuration with the fixture's weights, buffers for training
/// if `train` (its suffix then holds the 128 RoIs a step samples) or for inference (its suffix
/// holds `INFER_ROIS` of the 300 test-time proposals at a time).
fn detector(fx: &Value, train: bool) -> FasterRcnn {
    let s = spec(&fx["config"]);
    let mut d = FasterRcnn::new(s, train, 0).unwrap();
    let tensors = tensor_shapes(&d)
        .into_iter()
        .map(|(name, shape)| {
            let data = weight(fx, &name, &shape);
            (name, Tensor { shape, data })
        })
        .collect();
    load_state(&mut d, &StateDict { tensors }).unwrap();
    d
}

/// The normalised input, NHWC, from the stored uint8 pixels: `(p / 255 - mean) / std` in f64,
/// rounded to f32.
fn image(fx: &Value) -> (Vec<f32>, usize, usize) {
    let im = &fx["image"];
    let (h, w) = (im["height"].as_u64().unwrap() as usize, im["width"].as_u64().unwrap() as usize);
    let hex = im["pixels_hex"].as_str().unwrap().as_bytes();
    assert_eq!(hex.len(), 2 * h * w * 3);
    let (mean, std) = (f64s(&im["mean"]), f64s(&im["std"]));
    let x = hex
        .chunks_exact(2)
        .enumerate()
        .map(|(i, b)| {
            let p = u8::from_str_radix(std::str::from_utf8(b).unwrap(), 16).unwrap();
            let c = i % 3;
            ((p as f64 / 255.0 - mean[c]) / std[c]) as f32
        })
        .collect();
    (x, h, w)
}

/// Indices of the fixture's sample rule: `((z >> 40) * numel) >> 24`, z = splitmix64(fnv1a64(stream) + k).
fn sample_indices(stream: &str, numel: usize, count: usize) -> Vec<usize> {
    (0..count as u64)
        .map(|k| (((splitmix64(fnv1a64(stream).wrapping_add(k)) >> 40) * numel as u64) >> 24) as usize)
        .collect()
}

/// A probe (64 entries of an NCHW-flat tensor) against ours, `at(i)` mapping its index to our value.
fn probe(rep: &mut Report, name: &str, p: &Value, at: impl Fn(usize) -> f64) {
    let idx = usizes(&p["index"]);
    assert_eq!(idx, sample_indices(&format!("frcnn/probe/{name}"), p["numel"].as_u64().unwrap() as usize, 64));
    let ours: Vec<f64> = idx.iter().map(|&i| at(i)).collect();
    rep.close(&format!("probe {name}"), &ours, &f64s(&p["value"]), num(&p["max_abs"]));
}

/// Ours and the reference as sets of (box, score, label): each reference item is paired with the
/// unused item of ours of its label whose box and score are nearest; then boxes and scores are
/// compared as arrays (per array tolerance) in the reference's order.
fn compare_as_sets(
    rep: &mut Report,
    what: &str,
    ours: (&[Box4], &[f32], &[usize]),
    reference: (&[f64], &[f64], &[usize]),
) {
    let (ob, os, ol) = ours;
    let (rb, rs, rl) = reference;
    rep.check(ob.len() == rs.len(), format!("{what}: {} of ours, {} in the fixture", ob.len(), rs.len()));
    if ob.len() != rs.len() {
        return;
    }
    let mut used = vec![false; ob.len()];
    let (mut pb, mut ps) = (vec![], vec![]);
    for i in 0..rs.len() {
        let dist = |j: usize| {
            let d = (0..4).map(|k| (ob[j][k] as f64 - rb[4 * i + k]).abs()).fold(0.0, f64::max);
            d + (os[j] as f64 - rs[i]).abs()
        };
        let best = (0..ob.len()).filter(|&j| !used[j] && ol[j] == rl[i]).min_by(|&a, &b| dist(a).total_cmp(&dist(b)));
        let Some(j) = best else {
            rep.check(false, format!("{what}: nothing of ours pairs with the fixture's item {i} (label {})", rl[i]));
            return;
        };
        used[j] = true;
        pb.extend(ob[j].iter().map(|v| *v as f64));
        ps.push(os[j] as f64);
    }
    rep.array(&format!("{what} boxes"), &pb, rb);
    rep.array(&format!("{what} scores"), &ps, rs);
}

fn proposal_params(p: &Preset, train: bool) -> ProposalParams {
    p.rpn.proposal_params(train, 1.0)
}

#[test]
fn faster_rcnn_c4_matches_torchvision_float64() {
    let fx = fixture();
    let mut d = detector(&fx, false);
    let (img, h, w) = image(&fx);
    let (ev, tr) = (&fx["eval"], &fx["train"]);
    let p = d.spec.preset;
    let k = d.spec.classes;
    eprintln!("kernel path: {:?}", d.prefix.kernel_path());

    // ---------------------------------------------------------------- eval
    let mut rep = Report::default();
    let ours_props = d.propose(&img, h, w, false).unwrap();
    let (fmap, fd) = d.prefix.output();
    assert_eq!(vec![fd.h, fd.w], usizes(&ev["feature_size"]));
    let (c, fw, fh) = (fd.c, fd.w, fd.h);
    probe(&mut rep, "backbone_features", &ev["probes"]["backbone_features"], |i| {
        let (ch, y, x) = (i / (fh * fw), (i / fw) % fh, i % fw);
        fmap[(y * fw + x) * c + ch] as f64
    });
    let (logits, deltas) = d.rpn_outputs();
    let a = p.cell_anchors().len();
    probe(&mut rep, "rpn_objectness_map", &ev["probes"]["rpn_objectness_map"], |i| {
        let (anchor, y, x) = (i / (fh * fw), (i / fw) % fh, i % fw);
        logits[(y * fw + x) * a + anchor] as f64
    });
    rep.array("RPN objectness", &wide(logits), &f64s(&ev["rpn_objectness"]));
    rep.array("RPN deltas", &wide(deltas), &f64s(&ev["rpn_deltas"]));
    // the proposals with their scores (propose returns the boxes alone)
    let anchors = p.anchors(fh, fw);
    let props = proposals(
        &anchors,
        logits,
        deltas,
        &[anchors.len()],
        h as f32,
        w as f32,
        &p.rpn.coder(),
        &proposal_params(&p, false),
    );
    assert_eq!(props.boxes, ours_props, "propose and rpn::proposals on its outputs");
    let none = vec![0; props.boxes.len()];
    let rnone = vec![0; ev["proposal_scores"].as_array().unwrap().len()];
    let reference = (&f64s(&ev["proposals"])[..], &f64s(&ev["proposal_scores"])[..], &rnone[..]);
    compare_as_sets(&mut rep, "proposals", (&props.boxes, &props.scores, &none), reference);
    // the head on the fixture's proposals, in turns of what the inference suffix holds (its
    // box-head features are probed across all of them)
    let fixture_props = boxes(&ev["proposals"]);
    let (mut feats, mut scores, mut box_deltas) = (vec![], vec![], vec![]);
    for turn in fixture_props.chunks(d.suffix.capacity().n) {
        d.head_forward(turn, false).unwrap();
        feats.extend_from_slice(d.suffix.output().0);
        let (s, b) = d.head_outputs();
        scores.extend_from_slice(s);
        box_deltas.extend_from_slice(b);
    }
    probe(&mut rep, "box_head_features", &ev["probes"]["box_head_features"], |i| feats[i] as f64);
    let (scores, box_deltas) = (&scores[..], &box_deltas[..]);
    rep.array("head class logits", &wide(scores), &f64s(&ev["head_class_logits"]));
    rep.array("head box deltas", &wide(box_deltas), &f64s(&ev["head_box_deltas"]));
    let probs: Vec<f64> = wide(scores)
        .chunks_exact(k)
        .flat_map(|row| {
            let m = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v));
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            row.iter().map(move |v| (v - m).exp() / s).collect::<Vec<_>>()
        })
        .collect();
    probe(&mut rep, "head_probs", &ev["probes"]["head_probs"], |i| probs[i]);
    // the whole detector, end to end on its own proposals
    let det = d.detect(&img, h, w).unwrap();
    let rd = &ev["detections"];
    let reference = (&f64s(&rd["boxes"])[..], &f64s(&rd["scores"])[..], &usizes(&rd["labels"])[..]);
    compare_as_sets(&mut rep, "detections", (&det.boxes, &det.scores, &det.labels), reference);
    rep.finish("eval");

    // --------------------------------------------------------------- train
    let mut rep = Report::default();
    let gt = boxes(&tr["gt_boxes"]);
    let gt_labels = usizes(&tr["gt_labels"]);
    // the sampled anchors with their labels and targets, as torchvision drew them
    let n = anchors.len();
    let labels: Vec<i8> = tr["rpn_labels"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as i8).collect();
    let positives = usizes(&tr["rpn_sampled_positive"]);
    let mut regression = vec![[0.0f32; 4]; n];
    for (&i, t) in positives.iter().zip(boxes(&tr["rpn_regression_at_sampled_positive"])) {
        regression[i] = t;
    }
    let given =
        AnchorTargets { labels, regression, positives, negatives: usizes(&tr["rpn_sampled_negative"]), ignored_gt: 0 };
    // (our matcher labels the anchors as torchvision does)
    let ours = anchor_targets(&anchors, &gt, h as f32, w as f32, &p.rpn, 0, 0, 0);
    rep.check(ours.labels == given.labels, "RPN anchor labels differ from the fixture's".into());
    let reg: Vec<f64> = given.positives.iter().flat_map(|&i| ours.regression[i]).map(|v| v as f64).collect();
    rep.array(
        "RPN regression targets at the sampled positives",
        &reg,
        &f64s(&tr["rpn_regression_at_sampled_positive"]),
    );
    // the sampled RoIs with their classes and targets
    let roi_labels = usizes(&tr["roi_labels"]);
    let targets = boxes(&tr["roi_regression_targets"]);
    let rois = RoiSamples {
        rois: boxes(&tr["roi_sampled_boxes"]),
        regression: roi_labels.iter().zip(targets).map(|(&l, t)| if l > 0 { t } else { [0.0; 4] }).collect(),
        labels: roi_labels,
    };
    let mut d = detector(&fx, true);
    let losses = d.forward_backward(&img, (h, w), Sampling::Given { anchors: &given, rois: &rois }).unwrap();
    // the training proposals (every NMS survivor) from this forward's RPN outputs, and the RoI
    // matching on the fixture's proposals
    let (logits, deltas) = d.rpn_outputs();
    let mut train = proposal_params(&p, true);
    train.post_nms_top_n = fx["config"]["rpn"]["post_nms_top_n_train"].as_u64().unwrap() as usize;
    let props = proposals(&anchors, logits, deltas, &[n], h as f32, w as f32, &p.rpn.coder(), &train);
    let none = vec![0; props.boxes.len()];
    let rnone = vec![0; tr["proposal_scores"].as_array().unwrap().len()];
    let reference = (&f64s(&tr["proposals"])[..], &f64s(&tr["proposal_scores"])[..], &rnone[..]);
    compare_as_sets(&mut rep, "training proposals", (&props.boxes, &props.scores, &none), reference);
    let assignment = assign_rois(&boxes(&tr["proposals"]), &gt, &gt_labels, k, &p.head);
    let sampled = assignment.take(&usizes(&tr["roi_sampled_index"]), &p.head.coder());
    rep.check(sampled.labels == rois.labels, "RoI labels at the sampled indices differ from the fixture's".into());
    let fg = |s: &RoiSamples| -> Vec<f64> {
        s.labels.iter().zip(&s.regression).filter(|(l, _)| **l > 0).flat_map(|(_, t)| *t).map(|v| v as f64).collect()
    };
    rep.array("head regression targets at the foreground", &fg(&sampled), &fg(&rois));
    // the four losses
    let rl = &tr["losses"];
    for (what, ours, reference) in [
        ("loss_objectness", losses.rpn_objectness, num(&tr["loss_objectness_float64"])),
        ("loss_rpn_box_reg", losses.rpn_box, num(&rl["loss_rpn_box_reg"])),
        ("loss_classifier", losses.classifier, num(&rl["loss_classifier"])),
        ("loss_box_reg", losses.box_reg, num(&rl["loss_box_reg"])),
    ] {
        rep.close(what, &[ours as f64], &[reference], reference.abs());
    }
    // every gradient: norm and 16 entries for the trainable parameters, zero for the others
    let grads = tr["gradients"].as_object().unwrap();
    let without = tr["parameters_without_gradient"].as_array().unwrap();
    let mut seen = 0;
    for (name, _) in tensor_shapes(&d) {
        let Some(ours) = gradient(&d, &name) else { continue };
        let Some(r) = grads.get(&name) else {
            let zero = ours.iter().all(|v| *v == 0.0);
            rep.check(zero, format!("{name}: a parameter torchvision does not train has a non-zero gradient"));
            continue;
        };
        seen += 1;
        let norm = ours.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let ref_norm = num(&r["norm"]);
        rep.close(&format!("|grad {name}|"), &[norm], &[ref_norm], ref_norm);
        let idx = usizes(&r["index"]);
        assert_eq!(idx, sample_indices(&format!("frcnn/sample/{name}"), ours.len(), 16), "{name}: sample indices");
        let entries: Vec<f64> = idx.iter().map(|&i| ours[i] as f64).collect();
        rep.close(&format!("grad {name}"), &entries, &f64s(&r["value"]), num(&r["max_abs"]));
    }
    assert_eq!(seen, grads.len(), "every gradient of the fixture is one of ours");
    for name in without {
        let name = name.as_str().unwrap();
        let g = gradient(&d, name).unwrap_or_else(|| panic!("no parameter {name}"));
        rep.check(g.iter().all(|v| *v == 0.0), format!("{name}: frozen, yet a non-zero gradient"));
    }
    rep.finish("train");
}
