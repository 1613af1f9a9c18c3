//! `resnet bench-det`: the detector's speed on a synthetic image, the measurement behind issue
//! 18's comparison with torchvision (`bench/compare-det.sh`, whose peer is
//! `scripts/bench_det_torchvision.py`: the same model built from torchvision's classes).
//!
//! The workload is data ([`DetBenchRequest`]): a C4 detector on a backbone by name (an ImageNet
//! one in torchvision's v1.5 form, stride in the 3x3 convolution, as `torchvision.models.resnet50`;
//! a CIFAR one with the paper's option A), the `torchvision` preset resolved for it
//! ([`Preset::for_backbone`]) with `proposals` RPN proposals kept at test, K + 1 classes, BN frozen
//! and the stem + first stage frozen (torchvision's `FrozenBatchNorm2d`, `trainable_backbone_layers
//! = 3`), He-initialised from seed 0 and scaled as trained weights would be ([`bench_weights`]); one deterministic image (values in [-1, 1) from the counter
//! stream `"bench-det/image"`). A step is [`FasterRcnn::detect`] (inference) or
//! [`FasterRcnn::train_step`] with [`bench_targets`] (training: SGD momentum 0.9, weight decay
//! 1e-4, learning rate 1e-4, small enough that random weights stay finite over the steps).
//!
//! With random weights the RPN may keep fewer proposals than asked after its NMS; the result says
//! how many reached the head per step, and `force_proposals` feeds the head exactly
//! [`bench_rois`] instead (the RPN still runs, and its proposals are computed and dropped), boxes a
//! closed formula the peer reproduces.

use super::model::{DetOptim, DetectorError, DetectorSpec, FasterRcnn, Target};
use super::preset::{Preset, PresetName};
use super::{Box4, roi_head};
use crate::arch::{ArchOptions, ArchSpec, BlockKind, Family, StrideIn};
use crate::bench::{Mode, cpu_model, peak_rss_mib};
use crate::net::Freeze;
use crate::rng::counter_uniform;
use serde::Serialize;
use std::time::Instant;

/// What to time.
#[derive(Clone, Debug)]
pub struct DetBenchRequest {
    /// backbone name: resnet50, resnet20, ...
    pub arch: String,
    pub mode: Mode,
    /// image height x width; None: 600 x 1000 for the ImageNet family, 128 x 128 for the CIFAR one
    pub image: Option<(usize, usize)>,
    /// K + 1, the background included
    pub classes: usize,
    /// RPN proposals kept after NMS at test time (`rpn.post_nms_top_n_test`)
    pub proposals: usize,
    /// inference: the head runs on exactly [`bench_rois`]`(proposals)` instead of the RPN's
    pub force_proposals: bool,
    pub steps: usize,
    pub warmup: usize,
}

/// What was measured, with everything that defines the workload.
#[derive(Serialize, Debug)]
pub struct DetBenchResult {
    pub cpu: String,
    pub arch: String,
    pub mode: Mode,
    /// height, width, channels
    pub image: [usize; 3],
    pub classes: usize,
    pub threads: usize,
    pub steps: usize,
    pub warmup: usize,
    /// the preset's name and what it was resolved to
    pub preset: String,
    pub anchors_per_cell: usize,
    pub anchor_stride: usize,
    /// test: RPN proposals kept (post NMS); training: `rpn.post_nms_top_n_train`
    pub proposals_setting: usize,
    pub force_proposals: bool,
    /// mean RoIs through the per-region head per timed step (inference: proposals or the forced
    /// boxes; training: the sampled RoIs)
    pub rois_per_step: f64,
    /// inference: mean RPN proposals per timed step (before any forcing)
    pub rpn_proposals_per_step: f64,
    /// inference: mean detections per timed step
    pub detections_per_step: f64,
    /// training: the total loss of the first and the last timed step
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_first_last: Option<(f32, f32)>,
    pub img_per_s: f64,
    pub ms_per_step: f64,
    pub ms_per_step_median: f64,
    pub peak_rss_mib: f64,
}

