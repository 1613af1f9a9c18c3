//! Whole-network checks: parameter counts, FLOPs, gradients of every tensor.

use super::*;
use crate::arch::{ArchOptions, Family, ShortcutOpt, StrideIn};
use crate::testutil::rand_vec;

fn spec(a: &str, o: ArchOptions) -> ArchSpec {
    ArchSpec::parse(a, &o).unwrap()
}

#[test]
fn parameter_counts_match_the_paper_and_torchvision() {
    for (a, n) in [
        ("resnet20", 269_722),
        ("resnet32", 464_154),
        ("resnet44", 658_586),
        ("resnet56", 853_018),
        ("resnet110", 1_727_962),
        ("resnet1202", 19_421_274),
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
    ] {
        let s = spec(a, ArchOptions::default());
        let p = Plan::new(&s, s.input_size, s.input_size);
        assert_eq!(p.n_params, n, "{a}");
        // stride placement moves FLOPs, not parameters
        if s.block == crate::arch::BlockKind::Bottleneck {
            let o = ArchOptions { stride_in: Some(StrideIn::ThreeByThree), ..Default::default() };
            assert_eq!(Plan::new(&spec(a, o), 224, 224).n_params, n);
        }
    }
    // plain nets equal their option-A twins
    for d in ["20", "56", "110", "18", "34"] {
        let a = ArchOptions { shortcut: Some(ShortcutOpt::A), ..Default::default() };
        let r = Plan::new(&spec(&format!("resnet{d}"), a), 32, 32).n_params;
        let p = Plan::new(&spec(&format!("plain{d}"), ArchOptions::default()), 32, 32).n_params;
        assert_eq!(r, p, "depth {d}");
    }
    // option C adds a projection to every block
    let c = ArchOptions { shortcut: Some(ShortcutOpt::C), ..Default::default() };
    assert!(Plan::new(&spec("resnet34", c), 224, 224).n_params > 21_797_672);
}

#[test]
fn flops_match_table_1() {
    for (a, f) in
        [("resnet18", 1.8e9), ("resnet34", 3.6e9), ("resnet50", 3.8e9), ("resnet101", 7.6e9), ("resnet152", 11.3e9)]
    {
        let s = spec(a, ArchOptions::default());
        let m = Plan::new(&s, 224, 224).macs() as f64;
        assert!((m / f - 1.0).abs() < 0.03, "{a}: {m:e} vs {f:e}");
    }
    let s = spec("resnet20", ArchOptions::default());
    let m = Plan::new(&s, 32, 32).macs() as f64;
    assert!((m / 40.55e6 - 1.0).abs() < 0.001, "resnet20 {m}");
    // torchvision's v1.5 ResNet-50: 4.09 GFLOPs
    let o = ArchOptions { stride_in: Some(StrideIn::ThreeByThree), ..Default::default() };
    let m = Plan::new(&spec("resnet50", o), 224, 224).macs() as f64;
    assert!((m / 4.09e9 - 1.0).abs() < 0.01, "v1.5 {m:e}");
}

/// Loss of the net on fixed data in training mode (batch statistics).
fn train_loss(net: &mut Net, n: usize, labels: &[u32]) -> f64 {
    net.forward(n, true);
    net.loss(labels).loss as f64
}

/// For every parameter tensor: central differences at a few coordinates
/// equal the analytic gradient. A coordinate passes at eps = 1e-3 or 2e-4.
/// ReLU kinks inside the step (and BN over a handful of values per channel)
/// can spoil a finite difference without any bug, so up to 1 in 8 coordinates
/// may miss; a wiring error misses far more (every coordinate of a tensor).
fn check_net_gradients(s: &ArchSpec, n: usize, hw: usize, per_tensor: usize) {
    let mut net = Net::new(s, n, hw, hw, true, 7).unwrap();
    let x = rand_vec(net.input.len(), 1);
    net.input.copy_from_slice(&x);
    // random BN affine parameters so that no gradient vanishes by symmetry
    let infos = net.plan.params.clone();
    for t in &infos {
        if matches!(t.kind, ParamKind::BnWeight | ParamKind::BnBias | ParamKind::FcBias) {
            let r = rand_vec(t.len, t.offset as u64);
            let base = if t.kind == ParamKind::BnWeight { 1.0 } else { 0.0 };
            for (p, v) in net.params[t.offset..t.offset + t.len].iter_mut().zip(r) {
                *p = base + 0.3 * v;
            }
        }
    }
    let labels: Vec<u32> = (0..n as u32).map(|i| i % s.classes as u32).collect();
    train_loss(&mut net, n, &labels);
    net.backward(n);
    let grads = net.grads.clone();
    let scale = grads.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
    let (mut checked, mut misses) = (0usize, vec![]);
    for t in &infos {
        for c in 0..per_tensor {
            let j = t.offset + (c * 7919 + t.len / 3) % t.len;
            let (o, ana) = (net.params[j], grads[j] as f64);
            let mut nums = vec![];
            for eps in [1e-3f32, 2e-4] {
                net.params[j] = o + eps;
                let lp = train_loss(&mut net, n, &labels);
                net.params[j] = o - eps;
                let lm = train_loss(&mut net, n, &labels);
                net.params[j] = o;
                let num = (lp - lm) / (2.0 * eps as f64);
                nums.push(num);
                if (num - ana).abs() <= 3e-2 * ana.abs().max(num.abs()) + 2e-3 * scale {
                    break;
                }
            }
            let num = *nums.last().unwrap();
            checked += 1;
            if (num - ana).abs() > 3e-2 * ana.abs().max(num.abs()) + 2e-3 * scale {
                misses.push(format!("{}[{}]: analytic {ana} vs numeric {nums:?}", t.name, j - t.offset));
            }
        }
    }
    assert!(
        misses.len() * 8 <= checked,
        "{}: {} of {checked} coordinates off:\n{}",
        s.name,
        misses.len(),
        misses.join("\n")
    );
}

