//! What a user asks of a new run and how the library decides the rest, once.
//!
//! A [`TrainRequest`] holds the choices as a user makes them (everything optional, as on the
//! command line); [`TrainRequest::resolve`] looks at the data and settles every default of the
//! paper's recipes (CIFAR / MNIST-style data: Sec. 4.2; image folders: Sec. 3.4), the schedule,
//! the fine-tuning rate and the subset / validation counts into a [`TrainConfig`], validated by
//! the same rules as a config.toml read back. The CLI only maps its flags onto a request.

use super::schedule::{Plateau, Schedule};
use super::{Finetune, TrainConfig, check_val};
use crate::arch::{ArchOptions, ArchSpec, Family};
use crate::data::imagenet::{ImagenetRecipe, Pca};
use crate::data::{self, Format, folder};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// Images sampled for the mean image and the PCA of a folder.
pub const STAT_IMAGES: usize = 500;
/// Default lr when fine-tuning (`init_from`): a tenth of the paper's 0.1.
pub const FINETUNE_LR: f32 = 0.01;

/// Where the PCA colour augmentation of an image-folder run comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PcaChoice {
    /// the standard ImageNet eigenvalues / eigenvectors (AlexNet's)
    Imagenet,
    /// computed from a seeded sample of the training images
    Data,
    None,
}

/// A new run as a user asks for it; unset fields take the recipe's defaults in [`resolve`](Self::resolve).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainRequest {
    /// resnetD or plainD
    pub arch: String,
    pub arch_options: ArchOptions,
    /// the network's input side (image folders; in-memory data fix it at 32)
    pub input_size: Option<usize>,
    /// a CIFAR-10/100 directory or archive, a directory of IDX files, or an image folder
    pub data: PathBuf,
    /// the in-memory format, instead of recognising it
    pub format: Option<Format>,
    pub iters: Option<u64>,
    pub epochs: Option<u64>,
    /// default 128; image folders 256
    pub batch: Option<usize>,
    pub seed: u64,
    /// training images held out (seeded) as a validation set
    pub val: usize,
    /// train on this many (seeded) training images left after `val`
    pub train_images: Option<usize>,
    pub milestones: Option<Vec<u64>>,
    /// default 0.1; image folders 0.1 x batch/256; 0.01 when fine-tuning
    pub lr: Option<f32>,
    /// default 0
    pub ckpt_every: Option<u64>,
    /// default 3
    pub keep: Option<usize>,
    /// default 50
    pub log_every: Option<u64>,
    /// default: at every epoch's end
    pub eval_every: Option<u64>,
    /// default 4 (the paper)
    pub crop_pad: Option<usize>,
    pub no_flip: bool,
    /// image folders: the range of the shorter side (default 256..480 scaled to the input size)
    pub scale: Option<(usize, usize)>,
    /// image folders: default ImageNet's for RGB, none for grey
    pub pca: Option<PcaChoice>,
    /// image folders: evaluations without improvement before the lr drops (default 2 with a validation split)
    pub lr_plateau: Option<u32>,
    pub skip_bad: bool,
    /// image folders: decoding threads (default 2)
    pub workers: Option<usize>,
    pub init_from: Option<PathBuf>,
    pub reset_head: bool,
    pub freeze_backbone: bool,
    /// official CIFAR file names may hold fewer records (subsets, tests)
    pub lenient_counts: bool,
    /// data-parallel processes (default 1; from MPI under `mpiexec`)
    pub world: Option<usize>,
    /// BN statistics summed over the whole global batch across processes
    pub sync_bn: bool,
}

/// What the data decide about the network and the epoch length.
struct DataFacts {
    classes: usize,
    channels: usize,
    /// training images per epoch (after --val and --train-images)
    train_len: usize,
    format: Option<Format>,
    has_val: bool,
    /// None: all of them (the same run as without the flag)
    train_images: Option<usize>,
}

