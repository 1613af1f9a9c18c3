//! `resnet train` end to end on small generated MNIST-style data: run
//! directory contents, metrics, and exact resume (N straight iterations equal
//! N/2 + resume, bit for bit).

#[path = "common/runs.rs"]
mod runs;

use runs::{assert_same_last_checkpoint, data_dir, resnet, small_run, strs, tmp, train};
use std::path::Path;
#[path = "common/scratch.rs"]
mod scratch;
use std::process::Command;

#[test]
fn stop_and_resume_is_bit_identical() {
    let data = data_dir("resume");
    let (a, b) = (tmp("straight"), tmp("resumed"));
    let common =
        ["train", "--arch", "resnet8", "--data", data.to_str().unwrap(), "--iters", "24", "--batch", "16", "--quiet"];
    train(&[&common[..], &["--out", a.to_str().unwrap()]].concat());
    train(&[&common[..], &["--out", b.to_str().unwrap(), "--stop-at", "12"]].concat());
    let half = resnet::weights::checkpoint::read(&b.join("last.safetensors")).unwrap();
    assert_eq!(half.meta.iteration, 12);
    train(&["train", "--resume", b.to_str().unwrap(), "--quiet"]);
    assert_eq!(assert_same_last_checkpoint(&a, &b), 24);
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
    // resuming a finished run reports its test error again
    let o = resnet(&["train", "--resume", a.to_str().unwrap(), "--json"]);
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((out["finished"].as_bool(), out["iteration"].as_u64()), (Some(true), Some(24)));
    let last_test = tests.last().unwrap()["err"].as_f64().unwrap();
    assert!((out["test_err"].as_f64().unwrap() - last_test).abs() < 1e-9, "{out}");
    // `resnet eval` on the test split agrees with the run's own evaluation (to one image: another batch
    // size may round a near-tie the other way); an ensemble of the model with itself is the model
    let w = a.join("last.safetensors");
    let eval = |extra: &[&str]| -> serde_json::Value {
        let args = [&["eval", "--data", data.to_str().unwrap(), "--json"][..], extra].concat();
        let o = resnet(&args);
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let one = eval(&["--weights", w.to_str().unwrap()]);
    assert_eq!(one["images"], 24);
    assert!((one["top1_err"].as_f64().unwrap() - last_test).abs() <= 100.0 / 24.0 + 1e-9, "{one} vs {last_test}");
    let two = eval(&["--weights", w.to_str().unwrap(), "--weights", w.to_str().unwrap()]);
    assert_eq!((&two["top1_err"], &two["top5_err"]), (&one["top1_err"], &one["top5_err"]));
    assert!((two["loss"].as_f64().unwrap() - one["loss"].as_f64().unwrap()).abs() < 1e-9, "{two} vs {one}");
    // an ensemble of two different models: the loss of their averaged probabilities, image by image,
    // computed here through the library's classifier
    let e1 = epochs.iter().map(|e| e.path()).min().unwrap(); // epoch 2 of 4
    let pair = eval(&["--weights", w.to_str().unwrap(), "--weights", e1.to_str().unwrap()]);
    let test = resnet::data::load(&data, None).unwrap().0.test;
    let probs = |path: &Path| -> Vec<Vec<f32>> {
        let mut c = resnet::predict::Classifier::load(path, &Default::default()).unwrap();
        let resnet::predict::Transform::Recipe(pre) = c.transform.clone() else { panic!("a CIFAR-recipe model") };
        let per = pre.size * pre.size * pre.src.2;
        let mut x = vec![0f32; test.len() * per];
        for i in 0..test.len() {
            pre.write(test.image(i), &mut x[i * per..(i + 1) * per], (0, 0), false);
        }
        c.classify_tensor(&x).unwrap().into_iter().map(|p| p.probs).collect()
    };
    let (p, q) = (probs(&w), probs(&e1));
    let loss: f64 = (0..test.len())
        .map(|i| -((p[i][test.labels[i] as usize] as f64 + q[i][test.labels[i] as usize] as f64) / 2.0).ln())
        .sum::<f64>()
        / test.len() as f64;
    let got = pair["loss"].as_f64().unwrap();
    assert!((got - loss).abs() <= 1e-5 * loss, "ensemble loss {got}, expected {loss}");
    assert_ne!(p, q, "two different models");
    assert_eq!(eval(&["--weights", w.to_str().unwrap(), "--limit", "10"])["images"], 10);
    let o =
        resnet(&["eval", "--weights", w.to_str().unwrap(), "--data", data.to_str().unwrap(), "--protocol", "10crop"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("single view"));
    // a second start in the same directory is refused
    let o = resnet(&[&common[..], &["--out", a.to_str().unwrap()]].concat());
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("--resume"));
}

#[test]
fn validation_split_keeps_the_best_checkpoint() {
    let data = data_dir("val");
    let run = tmp("val");
    let args = small_run(&data, &run, &["--iters", "12", "--val", "16", "--json"]);
    let o = resnet(&strs(&args));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(out["val_err"].is_number() && out["test_err"].is_number(), "{out}");
    let best = resnet::weights::checkpoint::read(&run.join("best.safetensors")).unwrap();
    assert!(best.meta.best_val_err.is_some());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"split\":\"val\"") && metrics.contains("\"split\":\"test\""));
    // 80 training images of 16 a batch: an epoch every 5 iterations
    assert!(metrics.lines().filter(|l| l.contains("\"split\":\"val\"")).count() >= 2);
}