#[test]
fn cifar_option_a_gradients() {
    let mut s = spec("resnet8", ArchOptions::default());
    s.classes = 5;
    check_net_gradients(&s, 3, 9, 4); // odd size: stride-2 convs and subsampling meet edges
}

#[test]
fn plain_and_projection_gradients() {
    check_net_gradients(&spec("plain8", ArchOptions { classes: Some(4), ..Default::default() }), 2, 8, 4);
    for o in [ShortcutOpt::B, ShortcutOpt::C] {
        let a = ArchOptions { shortcut: Some(o), classes: Some(3), in_channels: Some(1), ..Default::default() };
        check_net_gradients(&spec("resnet8", a), 2, 10, 3);
    }
}

#[test]
fn imagenet_basic_and_bottleneck_gradients() {
    check_net_gradients(&spec("resnet18", ArchOptions { classes: Some(6), ..Default::default() }), 2, 33, 2);
    let a = ArchOptions { classes: Some(6), family: Some(Family::Imagenet), ..Default::default() };
    check_net_gradients(&spec("resnet50", a), 2, 64, 1); // 2x2 final maps: BN over 8 values
}

/// Every kernel path computes the same network: logits to 1e-4, every
/// gradient to 2e-5 of its tensor's largest entry (3e-5 on the path with Winograd's F(4x4, 3x3)
/// tiles, which round more: 2.1e-5 at worst here, against 1.6e-5 with F(2x2) only; a wrong
/// transform is off by far more). A ReLU input within
/// rounding of zero may flip its mask between paths and move upstream
/// gradients far more than that, so the input is the first of a few seeds on
/// which all paths agree on every ReLU mask.
#[test]
fn kernel_paths_give_the_same_gradients() {
    use crate::kernels::KernelPath;
    for (a, hw) in [("resnet18", 64), ("resnet20", 32)] {
        let s = spec(a, ArchOptions { classes: Some(10), ..Default::default() });
        let run = |path: KernelPath, seed: u64| {
            let mut net = Net::new(&s, 4, hw, hw, true, 3).unwrap();
            net.set_kernel_path(path);
            let x = rand_vec(net.input.len(), seed);
            net.input.copy_from_slice(&x);
            net.forward(4, true);
            net
        };
        let masks = |net: &Net| -> Vec<bool> {
            let units = std::iter::once(&net.stem).chain(net.blocks.iter().flat_map(|b| b.units.iter()));
            units.flat_map(|u| u.out.iter().map(|v| *v > 0.0)).collect()
        };
        let seed = (5..15)
            .find(|&seed| {
                let reference = masks(&run(KernelPath::Portable, seed));
                KernelPath::all_supported()[1..].iter().all(|&p| masks(&run(p, seed)) == reference)
            })
            .expect("no input without ReLU mask flips between paths in 10 seeds");
        let grads = |path: KernelPath| {
            let mut net = run(path, seed);
            net.loss(&[1, 2, 3, 4]);
            net.backward(4);
            (net.logits.clone(), net.grads.clone())
        };
        let (l0, g0) = grads(KernelPath::Portable);
        for &path in &KernelPath::all_supported()[1..] {
            let (l1, g1) = grads(path);
            let err = l0.iter().zip(&l1).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(err < 1e-4, "{a} {path:?} logits {err}");
            let s = spec(a, ArchOptions { classes: Some(10), ..Default::default() });
            for t in Plan::new(&s, hw, hw).params.iter().rev() {
                let (a0, a1) = (&g0[t.offset..t.offset + t.len], &g1[t.offset..t.offset + t.len]);
                let scale = a0.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let err = a0.iter().zip(a1).fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
                let tol = if path.large_tiles() { 3e-5 } else { 2e-5 };
                assert!(err <= tol * scale, "{a} {path:?} seed {seed} {}: {err} vs {scale}", t.name);
            }
        }
    }
}

