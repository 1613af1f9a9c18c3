//! A complete training run through the library alone — no command line: a request resolved into
//! a configuration, a run started, progress reported through a callback, the run cancelled
//! half-way (as a signal handler or a GUI would) and then resumed to the end.
//!
//!     cargo run --release --example train_api [-- DATA_DIR]
//!
//! DATA_DIR: Fashion-MNIST / MNIST IDX files or CIFAR-10 (e.g. data/fashion-mnist); without it, a
//! small generated MNIST-style set (brightness encodes the label) in a temporary directory.

use resnet::train::{self, Event, TrainRequest};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

// the binaries' allocator: large blocks on a cache line (resnet::alloc)
#[global_allocator]
static ALLOC: resnet::alloc::LineAligned = resnet::alloc::LineAligned;

fn main() -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("resnet-train-api-{}", std::process::id()));
    let data = match std::env::args().nth(1) {
        Some(d) => PathBuf::from(d),
        None => generated(&scratch.join("data"))?,
    };
    let out = scratch.join("run");

    // every default of the paper's CIFAR recipe, but a short run
    let request =
        TrainRequest { iters: Some(40), batch: Some(32), log_every: Some(10), ..TrainRequest::new("resnet8", &data) };
    let config = request.resolve()?;
    println!(
        "{} on {}: {} iterations, lr {}",
        config.arch.name,
        data.display(),
        config.schedule.iters,
        config.schedule.lr
    );

    let cancel = Arc::new(AtomicBool::new(false));
    let mut opened = train::start(&out, config)?;
    let flag = cancel.clone();
    let first = opened.trainer.run(None, &cancel, &mut |e| {
        report(&e);
        if let Event::Step { iteration: 20 } = e {
            flag.store(true, Ordering::Relaxed); // stop after this iteration, with a checkpoint
        }
    })?;
    println!("cancelled at iteration {} (interrupted: {})", first.iteration, first.interrupted);
    drop(opened); // lets go of the run directory

    let mut again = train::resume(&out, &Default::default())?;
    let done = again.trainer.run(None, &AtomicBool::new(false), &mut |e| report(&e))?;
    println!(
        "finished: {} at iteration {}, test error {:.2}%",
        done.finished,
        done.iteration,
        done.test_err.unwrap_or(f64::NAN)
    );
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn report(e: &Event) {
    match e {
        Event::Window(r) => println!("  iter {:>3}: loss {:.3}, train error {:.1}%", r.iter, r.train_loss, r.train_err),
        Event::Evaluated(r) => println!("  iter {:>3}: {} error {:.2}%", r.iter, r.split, r.err),
        _ => {}
    }
}

/// 512 training and 128 test 28x28 images whose brightness encodes the label, as IDX files.
fn generated(dir: &Path) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for (prefix, n) in [("train", 512usize), ("t10k", 128)] {
        let mut images = vec![0, 0, 8, 3];
        let mut labels = vec![0, 0, 8, 1];
        for d in [n as u32, 28, 28] {
            images.extend(d.to_be_bytes());
        }
        labels.extend((n as u32).to_be_bytes());
        for i in 0..n {
            let label = (i * 7 % 10) as u8;
            images.extend((0..784).map(|p| ((label as usize * 25 + (p * 31 + i * 17) % 20) % 256) as u8));
            labels.push(label);
        }
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images)?;
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels)?;
    }
    Ok(dir.to_path_buf())
}
