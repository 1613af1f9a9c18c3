//! `resnet detect`: a detector checkpoint on JPEG/PNG images: text or JSON, drawn PNGs.

use crate::detect::run::{self, Detector};
use anyhow::{Context, Result, bail};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
resnet detect --weights runs/fdet/last.safetensors photo.jpg\n  \
resnet detect --weights runs/fdet/last.safetensors --json --score-threshold 0.5 a.jpg b.png > dets.json\n  \
resnet detect --weights runs/fdet/last.safetensors --draw drawn/ images/*.jpg\n\n\
The checkpoint (written by train-det) carries the backbone, classes, preset and image transform: each image \
is resized so its shorter side is the transform's min size (the longer at most its max size), normalised, \
and the boxes are reported in pixels of the original image, [x1, y1, x2, y2]. --json prints an array of \
{\"image\", \"detections\": [{\"box\", \"label\", \"class_id\", \"score\"}]}; --draw writes OUT_DIR/<image \
name>.png with labelled boxes (an input is never overwritten).")]
pub struct Args {
    /// A detector checkpoint (train-det's RUN/last.safetensors)
    #[arg(long, short = 'w')]
    weights: PathBuf,
    /// Print a JSON array, one object per image
    #[arg(long)]
    json: bool,
    /// Write each image with its labelled boxes as OUT_DIR/<name>.png
    #[arg(long, value_name = "OUT_DIR")]
    draw: Option<PathBuf>,
    /// Report detections scoring at least this (the checkpoint's own threshold applies first)
    #[arg(long, default_value_t = 0.0)]
    score_threshold: f32,
    /// JPEG or PNG files
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if !(0.0..=1.0).contains(&a.score_threshold) {
        bail!("--score-threshold must be within 0..=1, not {}", a.score_threshold);
    }
    run::check_inputs(&a.images)?;
    let outputs = match &a.draw {
        Some(dir) => {
            crate::paths::refuse_any_same_file(&a.images, &[dir], "an input image and --draw")?;
            let outs = run::draw_paths(&a.images, dir);
            crate::paths::refuse_any_same_file(std::slice::from_ref(&a.weights), &outs, "--weights and a drawing")?;
            run::check_outputs(&a.images, dir, &outs)?;
            Some(outs)
        }
        None => None,
    };
    let mut det = Detector::load(&a.weights)?;
    let bar = images_bar(a.images.len());
    let mut json = vec![];
    for (i, path) in a.images.iter().enumerate() {
        let (img, r) = det.detect_file(path, a.score_threshold)?;
        if let Some(outs) = &outputs {
            run::write_png(&outs[i], &run::draw(&img, &r.detections)?)?;
        }
        if a.json {
            json.push(r.to_json());
        } else {
            let mut text = format!(
                "{}: {} detection{}\n",
                path.display(),
                r.detections.len(),
                if r.detections.len() == 1 { "" } else { "s" }
            );
            for d in &r.detections {
                let [x1, y1, x2, y2] = d.bbox;
                text += &format!("  {:<16} {:.3}  [{x1:.1}, {y1:.1}, {x2:.1}, {y2:.1}]\n", d.label, d.score);
            }
            match &bar {
                Some(pb) => pb.suspend(|| print_out(&text))?,
                None => print_out(&text)?,
            }
        }
        if let Some(pb) = &bar {
            pb.inc(1);
        }
    }
    if let Some(pb) = bar {
        pb.finish_and_clear();
    }
    if a.json {
        print_out(&(serde_json::to_string_pretty(&json)? + "\n"))?;
    }
    if let Some(dir) = &a.draw {
        eprintln!("drawn: {} image{} in {}", a.images.len(), if a.images.len() == 1 { "" } else { "s" }, dir.display());
    }
    Ok(())
}

/// A bar of images done on a terminal, for more than one image (None otherwise).
pub(super) fn images_bar(n: usize) -> Option<indicatif::ProgressBar> {
    (n > 1 && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(n as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} images  [{elapsed_precise} < {eta_precise}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    })
}

/// Write to stdout: an error (a closed pipe, say), not a panic, when it cannot be written.
fn print_out(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).and_then(|()| out.flush()).context("writing to stdout")
}