#[test]
fn block_inputs_chain_the_pool_or_stem_and_the_blocks() {
    for (a, hw) in [("resnet18", 64), ("resnet20", 32)] {
        let s = spec(a, ArchOptions { classes: Some(10), ..Default::default() });
        let mut net = Net::new(&s, 2, hw, hw, false, 1).unwrap();
        let x = rand_vec(net.input.len(), 2);
        net.input.copy_from_slice(&x);
        net.forward(2, false);
        let first = if net.plan.pool.is_some() { &net.pool_out } else { &net.stem.out };
        assert!(std::ptr::eq(net.block_input(0), first.as_slice()), "{a}");
        let last = net.blocks.len();
        for i in 1..=last {
            let prev = &net.blocks[i - 1].units.last().unwrap().out;
            assert!(std::ptr::eq(net.block_input(i), prev.as_slice()), "{a} block {i}");
            assert_eq!(net.plan.block_input_dims(i), net.plan.blocks[i - 1].yd);
        }
        for (i, b) in net.plan.blocks.iter().enumerate() {
            assert_eq!(net.plan.block_input_dims(i), b.xd, "{a} block {i}");
        }
        // the final feature map is the input of the block after the last
        let (fmap, d) = net.feature_map(2);
        assert_eq!(d, Dims { n: 2, ..net.plan.block_input_dims(last) });
        assert!(std::ptr::eq(fmap.as_ptr(), net.block_input(last).as_ptr()) && fmap.len() == d.len());
    }
}

#[test]
fn too_large_says_what_would_fit_or_that_nothing_does() {
    let gib = 1u64 << 30;
    let e = BuildError::TooLarge { need_bytes: 40 * gib, available_bytes: 10 * gib, batch: 128 }.to_string();
    assert!(e.contains("needs about 40.0 GiB") && e.ends_with("use a smaller --batch (about 28 would fit)"), "{e}");
    // not even one image fits: no "about 0 would fit"
    let e = BuildError::TooLarge { need_bytes: 2_000_000 * gib, available_bytes: 22 * gib, batch: 128 }.to_string();
    assert!(
        e.ends_with("even one image needs about 15625.0 GiB: use a smaller input size or a smaller network"),
        "{e}"
    );
    // no overflow for extreme values
    let e = BuildError::TooLarge { need_bytes: u64::MAX, available_bytes: u64::MAX / 2, batch: usize::MAX }.to_string();
    assert!(e.contains("would fit"), "{e}");
}

/// An inference forward allocates nothing once its weights are prepared (the batch-1
/// latency: no allocation per layer), on the thread that runs each layer's setup (the BN affine,
/// the geometry, the task split); ResNet-18: the ImageNet stem, a max pool, projections. It runs
/// on a pool's thread, as a trainer or a server would: a thread outside the pool hands rayon its
/// jobs through a queue that allocates a block per 63 of them, rayon's own amortised cost.
#[test]
fn an_inference_forward_allocates_nothing_after_the_first() {
    let s = spec("resnet18", ArchOptions::default());
    let mut net = Net::new(&s, 2, 64, 64, false, 1).unwrap();
    let x = rand_vec(net.input.len(), 9);
    net.input.copy_from_slice(&x);
    let (allocated, first, again) = crate::par::with_threads(2, || {
        net.forward(2, false);
        let first = net.logits[..2 * net.classes()].to_vec();
        let allocated = crate::alloc::allocations_in(|| net.forward(2, false));
        (allocated, first, net.logits[..2 * net.classes()].to_vec())
    })
    .unwrap();
    assert_eq!(allocated, 0, "allocations in an inference forward after the first");
    assert_eq!(first, again);
    // the count sees this thread's allocations (the check above could not pass by counting none)
    assert_eq!(crate::alloc::allocations_in(|| drop(std::hint::black_box(vec![1u8; 100]))), 1);
}

/// A training step allocates no block of 4 KiB or more after the first: the kernels' working
/// memory (Winograd's transformed weights for backward-data and the forward, the weight
/// gradient's transform-domain partials and blocks) comes from `crate::reuse`. Allocated per
/// call, it went back to the system when freed and was faulted in and zeroed again on the next
/// call: 10,000 page faults per ResNet-110 step, 3-6% of it. One thread, so that every task's
/// allocations are counted; ResNet-20 at 32 x 32 runs the Winograd forward, backward-data and
/// weight gradient (F(4x4) and F(2x2)).
#[test]
fn a_training_step_allocates_no_large_block_after_the_first() {
    let s = spec("resnet20", ArchOptions { classes: Some(10), ..Default::default() });
    let mut net = Net::new(&s, 4, 32, 32, true, 1).unwrap();
    let x = rand_vec(net.input.len(), 2);
    net.input.copy_from_slice(&x);
    let step = |net: &mut Net| {
        net.forward(4, true);
        net.loss(&[1, 2, 3, 4]);
        net.backward(4);
    };
    let large = crate::par::with_threads(1, || {
        step(&mut net);
        crate::alloc::large_allocations_in(|| step(&mut net))
    })
    .unwrap();
    assert_eq!(large, 0, "blocks of 4 KiB or more allocated in a training step after the first");
    // the count sees this thread's large blocks (the check above could not pass by counting none)
    assert_eq!(crate::alloc::large_allocations_in(|| drop(std::hint::black_box(vec![1u8; 5000]))), 1);
}

