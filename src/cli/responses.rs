//! `resnet responses`: Figure 7, the standard deviations of the layer responses.

use crate::analysis::{plot, responses};
use crate::predict::{Classifier, LoadOptions};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
resnet responses --weights runs/plain20/last.safetensors --weights runs/resnet20/last.safetensors --data data/fashion-mnist --out fig7\n\n\
For every 3x3 convolution, the standard deviation of its eval-mode BN output (before ReLU and addition) \
over all values of the test set. Writes OUT/responses.csv (model, index, layer, std), OUT/responses.png \
(layers in network order) and OUT/responses-sorted.png (each model's stds in descending order), as in \
the paper's Figure 7.")]
pub struct Args {
    /// Weights (repeat to compare models)
    #[arg(long, short = 'w', required = true)]
    weights: Vec<PathBuf>,
    /// A data set (its test split) or an image folder
    #[arg(long)]
    data: PathBuf,
    /// Output directory
    #[arg(long)]
    out: PathBuf,
    /// At most this many test images
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
}

pub fn run(a: Args) -> Result<()> {
    let outputs = ["responses.csv", "responses.png", "responses-sorted.png"].map(|f| a.out.join(f));
    crate::paths::refuse_any_same_file(&a.weights, &outputs, "--weights and a file written to --out")?;
    crate::paths::refuse_any_same_file(&[&a.data], &outputs, "--data and a file written to --out")?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let opts = LoadOptions { batch: Some(50), ..Default::default() };
    let mut models = a.weights.iter().map(|w| Classifier::load(w, &opts)).collect::<Result<Vec<_>>>()?;
    let parents: Vec<&std::path::Path> = a.weights.iter().map(|w| w.parent().unwrap_or(w.as_path())).collect();
    let names = plot::disambiguate(&models.iter().map(|m| m.net.spec().name.clone()).collect::<Vec<_>>(), &parents);
    let mut csv = String::from("model,index,layer,std\n");
    let mut all = vec![];
    for (m, name) in models.iter_mut().zip(&names) {
        let r = responses::measure(m, &a.data, a.limit, true)?;
        for (i, l) in r.iter().enumerate() {
            writeln!(csv, "\"{}\",{},{},{:.6}", name.replace('"', "'"), i + 1, l.name, l.std())?;
        }
        let (lo, hi) = r.iter().map(|l| l.std()).fold((f64::MAX, 0f64), |(a, b), s| (a.min(s), b.max(s)));
        println!("{name}: {} layers, std from {lo:.3} to {hi:.3}", r.len());
        all.push((name.clone(), r));
    }
    crate::weights::checkpoint::write_atomic(&a.out.join("responses.csv"), csv.as_bytes())?;
    let figs = responses::figures(&all, &a.out, "responses")?;
    println!("{}: responses.csv, {}", a.out.display(), figs.join(", "));
    Ok(())
}