/// The backbone as torchvision builds it: ImageNet bottleneck nets with the stride in the 3x3
/// convolution (v1.5), CIFAR nets as the paper (option A).
pub fn bench_backbone(name: &str) -> Result<ArchSpec, String> {
    let arch = ArchSpec::parse(name, &ArchOptions::default()).map_err(|e| e.to_string())?;
    if arch.family == Family::Imagenet {
        let opts = ArchOptions { stride_in: Some(StrideIn::ThreeByThree), ..Default::default() };
        return ArchSpec::parse(name, &opts).map_err(|e| e.to_string());
    }
    Ok(arch)
}

/// The detector of a request (see the module's documentation).
pub fn bench_spec(req: &DetBenchRequest) -> Result<(DetectorSpec, (usize, usize)), String> {
    let arch = bench_backbone(&req.arch)?;
    let image = req.image.unwrap_or(match arch.family {
        Family::Imagenet => (600, 1000),
        Family::Cifar => (128, 128),
    });
    let mut preset = Preset::for_backbone(PresetName::Torchvision, &arch);
    preset.rpn.post_nms_top_n_test = req.proposals;
    let spec =
        DetectorSpec { arch, classes: req.classes, preset, freeze: Freeze { bn: true, at: 2 }, max_image: image };
    Ok((spec, image))
}

/// `n` boxes inside an `h` x `w` image, a closed formula in integers (the peer's copy:
/// `bench_rois` in scripts/bench_det_torchvision.py): with m = min(h, w), box i has its corner
/// at ((97 i) mod (w - m/2), (57 i) mod (h - m/2)) and sides m/16 + (31 i) mod (7m/16) (width),
/// m/16 + (17 i) mod (7m/16) (height).
pub fn bench_rois(n: usize, h: usize, w: usize) -> Vec<Box4> {
    let m = h.min(w);
    let (base, span) = (m / 16, (7 * m / 16).max(1));
    (0..n)
        .map(|i| {
            let x1 = (97 * i) % (w - m / 2).max(1);
            let y1 = (57 * i) % (h - m / 2).max(1);
            let (bw, bh) = (base + (31 * i) % span, base + (17 * i) % span);
            [x1 as f32, y1 as f32, (x1 + bw) as f32, (y1 + bh) as f32]
        })
        .collect()
}

/// Three ground-truth boxes at fixed fractions of the image, classes spread over 1..K.
pub fn bench_targets(h: usize, w: usize, classes: usize) -> Target {
    let fr = [[0.10, 0.13, 0.30, 0.43], [0.50, 0.33, 0.70, 0.83], [0.75, 0.08, 0.95, 0.58]];
    let boxes = fr
        .iter()
        .map(|f| [f[0] * w as f32, f[1] * h as f32, f[2] * w as f32, f[3] * h as f32].map(f32::floor))
        .collect();
    let labels = (0..3).map(|i| 1 + (37 * i) % (classes - 1)).collect();
    Target { boxes, labels }
}

/// The synthetic image: h x w x channels, NHWC, values in [-1, 1).
pub fn bench_image(h: usize, w: usize, c: usize) -> Vec<f32> {
    (0..h * w * c).map(|i| 2.0 * counter_uniform("bench-det/image", i as u64) - 1.0).collect()
}

