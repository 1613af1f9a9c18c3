//! Whole-network golden tests against PyTorch (fixtures from
//! scripts/golden_fixtures.py, float64 reference). Tolerance, per tensor:
//! max|ours - ref| <= 1e-4 * max|ref| (gradient entries: against the largest
//! entry of that gradient tensor; norms: relative 1e-4).

mod common;

use resnet::arch::{ArchOptions, ArchSpec};
use resnet::kernels::KernelPath;
use resnet::net::Net;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/golden/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Records a failure (all are reported together at the end of a check).
fn assert_close(fails: &mut Vec<String>, what: &str, ours: &[f64], reference: &[f64], scale: f64) {
    assert_eq!(ours.len(), reference.len(), "{what}: length");
    let err = ours.iter().zip(reference).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    eprintln!("{what}: max error / scale = {:.2e}", err / scale);
    if err > 1e-4 * scale || err.is_nan() {
        fails.push(format!("{what}: max error {err:e} > 1e-4 * {scale:e}"));
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Run the fixture on every kernel path this CPU has.
fn check(arch: &str, fixture: &str) {
    for path in KernelPath::all_supported() {
        check_path(arch, fixture, path);
    }
}

fn check_path(arch: &str, fixture: &str, path: KernelPath) {
    let g = load(fixture);
    let (n, size, classes) = (
        g["batch"].as_u64().unwrap() as usize,
        g["size"].as_u64().unwrap() as usize,
        g["classes"].as_u64().unwrap() as usize,
    );
    let spec = ArchSpec::parse(arch, &ArchOptions { classes: Some(classes), ..Default::default() }).unwrap();
    let mut net = Net::new(&spec, n, size, size, true, 0).unwrap();
    net.set_kernel_path(path);
    let mut fails = vec![];
    let arch = &format!("{arch} ({path:?})");
    common::golden::fill(&mut net);
    net.input.copy_from_slice(&common::golden::input_nhwc(g["input_stream"].as_str().unwrap(), n, 3, size, size));

    // eval mode: running statistics
    net.forward(n, false);
    let ours: Vec<f64> = net.logits[..n * classes].iter().map(|v| *v as f64).collect();
    let reference = floats(&g["eval_logits"]);
    assert_close(&mut fails, &format!("{arch} eval logits"), &ours, &reference, max_abs(&reference));

    // training mode: batch statistics, loss, gradients
    let labels: Vec<u32> = g["labels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    net.forward(n, true);
    let ours: Vec<f64> = net.logits[..n * classes].iter().map(|v| *v as f64).collect();
    let reference = floats(&g["train_logits"]);
    assert_close(&mut fails, &format!("{arch} train logits"), &ours, &reference, max_abs(&reference));
    let loss = net.loss(&labels).loss as f64;
    let ref_loss = g["loss"].as_f64().unwrap();
    assert_close(&mut fails, &format!("{arch} loss"), &[loss], &[ref_loss], ref_loss);
    net.backward(n);
    let grads = g["grads"].as_object().unwrap();
    assert_eq!(grads.len(), net.plan.params.len(), "{arch}: parameter tensors");
    for (name, r) in grads {
        let ours = net.grad_torch(name).unwrap_or_else(|| panic!("{arch}: no parameter {name}"));
        let norm = ours.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        let ref_norm = r["norm"].as_f64().unwrap();
        assert_close(&mut fails, &format!("{arch} |grad {name}|"), &[norm], &[ref_norm], ref_norm);
        let idx: Vec<usize> = r["index"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        let sampled: Vec<f64> = idx.iter().map(|&i| ours[i] as f64).collect();
        assert_close(
            &mut fails,
            &format!("{arch} grad {name}"),
            &sampled,
            &floats(&r["value"]),
            r["max_abs"].as_f64().unwrap(),
        );
    }
    assert!(fails.is_empty(), "{} tensors off:\n{}", fails.len(), fails.join("\n"));
}

#[test]
fn cifar_resnet20_option_a_matches_pytorch() {
    check("resnet20", "resnet20");
}

#[test]
fn torchvision_resnet18_at_64px_matches_pytorch() {
    check("resnet18", "resnet18_64");
}
