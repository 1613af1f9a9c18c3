//! `resnet eval-det`: detections in COCO's results format judged against COCO or VOC ground truth,
//! or a detector checkpoint run on a data set's split and judged the same way.

use crate::data::coco;
use crate::detect::checkpoint;
use crate::detect::data::DetSplit;
use crate::detect::evaluate::{self, Protocol};
use crate::detect::train::detect_split;
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProtocolArg {
    /// pycocotools' 12 numbers (AP@[.5:.95], AP50, AP75, AP small/medium/large, AR@1/10/100, AR small/medium/large)
    Coco,
    /// PASCAL VOC2007: 11-point interpolated AP per class at IoU > 0.5, difficult objects ignored
    Voc07,
    /// PASCAL VOC2010+: area under the precision envelope per class at IoU > 0.5
    Voc,
}

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  resnet eval-det --gt data/fdet/annotations/instances_val.json --results dets.json\n  \
resnet eval-det --gt data/fdet --split val --results dets.json --protocol voc07 --json\n  \
resnet eval-det --weights runs/fdet/best.safetensors --data data/fdet --split val --save-results dets.json\n\n\
With --weights and --data the detector runs on every image of the split (COCO or VOC layout, as train-det reads \
it; its classes must be the checkpoint's) and its detections are judged; --save-results keeps them.\n\n\
Results are COCO's format, [{\"image_id\", \"category_id\", \"bbox\": [x, y, w, h], \"score\"}], for both kinds of \
ground truth (a VOC image's id is its file id's digits: 000005 -> 5). Boxes of the ground truth partly outside their \
image are clipped, wholly outside dropped (both counted on stderr); boxes of no area are refused. A result naming \
an image or category the ground truth lacks is refused. The coco numbers are fractions, as pycocotools prints them; \
-1 means nothing to average (e.g. no large objects). The image files are not read: `resnet data check-det` checks \
that each is present and of its annotated size."
)]
pub struct Args {
    /// Ground truth: a COCO instances JSON file, or a PASCAL VOC directory (Annotations/, ImageSets/Main/)
    #[arg(long, required_unless_present = "weights", conflicts_with_all = ["weights", "data"])]
    gt: Option<PathBuf>,
    /// Detections, COCO results JSON
    #[arg(long, required_unless_present = "weights", conflicts_with_all = ["weights", "data"])]
    results: Option<PathBuf>,
    /// A detector checkpoint to run on --data's split instead of reading --results
    #[arg(long, short = 'w', requires = "data")]
    weights: Option<PathBuf>,
    /// With --weights: a COCO or VOC data set directory (default split val)
    #[arg(long, requires = "weights")]
    data: Option<PathBuf>,
    /// With --weights: write the detections (COCO results JSON) here too
    #[arg(long, requires = "weights")]
    save_results: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "coco")]
    protocol: ProtocolArg,
    /// The VOC split (ImageSets/Main/SPLIT.txt; default test, or val where there is no test.txt)
    #[arg(long)]
    split: Option<String>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let protocol = match a.protocol {
        ProtocolArg::Coco => Protocol::Coco,
        ProtocolArg::Voc07 => Protocol::Voc07,
        ProtocolArg::Voc => Protocol::Voc,
    };
    let (gt, dets, source) = match (&a.weights, &a.data, &a.gt, &a.results) {
        (Some(w), Some(d), _, _) => {
            let split = DetSplit::open(d, a.split.as_deref().unwrap_or("val"), true)?;
            if let Some(out) = &a.save_results {
                crate::paths::refuse_any_same_file(
                    &[w.clone(), split.source.clone()],
                    std::slice::from_ref(out),
                    "--save-results and an input",
                )?;
            }
            let ck = checkpoint::read(w)?;
            ck.check_classes(&split.class_names())?;
            let mut det = ck.build(false)?;
            let bar = super::detect::images_bar(split.gt.images.len());
            let dets = detect_split(&mut det, &ck.meta.transform, &split, 0.0, &mut |i| {
                if let Some(pb) = &bar {
                    pb.set_position(i as u64)
                }
            })?;
            if let Some(pb) = bar {
                pb.finish_and_clear();
            }
            if let Some(out) = &a.save_results {
                crate::weights::checkpoint::write_atomic(out, serde_json::to_string(&dets)?.as_bytes())?;
            }
            (split.gt, dets, split.source)
        }
        (_, _, Some(g), Some(r)) => {
            let gt = evaluate::open_ground_truth(g, a.split.as_deref())?;
            let dets = coco::read_results(r, &gt)?;
            (gt, dets, g.clone())
        }
        _ => bail!("give --gt and --results, or --weights and --data"),
    };
    let c = gt.cleaning;
    if c.clipped + c.dropped_outside > 0 {
        eprintln!(
            "{}: {} boxes partly outside their image clipped, {} wholly outside dropped",
            source.display(),
            c.clipped,
            c.dropped_outside
        );
    }
    let e = evaluate::evaluate(&gt, &dets, protocol);
    if a.json {
        println!("{}", e.to_json());
    } else {
        print!("{}", e.render());
    }
    Ok(())
}
