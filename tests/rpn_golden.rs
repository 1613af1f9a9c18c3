//! The RPN and RoI-head logic against torchvision's own code (fixture tests/golden/rpn_head.json,
//! written by scripts/rpn_fixtures.py in float64 from float32-exact inputs; CI never runs PyTorch).
//!
//! Exact: anchor labels, RoI labels before and after sampling, proposal and detection counts and
//! classes. Within 1e-4 * max|ref| per array: regression targets, proposals and their scores,
//! detections, every gradient; within 1e-4 relative: the four losses. torchvision samples with
//! `torch.randperm` and we from a counter stream, so the losses take torchvision's sampled
//! indices from the fixture.

use resnet::detect::Box4;
use resnet::detect::anchors::{base_anchors, grid_anchors};
use resnet::detect::roi_head::{HeadConfig, RoiSamples, assign_rois, fastrcnn_loss, postprocess_detections};
use resnet::detect::rpn::{AnchorTargets, RpnConfig, anchor_targets, proposals, rpn_loss};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/rpn_head.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

fn ints(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    ints(v).into_iter().map(|x| x as usize).collect()
}

fn boxes(v: &[f32]) -> Vec<Box4> {
    v.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

/// Little-endian float32s written as one hex string.
fn hex_f32s(v: &Value) -> Vec<f32> {
    let s = v.as_str().unwrap().as_bytes();
    let byte = |i: usize| u8::from_str_radix(std::str::from_utf8(&s[2 * i..2 * i + 2]).unwrap(), 16).unwrap();
    (0..s.len() / 8)
        .map(|k| f32::from_le_bytes([byte(4 * k), byte(4 * k + 1), byte(4 * k + 2), byte(4 * k + 3)]))
        .collect()
}

/// A gradient stored as (n, nonzero indices, values).
fn dense(v: &Value) -> Vec<f64> {
    let mut out = vec![0.0; v["n"].as_u64().unwrap() as usize];
    for (i, x) in usizes(&v["index"]).into_iter().zip(f64s(&v["value"])) {
        out[i] = x;
    }
    out
}

fn close(what: &str, ours: &[f32], reference: &[f64]) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let scale = reference.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let err = ours.iter().zip(reference).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    eprintln!("{what}: max error / max|ref| = {:.2e} ({} values)", err / scale.max(f64::MIN_POSITIVE), ours.len());
    assert!(err <= 1e-4 * scale, "{what}: max error {err:e} > 1e-4 * {scale:e}");
}

fn close_scalar(what: &str, ours: f32, reference: f64) {
    let rel = (ours as f64 - reference).abs() / reference.abs();
    eprintln!("{what}: {ours} vs {reference} (relative error {rel:.2e})");
    assert!(rel <= 1e-4, "{what}: {ours} vs {reference}");
}

/// The RPN case's anchors: one 12 x 16 level at stride 16, 15 per cell.
fn level0_anchors(r: &Value) -> Vec<Box4> {
    let fm = usizes(&r["feature"]);
    let s = r["stride"].as_f64().unwrap() as f32;
    grid_anchors(&base_anchors(&f32s(&r["sizes"]), &f32s(&r["ratios"])), fm[0], fm[1], s, s)
}

fn image_size(v: &Value) -> (f32, f32) {
    let hw = f32s(v);
    (hw[0], hw[1])
}

