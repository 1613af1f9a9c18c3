//! `resnet convert`: torchvision weights into our checkpoint, ours into torchvision's naming.

use crate::data::augment::Preprocess;
use crate::data::image::ImagenetEval;
use crate::weights;
use crate::weights::checkpoint::{self, Meta};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
resnet convert resnet18-f37072fd.pth resnet18.safetensors       # torchvision -> our checkpoint\n  \
resnet convert runs/r20/best.safetensors r20-torchvision.safetensors   # ours -> torchvision names\n\n\
The direction follows the input: our checkpoints (safetensors with resnet metadata) become \
plain torchvision-named safetensors (load with safetensors.torch.load_file and \
model.load_state_dict); anything else is read as a torchvision state_dict (.pth/.pt zip or \
legacy, or .safetensors; wrapped or prefixed is fine), its architecture inferred from the keys, \
and written as our checkpoint with the ImageNet evaluation transform recorded.")]
pub struct Args {
    /// Input weights
    input: PathBuf,
    /// Output .safetensors file
    output: PathBuf,
    /// Architecture of a torchvision input, when the keys do not tell (e.g. plain18)
    #[arg(long, short = 'a')]
    arch: Option<String>,
    #[command(flatten)]
    arch_opts: super::arch_args::ArchOpts,
}

pub fn run(a: Args) -> Result<()> {
    crate::paths::refuse_same_file(&a.input, &a.output, "input and output")?;
    let bytes = crate::paths::read_regular(&a.input)?;
    // the success line is printed once the file is in place (write_atomic: temporary file, fsync, rename)
    let (out, done) = if checkpoint::is_checkpoint(&bytes) {
        let ck = checkpoint::parse(&a.input, &bytes)?;
        let sd = ck.weights;
        let mut md = HashMap::new();
        md.insert("arch".to_string(), ck.meta.arch.name.clone());
        md.insert("classes".to_string(), serde_json::to_string(&ck.meta.class_names)?);
        md.insert("source".to_string(), "resnet checkpoint".to_string());
        let done = format!(
            "{}: {} as torchvision-named safetensors ({} tensors)",
            a.output.display(),
            ck.meta.arch.name,
            sd.tensors.len()
        );
        (weights::safetensors_bytes(&sd, Some(md))?, done)
    } else {
        let name = a.input.display().to_string();
        let mut sd = weights::parse_state_dict(&name, &bytes)?;
        let prefix = sd.strip_prefix();
        let spec =
            weights::infer::infer_arch(&sd, a.arch.as_deref(), &a.arch_opts.options()).with_context(|| name.clone())?;
        // the standard transform, its sizes scaled with --input-size (224: resize 256)
        let crop = a.arch_opts.input_size.unwrap_or(224);
        let t = ImagenetEval { crop, resize: (crop * 256 + 112) / 224, ..Default::default() };
        // check the fit key by key on a small build (eval, batch 1)
        let mut net = crate::net::Net::new(&spec, 1, t.crop, t.crop, false, 0)?;
        weights::load_into(&mut net, &sd)
            .map_err(|m| anyhow::anyhow!("{name}: the weights do not fit {}:\n{m}", spec.name))?;
        let c = spec.in_channels;
        let pre = Preprocess {
            src: (t.crop, t.crop, c),
            size: t.crop,
            mean: vec![0.0; t.crop * t.crop * c],
            crop_pad: 0,
            flip: false,
        };
        let meta = Meta {
            eval: Some(t.clone()),
            ..Meta::new(spec.clone(), crate::predict::default_labels(spec.classes), (t.crop, t.crop, c), t.crop)
        };
        let done = format!(
            "{}: {} ({} classes{}) as a resnet checkpoint",
            a.output.display(),
            spec.name,
            spec.classes,
            if prefix.is_empty() { String::new() } else { format!(", prefix '{prefix}' removed") }
        );
        (checkpoint::to_bytes(&net, None, &pre, &meta)?, done)
    };
    checkpoint::write_atomic(&a.output, &out).with_context(|| format!("writing {}", a.output.display()))?;
    println!("{done}");
    Ok(())
}