#[test]
fn a_diverging_run_stops_naming_the_iteration() {
    let data = data_dir("nan");
    let run = tmp("nan");
    let args = small_run(&data, &run, &["--iters", "12", "--lr", "1e30"]);
    let o = resnet(&strs(&args));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("not finite") && err.contains("iteration"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // nothing was saved: the message says so (no "keeps the last good state"), and the same --out
    // takes a fresh start (a run that never wrote a checkpoint has nothing to resume)
    assert!(!run.join("last.safetensors").exists());
    assert!(err.contains("no checkpoint was written") && !err.contains("last good state"), "{err}");
    let args = small_run(&data, &run, &["--iters", "12"]);
    let o = resnet(&strs(&args));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    assert_eq!(cfg["schedule"]["lr"].as_float(), Some(0.1), "the new run's configuration: {cfg}");
}

/// kill -9 at any instant leaves the previous checkpoint loadable; Ctrl-C
/// (SIGINT) writes a resumable one and exits with 130.
#[test]
fn kill_and_interrupt_leave_loadable_checkpoints() {
    let data = data_dir("kill");
    let run = tmp("kill");
    let args = small_run(&data, &run, &["--iters", "100000", "--ckpt-every", "1"]);
    let args = strs(&args);
    let spawn = |a: &[&str]| Command::new(env!("CARGO_BIN_EXE_resnet")).args(a).spawn().unwrap();
    let mut child = spawn(&args);
    let last = run.join("last.safetensors");
    for delay_ms in [700u64, 37, 113, 251, 5, 61] {
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if last.exists() {
            let ck = resnet::weights::checkpoint::read(&last).expect("last.safetensors loadable after kill -9");
            assert!(ck.meta.iteration > 0);
        }
        child = spawn(&["train", "--resume", run.to_str().unwrap(), "--quiet"]);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = resnet::weights::checkpoint::read(&last).unwrap().meta.iteration;
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "Ctrl-C saves, then exits 128 + SIGINT: {status:?}");
    let after = resnet::weights::checkpoint::read(&last).unwrap().meta.iteration;
    assert!(after >= before && after < 100_000);
}

#[test]
fn train_images_trains_on_a_subset_and_counts_epochs_over_it() {
    let data = data_dir("subset");
    let run = tmp("subset");
    // 32 of the 96 training images, batch 16: 2 iterations an epoch, 3 epochs = 6 iterations
    let args = small_run(&data, &run, &["--epochs", "3", "--train-images", "32", "--json"]);
    let o = resnet(&strs(&args));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(out["iteration"], 6, "{out}");
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(cfg.contains("train_images = 32"), "{cfg}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let tests: Vec<&str> = metrics.lines().filter(|l| l.contains("\"split\":\"test\"")).collect();
    assert_eq!(tests.len(), 3, "one test evaluation per epoch of 32 images:\n{metrics}");
    // evaluations every 4 iterations instead of every epoch (2 iterations), and after the last
    let run4 = tmp("subset-eval-every");
    let _ = std::fs::remove_dir_all(&run4);
    train(&strs(&small_run(&data, &run4, &["--iters", "10", "--train-images", "32", "--eval-every", "4"])));
    let metrics = std::fs::read_to_string(run4.join("metrics.jsonl")).unwrap();
    let at: Vec<u64> = metrics
        .lines()
        .filter(|l| l.contains("\"split\":\"test\""))
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["iter"].as_u64().unwrap())
        .collect();
    assert_eq!(at, [4, 8, 10], "{metrics}");
    let _ = std::fs::remove_dir_all(&run4);
    let o = resnet(&strs(&small_run(&data, &run4, &["--iters", "10", "--eval-every", "0"])));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--eval-every must be at least 1") && !run4.exists(), "{err}");
    // more images than the training set has: refused before anything is written
    let run2 = tmp("subset-too-many");
    let _ = std::fs::remove_dir_all(&run2);
    let o = resnet(&strs(&small_run(&data, &run2, &["--iters", "2", "--train-images", "97"])));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("--train-images 97") && err.contains("96 images"), "{err}");
    assert!(!run2.exists());
    let o = resnet(&strs(&small_run(&data, &run2, &["--iters", "2", "--val", "16", "--train-images", "81"])));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("80 images left after --val 16"), "{err}");
    let o = resnet(&strs(&small_run(&data, &run2, &["--iters", "2", "--val", "96", "--train-images", "10"])));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--val 96 leaves no training images (the training set has 96)"), "{err}");
    // all of them is the plain run (nothing recorded, so it matches runs made without the flag)
    let o = resnet(&strs(&small_run(&data, &run2, &["--iters", "1", "--train-images", "96"])));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!std::fs::read_to_string(run2.join("config.toml")).unwrap().contains("train_images"));
    // stopped and resumed, the subset run ends bit for bit where the straight one did
    let run3 = tmp("subset-resumed");
    let _ = std::fs::remove_dir_all(&run3);
    train(&strs(&small_run(&data, &run3, &["--epochs", "3", "--train-images", "32", "--stop-at", "3"])));
    let o = resnet(&["train", "--resume", run3.to_str().unwrap(), "--train-images", "32"]);
    assert!(!o.status.success(), "a resume takes its recipe from the run");
    train(&["train", "--resume", run3.to_str().unwrap(), "--quiet"]);
    assert_eq!(assert_same_last_checkpoint(&run, &run3), 6);
}
