//! `resnet data fetch`: download the official data sets, verifying their MD5s.
//! `resnet data folder`: write images of a data set as an image folder (PNG / JPEG files).
//! `resnet data fashion-det`: a synthetic detection set of real images (library: `data::fashion_det`).
//! `resnet data check-det`: a detection set's image files against its annotations (library:
//! `detect::evaluate::check_ground_truth_images`).

use crate::data::CifarForm;
use crate::data::Format;
use crate::data::fetch::{self, Options};
use anyhow::{Result, bail};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(clap::Subcommand)]
enum DataCommand {
    /// Download an official data set into a directory, verifying each file's MD5
    #[command(
        long_about = "Download an official data set into a directory, verifying each file's MD5 while it streams to a \
    temporary file, which is renamed into place only when the checksum matches. A file already there with the right \
    MD5 is kept (\"ok (cached)\"). CIFAR archives are kept as .tar.gz, which `resnet train --data` reads directly; \
    MNIST and Fashion-MNIST stay four IDX .gz files.\n\nSources (the MD5s are those torchvision and the CIFAR page \
    publish): CIFAR-10/100 from http://www.cs.toronto.edu/~kriz/, MNIST from the ossci-datasets S3 copy (then \
    yann.lecun.com), Fashion-MNIST from its S3 website host. A default build fetches plain http:// URLs only; https \
    needs a build with the `tls` feature. Proxies come from HTTP_PROXY / NO_PROXY.",
        after_help = "Examples:\n  resnet data fetch cifar10                      # data/cifar10/cifar-10-binary.tar.gz\n  \
    resnet data fetch fashion-mnist --dir data/fmnist\n  \
    resnet data fetch cifar100 --form python       # the pickle batches (resnet train reads both forms)\n  \
    resnet data fetch mnist --mirror http://proxy.example:8080/mnist\n  \
    resnet data fetch mnist --mirror http://127.0.0.1:8000 --md5 train-images-idx3-ubyte.gz=0123456789abcdef0123456789abcdef"
    )]
    Fetch(FetchArgs),
    /// Write images of a data set (CIFAR, MNIST-style) as an image folder: OUT/train/<class>/*.png and OUT/val/<class>/*.png
    #[command(
        after_help = "Examples:\n  resnet data folder --data data/fashion-mnist --out data/fm-folder --train 200 --val 50\n  \
    resnet data folder --data data/fashion-mnist --out data/fm-jpeg --jpeg --classes 4 --scale 3\n\n\
The training images come from the data set's training split, the validation images from its test split, \
the first N of each class in file order. Class folder names are the data set's class names."
    )]
    Folder(FolderArgs),
    /// Measure how fast an image folder's images are decoded and augmented (the ImageNet recipe), per worker
    #[command(after_help = "Examples:\n  resnet data bench --data data/fm-jpeg --input-size 64\n  \
    resnet data bench --data ~/imagenet --images 500 --workers 2 --arch resnet50\n\n\
With --arch, also times training steps of that network at the same input size, and says which of the \
two (loader or network) bounds training speed on this machine.")]
    Bench(BenchArgs),
    /// Make a synthetic detection data set from real images (Fashion-MNIST items on real photos), as COCO JSON and a VOC tree
    #[command(
        long_about = "Make a detection data set from real images: each canvas is a random crop of a real photo with 0-4 \
Fashion-MNIST items (training items from its training split, validation items from its test split) resized to 16-64 px \
and pasted with alpha = intensity in a random tint, sometimes heavily overlapping. Boxes are the items' tight pixel \
bounds; items with both box sides under 24 px are marked difficult. Written as a PASCAL VOC tree (JPEGImages/, \
Annotations/, ImageSets/Main/train.txt and val.txt, classes.txt) and COCO instances JSON (annotations/instances_train.json, \
instances_val.json). The same --seed writes the same bytes.\n\nBackground photos: --backgrounds DIR (any folder of JPEG/PNG \
photos), by default .cache/photos, where `bash scripts/fetch-pypi-files.sh photos` puts the sample photos of the \
scikit-image and matplotlib wheels from PyPI (chelsea, coffee, astronaut, grace_hopper).",
        after_help = "Examples:\n  resnet data fashion-det --data data/fashion-mnist --out data/fdet\n  \
resnet data fashion-det --data data/fashion-mnist --out data/fdet-small --train 200 --val 50 --size 96 --seed 3\n  \
resnet eval-det --gt data/fdet/annotations/instances_val.json --results dets.json"
    )]
    FashionDet(FashionDetArgs),
    /// Check a detection data set (COCO JSON or a VOC tree): annotations readable, every image file present and of the annotated size
    #[command(after_help = "Examples:\n  resnet data check-det --gt data/fdet/annotations/instances_val.json\n  \