#[test]
fn anchor_labels_and_regression_targets_match_torchvision() {
    let f = fixture();
    let r = &f["rpn"];
    let anchors = level0_anchors(r);
    let n = r["anchors_per_image"].as_u64().unwrap() as usize;
    assert_eq!(anchors.len(), n);
    let cfg = RpnConfig::torchvision();
    let (mut labels, mut reg) = (Vec::new(), Vec::new());
    for (i, (gt, size)) in r["gt"].as_array().unwrap().iter().zip(r["images"].as_array().unwrap()).enumerate() {
        let (h, w) = image_size(size);
        let t = anchor_targets(&anchors, &boxes(&f32s(gt)), h, w, &cfg, 0, 0, i);
        labels.extend(t.labels.iter().map(|&l| l as i64));
        reg.extend(t.labels.iter().zip(&t.regression).filter(|(l, _)| **l == 1).flat_map(|(_, d)| *d));
    }
    assert_eq!(labels, ints(&r["labels"]), "anchor labels");
    close("RPN regression targets at positives", &reg, &f64s(&r["regression_at_positives"]));
}

#[test]
fn rpn_losses_and_gradients_match_torchvision_with_its_sample() {
    let f = fixture();
    let r = &f["rpn"];
    let anchors = level0_anchors(r);
    let cfg = RpnConfig::torchvision();
    let per_image: Vec<AnchorTargets> = r["gt"]
        .as_array()
        .unwrap()
        .iter()
        .zip(r["images"].as_array().unwrap())
        .enumerate()
        .map(|(i, (gt, size))| {
            let (h, w) = image_size(size);
            anchor_targets(&anchors, &boxes(&f32s(gt)), h, w, &cfg, 0, 0, i)
        })
        .collect();
    let mut t = AnchorTargets::concat(&per_image);
    t.positives = usizes(&r["positives"]);
    t.negatives = usizes(&r["negatives"]);
    assert!(t.positives.iter().all(|&i| t.labels[i] == 1) && t.negatives.iter().all(|&i| t.labels[i] == 0));
    let loss = rpn_loss(&hex_f32s(&r["logits"]), &hex_f32s(&r["deltas"]), &t, cfg.beta);
    close_scalar("loss_objectness", loss.objectness, r["loss_objectness"].as_f64().unwrap());
    close_scalar("loss_rpn_box_reg", loss.box_reg, r["loss_box"].as_f64().unwrap());
    close("d loss / d objectness", &loss.d_logits, &dense(&r["d_logits"]));
    close("d loss / d rpn deltas", &loss.d_deltas, &dense(&r["d_deltas"]));
}

#[test]
fn proposals_match_filter_proposals_one_level_two_images() {
    let f = fixture();
    let r = &f["rpn"];
    let anchors = level0_anchors(r);
    let n = anchors.len();
    let (logits, deltas) = (hex_f32s(&r["logits"]), hex_f32s(&r["deltas"]));
    let p = &r["proposals"];
    let cfg = RpnConfig::torchvision();
    let params = resnet::detect::rpn::ProposalParams {
        pre_nms_top_n: p["pre_nms_top_n"].as_u64().unwrap() as usize,
        post_nms_top_n: p["post_nms_top_n"].as_u64().unwrap() as usize,
        ..cfg.proposal_params(false, 1.0)
    };
    for (i, size) in r["images"].as_array().unwrap().iter().enumerate() {
        let (h, w) = image_size(size);
        let (l, d) = (&logits[i * n..(i + 1) * n], &deltas[4 * i * n..4 * (i + 1) * n]);
        let ours = proposals(&anchors, l, d, &[n], h, w, &cfg.coder(), &params);
        close(&format!("image {i} proposals"), &ours.boxes.concat(), &f64s(&p["boxes"][i]));
        close(&format!("image {i} proposal scores"), &ours.scores, &f64s(&p["scores"][i]));
    }
}

