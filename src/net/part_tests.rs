//! Network parts against the whole network, finite differences, frozen BN, capacity.

use super::*;
use crate::arch::{ArchOptions, ShortcutOpt};
use crate::net::{Net, ParamKind};
use crate::optim::Sgd;
use crate::testutil::rand_vec;
use std::cell::RefCell;

fn spec(a: &str, o: ArchOptions) -> ArchSpec {
    ArchSpec::parse(a, &o).unwrap()
}

/// BN affine parameters and running statistics away from their initial 1 / 0, so that frozen BN is
/// not the identity and no gradient vanishes by symmetry.
fn randomise_bn(tensors: &[TensorInfo], mut set: impl FnMut(&TensorInfo, Vec<f32>)) {
    for t in tensors {
        let r = rand_vec(t.len, 1000 + t.offset as u64 + t.len as u64);
        let v: Vec<f32> = match t.kind {
            ParamKind::BnWeight => r.iter().map(|v| 1.0 + 0.3 * v).collect(),
            ParamKind::BnBias | ParamKind::RunningMean => r.iter().map(|v| 0.2 * v).collect(),
            ParamKind::RunningVar => r.iter().map(|v| 1.0 + 0.5 * v).collect(),
            _ => continue,
        };
        set(t, v);
    }
}

/// Copy every tensor of `part` from `net` by torchvision name.
fn load_from_net(part: &mut Part, net: &Net) {
    for (name, shape) in part.tensors() {
        part.set_torch(&name, &shape, &net.get_torch(&name).unwrap()).unwrap();
    }
}