/// An inference net keeps its convolutions' prepared weights between forwards;
/// any change of the parameters (params_mut, set_torch) or of the batch size
/// must make them again: the logits equal a fresh net's with the same weights.
#[test]
fn prepared_weights_follow_every_parameter_change() {
    // projection shortcuts and 64 channels (packed kernels), 16x16 maps x 4 images
    // (enough tiles for Winograd on the first stage)
    let s = spec("resnet20", ArchOptions { shortcut: Some(ShortcutOpt::B), ..Default::default() });
    let mut net = Net::new(&s, 4, 16, 16, false, 1).unwrap();
    let x = rand_vec(net.input.len(), 7);
    let fresh_logits = |net: &Net, n: usize| {
        let mut f = Net::zeroed(net.spec(), 4, 16, 16, false).unwrap();
        f.params_mut().copy_from_slice(net.params());
        f.stats.copy_from_slice(&net.stats);
        f.input.copy_from_slice(&x);
        f.forward(n, false);
        f.logits[..n * f.classes()].to_vec()
    };
    let run = |net: &mut Net, n: usize| {
        net.input.copy_from_slice(&x);
        net.forward(n, false);
        net.logits[..n * net.classes()].to_vec()
    };
    assert_eq!(run(&mut net, 4), fresh_logits(&net, 4));
    assert!(net.prepared_n == 4 && !net.prepared.is_empty(), "an inference forward prepares the weights");
    // the same batch again: the prepared weights are used as they are
    assert_eq!(run(&mut net, 4), fresh_logits(&net, 4));
    // a parameter changed through params_mut
    let w = net.plan.blocks[1].units[0].w;
    net.params_mut()[w..w + 100].iter_mut().for_each(|v| *v *= -2.0);
    let changed = run(&mut net, 4);
    assert_eq!(changed, fresh_logits(&net, 4));
    // through set_torch
    let name = net.tensor_names().into_iter().find(|n| n.contains("conv") && n.contains("weight")).unwrap();
    let (t, _) = net.tensor_info(&name).unwrap();
    let (shape, len) = (t.shape.clone(), t.len);
    net.set_torch(&name, &shape, &rand_vec(len, 9)).unwrap();
    let after = run(&mut net, 4);
    assert_ne!(after, changed);
    assert_eq!(after, fresh_logits(&net, 4));
    // another batch size
    assert_eq!(run(&mut net, 1), fresh_logits(&net, 1));
}

/// `Net::freeze` with the optimizer mask `Plan::trainable`: 20 SGD steps (momentum, weight decay)
/// leave every BN tensor (gamma, beta, running statistics) and the frozen stages' convolutions
/// bit-identical, while the other convolutions and the fc learn.
#[test]
fn frozen_bn_and_stages_stay_bit_identical_through_20_sgd_steps() {
    let s = spec("resnet8", ArchOptions { shortcut: Some(ShortcutOpt::B), ..Default::default() });
    let mut net = Net::new(&s, 4, 12, 12, true, 2).unwrap();
    net.freeze(Freeze { bn: true, at: 2 });
    let start: Vec<(String, Vec<f32>)> =
        net.tensor_names().into_iter().map(|n| (n.clone(), net.get_torch(&n).unwrap())).collect();
    let mut opt = crate::optim::Sgd::new(net.params().len());
    opt.weight_decay = 5e-4;
    opt.trainable = Some(net.plan.trainable());
    for step in 0..20u64 {
        let x = rand_vec(net.input.len(), 40 + step);
        net.input.copy_from_slice(&x);
        net.forward(4, true);
        net.loss(&[0, 1, 2, 3]);
        net.backward(4);
        let (p, g) = net.step_operands();
        opt.step(p, g, 0.1);
    }
    for (name, v0) in &start {
        let bn = name.starts_with("bn1.") || name.contains(".bn") || name.contains("downsample.1");
        let frozen = bn || name.starts_with("conv1.") || name.starts_with("layer1.");
        let v = net.get_torch(name).unwrap();
        assert_eq!(frozen, &v == v0, "{name}: frozen {frozen}");
    }
}