resnet data check-det --gt data/fdet --split train\n  \
resnet data check-det --gt ~/coco/annotations/instances_val2017.json --images ~/coco/val2017\n\n\
Reads the annotations as `resnet eval-det` does, then the header of every image they name: a missing image, one \
that is not a regular file or not a JPEG/PNG, and one of another width or height than its annotation says are \
reported naming the image file and the annotation (exit code 2). Boxes partly outside their image are clipped, \
wholly outside dropped, both counted.")]
    CheckDet(CheckDetArgs),
}

#[derive(clap::Args)]
struct CheckDetArgs {
    /// Ground truth: a COCO instances JSON file, or a PASCAL VOC directory (Annotations/, ImageSets/Main/)
    #[arg(long)]
    gt: PathBuf,
    /// The VOC split (ImageSets/Main/SPLIT.txt; default test, or val where there is no test.txt)
    #[arg(long)]
    split: Option<String>,
    /// The image folder (default: a VOC tree's JPEGImages/; for COCO JSON, the JPEGImages/ beside its folder)
    #[arg(long)]
    images: Option<PathBuf>,
}

#[derive(clap::Args)]
struct FashionDetArgs {
    /// Fashion-MNIST (the four IDX files of `resnet data fetch fashion-mnist`)
    #[arg(long)]
    data: PathBuf,
    /// Output directory (must not exist or be empty)
    #[arg(long)]
    out: PathBuf,
    /// A folder of photos to crop backgrounds from (default: .cache/photos, from scripts/fetch-pypi-files.sh)
    #[arg(long)]
    backgrounds: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training canvases
    #[arg(long, default_value_t = 1000)]
    train: usize,
    /// Validation canvases
    #[arg(long, default_value_t = 200)]
    val: usize,
    /// Canvas side in pixels
    #[arg(long, default_value_t = 128)]
    size: u32,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// An image folder
    #[arg(long)]
    data: PathBuf,
    /// Crop side (the network input); the scale range and evaluation size follow the paper's ratios
    #[arg(long, default_value_t = 224)]
    input_size: usize,
    /// Images to decode and augment (the first of a seeded permutation)
    #[arg(long, default_value_t = 200)]
    images: usize,
    /// Decoding threads for the parallel measurement
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Also time training steps of this network (batch 32) at the same input size
    #[arg(long)]
    arch: Option<String>,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct FolderArgs {
    /// An in-memory data set (what `resnet train --data` reads)
    #[arg(long)]
    data: PathBuf,
    /// Output directory (must not exist or be empty)
    #[arg(long)]
    out: PathBuf,
    /// Training images per class
    #[arg(long, default_value_t = 100)]
    train: usize,
    /// Validation images per class
    #[arg(long, default_value_t = 20)]
    val: usize,
    /// Only the first N classes
    #[arg(long)]
    classes: Option<usize>,
    /// Write JPEG (quality 90) instead of PNG
    #[arg(long)]
    jpeg: bool,
    /// Upscale each image by this integer factor (nearest neighbour), e.g. 3 for 84x84 Fashion-MNIST
    #[arg(long, default_value_t = 1)]
    scale: u32,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NameArg {
    Cifar10,
    Cifar100,
    Mnist,
    FashionMnist,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormArg {
    /// The binary version, which `resnet train` reads (the default)
    Binary,
    /// The Python (pickle) version (read without running any pickle code)
    Python,
}

#[derive(clap::Args)]
struct FetchArgs {
    /// The data set
    #[arg(value_enum)]
    name: NameArg,
    /// Target directory (default: data/NAME)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Fetch every file as BASE_URL/<file name> instead of from the official hosts
    #[arg(long, value_name = "BASE_URL")]
    mirror: Option<String>,
    /// Which CIFAR version (CIFAR only)
    #[arg(long, value_enum)]
    form: Option<FormArg>,
    /// Expected MD5 for a mirror's own copies of FILE, replacing the official one (repeatable; needs --mirror)
    #[arg(long, value_name = "FILE=MD5", requires = "mirror", value_parser = parse_md5)]
    md5: Vec<(String, String)>,
}

fn parse_md5(s: &str) -> Result<(String, String), String> {
    fetch::parse_md5_override(s).map_err(|e| e.to_string())
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        DataCommand::Fetch(f) => run_fetch(f),
        DataCommand::Folder(f) => run_folder(f),
        DataCommand::Bench(b) => run_bench(b),
        DataCommand::FashionDet(f) => run_fashion_det(f),
        DataCommand::CheckDet(c) => run_check_det(c),
    }
}

fn run_check_det(a: CheckDetArgs) -> Result<()> {
    use crate::detect::evaluate::{check_ground_truth_images, open_ground_truth};
    let gt = open_ground_truth(&a.gt, a.split.as_deref())?;
    let (dir, n) = check_ground_truth_images(&a.gt, &gt, a.images.as_deref())?;
    let c = gt.cleaning;
    println!(
        "{}: {n} images in {}, all present and of their annotated size; {} categories, {} boxes ({} clipped to their \
image, {} wholly outside dropped)",
        a.gt.display(),
        dir.display(),
        gt.categories.len(),
        gt.annotations.len(),
        c.clipped,
        c.dropped_outside
    );
    Ok(())
}

fn run_fashion_det(a: FashionDetArgs) -> Result<()> {
    use crate::data::fashion_det::{FashionDetRequest, generate};
    let req = FashionDetRequest {
        backgrounds: a.backgrounds.unwrap_or_else(|| PathBuf::from(".cache/photos")),
        data: a.data,
        out: a.out,
        seed: a.seed,
        train: a.train,
        val: a.val,
        size: a.size,
    };
    let s = generate(&req)?;
    println!(
        "{}: {} images ({} train, {} val), {} objects ({} difficult), backgrounds from {} photos in {}",
        req.out.display(),
        s.images,
        req.train,
        req.val,
        s.objects,
        s.difficult,
        s.photos,
        req.backgrounds.display()
    );
    Ok(())
}

fn run_bench(a: BenchArgs) -> Result<()> {
    use crate::data::source::{FolderSource, Source, fill};
    use std::sync::Arc;
    use std::time::Instant;
    let f = crate::data::folder::load(&a.data)?.train;
    let n = a.images.min(f.len()).max(1);
    let mut recipe = crate::data::imagenet::ImagenetRecipe::for_size(a.input_size, 3);
    recipe.validate()?;
    recipe.mean = vec![0.0; a.input_size * a.input_size * 3];
    let src = FolderSource::new(f, Arc::new(recipe), false);
    let perm = crate::data::augment::permutation(src.len(), 0, 0);
    let idx: Vec<usize> = (0..n).map(|i| perm[i % perm.len()] as usize).collect();
    let mut x = vec![0.0f32; n * src.input_len()];
    let mut time = |workers: usize| -> Result<f64> {
        let t = Instant::now();
        fill(&src, workers, &mut x, n, |j, out| src.train_input(idx[j], 0, j as u64, out))?;
        Ok(n as f64 / t.elapsed().as_secs_f64())
    };
    time(1)?; // warm the file cache
    let one = time(1)?;
    let many = time(a.workers.max(1))?;
    let net = match &a.arch {
        Some(arch) => {
            let opts = crate::arch::ArchOptions::default();
            let spec = crate::arch::ArchSpec::parse(arch, &opts)?;
            let r = crate::bench::run(&spec, 32, a.input_size, crate::bench::Mode::Train, 3, 1, |_, _| {})?;
            Some(r.img_per_s)
        }
        None => None,
    };
    if a.json {
        let v = serde_json::json!({"images": n, "input_size": a.input_size, "img_per_s_one_worker": one,
            "workers": a.workers, "img_per_s_workers": many, "net_train_img_per_s": net});
        println!("{v}");
        return Ok(());
    }
    println!(
        "{}: {n} images decoded + augmented (scale {:?}, crop {}, flip, PCA lighting)",
        a.data.display(),
        src.recipe.scale,
        a.input_size
    );
    println!("  1 worker:  {one:8.1} img/s");
    println!("  {} workers: {many:8.1} img/s", a.workers);
    if let Some(net) = net {
        println!("  {} training at batch 32: {net:.1} img/s", a.arch.as_deref().unwrap_or(""));
        let verdict = if many >= net {
            "the network bounds training (the loader keeps ahead)"
        } else {
            "the loader bounds training: more --workers, smaller images on disk, or a faster disk"
        };
        println!("  -> {verdict}");
    }
    Ok(())
}

fn run_folder(a: FolderArgs) -> Result<()> {
    if a.scale == 0 {
        bail!("--scale must be at least 1");
    }
    crate::paths::refuse_same_file(&a.data, &a.out, "--data and --out")?;
    if a.out.exists() && std::fs::read_dir(&a.out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} exists and is not empty", a.out.display());
    }
    let (splits, _) = crate::data::load(&a.data, None)?;
    let k = a.classes.unwrap_or(splits.train.classes).min(splits.train.classes);
    let names: Vec<String> = (0..k)
        .map(|i| {
            let n = splits.train.class_names.get(i).cloned().unwrap_or_else(|| format!("class{i}"));
            // a file-system-safe folder name, index first to keep the class order
            let safe: String = n.chars().map(|c| if c.is_alphanumeric() || c == '-' { c } else { '_' }).collect();
            format!("{i:03}-{safe}")
        })
        .collect();
    let mut written = 0usize;
    for (split, d, per) in [("train", &splits.train, a.train), ("val", &splits.test, a.val)] {
        let mut count = vec![0usize; k];
        for i in 0..d.len() {
            let l = d.labels[i] as usize;
            if l >= k || count[l] >= per {
                continue;
            }
            let dir = a.out.join(split).join(&names[l]);
            std::fs::create_dir_all(&dir)?;
            let (w, h) = (d.w as u32, d.h as u32);
            let px = d.image(i).to_vec();
            let img: image::DynamicImage = match d.c {
                1 => image::GrayImage::from_raw(w, h, px).map(image::DynamicImage::ImageLuma8),
                _ => image::RgbImage::from_raw(w, h, px).map(image::DynamicImage::ImageRgb8),
            }
            .ok_or_else(|| anyhow::anyhow!("image {i} has the wrong size"))?;
            let img = if a.scale > 1 {
                img.resize_exact(w * a.scale, h * a.scale, image::imageops::FilterType::Nearest)
            } else {
                img
            };
            let path = dir.join(format!("{i:05}.{}", if a.jpeg { "jpg" } else { "png" }));
            let f = std::io::BufWriter::new(std::fs::File::create(&path)?);
            if a.jpeg {
                img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(f, 90))?;
            } else {
                img.write_with_encoder(image::codecs::png::PngEncoder::new(f))?;
            }
            count[l] += 1;
            written += 1;
        }
    }
    println!("{}: {written} images in {k} classes (train/ and val/)", a.out.display());
    println!("train with: resnet train --arch resnet18 --data {} --input-size 32 --out runs/folder", a.out.display());
    Ok(())
}

