//! The `resnet` binary: outputs, JSON, and clear errors for bad arguments.

use serde_json::Value;
use std::process::{Command, Output};

fn resnet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_resnet")).args(args).output().expect("run resnet")
}

fn json(args: &[&str]) -> Value {
    let o = resnet(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

/// Fails with exit code 2 and a message containing every one of `needles`; never panics.
fn fails_with(args: &[&str], needles: &[&str]) {
    let o = resnet(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' not in: {err}");
    }
}

#[test]
fn summary_json_counts_params_and_flops() {
    let v = json(&["summary", "--arch", "resnet20", "--json"]);
    assert_eq!(v["params"], 269_722);
    assert_eq!(v["flops"], 40_551_040);
    let v = json(&["summary", "--arch", "resnet34", "--json"]);
    assert_eq!(v["params"], 21_797_672);
    let v = json(&["summary", "--arch", "plain110", "--json"]);
    assert_eq!(v["params"], 1_727_962);
    let v = json(&[
        "summary",
        "--arch",
        "resnet50",
        "--family",
        "cifar",
        "--classes",
        "100",
        "--in-channels",
        "1",
        "--json",
    ]);
    assert_eq!(v["arch"]["depth"], 50);
    assert_eq!(v["arch"]["family"], "cifar");
    assert_eq!(v["input"], serde_json::json!([32, 32, 1]));
}

#[test]
fn summary_table_names_the_stages() {
    let o = resnet(&["summary", "--arch", "resnet152"]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    for s in ["conv1", "maxpool", "layer4", "avgpool+fc", "60,192,808", "7x7x2048"] {
        assert!(t.contains(s), "{s} missing:\n{t}");
    }
}

#[test]
fn bench_json_reports_throughput() {
    for mode in ["train", "infer"] {
        let v = json(&[
            "bench", "--arch", "resnet8", "--batch", "4", "--steps", "2", "--warmup", "1", "--mode", mode, "--json",
        ]);
        for k in ["img_per_s", "ms_per_step", "gflops", "peak_rss_mib"] {
            assert!(v[k].as_f64().unwrap() > 0.0, "{mode} {k}: {v}");
        }
        assert_eq!(v["batch"], 4);
    }
    let v = json(&["bench", "--arch", "resnet20", "--batch", "2", "--steps", "1", "--threads", "1", "--json"]);
    assert_eq!(v["threads"], 1);
    assert!(v.get("profile_shapes").is_none(), "no profile asked for: {v}");
}

/// `resnet bench` names the kernels' per-CPU tuning; `RESNET_TUNING` forces it, and a value it
/// cannot read is reported and the detected tuning runs.
#[test]
fn bench_names_the_kernel_tuning_and_takes_a_forced_one() {
    let run = |kernels: &str, tuning: &str| {
        let o = Command::new(env!("CARGO_BIN_EXE_resnet"))
            .args(["bench", "--arch", "resnet8", "--batch", "2", "--steps", "1", "--warmup", "0", "--json"])
            .env("RESNET_KERNELS", kernels)
            .env("RESNET_TUNING", tuning)
            .output()
            .expect("run resnet");
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success() && !err.contains("panicked"), "{tuning}: {err}");
        let v: Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        (v["tuning"].clone(), err)
    };
    let (forced, _) = run("avx512", "pixels=14,l2=256");
    let (detected, _) = run("avx512", "");
    if detected.is_null() {
        return; // no AVX-512 here: the portable loops have nothing to tune
    }
    assert_eq!(forced, "L2 256 KiB, 14-pixel tiles");
    assert!(detected.as_str().unwrap().ends_with("-pixel tiles"), "{detected}");
    let (ignored, err) = run("avx512", "pixels=12");
    assert!(err.contains("RESNET_TUNING ignored: pixels '12' is not 8 or 14"), "{err}");
    assert_eq!(ignored, detected);
    assert!(run("portable", "pixels=14").0.is_null(), "the portable path runs no tuned kernel");
}

#[test]
fn bench_profile_names_every_convolution_shape() {
    // ResNet-20 per training step: the stem 3->16, 6 convolutions 32x32 16->16, one 16->32 k3/2,
    // 5 16x16 32->32, one 32->64 k3/2 and 5 8x8 64->64; backward-data skips the stem
    let v =
        json(&["bench", "--arch", "resnet20", "--batch", "2", "--steps", "2", "--warmup", "1", "--profile", "--json"]);
    let shapes = v["profile_shapes"].as_array().unwrap_or_else(|| panic!("no profile_shapes: {v}"));
    let calls = |label: &str| -> f64 {
        let row = shapes.iter().find(|r| r[0] == label).unwrap_or_else(|| panic!("{label} missing: {v}"));
        assert!(row[1].as_f64().unwrap() > 0.0, "{label}: no time");
        row[2].as_f64().unwrap()
    };
    assert_eq!(calls("ConvForward 32x32 3->16 k3/1"), 1.0);
    assert_eq!(calls("ConvForward 32x32 16->16 k3/1"), 6.0);
    assert_eq!(calls("ConvForward 32x32 16->32 k3/2"), 1.0);
    assert_eq!(calls("ConvBackwardWeight 16x16 32->32 k3/1"), 5.0);
    assert_eq!(calls("ConvBackwardData 8x8 64->64 k3/1"), 5.0);
    assert_eq!(calls("ConvBackwardData 32x32 16->16 k3/1"), 6.0);
    assert!(shapes.iter().all(|r| r[0] != "ConvBackwardData 32x32 3->16 k3/1"), "the stem's input needs no gradient");
    // slowest first
    let ms: Vec<f64> = shapes.iter().map(|r| r[1].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]), "{ms:?}");
}

#[test]
fn bad_arguments_get_clear_errors() {
    fails_with(&["summary", "--arch", "resnet21"], &["resnet21", "valid forms", "6n+2"]);
    fails_with(&["summary", "--arch", "vgg16"], &["valid forms"]);
    fails_with(&["summary", "--arch", "resnet50", "--shortcut", "a"], &["bottleneck", "--shortcut b"]);
    fails_with(&["summary", "--arch", "plain34", "--shortcut", "b"], &["plain", "--shortcut"]);
    fails_with(&["summary", "--arch", "resnet20", "--classes", "0"], &["--classes"]);
    fails_with(&["summary", "--arch", "resnet20", "--stride-in", "3x3"], &["bottleneck"]);
    fails_with(&["summary", "--arch", "resnet18", "--input-size", "16"], &["too small"]);
    fails_with(&["bench", "--arch", "resnet20", "--batch", "0"], &["--batch"]);
    // a batch that cannot fit: says how much it would need
    fails_with(&["bench", "--arch", "resnet152", "--batch", "100000", "--steps", "1"], &["GiB", "--batch"]);
    // clap's own errors use exit code 2 as well
    fails_with(&["summary", "--arch", "resnet20", "--shortcut", "d"], &["--shortcut"]);
}