/// The C4 prefix followed by the C4 suffix on the prefix's output is the whole network up to
/// global average pooling, forward and backward, bit for bit: the same units run on the same
/// shapes. Checked with batch-statistics BN and with frozen BN + frozen first stages, on the CIFAR
/// family (option A) and the ImageNet family (projections; bottlenecks), after a call of another
/// size (the buffers are built larger than the compared input), and in inference.
#[test]
fn prefix_then_suffix_is_the_whole_network_bit_for_bit() {
    // ResNet-18's and ResNet-50's blocks at a fraction of their widths (the test's time would be
    // the whole networks' He initialisation)
    let narrow = |a: &str, by: usize| {
        let mut s = spec(a, ArchOptions { classes: Some(5), ..Default::default() });
        s.stages.iter_mut().for_each(|st| st.width /= by);
        s
    };
    let cases = [
        (spec("resnet8", ArchOptions { classes: Some(5), ..Default::default() }), 16),
        (narrow("resnet18", 4), 48),
        (narrow("resnet50", 8), 64),
    ];
    let runs = cases.iter().flat_map(|c| KernelPath::all_supported().into_iter().map(move |p| (c, p)));
    for ((s, hw), path) in runs {
        for freeze in [Freeze::NONE, Freeze { bn: true, at: 2 }] {
            let (n, hw) = (3, *hw);
            let mut net = Net::new(s, n, hw, hw, true, 11).unwrap();
            let tensors: Vec<TensorInfo> = net.plan.params.iter().chain(&net.plan.stats).cloned().collect();
            randomise_bn(&tensors, |t, v| net.set_torch(&t.name, &t.shape, &v).unwrap());
            net.freeze(freeze);
            let cap = Capacity { n: 4, h: hw + 8, w: hw + 3 };
            let mut prefix = Part::zeroed(s, Stages::c4_prefix(s), cap, freeze, true).unwrap();
            let map = prefix.plan.map;
            let rois = Capacity { n: 4, h: map.h + 1, w: map.w + 2 };
            let mut suffix = Part::zeroed(s, Stages::c4_suffix(s), rois, freeze, true).unwrap();
            // every tensor of the network but the fc's is in exactly one part, by name
            let (pn, sn) = (prefix.tensors(), suffix.tensors());
            assert_eq!(pn.len() + sn.len() + 2, net.tensor_names().len(), "{}", s.name);
            assert!(sn.iter().any(|(name, _)| name == &format!("layer{}.0.conv1.weight", s.stages.len())));
            load_from_net(&mut prefix, &net);
            load_from_net(&mut suffix, &net);
            net.set_kernel_path(path);
            prefix.set_kernel_path(path);
            suffix.set_kernel_path(path);
            let before = (prefix.stats().to_vec(), suffix.stats().to_vec());

            let x = rand_vec(net.input.len(), 12);
            net.input.copy_from_slice(&x);
            net.forward(n, true);
            net.loss(&[0, 1, 2]);
            net.backward(n);

            // a call of another shape first (its statistics updates undone after)
            prefix.input_mut(2, hw + 5, hw - 3).unwrap().fill(0.5);
            prefix.forward(true).unwrap();
            suffix.input_mut(4, map.h + 1, map.w - 1).unwrap().fill(0.25);
            suffix.forward(true).unwrap();
            suffix.output_grad_mut().fill(1.0);
            suffix.backward().unwrap();
            prefix.stats.copy_from_slice(&before.0);
            suffix.stats.copy_from_slice(&before.1);

            prefix.input_mut(n, hw, hw).unwrap().copy_from_slice(&x);
            prefix.forward(true).unwrap();
            let (fmap, d) = prefix.output();
            let k = prefix.plan.blocks.len();
            assert_eq!(d, Dims { n, ..net.plan.block_input_dims(k) });
            assert!(fmap == &net.block_input(k)[..d.len()], "{} {path:?} {freeze:?}: prefix output", s.name);
            let fmap = fmap.to_vec();
            suffix.input_mut(n, d.h, d.w).unwrap().copy_from_slice(&fmap);
            suffix.forward(true).unwrap();
            let (feat, fd) = suffix.output();
            assert_eq!((fd.n, fd.h, fd.w, fd.c), (n, 1, 1, s.features()));
            assert!(feat == &net.feat[..fd.len()], "{} {path:?} {freeze:?}: pooled features", s.name);

            suffix.output_grad_mut().copy_from_slice(&net.dfeat[..fd.len()]);
            suffix.backward().unwrap();
            let (gin, gd) = suffix.input_grad().unwrap();
            assert_eq!(gd, d);
            let gin = gin.to_vec();
            prefix.output_grad_mut().copy_from_slice(&gin);
            prefix.backward().unwrap();
            assert!(prefix.input_grad().is_none());
            for part in [&prefix, &suffix] {
                for t in &part.plan.params {
                    let (ours, whole) = (part.grad_torch(&t.name).unwrap(), net.grad_torch(&t.name).unwrap());
                    assert!(ours == whole, "{} {path:?} {freeze:?}: gradient of {}", s.name, t.name);
                }
                for t in &part.plan.stats {
                    let (ours, whole) = (part.get_torch(&t.name).unwrap(), net.get_torch(&t.name).unwrap());
                    assert!(ours == whole, "{} {path:?} {freeze:?}: {} after the training forward", s.name, t.name);
                }
            }
            if freeze.bn {
                assert!(net.grads.iter().any(|g| *g != 0.0));
                let frozen = net.plan.units().filter(|u| u.frozen == Frozen::All).count();
                assert!(frozen > 1, "the stem and the first stage are frozen");
            }
            // inference (running statistics; the whole net's convolutions on prepared weights)
            let mut infer = net.resized(n, hw, hw).unwrap();
            infer.set_kernel_path(path);
            infer.input.copy_from_slice(&x);
            infer.forward(n, false);
            let infer_parts = |prefix: &mut Part, suffix: &mut Part| {
                prefix.input_mut(n, hw, hw).unwrap().copy_from_slice(&x);
                prefix.forward(false).unwrap();
                let fmap = prefix.output().0.to_vec();
                suffix.input_mut(n, d.h, d.w).unwrap().copy_from_slice(&fmap);
                suffix.forward(false).unwrap();
                suffix.output().0.to_vec()
            };
            let feat = infer_parts(&mut prefix, &mut suffix);
            assert!(feat == infer.feat[..feat.len()], "{} {path:?} {freeze:?}: inference", s.name);
            // parts built for inference (the projections' outputs in one buffer of their own)
            let mut prefix = Part::zeroed(s, Stages::c4_prefix(s), cap, freeze, false).unwrap();
            let mut suffix = Part::zeroed(s, Stages::c4_suffix(s), rois, freeze, false).unwrap();
            for part in [&mut prefix, &mut suffix] {
                load_from_net(part, &net);
                part.set_kernel_path(path);
            }
            let feat = infer_parts(&mut prefix, &mut suffix);
            assert!(feat == infer.feat[..feat.len()], "{} {path:?} {freeze:?}: inference parts", s.name);
        }
    }
}

