//! `resnet eval-det`: detections in COCO's results format judged against COCO or VOC ground truth.

use crate::data::coco;
use crate::detect::evaluate::{self, Protocol};
use anyhow::Result;
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
resnet eval-det --gt data/fdet --split val --results dets.json --protocol voc07 --json\n\n\
Results are COCO's format, [{\"image_id\", \"category_id\", \"bbox\": [x, y, w, h], \"score\"}], for both kinds of \
ground truth (a VOC image's id is its file id's digits: 000005 -> 5). Boxes of the ground truth partly outside their \
image are clipped, wholly outside dropped (both counted on stderr); boxes of no area are refused. A result naming \
an image or category the ground truth lacks is refused. The coco numbers are fractions, as pycocotools prints them; \
-1 means nothing to average (e.g. no large objects). The image files are not read: `resnet data check-det` checks \
that each is present and of its annotated size."
)]
pub struct Args {
    /// Ground truth: a COCO instances JSON file, or a PASCAL VOC directory (Annotations/, ImageSets/Main/)
    #[arg(long)]
    gt: PathBuf,
    /// Detections, COCO results JSON
    #[arg(long)]
    results: PathBuf,
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
    let gt = evaluate::open_ground_truth(&a.gt, a.split.as_deref())?;
    let c = gt.cleaning;
    if c.clipped + c.dropped_outside > 0 {
        eprintln!(
            "{}: {} boxes partly outside their image clipped, {} wholly outside dropped",
            a.gt.display(),
            c.clipped,
            c.dropped_outside
        );
    }
    let dets = coco::read_results(&a.results, &gt)?;
    let e = evaluate::evaluate(&gt, &dets, protocol);
    if a.json {
        println!("{}", e.to_json());
    } else {
        print!("{}", e.render());
    }
    Ok(())
}