impl TrainRequest {
    /// A request for `arch` on `data` with every other choice left to the recipe.
    pub fn new(arch: &str, data: impl Into<PathBuf>) -> TrainRequest {
        TrainRequest { arch: arch.into(), data: data.into(), ..Default::default() }
    }

    /// Whether `data` is an image folder (the ImageNet recipe) rather than an in-memory data set.
    fn is_folder(&self) -> bool {
        self.format.is_none() && self.data.is_dir() && folder::looks_like_folder(&self.data)
    }

    /// Decide every default and check every rule: the configuration this request starts.
    pub fn resolve(&self) -> Result<TrainConfig> {
        if self.arch.is_empty() {
            bail!("--arch is required for a new run (or --resume RUN)");
        }
        if self.data.as_os_str().is_empty() {
            bail!("--data is required for a new run");
        }
        if self.eval_every == Some(0) {
            bail!("--eval-every must be at least 1 (leave it out to evaluate at every epoch's end)");
        }
        // stored absolute: the run resumes from any working directory
        let data_path = std::path::absolute(&self.data).with_context(|| format!("--data {}", self.data.display()))?;
        let is_folder = self.is_folder();
        let batch = self.batch.unwrap_or(if is_folder { 256 } else { 128 });
        let facts = if is_folder { self.folder_facts()? } else { self.memory_facts()? };
        let mut opts = self.arch_options.clone();
        if let Some(c) = opts.classes
            && c != facts.classes
        {
            bail!("--classes {c} does not match the data, which has {} classes", facts.classes);
        }
        opts.classes = Some(facts.classes);
        opts.in_channels = Some(facts.channels);
        let spec = ArchSpec::parse(&self.arch, &opts)?;
        let size = spec.input_side(self.input_size)?;
        if !is_folder && spec.family != Family::Cifar {
            bail!(
                "{} is an ImageNet-family network; CIFAR / MNIST-style data take the CIFAR family (resnetD / plainD with D = 6n+2); \
                 ImageNet-family networks train on image folders",
                spec.name
            );
        }
        let schedule = self.schedule(&spec, batch, is_folder, &facts)?;
        let recipe = if is_folder { Some(self.recipe(size, facts.channels)?) } else { None };
        let finetune = match &self.init_from {
            Some(p) => Some(Finetune {
                init_from: std::path::absolute(p)?,
                reset_head: self.reset_head,
                freeze_backbone: self.freeze_backbone,
            }),
            None if self.reset_head || self.freeze_backbone => {
                bail!("--reset-head and --freeze-backbone need --init-from")
            }
            None => None,
        };
        let cfg = TrainConfig {
            arch: spec,
            data: data_path,
            format: facts.format,
            batch,
            seed: self.seed,
            val: self.val,
            train_images: facts.train_images,
            schedule,
            momentum: 0.9,
            weight_decay: 1e-4,
            log_every: self.log_every.unwrap_or(50),
            eval_every: self.eval_every.unwrap_or(0),
            ckpt_every: self.ckpt_every.unwrap_or(0),
            keep: self.keep.unwrap_or(3),
            threads: crate::par::threads(),
            crop_pad: self.crop_pad.unwrap_or(4),
            flip: !self.no_flip,
            recipe,
            skip_bad: self.skip_bad,
            workers: self.workers.unwrap_or(2),
            finetune,
            lenient_counts: self.lenient_counts,
            world: self.world.unwrap_or(1),
            sync_bn: self.sync_bn,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Image folders: classes, split sizes; the flags of the CIFAR recipe do not apply.
    fn folder_facts(&self) -> Result<DataFacts> {
        if self.train_images.is_some() {
            bail!("--train-images applies to in-memory data sets (CIFAR / MNIST-style), not to image folders");
        }
        let (t, val) = super::run_data::folder_splits(&self.data, self.val, self.seed)?;
        Ok(DataFacts {
            classes: t.classes.len(),
            channels: self.arch_options.in_channels.unwrap_or(3),
            train_len: t.len(),
            format: None,
            has_val: val.is_some(),
            train_images: None,
        })
    }

    /// In-memory data sets: their classes, channels and training images after `val` / `train_images`.
    fn memory_facts(&self) -> Result<DataFacts> {
        if self.input_size.is_some() {
            bail!("--input-size is set by the data in training (32x32; 28x28 images are padded to it)");
        }
        for (flag, set) in [
            ("--scale", self.scale.is_some()),
            ("--pca", self.pca.is_some()),
            ("--lr-plateau", self.lr_plateau.is_some()),
        ] {
            if set {
                bail!("{flag} applies to image folders (the ImageNet recipe), not to {}", self.data.display());
            }
        }
        let (splits, format) = data::load_with(&self.data, self.format, !self.lenient_counts)?;
        let all = splits.train.len();
        if self.val > 0 {
            check_val(self.val, all)?;
        }
        let left = all - self.val;
        let after_val = if self.val > 0 { format!(" left after --val {}", self.val) } else { String::new() };
        let (train_len, train_images) = match self.train_images {
            Some(n) if n == 0 || n > left => {
                bail!("--train-images {n}: the training set has {left} images{after_val}, pick 1 to {left}")
            }
            Some(n) if n == left => (n, None),
            Some(n) => (n, Some(n)),
            None => (left, None),
        };
        Ok(DataFacts {
            classes: splits.train.classes,
            channels: splits.train.c,
            train_len,
            format: Some(format),
            has_val: self.val > 0,
            train_images,
        })
    }

    /// The learning-rate schedule: the CIFAR recipe's steps, or the ImageNet recipe's plateaus,
    /// with the batch-scaled or fine-tuning rate.
    fn schedule(&self, spec: &ArchSpec, batch: usize, is_folder: bool, facts: &DataFacts) -> Result<Schedule> {
        let iters = match (self.iters, self.epochs) {
            (Some(_), Some(_)) => bail!("--iters and --epochs: give one"),
            (Some(i), None) => i,
            (None, Some(e)) => {
                e.checked_mul(facts.train_len as u64).map(|images| images.div_ceil(batch.max(1) as u64)).with_context(
                    || format!("--epochs {e}: {e} x {} training images is too many iterations", facts.train_len),
                )?
            }
            (None, None) if is_folder => 600_000,
            (None, None) => 64_000,
        };
        let mut schedule = Schedule::cifar(iters, spec.depth);
        if is_folder {
            // the ImageNet recipe: no warm-up, lr /10 on plateaus (or fixed milestones)
            schedule.warmup_lr = None;
            match (self.lr_plateau, &self.milestones) {
                (Some(_), _) | (None, None) if facts.has_val => {
                    schedule.milestones = vec![];
                    schedule.plateau = Some(Plateau { patience: self.lr_plateau.unwrap_or(2), threshold: 0.0 });
                }
                (Some(_), _) => bail!("--lr-plateau needs a validation split: a val/ folder or --val N"),
                _ => {}
            }
            // the paper's 0.1 is for batches of 256: scaled linearly for other batch sizes
            schedule.lr = 0.1 * batch as f32 / 256.0;
        }
        if let Some(m) = &self.milestones {
            schedule.milestones = m.clone();
        }
        if self.init_from.is_some() {
            schedule.lr = FINETUNE_LR;
            schedule.warmup_lr = None;
        }
        if let Some(lr) = self.lr {
            schedule.lr = lr;
        }
        Ok(schedule)
    }

    /// The ImageNet recipe scaled to the input side; a PCA from the data is computed here (it is
    /// part of the frozen configuration).
    fn recipe(&self, size: usize, channels: usize) -> Result<ImagenetRecipe> {
        let mut r = ImagenetRecipe::for_size(size, channels);
        if let Some(s) = self.scale {
            r.scale = s;
        }
        r.flip = !self.no_flip;
        r.pca = match self.pca.unwrap_or(if channels == 3 { PcaChoice::Imagenet } else { PcaChoice::None }) {
            PcaChoice::Imagenet => Some(Pca::imagenet()),
            PcaChoice::None => None,
            PcaChoice::Data => None, // below, once the rest of the recipe is checked
        };
        r.validate()?;
        if self.pca == Some(PcaChoice::Data) {
            let (train, _) = super::run_data::folder_splits(&self.data, self.val, self.seed)?;
            let (_, px, _) = super::run_data::image_statistics(&r, &train, self.seed, self.skip_bad)?;
            r.pca = Some(Pca { std: 0.1, ..Pca::from_pixels(&px) });
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::TempDir;

    /// A directory of MNIST-style IDX files: `n` training and 20 test images.
    fn mnist(dir: &TempDir, n: usize) -> PathBuf {
        fn idx(n: usize) -> (Vec<u8>, Vec<u8>) {
            let mut img = vec![0, 0, 8, 3];
            for d in [n as u32, 28, 28] {
                img.extend(d.to_be_bytes());
            }
            img.extend((0..n * 784).map(|i| (i % 251) as u8));
            let mut lab = vec![0, 0, 8, 1];
            lab.extend((n as u32).to_be_bytes());
            lab.extend((0..n).map(|i| (i % 10) as u8));
            (img, lab)
        }
        for (prefix, count) in [("train", n), ("t10k", 20)] {
            let (img, lab) = idx(count);
            dir.write(&format!("mnist/{prefix}-images-idx3-ubyte"), &img);
            dir.write(&format!("mnist/{prefix}-labels-idx1-ubyte"), &lab);
        }
        dir.path().join("mnist")
    }

    /// A folder of class folders holding `per` 8x8 PNGs each.
    fn folder(dir: &TempDir, per: usize) -> PathBuf {
        for class in ["cat", "dog"] {
            for i in 0..per {
                let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, i as u8]));
                let mut png = vec![];
                img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
                dir.write(&format!("photos/{class}/{i}.png"), &png);
            }
        }
        dir.path().join("photos")
    }

    #[test]
    fn defaults_per_data_kind() {
        let dir = TempDir::new("request-defaults");
        let cfg = TrainRequest::new("resnet20", mnist(&dir, 100)).resolve().unwrap();
        assert_eq!((cfg.batch, cfg.schedule.iters, cfg.schedule.lr), (128, 64_000, 0.1));
        assert_eq!(cfg.schedule.milestones, [32_000, 48_000]);
        assert_eq!((cfg.crop_pad, cfg.flip, cfg.log_every, cfg.keep, cfg.ckpt_every), (4, true, 50, 3, 0));
        assert_eq!((cfg.arch.classes, cfg.arch.in_channels, cfg.format), (10, 1, Some(Format::Mnist)));
        assert!(cfg.recipe.is_none() && cfg.schedule.warmup_lr.is_none() && cfg.data.is_absolute());
        let deep = TrainRequest::new("resnet110", mnist(&dir, 100)).resolve().unwrap();
        assert_eq!(deep.schedule.warmup_lr, Some(0.01), "warm-up for 110+ layers");

        let photos = folder(&dir, 3);
        let req = TrainRequest { input_size: Some(32), val: 2, ..TrainRequest::new("resnet18", &photos) };
        let cfg = req.resolve().unwrap();
        assert_eq!((cfg.batch, cfg.schedule.iters, cfg.schedule.lr), (256, 600_000, 0.1));
        assert!(cfg.schedule.milestones.is_empty() && cfg.schedule.plateau.is_some(), "plateaus with a val split");
        let r = cfg.recipe.unwrap();
        assert_eq!((r.size, r.pca.is_some(), cfg.arch.classes), (32, true, 2));
        let small = TrainRequest { batch: Some(64), ..req.clone() }.resolve().unwrap();
        assert_eq!(small.schedule.lr, 0.1 * 64.0 / 256.0, "lr scaled with the batch");
        let grey = TrainRequest { pca: Some(PcaChoice::None), ..req.clone() }.resolve().unwrap();
        assert!(grey.recipe.unwrap().pca.is_none());
        let data_pca = TrainRequest { pca: Some(PcaChoice::Data), ..req.clone() }.resolve().unwrap();
        let p = data_pca.recipe.unwrap().pca.unwrap();
        assert!(p.std == 0.1 && p != Pca { std: 0.1, ..Pca::imagenet() }, "computed from the images");
    }

    #[test]
    fn conflicts_and_counts() {
        let dir = TempDir::new("request-conflicts");
        let data = mnist(&dir, 100);
        let fails = |r: TrainRequest| r.resolve().unwrap_err().to_string();
        let base = TrainRequest::new("resnet8", &data);
        assert!(fails(TrainRequest { arch: String::new(), ..base.clone() }).contains("--arch is required"));
        assert!(
            fails(TrainRequest { input_size: Some(64), ..base.clone() }).contains("--input-size is set by the data")
        );
        assert!(
            fails(TrainRequest { pca: Some(PcaChoice::Data), ..base.clone() })
                .contains("--pca applies to image folders")
        );
        assert!(
            fails(TrainRequest { eval_every: Some(0), ..base.clone() }).contains("--eval-every must be at least 1")
        );
        assert!(fails(TrainRequest::new("resnet18", &data)).contains("ImageNet-family"));
        let opts = ArchOptions { classes: Some(7), ..Default::default() };
        assert!(fails(TrainRequest { arch_options: opts, ..base.clone() }).contains("--classes 7 does not match"));
        assert!(fails(TrainRequest { iters: Some(5), epochs: Some(1), ..base.clone() }).contains("give one"));
        assert!(fails(TrainRequest { reset_head: true, ..base.clone() }).contains("need --init-from"));
        // validation split and subset counts
        assert!(fails(TrainRequest { val: 100, ..base.clone() }).contains("--val 100 leaves no training images"));
        let e = fails(TrainRequest { val: 40, train_images: Some(61), ..base.clone() });
        assert!(e.contains("--train-images 61") && e.contains("60 images left after --val 40"), "{e}");
        let all = TrainRequest { train_images: Some(100), ..base.clone() }.resolve().unwrap();
        assert_eq!(all.train_images, None, "all of them: no subset recorded");
        let some = TrainRequest { train_images: Some(32), epochs: Some(3), batch: Some(16), ..base.clone() };
        let cfg = some.resolve().unwrap();
        assert_eq!((cfg.train_images, cfg.schedule.iters), (Some(32), 6), "epochs count over the subset");
        // the rules of TrainConfig::validate apply to requests too
        assert!(fails(TrainRequest { lr: Some(f32::NAN), ..base.clone() }).contains("positive number"));
        let e = fails(TrainRequest { epochs: Some(u64::MAX / 2), ..base.clone() });
        assert!(e.contains("too many iterations"), "{e}");
    }

    #[test]
    fn fine_tuning_rate_and_explicit_choices() {
        let dir = TempDir::new("request-finetune");
        let data = mnist(&dir, 100);
        let ft = TrainRequest { init_from: Some("w.pth".into()), ..TrainRequest::new("resnet8", &data) };
        let cfg = ft.resolve().unwrap();
        assert_eq!(cfg.schedule.lr, FINETUNE_LR);
        assert!(cfg.finetune.unwrap().init_from.is_absolute());
        let set = TrainRequest { lr: Some(0.05), milestones: Some(vec![3]), iters: Some(10), ..ft };
        let cfg = set.resolve().unwrap();
        assert_eq!((cfg.schedule.lr, cfg.schedule.milestones.as_slice(), cfg.schedule.iters), (0.05, &[3][..], 10));
    }
}
