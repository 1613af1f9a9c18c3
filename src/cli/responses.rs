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

/// Legend names: the network, with the file's parent directory where two models share a name.
fn labels(models: &[Classifier], paths: &[PathBuf]) -> Vec<String> {
    let names: Vec<String> = models.iter().map(|m| m.net.spec().name.clone()).collect();
    names
        .iter()
        .zip(paths)
        .map(|(n, p)| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                let dir = p.parent().and_then(|d| d.file_name()).map_or(String::new(), |d| d.to_string_lossy().into_owned());
                format!("{n} ({dir})")
            } else {
                n.clone()
            }
        })
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let opts = LoadOptions { batch: Some(50), ..Default::default() };
    let mut models = a.weights.iter().map(|w| Classifier::load(w, &opts)).collect::<Result<Vec<_>>>()?;
    let names = labels(&models, &a.weights);
    let mut csv = String::from("model,index,layer,std\n");
    let (mut ordered, mut sorted) = (vec![], vec![]);
    for (m, name) in models.iter_mut().zip(&names) {
        let r = responses::measure(m, &a.data, a.limit, true)?;
        for (i, l) in r.iter().enumerate() {
            writeln!(csv, "{name},{},{},{:.6}", i + 1, l.name, l.std())?;
        }
        let stds: Vec<f64> = r.iter().map(|l| l.std()).collect();
        ordered.push((name.clone(), stds.iter().enumerate().map(|(i, &s)| ((i + 1) as f64, s)).collect::<Vec<_>>()));
        let mut desc = stds.clone();
        desc.sort_by(|x, y| y.total_cmp(x));
        sorted.push((name.clone(), desc.iter().enumerate().map(|(i, &s)| ((i + 1) as f64, s)).collect::<Vec<_>>()));
        println!("{name}: {} layers, std from {:.3} to {:.3}", r.len(), desc.last().unwrap_or(&0.0), desc[0]);
    }
    crate::train::checkpoint::write_atomic(&a.out.join("responses.csv"), csv.as_bytes())?;
    for (series, xlabel, file, title) in [
        (&ordered, "layer index (original)", "responses.png", "Layer responses"),
        (&sorted, "layer index (sorted by magnitude)", "responses-sorted.png", "Layer responses, sorted"),
    ] {
        let fig = plot::Figure::Lines { series, xlabel, ylabel: "std" };
        plot::render_figure(&fig, &a.out.join(file), title, (900, 420))?;
    }
    println!("{}: responses.csv, responses.png, responses-sorted.png", a.out.display());
    Ok(())
}