/// The weights' scale, so that random weights give what trained ones would: finite losses, an
/// RPN that keeps its proposals. The peer sets the same: the last BN of every residual block
/// (`bn3` of a bottleneck, `bn2` of a basic block) scales by 0.3 instead of 1 (without it the
/// residual sum doubles the variance at every block: RMS about 90 at conv4_x, objectness logits
/// and deltas in the tens, boxes clamped to the image, a loss in the millions and NaN after a
/// step); the RPN head keeps its (torchvision's) initialisation, N(0, 0.01^2) and zero biases,
/// but for the objectness bias of the two smallest anchor sizes, 5:
/// the top-scoring anchors are then small ones, which overlap their neighbours below the NMS
/// threshold, so that both sides keep enough proposals for the head's 512 RoIs in training
/// (with a flat objectness the count after NMS is a matter of which anchor sizes the random
/// weights favour: 450 RoIs on torchvision's side, 512 on ours, in one run). The rest is each
/// side's own initialisation.
pub fn bench_weights(d: &mut FasterRcnn) {
    let last_bn = match d.spec.arch.block {
        BlockKind::Bottleneck => ".bn3.weight",
        BlockKind::Basic => ".bn2.weight",
    };
    if d.spec.arch.shortcut.is_some() {
        for part in [&mut d.prefix, &mut d.suffix] {
            for (name, shape) in part.tensors() {
                if name.starts_with("layer") && name.ends_with(last_bn) {
                    let n = shape.iter().product();
                    part.set_torch(&name, &shape, &vec![0.3; n]).expect("a tensor it lists");
                }
            }
        }
    }
    // the RPN head is initialised as torchvision's (N(0, 0.01), zero biases); the objectness bias
    // of the two smallest anchor sizes (anchor a = ratio * sizes + size) is 5
    let sizes = d.spec.preset.anchor_sizes.len();
    let bias: Vec<f32> =
        (0..d.spec.preset.cell_anchors().len()).map(|a| if a % sizes < 2 { 5.0 } else { 0.0 }).collect();
    d.rpn.set_torch("cls_logits.bias", &[bias.len()], &bias).expect("the RPN head's objectness bias");
}