/// Central differences of `loss` at up to 48 coordinates of `x` against `analytic`: a coordinate
/// passes at eps 1e-2 or 2e-3 within 3% (+ 2e-3 of the largest gradient). A ReLU kink inside the
/// step can spoil a difference without any bug, so 1 in 8 may miss; a wiring error misses more.
fn check(name: &str, x: &[f32], analytic: &[f32], mut loss: impl FnMut(&[f32]) -> f64) {
    let scale = analytic.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
    assert!(scale > 0.0, "{name}: all-zero gradient");
    let step = (x.len() / 48).max(1);
    let (mut checked, mut misses) = (0, vec![]);
    let mut xp = x.to_vec();
    for i in (0..x.len()).step_by(step) {
        let (o, ana) = (xp[i], analytic[i] as f64);
        let mut nums = vec![];
        for eps in [1e-2f32, 2e-3] {
            xp[i] = o + eps;
            let lp = loss(&xp);
            xp[i] = o - eps;
            let lm = loss(&xp);
            xp[i] = o;
            nums.push((lp - lm) / (2.0 * eps as f64));
        }
        let ok = |num: f64| (num - ana).abs() <= 3e-2 * ana.abs().max(num.abs()) + 2e-3 * scale;
        checked += 1;
        if !nums.iter().any(|&num| ok(num)) {
            misses.push(format!("[{i}]: analytic {ana} vs numeric {nums:?}"));
        }
    }
    assert!(misses.len() * 8 <= checked, "{name}: {} of {checked} off:\n{}", misses.len(), misses.join("\n"));
}

/// loss = sum(output * proj): the gradient at the output is `proj`.
fn projected_loss(part: &mut Part, x: &[f32], (n, h, w): (usize, usize, usize), proj: &[f32]) -> f64 {
    part.input_mut(n, h, w).unwrap().copy_from_slice(x);
    part.forward(true).unwrap();
    part.output().0.iter().zip(proj).map(|(a, b)| *a as f64 * *b as f64).sum()
}

/// Finite differences through a part with frozen BN: every parameter tensor that learns and,
/// without a stem, the input; frozen tensors get exactly zero.
fn check_part(s: &ArchSpec, stages: Stages, freeze: Freeze, nhw: (usize, usize, usize)) {
    for path in KernelPath::all_supported() {
        check_part_on(s, stages, freeze, nhw, path);
    }
}

fn check_part_on(s: &ArchSpec, stages: Stages, freeze: Freeze, (n, h, w): (usize, usize, usize), path: KernelPath) {
    let mut part = Part::new(s, stages, Capacity { n, h, w }, freeze, true, 5).unwrap();
    part.set_kernel_path(path);
    let tensors: Vec<TensorInfo> = part.plan.params.iter().chain(&part.plan.stats).cloned().collect();
    randomise_bn(&tensors, |t, v| part.set_torch(&t.name, &t.shape, &v).unwrap());
    let x: Vec<f32> = rand_vec(n * h * w * part.plan.input.c, 6);
    let out_len = n * part.plan.output().len();
    let proj = rand_vec(out_len, 7);
    projected_loss(&mut part, &x, (n, h, w), &proj);
    part.output_grad_mut().copy_from_slice(&proj);
    part.backward().unwrap();
    let grads = part.grads().to_vec();
    let input_grad = part.input_grad().map(|(g, _)| g.to_vec());
    let stats = part.stats().to_vec();
    let what = format!("{} {stages:?} {path:?}", s.name);
    let part = RefCell::new(part);
    let params = part.borrow().params().to_vec();
    let trainable = part.borrow().plan.trainable();
    let infos = part.borrow().plan.params.clone();
    for t in &infos {
        let r = t.offset..t.offset + t.len;
        let learns = trainable.iter().any(|tr| tr.start <= r.start && r.end <= tr.end);
        if !learns {
            assert!(grads[r].iter().all(|g| *g == 0.0), "{what}: frozen {} has a gradient", t.name);
            continue;
        }
        check(&format!("{what} {}", t.name), &params[r.clone()], &grads[r.clone()], |v| {
            let mut p = part.borrow_mut();
            let saved = p.params()[r.clone()].to_vec();
            p.params_mut()[r.clone()].copy_from_slice(v);
            let l = projected_loss(&mut p, &x, (n, h, w), &proj);
            p.params_mut()[r.clone()].copy_from_slice(&saved);
            l
        });
    }
    if let Some(gx) = input_grad {
        check(&format!("{what} input"), &x, &gx, |v| projected_loss(&mut part.borrow_mut(), v, (n, h, w), &proj));
    } else {
        assert!(stages.stem, "{what}: no input gradient");
    }
    // frozen BN in training forwards leaves the statistics as they were
    assert!(part.borrow().stats() == &stats[..], "{what}: statistics moved");
}

