//! `resnet train` end to end on small generated MNIST-style data: run
//! directory contents, metrics, and exact resume (N straight iterations equal
//! N/2 + resume, bit for bit).

use std::path::{Path, PathBuf};
use std::process::Command;

fn resnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_resnet")).args(args).output().expect("run resnet")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("resnet-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// IDX files of `n` 28x28 images whose brightness encodes the label (learnable).
fn write_idx(dir: &Path, prefix: &str, n: usize) {
    let mut img = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        img.extend(d.to_be_bytes());
    }
    let mut lab = vec![0, 0, 8, 1];
    lab.extend((n as u32).to_be_bytes());
    for i in 0..n {
        let label = (i * 7 % 10) as u8;
        for p in 0..784 {
            img.push(((label as usize * 25 + (p * 31 + i * 17) % 20) % 256) as u8);
        }
        lab.push(label);
    }
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
}

fn data_dir() -> PathBuf {
    let d = tmp("data");
    write_idx(&d, "train", 96);
    write_idx(&d, "t10k", 24);
    d
}

fn train(args: &[&str]) {
    let o = resnet(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn stop_and_resume_is_bit_identical() {
    let data = data_dir();
    let (a, b) = (tmp("straight"), tmp("resumed"));
    let common =
        ["train", "--arch", "resnet8", "--data", data.to_str().unwrap(), "--iters", "24", "--batch", "16", "--quiet"];
    train(&[&common[..], &["--out", a.to_str().unwrap()]].concat());
    train(&[&common[..], &["--out", b.to_str().unwrap(), "--stop-at", "12"]].concat());
    let half = resnet::train::checkpoint::read(&b.join("last.safetensors")).unwrap();
    assert_eq!(half.meta.iteration, 12);
    train(&["train", "--resume", b.to_str().unwrap(), "--quiet"]);
    let (x, y) = (
        resnet::train::checkpoint::read(&a.join("last.safetensors")).unwrap(),
        resnet::train::checkpoint::read(&b.join("last.safetensors")).unwrap(),
    );
    assert_eq!(x.meta, y.meta);
    assert_eq!(x.meta.iteration, 24);
    assert_eq!(x.tensors.len(), y.tensors.len());
    for (name, (shape, v)) in &x.tensors {
        let (s2, v2) = &y.tensors[name];
        assert_eq!(shape, s2, "{name}");
        let same = v.iter().zip(v2).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{name} differs between the straight and the resumed run");
    }
    // the run directory: config, metrics with training windows and test evaluations, epoch checkpoints
    let cfg = std::fs::read_to_string(a.join("config.toml")).unwrap();
    assert!(cfg.contains("milestones = [12, 18]"), "{cfg}");
    let metrics = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.iter().any(|l| l["train_loss"].is_number() && l["img_per_s"].is_number()));
    let tests: Vec<_> = lines.iter().filter(|l| l["split"] == "test").collect();
    assert_eq!(tests.len(), 4, "one test evaluation per epoch (96 images / 16 = 6 iterations)");
    assert!(tests.iter().all(|l| l["err"].as_f64().unwrap() <= 100.0));
    let epochs: Vec<_> = std::fs::read_dir(&a)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("epoch-"))
        .collect();
    assert_eq!(epochs.len(), 3, "the last 3 epoch checkpoints are kept");
    // a second start in the same directory is refused
    let o = resnet(&[&common[..], &["--out", a.to_str().unwrap()]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--resume"));
    for d in [data, a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}