/// Build the request's detector and time `steps` steps after `warmup`; `progress` after each.
pub fn run(req: &DetBenchRequest, mut progress: impl FnMut(usize, usize)) -> Result<DetBenchResult, DetectorError> {
    if req.classes < 2 || req.steps == 0 || req.proposals == 0 {
        return Err(DetectorError::Invalid("need at least 2 classes, 1 step and 1 proposal".into()));
    }
    let (spec, (h, w)) = bench_spec(req).map_err(DetectorError::Invalid)?;
    let train = req.mode == Mode::Train;
    let mut d = FasterRcnn::new(spec, train, 0)?;
    bench_weights(&mut d);
    let p = d.spec.preset;
    let c = d.spec.arch.in_channels;
    let image = bench_image(h, w, c);
    let target = bench_targets(h, w, req.classes);
    let forced = bench_rois(req.proposals, h, w);
    let mut optim = train.then(|| DetOptim::new(&d, 0.9, 1e-4));
    let (mut times, mut rois, mut rpn_props, mut dets, mut losses) = (vec![], 0usize, 0usize, 0usize, vec![]);
    for s in 0..req.warmup + req.steps {
        let t = Instant::now();
        let (r, n, k) = match optim.as_mut() {
            Some(opt) => {
                let l = d.train_step(&image, (h, w), &target, (0, s as u64), opt, 1e-4)?;
                losses.push(l.total());
                (d.head_outputs().0.len() / req.classes, 0, 0)
            }
            None if req.force_proposals => {
                let props = d.propose(&image, h, w, false)?;
                d.head_forward(&forced, false)?;
                let (scores, deltas) = d.head_outputs();
                let det =
                    roi_head::postprocess_detections(scores, deltas, &forced, req.classes, h as f32, w as f32, &p.head);
                (forced.len(), props.len(), det.boxes.len())
            }
            None => {
                let det = d.detect(&image, h, w)?;
                let n = d.head_outputs().0.len() / req.classes;
                (n, n, det.boxes.len())
            }
        };
        if s >= req.warmup {
            times.push(t.elapsed().as_secs_f64());
            (rois, rpn_props, dets) = (rois + r, rpn_props + n, dets + k);
        }
        progress(s + 1, req.warmup + req.steps);
    }
    let steps = req.steps as f64;
    let mean = times.iter().sum::<f64>() / steps;
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let timed = &losses[losses.len().saturating_sub(req.steps)..];
    Ok(DetBenchResult {
        cpu: cpu_model(),
        arch: d.spec.arch.name.clone(),
        mode: req.mode,
        image: [h, w, c],
        classes: req.classes,
        threads: crate::par::threads(),
        steps: req.steps,
        warmup: req.warmup,
        preset: format!(
            "torchvision for {} (anchors {:?} x ratios {:?} at stride {}, RoIAlign {}x{}, RPN test {}/{} train {}/{} \
             pre/post NMS, head {} RoIs)",
            d.spec.arch.name,
            p.anchor_sizes,
            p.aspect_ratios,
            p.stride,
            p.roi_size,
            p.roi_size,
            p.rpn.pre_nms_top_n_test,
            p.rpn.post_nms_top_n_test,
            p.rpn.pre_nms_top_n_train,
            p.rpn.post_nms_top_n_train,
            p.head.batch_per_image
        ),
        anchors_per_cell: p.cell_anchors().len(),
        anchor_stride: p.stride,
        proposals_setting: if train { p.rpn.post_nms_top_n_train } else { p.rpn.post_nms_top_n_test },
        force_proposals: req.force_proposals && !train,
        rois_per_step: rois as f64 / steps,
        rpn_proposals_per_step: rpn_props as f64 / steps,
        detections_per_step: dets as f64 / steps,
        loss_first_last: timed.first().zip(timed.last()).map(|(a, b)| (*a, *b)),
        img_per_s: 1.0 / mean,
        ms_per_step: mean * 1e3,
        ms_per_step_median: sorted[sorted.len() / 2] * 1e3,
        peak_rss_mib: peak_rss_mib(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forced boxes lie inside the image and are non-empty, for both workloads' images.
    #[test]
    fn bench_rois_and_targets_lie_inside_the_image() {
        for (h, w) in [(600, 1000), (128, 128), (1000, 600)] {
            let r = bench_rois(300, h, w);
            assert_eq!(r.len(), 300);
            for b in &r {
                assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w as f32 && b[3] <= h as f32, "{b:?}");
                assert!(b[2] > b[0] && b[3] > b[1], "{b:?}");
            }
            let t = bench_targets(h, w, 81);
            assert_eq!(t.labels, [1, 38, 75]);
            assert!(t.boxes.iter().all(|b| b[2] <= w as f32 && b[3] <= h as f32));
        }
        assert_eq!(bench_rois(2, 600, 1000)[1], [97.0, 57.0, 37.0 + 97.0 + 31.0, 57.0 + 37.0 + 17.0]);
    }

    /// A few steps of the small workload run and say what ran.
    #[test]
    fn the_small_workload_runs() {
        for (mode, force) in [(Mode::Infer, true), (Mode::Train, false)] {
            let req = DetBenchRequest {
                arch: "resnet20".into(),
                mode,
                image: Some((64, 64)),
                classes: 11,
                proposals: 50,
                force_proposals: force,
                steps: 2,
                warmup: 1,
            };
            let r = run(&req, |_, _| {}).unwrap();
            assert_eq!((r.image, r.anchor_stride, r.anchors_per_cell), ([64, 64, 3], 2, 12));
            assert!(r.ms_per_step > 0.0 && r.peak_rss_mib > 0.0);
            if mode == Mode::Infer {
                assert_eq!(r.rois_per_step, 50.0);
            } else {
                assert!(
                    r.rois_per_step > 0.0 && r.loss_first_last.is_some_and(|(a, b)| a.is_finite() && b.is_finite())
                );
            }
        }
        assert_eq!(bench_backbone("resnet50").unwrap().stride_in, StrideIn::ThreeByThree);
    }
}