#[test]
fn proposals_match_filter_proposals_two_levels() {
    let f = fixture();
    let (r, t) = (&f["rpn"], &f["two_levels"]);
    let mut anchors = level0_anchors(r);
    let n0 = anchors.len();
    let fm = usizes(&t["level1_feature"]);
    let s = t["level1_stride"].as_f64().unwrap() as f32;
    anchors.extend(grid_anchors(&base_anchors(&f32s(&t["level1_sizes"]), &f32s(&r["ratios"])), fm[0], fm[1], s, s));
    let sizes = usizes(&t["level_sizes"]);
    assert_eq!(sizes, vec![n0, anchors.len() - n0]);
    let mut logits = hex_f32s(&r["logits"])[..n0].to_vec();
    logits.extend(hex_f32s(&t["level1_logits"]));
    let mut deltas = hex_f32s(&r["deltas"])[..4 * n0].to_vec();
    deltas.extend(hex_f32s(&t["level1_deltas"]));
    let cfg = RpnConfig::torchvision();
    let params = resnet::detect::rpn::ProposalParams {
        pre_nms_top_n: t["pre_nms_top_n"].as_u64().unwrap() as usize,
        post_nms_top_n: t["post_nms_top_n"].as_u64().unwrap() as usize,
        ..cfg.proposal_params(false, 1.0)
    };
    let (h, w) = image_size(&r["images"][0]);
    let ours = proposals(&anchors, &logits, &deltas, &sizes, h, w, &cfg.coder(), &params);
    close("two-level proposals", &ours.boxes.concat(), &f64s(&t["boxes"]));
    close("two-level proposal scores", &ours.scores, &f64s(&t["scores"]));
}

#[test]
fn roi_sampling_targets_and_fastrcnn_loss_match_torchvision() {
    let f = fixture();
    let (r, hd) = (&f["rpn"], &f["head"]);
    let k1 = hd["num_classes"].as_u64().unwrap() as usize;
    let cfg = HeadConfig::torchvision();
    let mut samples = Vec::new();
    for i in 0..2 {
        let gt = boxes(&f32s(&r["gt"][i]));
        let props = boxes(&hex_f32s(&hd["proposals"][i]));
        let a = assign_rois(&props, &gt, &usizes(&hd["gt_labels"][i]), k1, &cfg);
        assert_eq!(a.labels, ints(&hd["labels_before_sampling"][i]), "image {i}: RoI labels");
        samples.push(a.take(&usizes(&hd["sampled"][i]), &cfg.coder()));
    }
    let s = RoiSamples::concat(&samples);
    assert_eq!(s.labels, usizes(&hd["labels"]), "sampled labels");
    let fg: Vec<f32> = s.labels.iter().zip(&s.regression).filter(|(l, _)| **l > 0).flat_map(|(_, d)| *d).collect();
    assert!(s.labels.iter().zip(&s.regression).all(|(l, d)| *l > 0 || *d == [0.0; 4]));
    close("head regression targets at foreground", &fg, &f64s(&hd["regression_at_foreground"]));
    let loss = fastrcnn_loss(&hex_f32s(&hd["scores"]), &hex_f32s(&hd["deltas"]), &s, k1, cfg.beta);
    close_scalar("loss_classifier", loss.classification, hd["loss_classifier"].as_f64().unwrap());
    close_scalar("loss_box_reg", loss.box_reg, hd["loss_box"].as_f64().unwrap());
    close("d loss / d class scores", &loss.d_scores, &f64s(&hd["d_scores"]));
    close("d loss / d head deltas", &loss.d_deltas, &dense(&hd["d_deltas"]));
}

#[test]
fn postprocess_detections_matches_torchvision() {
    let f = fixture();
    let p = &f["postprocess"];
    let k1 = p["num_classes"].as_u64().unwrap() as usize;
    let (h, w) = image_size(&p["image"]);
    let rois = boxes(&hex_f32s(&p["rois"]));
    let d = postprocess_detections(
        &hex_f32s(&p["scores"]),
        &hex_f32s(&p["deltas"]),
        &rois,
        k1,
        h,
        w,
        &HeadConfig::torchvision(),
    );
    assert_eq!(d.labels, usizes(&p["labels"]), "detection classes, in order");
    close("detection boxes", &d.boxes.concat(), &f64s(&p["boxes"]));
    close("detection scores", &d.scores, &f64s(&p["det_scores"]));
}