#[test]
fn frozen_prefix_gradients_match_finite_differences() {
    for shortcut in [ShortcutOpt::A, ShortcutOpt::B] {
        let s = spec("resnet8", ArchOptions { shortcut: Some(shortcut), ..Default::default() });
        // odd sizes: stride-2 convolutions and subsampling meet the edges
        check_part(&s, Stages::c4_prefix(&s), Freeze { bn: true, at: 0 }, (2, 9, 7));
        // the stem frozen entirely: backward stops at the first stage
        check_part(&s, Stages::c4_prefix(&s), Freeze { bn: true, at: 1 }, (2, 9, 7));
    }
}

#[test]
fn frozen_suffix_gradients_match_finite_differences() {
    for shortcut in [ShortcutOpt::A, ShortcutOpt::B] {
        let s = spec("resnet8", ArchOptions { shortcut: Some(shortcut), ..Default::default() });
        check_part(&s, Stages::c4_suffix(&s), Freeze { bn: true, at: 2 }, (3, 5, 6));
    }
    // bottlenecks (projection, stride in the 1x1 as the paper) on a tiny ImageNet-family net
    let mut s = spec("resnet50", ArchOptions::default());
    s.stages.iter_mut().for_each(|st| st.width = 4);
    s.stages[3].blocks = 2;
    check_part(&s, Stages::c4_suffix(&s), Freeze { bn: true, at: 2 }, (2, 4, 3));
}

