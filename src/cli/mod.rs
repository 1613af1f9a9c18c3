//! The `resnet` command line: clap subcommands, parse then validate, then
//! call the library. One file per subcommand.

mod arch_args;
mod bench;
mod bench_det;
mod convert;
mod data;
mod detect;
mod eval;
mod eval_det;
mod export;
mod plot;
mod predict;
mod reproduce;
mod responses;
mod signals;
mod summary;
mod train;
mod train_det;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "resnet",
    version,
    about = "Deep residual networks (He et al. 2015) on a dedicated CPU engine",
    long_about = "Build, inspect and benchmark every network of \"Deep Residual Learning for Image \
Recognition\": the CIFAR family resnetD / plainD (D = 6n+2: 20, 32, 44, 56, 110, 1202, ...) and the \
ImageNet family resnet18/34/50/101/152 and plain18/34/50/101/152, with shortcut options A/B/C.",
    after_help = "Examples:\n  resnet summary --arch resnet20\n  resnet summary --arch resnet50 --json\n  \
resnet bench --arch resnet20 --batch 128 --steps 20\n  resnet bench --arch resnet50 --stride-in 3x3 --mode infer --batch 16 --steps 5"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Per-stage table of a network: output sizes, blocks, parameters, multiply-adds
    Summary(summary::Args),
    /// Time training or inference steps on random data (img/s, GFLOP/s, peak memory)
    Bench(bench::Args),
    /// Time a Faster R-CNN C4 detector's inference or training steps on a synthetic image
    BenchDet(bench_det::Args),
    /// Train with the paper's recipes (CIFAR data, image folders) or fine-tune; stop and resume at will
    Train(train::Args),
    /// Download the official data sets (CIFAR-10/100, MNIST, Fashion-MNIST), verifying their MD5s
    Data(data::Args),
    /// Classify JPEG/PNG images with our checkpoints or torchvision weights (.pth, .safetensors)
    Predict(predict::Args),
    /// Convert weights: torchvision .pth/.safetensors into our checkpoint, ours into torchvision naming
    Convert(convert::Args),
    /// Export a network to ONNX (eval mode, opset 13; BN kept or folded)
    Export(export::Args),
    /// Top-1 / top-5 error under the paper's test protocols (single, 10-crop, multi-scale), one model or an ensemble
    Eval(eval::Args),
    /// Train a Faster R-CNN detector (C4, the paper's Sec. 4.3) on COCO or PASCAL VOC data; stop and resume at will
    TrainDet(train_det::Args),
    /// Detect objects in JPEG/PNG images with a detector checkpoint: text, JSON, drawn PNGs
    Detect(detect::Args),
    /// Judge detections (COCO results JSON) against COCO or PASCAL VOC ground truth: pycocotools' 12 numbers or VOC mAP
    EvalDet(eval_det::Args),
    /// Training curves of runs (error vs iterations) in the style of the paper's Figures 1, 4 and 6
    Plot(plot::Args),
    /// Figure 7: standard deviations of every 3x3 layer's response over a test set, CSV and figures
    Responses(responses::Args),
    /// Reproduce the paper's CIFAR experiments from one command (degradation: Figure 6/7; cifar10: Table 6)
    Reproduce(reproduce::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Summary(a) => summary::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchDet(a) => bench_det::run(a),
        Command::Train(a) => train::run(a),
        Command::Data(a) => data::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Export(a) => export::run(a),
        Command::Eval(a) => eval::run(a),
        Command::TrainDet(a) => train_det::run(a),
        Command::Detect(a) => detect::run(a),
        Command::EvalDet(a) => eval_det::run(a),
        Command::Plot(a) => plot::run(a),
        Command::Responses(a) => responses::run(a),
        Command::Reproduce(a) => reproduce::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // stopped on a signal after saving (the command has said so): 128 + the signal
        Err(ref e) if let Some(stop) = e.downcast_ref::<signals::Interrupted>() => ExitCode::from(stop.exit_code()),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
