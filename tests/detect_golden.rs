//! The detection ops against torchvision.ops (fixture tests/golden/detect_ops.json, written by
//! scripts/detect_fixtures.py in float64 from float32-exact inputs). Tolerance, per array:
//! max|ours - ref| <= 1e-5 * max(1, max|ref|); NMS's kept indices exactly (batched NMS: up to the
//! order of equal scores, which torchvision's final unstable sort leaves open).

use resnet::detect::anchors::{base_anchors, grid_anchors};
use resnet::detect::boxes::{BoxCoder, box_iou, default_clamp};
use resnet::detect::nms::{batched_nms, nms};
use resnet::detect::roi::{RoI, RoIAlign, RoIPool};
use resnet::detect::{Box4, Convention};
use resnet::shape::Dims;
use serde_json::Value;

const P: Convention = Convention::Pixel;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/detect_ops.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).into_iter().map(|x| x as f32).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
}

fn boxes(v: &Value) -> Vec<Box4> {
    f32s(v).chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

fn close(what: &str, ours: &[f32], reference: &[f64]) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let scale = reference.iter().fold(1.0f64, |m, x| m.max(x.abs()));
    let err = ours.iter().zip(reference).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
    eprintln!("{what}: max error / scale = {:.2e}", err / scale);
    assert!(err <= 1e-5 * scale, "{what}: max error {err:e} > 1e-5 * {scale:e}");
}

#[test]
fn box_iou_matches_torchvision() {
    let f = &fixture()["iou"];
    close("box_iou", &box_iou(&boxes(&f["a"]), &boxes(&f["b"]), P), &f64s(&f["iou"]));
}

#[test]
fn box_coder_matches_torchvision_both_weight_sets_and_the_clamp() {
    for case in fixture()["coder"].as_array().unwrap() {
        let w = f32s(&case["weights"]);
        let coder = BoxCoder { weights: [w[0], w[1], w[2], w[3]], clamp: default_clamp(), conv: P };
        let enc: Vec<f32> = coder.encode_all(&boxes(&case["gt"]), &boxes(&case["proposals"])).concat();
        close(&format!("encode {w:?}"), &enc, &f64s(&case["deltas"]));
        let codes: Vec<[f32; 4]> = boxes(&case["codes"]);
        let dec: Vec<f32> = coder.decode_all(&codes, &boxes(&case["anchors"])).concat();
        close(&format!("decode {w:?}"), &dec, &f64s(&case["decoded"]));
    }
}

#[test]
fn anchors_match_torchvision_at_strides_4_and_16() {
    for case in fixture()["anchors"].as_array().unwrap() {
        let (grid, stride) = (usizes(&case["grid"]), f32s(&case["stride"]));
        let base = base_anchors(&f32s(&case["sizes"]), &f32s(&case["ratios"]));
        let ours = grid_anchors(&base, grid[0], grid[1], stride[0], stride[1]).concat();
        close(&format!("anchors stride {stride:?}"), &ours, &f64s(&case["anchors"]));
    }
}

#[test]
fn nms_and_batched_nms_match_torchvision() {
    for (k, case) in fixture()["nms"].as_array().unwrap().iter().enumerate() {
        let (b, s) = (boxes(&case["boxes"]), f32s(&case["scores"]));
        let classes: Vec<i64> = case["classes"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let t = case["threshold"].as_f64().unwrap() as f32;
        assert_eq!(nms(&b, &s, t, P), usizes(&case["keep"]), "nms case {k}");
        // torchvision's last step (keep sorted by score) is an unstable sort: ties across classes
        // come back in any order there; ours is stable (lower index first). Same set, same order
        // up to ties.
        let ours = batched_nms(&b, &s, &classes, t, P);
        let mut reference = usizes(&case["batched_keep"]);
        reference.sort_by(|&i, &j| s[j].partial_cmp(&s[i]).unwrap().then(i.cmp(&j)));
        assert_eq!(ours, reference, "batched_nms case {k}");
    }
}

fn roi_setup(r: &Value) -> (Vec<f32>, Dims, Vec<RoI>, f32) {
    let d = usizes(&r["dims"]);
    let rois = f32s(&r["rois"])
        .chunks_exact(5)
        .map(|c| RoI { image: c[0] as usize, bbox: [c[1], c[2], c[3], c[4]] })
        .collect();
    (f32s(&r["x_nhwc"]), Dims::new(d[0], d[1], d[2], d[3]), rois, r["scale"].as_f64().unwrap() as f32)
}

#[test]
fn roi_align_matches_torchvision_forward_and_backward() {
    let f = fixture();
    let (x, xd, rois, scale) = roi_setup(&f["roi"]);
    for case in f["roi"]["align"].as_array().unwrap() {
        let out = usizes(&case["out"]);
        let op = RoIAlign {
            out_h: out[0],
            out_w: out[1],
            spatial_scale: scale,
            sampling_ratio: case["sampling_ratio"].as_i64().unwrap() as i32,
            aligned: case["aligned"].as_bool().unwrap(),
        };
        let what = format!("roi_align aligned={} sampling={}", op.aligned, op.sampling_ratio);
        let mut y = vec![0.0; rois.len() * out[0] * out[1] * xd.c];
        op.forward(&x, xd, &rois, &mut y);
        close(&format!("{what} forward"), &y, &f64s(&case["y"]));
        let mut dx = vec![1.0; xd.len()];
        op.backward(&f32s(&case["dy"]), xd, &rois, &mut dx);
        close(&format!("{what} backward"), &dx, &f64s(&case["dx"]));
    }
}

#[test]
fn roi_pool_matches_torchvision_forward_and_backward() {
    let f = fixture();
    let (x, xd, rois, scale) = roi_setup(&f["roi"]);
    for case in f["roi"]["pool"].as_array().unwrap() {
        let out = usizes(&case["out"]);
        let op = RoIPool { out_h: out[0], out_w: out[1], spatial_scale: scale };
        let n = rois.len() * out[0] * out[1] * xd.c;
        let (mut y, mut arg) = (vec![0.0; n], vec![0; n]);
        op.forward(&x, xd, &rois, &mut y, &mut arg);
        close(&format!("roi_pool {out:?} forward"), &y, &f64s(&case["y"]));
        let mut dx = vec![1.0; xd.len()];
        op.backward(&f32s(&case["dy"]), &arg, rois.len(), &mut dx);
        close(&format!("roi_pool {out:?} backward"), &dx, &f64s(&case["dx"]));
    }
}