/// Frozen BN and frozen first stages: 20 SGD steps (momentum, weight decay, the part's trainable
/// mask) leave every BN tensor and every frozen convolution bit-identical, while the rest learns.
#[test]
fn frozen_tensors_stay_bit_identical_through_20_sgd_steps() {
    let s = spec("resnet8", ArchOptions { shortcut: Some(ShortcutOpt::B), ..Default::default() });
    let freeze = Freeze { bn: true, at: 2 };
    let mut prefix = Part::new(&s, Stages::c4_prefix(&s), Capacity { n: 2, h: 12, w: 12 }, freeze, true, 1).unwrap();
    let map = prefix.plan.map;
    let mut suffix = Part::new(&s, Stages::c4_suffix(&s), Capacity { n: 3, h: 6, w: 6 }, freeze, true, 1).unwrap();
    for part in [&mut prefix, &mut suffix] {
        let tensors: Vec<TensorInfo> = part.plan.params.iter().chain(&part.plan.stats).cloned().collect();
        randomise_bn(&tensors, |t, v| part.set_torch(&t.name, &t.shape, &v).unwrap());
    }
    let start = |p: &Part| p.tensors().into_iter().map(|(n, _)| (n.clone(), p.get_torch(&n).unwrap())).collect();
    let (p0, s0): (Vec<(String, Vec<f32>)>, Vec<_>) = (start(&prefix), start(&suffix));
    let mut opt_p = Sgd::new(prefix.params().len());
    opt_p.weight_decay = 5e-4;
    opt_p.trainable = Some(prefix.plan.trainable());
    let mut opt_s = Sgd::new(suffix.params().len());
    opt_s.weight_decay = 5e-4;
    opt_s.trainable = Some(suffix.plan.trainable());
    for step in 0..20u64 {
        // images of changing sizes; the suffix on the prefix's map cropped to 3 "RoIs"
        let (h, w) = (10 + (step % 3) as usize, 12 - (step % 2) as usize);
        let x = rand_vec(2 * h * w * 3, 100 + step);
        prefix.input_mut(2, h, w).unwrap().copy_from_slice(&x);
        prefix.forward(true).unwrap();
        let (fmap, d) = prefix.output();
        let rh = d.h.min(map.h).min(5);
        let mut rois = vec![0.0; 3 * rh * rh * d.c];
        for (r, roi) in rois.chunks_exact_mut(rh * rh * d.c).enumerate() {
            for (y, row) in roi.chunks_exact_mut(rh * d.c).enumerate() {
                let at = (((r % 2) * d.h + y) * d.w) * d.c;
                row.copy_from_slice(&fmap[at..at + rh * d.c]);
            }
        }
        suffix.input_mut(3, rh, rh).unwrap().copy_from_slice(&rois);
        suffix.forward(true).unwrap();
        let proj = rand_vec(suffix.output().0.len(), 200 + step);
        suffix.output_grad_mut().copy_from_slice(&proj);
        suffix.backward().unwrap();
        let (gin, _) = suffix.input_grad().unwrap();
        let gin = gin.to_vec();
        let g = prefix.output_grad_mut();
        for (r, roi) in gin.chunks_exact(rh * rh * d.c).enumerate() {
            for (y, row) in roi.chunks_exact(rh * d.c).enumerate() {
                let at = (((r % 2) * d.h + y) * d.w) * d.c;
                g[at..at + rh * d.c].iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
        }
        prefix.backward().unwrap();
        let (p, gr) = prefix.step_operands();
        opt_p.step(p, gr, 0.1);
        let (p, gr) = suffix.step_operands();
        opt_s.step(p, gr, 0.1);
    }
    for (part, start) in [(&prefix, &p0), (&suffix, &s0)] {
        let mut learned = 0;
        for (name, v0) in start.iter() {
            let v = part.get_torch(name).unwrap();
            let bn = name.starts_with("bn1.") || name.contains(".bn") || name.contains("downsample.1");
            let frozen = bn || name.starts_with("conv1.") || name.starts_with("layer1.");
            if frozen {
                assert!(&v == v0, "{name} changed");
            } else if v != *v0 {
                learned += 1;
            }
        }
        assert!(learned > 0, "nothing learned");
    }
}

/// Calls beyond the capacity, empty inputs and misuse are errors, never panics; a refused call
/// leaves the part as it was.
#[test]
fn capacity_and_misuse_are_errors() {
    let s = spec("resnet18", ArchOptions::default());
    let cap = Capacity { n: 1, h: 64, w: 96 };
    let mut prefix = Part::new(&s, Stages::c4_prefix(&s), cap, Freeze { bn: true, at: 2 }, true, 1).unwrap();
    assert_eq!(prefix.backward(), Err(PartError::NoForward));
    assert_eq!(prefix.forward(true), Err(PartError::Empty { n: 0, h: 64, w: 96 }));
    // the transposed image has the same number of values in every layer: it fits
    prefix.input_mut(1, 96, 64).unwrap().fill(0.1);
    prefix.forward(true).unwrap();
    let out = prefix.output().0.to_vec();
    for (n, h, w) in [(2, 64, 96), (1, 65, 96), (1, 200, 20)] {
        let e = prefix.input_mut(n, h, w).unwrap_err();
        assert!(matches!(e, PartError::Capacity { .. }), "{e}");
        assert!(e.to_string().contains("exceed this network part's capacity (1 of 64 x 96)"), "{e}");
    }
    assert_eq!(prefix.input_mut(0, 64, 96).unwrap_err(), PartError::Empty { n: 0, h: 64, w: 96 });
    assert!(prefix.input_mut(1, 0, 5).is_err());
    // the shape and the last forward stand: backward runs
    assert_eq!(prefix.input_dims(), Dims::new(1, 96, 64, 3));
    assert_eq!(prefix.output().0, &out[..]);
    prefix.output_grad_mut().fill(1.0);
    prefix.backward().unwrap();
    // smaller inputs run
    prefix.input_mut(1, 33, 17).unwrap().fill(0.2);
    prefix.forward(false).unwrap();
    assert_eq!(prefix.backward(), Err(PartError::NoForward));

    let mut infer =
        Part::new(&s, Stages::c4_suffix(&s), Capacity { n: 8, h: 14, w: 14 }, Freeze::NONE, false, 1).unwrap();
    infer.input_mut(8, 14, 14).unwrap().fill(0.1);
    assert_eq!(infer.forward(true), Err(PartError::NotTraining));
    infer.forward(false).unwrap();
    assert_eq!(infer.backward(), Err(PartError::NotTraining));
    assert!(infer.output_grad_mut().is_empty());
    assert!(matches!(infer.input_mut(9, 14, 14), Err(PartError::Capacity { .. })));

    for (stages, what) in [
        (Stages { stem: false, from: 2, to: 2, pool: true }, "needs the stem or at least one stage"),
        (Stages { stem: true, from: 0, to: 5, pool: false }, "not a range"),
        (Stages { stem: true, from: 3, to: 2, pool: false }, "not a range"),
    ] {
        let e = Part::new(&s, stages, cap, Freeze::NONE, true, 1).err().unwrap().to_string();
        assert!(e.contains(what), "{e}");
    }
    let e = Part::new(&s, Stages::all(&s), Capacity { n: 0, h: 8, w: 8 }, Freeze::NONE, true, 1).err().unwrap();
    assert!(e.to_string().contains("capacity must be positive"), "{e}");
}

/// A suffix frozen entirely (`--freeze-at` past its stage) learns nothing but still gives the
/// gradient at its input, sized as the input (its buffers are sized by what backward writes).
#[test]
fn a_suffix_frozen_entirely_still_gives_its_input_gradient() {
    let s = spec("resnet8", ArchOptions::default());
    let mut grads = vec![];
    for at in [s.stages.len() + 1, s.stages.len()] {
        let freeze = Freeze { bn: true, at };
        let cap = Capacity { n: 8, h: 8, w: 8 };
        let mut suffix = Part::new(&s, Stages::c4_suffix(&s), cap, freeze, true, 1).unwrap();
        suffix.input_mut(8, 8, 8).unwrap().copy_from_slice(&rand_vec(8 * 8 * 8 * 32, 3));
        suffix.forward(true).unwrap();
        suffix.output_grad_mut().fill(1.0);
        suffix.backward().unwrap();
        assert_eq!(suffix.grads().iter().all(|g| *g == 0.0), at > s.stages.len(), "at {at}");
        let (g, d) = suffix.input_grad().unwrap();
        assert_eq!(d, Dims::new(8, 8, 8, 32));
        grads.push(g.to_vec());
    }
    // the same weights, frozen or not: the same input gradient
    assert!(grads[0] == grads[1]);
}

/// The C4 split of ResNet-50 at the paper's scale: conv1 .. layer3 end at stride 16 with 1024
/// channels; layer4 on 14 x 14 RoIs ends at 7 x 7 x 2048 (its first block strided), pooled to 2048;
/// the names are torchvision's. Plans only: nothing allocated.
#[test]
fn resnet50_c4_shapes_and_names() {
    let s = spec("resnet50", ArchOptions::default());
    let prefix = PartPlan::new(&s, Stages::c4_prefix(&s), 600, 1000, Freeze { bn: true, at: 2 }).unwrap();
    assert_eq!(prefix.map, Dims::new(1, 38, 63, 1024));
    assert_eq!(prefix.params.first().unwrap().name, "conv1.weight");
    assert_eq!(prefix.params.last().unwrap().name, "layer3.5.bn3.bias");
    let suffix = PartPlan::new(&s, Stages::c4_suffix(&s), 14, 14, Freeze { bn: true, at: 2 }).unwrap();
    assert_eq!(suffix.input, Dims::new(1, 14, 14, 1024));
    assert_eq!(suffix.map, Dims::new(1, 7, 7, 2048));
    assert_eq!(suffix.output(), Dims::new(1, 1, 1, 2048));
    assert_eq!(suffix.params.first().unwrap().name, "layer4.0.conv1.weight");
    assert_eq!(suffix.stats.first().unwrap().name, "layer4.0.bn1.running_mean");
    // memory (2 threads): the training prefix on one 600 x 1000 image 0.58 GiB (frozen BN keeps no
    // conv outputs; backward in place needs three gradient buffers, sized for layer2 and layer3,
    // as layer1 learns nothing; the projections' outputs live in one of them), the training suffix
    // on 512 RoIs 2.21 GiB (2.9 MB of activations per RoI, 1.6 MB of gradient buffers: the
    // 14 x 14 x 1024 input gradient, two of 7 x 7 x 2048), on 128 0.70 GiB
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    assert!((0.56..0.61).contains(&gib(prefix.memory_bytes(1, true, 2))));
    assert!((2.16..2.26).contains(&gib(suffix.memory_bytes(512, true, 2))));
    assert!((0.67..0.72).contains(&gib(suffix.memory_bytes(128, true, 2))));
    let whole = Plan::new(&s, 224, 224);
    // every parameter but the fc's, once
    assert_eq!(prefix.n_params + suffix.n_params + 2048 * 1000 + 1000, whole.n_params);
    // frozen: BN everywhere, conv weights of the stem and layer1
    let frozen_len: usize = {
        let t = prefix.trainable();
        prefix.n_params - t.iter().map(|r| r.len()).sum::<usize>()
    };
    let expect: usize = prefix
        .params
        .iter()
        .filter(|t| {
            matches!(t.kind, ParamKind::BnWeight | ParamKind::BnBias)
                || t.name.starts_with("conv1.")
                || t.name.starts_with("layer1.")
        })
        .map(|t| t.len)
        .sum();
    assert_eq!(frozen_len, expect);
}

/// One detector step through the engine, as the detector will run it: prefix on the images -> RPN
/// head, and RoIAlign -> suffix on the RoIs -> box predictor; then back: predictor -> suffix (its
/// input gradient) -> RoIAlign backward into the prefix's output gradient, the RPN head's added ->
/// prefix. Gradients of the heads' and the backbone's learning tensors against central
/// differences of the whole chain (frozen BN, the stem frozen).
#[test]
fn detector_chain_gradients_match_finite_differences() {
    use crate::detect::roi::{RoI, RoIAlign};
    use crate::net::predictor::BoxPredictor;
    use crate::net::rpn_head::RpnHead;
    let s = spec("resnet8", ArchOptions { shortcut: Some(ShortcutOpt::B), ..Default::default() });
    let freeze = Freeze { bn: true, at: 1 };
    let (n, h, w) = (2, 12, 10);
    let mut prefix = Part::new(&s, Stages::c4_prefix(&s), Capacity { n: 2, h: 16, w: 16 }, freeze, true, 3).unwrap();
    let mut suffix = Part::new(&s, Stages::c4_suffix(&s), Capacity { n: 8, h: 4, w: 4 }, freeze, true, 3).unwrap();
    for part in [&mut prefix, &mut suffix] {
        let tensors: Vec<TensorInfo> = part.plan.params.iter().chain(&part.plan.stats).cloned().collect();
        randomise_bn(&tensors, |t, v| part.set_torch(&t.name, &t.shape, &v).unwrap());
    }
    let cap_map = prefix.plan.map;
    let anchors = 2;
    let mut rpn = RpnHead::new(cap_map.c, anchors, Capacity { n: 2, h: cap_map.h, w: cap_map.w }, true, 3);
    let rw = rand_vec(rpn.params().len(), 29);
    rpn.params_mut().iter_mut().zip(&rw).for_each(|(p, r)| *p = 0.2 * r);
    let classes = 3; // K + 1
    let mut head = BoxPredictor::new(s.features(), classes, 3);
    let hw = rand_vec(head.params().len(), 30);
    head.params_mut().iter_mut().zip(&hw).for_each(|(p, r)| *p = 0.3 * r);
    // the CIFAR prefix has stride 2
    let align = RoIAlign { out_h: 4, out_w: 4, spatial_scale: 0.5, sampling_ratio: 2, aligned: true };
    let rois = [
        RoI { image: 0, bbox: [0.5, 1.0, 9.0, 11.0] },
        RoI { image: 1, bbox: [2.0, 0.0, 7.5, 6.0] },
        RoI { image: 1, bbox: [0.0, 3.0, 10.0, 12.0] },
    ];
    let k = rois.len();
    let x = rand_vec(n * h * w * 3, 31);
    let (ps, pd) = (rand_vec(k * classes, 32), rand_vec(k * 4 * classes, 33));
    let (mut scores, mut deltas) = (vec![0.0; k * classes], vec![0.0; k * 4 * classes]);
    let fd = Dims { n, h: h / 2, w: w / 2, c: cap_map.c };
    let (pl, pdl) = (rand_vec(fd.pixels() * anchors, 34), rand_vec(fd.pixels() * 4 * anchors, 35));
    let (mut logits, mut rdeltas) = (vec![0.0; pl.len()], vec![0.0; pdl.len()]);
    // forward; loss = sum(logits * pl) + sum(rpn deltas * pdl) + sum(scores * ps) + sum(deltas * pd)
    let mut forward = |prefix: &mut Part, rpn: &mut RpnHead, suffix: &mut Part, head: &BoxPredictor| -> f64 {
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
        prefix.input_mut(n, h, w).unwrap().copy_from_slice(&x);
        prefix.forward(true).unwrap();
        let (fmap, fd) = prefix.output();
        rpn.forward(fmap, fd, &mut logits, &mut rdeltas).unwrap();
        let rpn_loss = dot(&logits, &pl) + dot(&rdeltas, &pdl);
        let roi_in = suffix.input_mut(k, align.out_h, align.out_w).unwrap();
        align.forward(fmap, fd, &rois, roi_in);
        suffix.forward(true).unwrap();
        head.forward(suffix.output().0, &mut scores, &mut deltas);
        rpn_loss + dot(&scores, &ps) + dot(&deltas, &pd)
    };
    forward(&mut prefix, &mut rpn, &mut suffix, &head);
    // backward
    let (feat, dfeat) = suffix.output_and_grad_mut();
    head.backward(feat, &ps, &pd, Some(dfeat), crate::par::SumOrder::Threads);
    suffix.backward().unwrap();
    let (droi, _) = suffix.input_grad().unwrap();
    let droi = droi.to_vec();
    let (fmap, dfmap) = prefix.output_and_grad_mut();
    align.backward(&droi, fd, &rois, dfmap); // overwrites
    rpn.backward(fmap, &pl, &pdl, dfmap, crate::par::SumOrder::Threads).unwrap(); // adds
    prefix.backward().unwrap();

    let parts = RefCell::new((prefix, suffix, head, rpn));
    let (pg, sg, hg, rg) = {
        let p = parts.borrow();
        (p.0.grads().to_vec(), p.1.grads().to_vec(), p.2.grads().to_vec(), p.3.grads().to_vec())
    };
    let hp = parts.borrow().2.params().to_vec();
    check("chain: predictor", &hp, &hg, |v| {
        let (p, s, h, r) = &mut *parts.borrow_mut();
        h.params_mut().copy_from_slice(v);
        let l = forward(p, r, s, h);
        h.params_mut().copy_from_slice(&hp);
        l
    });
    let rp = parts.borrow().3.params().to_vec();
    check("chain: rpn head", &rp, &rg, |v| {
        let (p, s, h, r) = &mut *parts.borrow_mut();
        r.params_mut().copy_from_slice(v);
        let l = forward(p, r, s, h);
        r.params_mut().copy_from_slice(&rp);
        l
    });
    for (which, name) in [
        (0, "layer1.0.conv1.weight"),
        (0, "layer2.0.downsample.0.weight"),
        (1, "layer3.0.conv2.weight"),
        (1, "layer3.0.downsample.0.weight"),
    ] {
        let (t, _) = {
            let p = parts.borrow();
            let part = if which == 0 { &p.0 } else { &p.1 };
            let (t, is_param) = part.tensor_info(name).unwrap();
            (t.clone(), is_param)
        };
        let r = t.offset..t.offset + t.len;
        let grads = if which == 0 { &pg } else { &sg };
        let p0 = {
            let p = parts.borrow();
            if which == 0 { p.0.params()[r.clone()].to_vec() } else { p.1.params()[r.clone()].to_vec() }
        };
        check(&format!("chain: {name}"), &p0, &grads[r.clone()], |v| {
            let (p, s, h, rpn) = &mut *parts.borrow_mut();
            let part = if which == 0 { &mut *p } else { &mut *s };
            part.params_mut()[r.clone()].copy_from_slice(v);
            let l = forward(p, rpn, s, h);
            let part = if which == 0 { &mut *p } else { &mut *s };
            part.params_mut()[r.clone()].copy_from_slice(&p0);
            l
        });
    }
    // the frozen stem learned nothing
    let p = parts.borrow();
    let (t, _) = p.0.tensor_info("conv1.weight").unwrap();
    assert!(pg[t.offset..t.offset + t.len].iter().all(|g| *g == 0.0));
}