fn run_fetch(a: FetchArgs) -> Result<()> {
    let format = match a.name {
        NameArg::Cifar10 => Format::Cifar10,
        NameArg::Cifar100 => Format::Cifar100,
        NameArg::Mnist => Format::Mnist,
        NameArg::FashionMnist => Format::FashionMnist,
    };
    let name = fetch::name(format);
    let form = match (a.form, format) {
        (None, _) => CifarForm::Binary,
        (Some(_), Format::Mnist | Format::FashionMnist) => {
            bail!("--form applies to cifar10 and cifar100; {name} has one form (four IDX .gz files)")
        }
        (Some(FormArg::Binary), _) => CifarForm::Binary,
        (Some(FormArg::Python), _) => CifarForm::Python,
    };
    let dir = a.dir.unwrap_or_else(|| Path::new("data").join(name));
    let opts = Options { dir: dir.clone(), mirror: a.mirror, md5: a.md5, progress: std::io::stderr().is_terminal() };
    let mut out = std::io::stdout().lock();
    let files = fetch::fetch(format, form, &opts, &mut out)?;
    drop(out);
    match (format, form) {
        (Format::Cifar10 | Format::Cifar100, _) => {
            // both forms load straight from the .tar.gz
            let path = files.first().map_or(dir.clone(), Clone::clone);
            println!("{name}: {}", path.display());
            println!("train with: resnet train --arch resnet20 --data {} --out runs/{name}", path.display());
        }
        (Format::Mnist | Format::FashionMnist, _) => {
            // the loader tells Fashion-MNIST from MNIST by "fashion" in the path; name it when that would miss
            let fashion_path = has_fashion(&dir);
            let format_arg = match (format, fashion_path) {
                (Format::FashionMnist, false) => " --format fashion-mnist",
                (Format::Mnist, true) => " --format mnist",
                _ => "",
            };
            println!("{name}: {}", dir.display());
            println!("train with: resnet train --arch resnet20 --data {}{format_arg} --out runs/{name}", dir.display());
        }
    }
    Ok(())
}

/// The loader's rule: "fashion" (any case) in the path as given or made absolute.
fn has_fashion(p: &Path) -> bool {
    let has = |p: &Path| p.to_string_lossy().to_lowercase().contains("fashion");
    has(p) || p.canonicalize().is_ok_and(|c| has(&c))
}
