//! Small training runs through the binary on generated MNIST-style data, shared by the test
//! crates that train (each crate uses some of them).
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use super::scratch::Scratch;

pub fn resnet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_resnet")).args(args).output().expect("run resnet")
}

/// A scratch directory of the test's own (removed when it passes).
pub fn tmp(name: &str) -> Scratch {
    Scratch::new(&format!("run-test-{name}"))
}

/// IDX files of `n` 28x28 images whose brightness encodes the label (learnable).
pub fn write_idx(dir: &Path, prefix: &str, n: usize) {
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

/// A data directory of the test's own (tests run in parallel).
pub fn data_dir(test: &str) -> Scratch {
    let d = tmp(&format!("data-{test}"));
    write_idx(&d, "train", 96);
    write_idx(&d, "t10k", 24);
    d
}

/// `resnet train --arch resnet8` on `data` into `run`, batch 16, quiet, then `extra`.
pub fn small_run(data: &Path, run: &Path, extra: &[&str]) -> Vec<String> {
    let base = ["train", "--arch", "resnet8", "--data", data.to_str().unwrap(), "--out", run.to_str().unwrap()];
    base.iter().chain(["--batch", "16", "--quiet"].iter()).chain(extra).map(|s| s.to_string()).collect()
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The last checkpoints of a straight run `a` and a stopped-and-resumed run `b` are the same, bit for
/// bit (metadata, every tensor's shape and values); their iteration.
pub fn assert_same_last_checkpoint(a: &Path, b: &Path) -> u64 {
    let (x, y) = (
        resnet::weights::checkpoint::read(&a.join("last.safetensors")).unwrap(),
        resnet::weights::checkpoint::read(&b.join("last.safetensors")).unwrap(),
    );
    assert_eq!(x.meta, y.meta);
    assert_eq!(x.weights.tensors.len(), y.weights.tensors.len());
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    for ((name, t), (n2, t2)) in x.weights.tensors.iter().zip(&y.weights.tensors) {
        assert_eq!((name, &t.shape), (n2, &t2.shape));
        assert!(bits(&t.data) == bits(&t2.data), "{name} differs between the straight and the resumed run");
    }
    assert!(x.velocity.as_deref().map(bits) == y.velocity.as_deref().map(bits), "the optimizer state differs");
    x.meta.iteration
}

pub fn train(args: &[&str]) {
    let o = resnet(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
}
