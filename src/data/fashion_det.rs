//! `resnet data fashion-det`: a detection data set made of real images, in the real formats.
//!
//! Each canvas is a random crop of a real photo (resized to `size x size`) with 0-4 Fashion-MNIST
//! items pasted on it: an item (training items from Fashion-MNIST's training split, validation
//! items from its test split) resized to 16-64 px, pasted with alpha = its intensity in a random
//! tint; about one item in five is placed over the previous one (heavy overlap). Its box is the
//! tight bound of its pixels of nonzero intensity; its `area` is the number of those pixels (the
//! item's mask, as COCO's area is the segment's); an item whose box has both sides under 24 px is
//! marked difficult. Everything is drawn from the counter-based generator, stream
//! `fashion-det/<seed>/<split>/<image>`, so the same seed writes the same bytes.
//!
//! Written under OUT (a VOC tree plus COCO JSON, one copy of the images):
//! `JPEGImages/<id>.jpg` (quality 90), `Annotations/<id>.xml`, `ImageSets/Main/{train,val}.txt`,
//! `classes.txt`, `annotations/instances_{train,val}.json` (file names relative to JPEGImages/;
//! the extra key `difficult` marks the small items) and `README.txt`.

use super::coco;
use super::detection::{DetAnnotation, DetCategory, DetDataset, DetImage};
use super::voc::{self, VocAnnotation, VocObject};
use crate::rng;
use anyhow::{Context, Result, bail};
use image::{DynamicImage, RgbImage};
use std::path::{Path, PathBuf};

/// What to make.
#[derive(Clone, Debug)]
pub struct FashionDetRequest {
    /// Fashion-MNIST (what `resnet data fetch fashion-mnist` wrote)
    pub data: PathBuf,
    pub out: PathBuf,
    /// Folder of photos (JPEG / PNG) to crop backgrounds from
    pub backgrounds: PathBuf,
    pub seed: u64,
    pub train: usize,
    pub val: usize,
    pub size: u32,
}

/// What was written.
#[derive(Clone, Debug)]
pub struct FashionDetSummary {
    pub images: usize,
    pub objects: usize,
    pub difficult: usize,
    pub photos: usize,
}

const MIN_ITEM: u32 = 16;
const MAX_ITEM: u32 = 64;
const DIFFICULT_BELOW: u32 = 24;

struct Draw {
    base: u64,
    i: u64,
}

impl Draw {
    fn new(name: &str) -> Draw {
        Draw { base: rng::fnv1a64(name), i: 0 }
    }
    fn u(&mut self) -> f64 {
        let z = rng::splitmix64(self.base.wrapping_add(self.i));
        self.i += 1;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        ((self.u() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

/// The photos of `dir` (JPEG / PNG, by file name), decoded as RGB.
fn photos(dir: &Path) -> Result<Vec<(String, RgbImage)>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the background folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            matches!(ext.as_str(), "jpg" | "jpeg" | "png")
        })
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("{}: no JPEG or PNG photos to crop backgrounds from", dir.display());
    }
    names.iter().map(|p| Ok((p.display().to_string(), super::image::open(p)?.to_rgb8()))).collect()
}

/// One canvas and its objects (0-based inclusive pixel bounds, category index, mask area).
struct Canvas {
    image: RgbImage,
    objects: Vec<([u32; 4], usize, u32)>,
}

fn make_canvas(r: &mut Draw, photos: &[(String, RgbImage)], items: &super::Dataset, size: u32) -> Result<Canvas> {
    let (_, photo) = &photos[r.below(photos.len())];
    let side = photo.width().min(photo.height());
    // a square crop of at least half the photo's shorter side, resized to the canvas
    let crop = (side / 2 + r.below((side - side / 2) as usize + 1) as u32).max(1);
    let (x0, y0) =
        (r.below((photo.width() - crop) as usize + 1) as u32, r.below((photo.height() - crop) as usize + 1) as u32);
    let bg = DynamicImage::ImageRgb8(image::imageops::crop_imm(photo, x0, y0, crop, crop).to_image());
    let mut canvas = super::image::resize(&bg, size, size)?.to_rgb8();
    let n = r.below(5);
    let mut objects: Vec<([u32; 4], usize, u32)> = vec![];
    for _ in 0..n {
        let j = r.below(items.len());
        let s = MIN_ITEM + r.below((MAX_ITEM - MIN_ITEM + 1) as usize) as u32;
        let s = s.min(size);
        let tint = [0, 1, 2].map(|_| 64.0 + r.u() * 191.0);
        let overlap = r.u() < 0.2;
        let (px, py) = match objects.last() {
            Some(&(b, _, _)) if overlap => {
                let jitter =
                    |v: u32, d: f64| (v as f64 + (d - 0.5) * s as f64 * 0.5).clamp(0.0, (size - s) as f64) as u32;
                (jitter(b[0], r.u()), jitter(b[1], r.u()))
            }
            _ => (r.below((size - s) as usize + 1) as u32, r.below((size - s) as usize + 1) as u32),
        };
        let grey = image::GrayImage::from_raw(items.w as u32, items.h as u32, items.image(j).to_vec()).unwrap();
        let item = image::imageops::resize(&grey, s, s, image::imageops::FilterType::Triangle);
        let (mut lo, mut hi, mut area) = ([u32::MAX; 2], [0u32; 2], 0u32);
        for (ix, iy, v) in item.enumerate_pixels() {
            let a = v.0[0] as f64 / 255.0;
            if v.0[0] == 0 {
                continue;
            }
            let (cx, cy) = (px + ix, py + iy);
            let p = canvas.get_pixel_mut(cx, cy);
            for (ch, t) in p.0.iter_mut().zip(tint) {
                *ch = (*ch as f64 * (1.0 - a) + t * a).round() as u8;
            }
            lo = [lo[0].min(cx), lo[1].min(cy)];
            hi = [hi[0].max(cx), hi[1].max(cy)];
            area += 1;
        }
        if area > 0 {
            objects.push(([lo[0], lo[1], hi[0], hi[1]], items.labels[j] as usize, area));
        }
    }
    Ok(Canvas { image: canvas, objects })
}

/// Make the data set (OUT must not exist, or be empty).
pub fn generate(req: &FashionDetRequest) -> Result<FashionDetSummary> {
    if req.size < MAX_ITEM {
        bail!("--size {}: canvases must be at least {MAX_ITEM} px (items are up to {MAX_ITEM} px)", req.size);
    }
    if req.out.exists() && std::fs::read_dir(&req.out)?.next().is_some() {
        bail!("{}: not empty; give a new or empty directory", req.out.display());
    }
    let (splits, format) = super::load(&req.data, None)?;
    if format != super::Format::FashionMnist {
        bail!(
            "{}: not Fashion-MNIST (found {format:?}); `resnet data fetch fashion-mnist` writes it",
            req.data.display()
        );
    }
    let photos = photos(&req.backgrounds)?;
    for d in ["JPEGImages", "Annotations", "ImageSets/Main", "annotations"] {
        std::fs::create_dir_all(req.out.join(d))?;
    }
    let names = splits.train.class_names.clone();
    let categories: Vec<DetCategory> =
        names.iter().enumerate().map(|(i, n)| DetCategory { id: i as i64 + 1, name: n.clone() }).collect();
    std::fs::write(req.out.join("classes.txt"), names.join("\n") + "\n")?;
    let mut summary = FashionDetSummary { images: 0, objects: 0, difficult: 0, photos: photos.len() };
    let mut next_id = 1i64;
    for (split, count, items) in [("train", req.train, &splits.train), ("val", req.val, &splits.test)] {
        let mut ds = DetDataset { categories: categories.clone(), ..Default::default() };
        let mut list = String::new();
        for i in 0..count {
            let id = next_id;
            next_id += 1;
            let mut r = Draw::new(&format!("fashion-det/{}/{split}/{i}", req.seed));
            let c = make_canvas(&mut r, &photos, items, req.size)?;
            let stem = format!("{id:06}");
            let jpg = req.out.join("JPEGImages").join(format!("{stem}.jpg"));
            let f = std::io::BufWriter::new(std::fs::File::create(&jpg)?);
            DynamicImage::ImageRgb8(c.image)
                .write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(f, 90))
                .with_context(|| format!("writing {}", jpg.display()))?;
            let mut objects = vec![];
            for (b, cat, area) in c.objects {
                let difficult = b[2] - b[0] + 1 < DIFFICULT_BELOW && b[3] - b[1] + 1 < DIFFICULT_BELOW;
                summary.objects += 1;
                summary.difficult += difficult as usize;
                ds.annotations.push(DetAnnotation {
                    id: ds.annotations.len() as i64 + 1 + 1_000_000 * (split == "val") as i64,
                    image_id: id,
                    category_id: cat as i64 + 1,
                    bbox: [b[0] as f64, b[1] as f64, (b[2] - b[0] + 1) as f64, (b[3] - b[1] + 1) as f64],
                    area: area as f64,
                    iscrowd: false,
                    difficult,
                });
                let bndbox = [b[0] + 1, b[1] + 1, b[2] + 1, b[3] + 1].map(|v| v as f64);
                objects.push(VocObject { name: names[cat].clone(), bndbox, difficult });
            }
            let xml = VocAnnotation { filename: format!("{stem}.jpg"), width: req.size, height: req.size, objects };
            std::fs::write(req.out.join("Annotations").join(format!("{stem}.xml")), voc::to_xml(&xml, "fashion-det"))?;
            ds.images.push(DetImage { id, file_name: format!("{stem}.jpg"), width: req.size, height: req.size });
            list += &format!("{stem}\n");
            summary.images += 1;
        }
        std::fs::write(req.out.join("ImageSets/Main").join(format!("{split}.txt")), list)?;
        std::fs::write(req.out.join("annotations").join(format!("instances_{split}.json")), coco::to_json(&ds))?;
    }
    let photo_names: Vec<String> = photos
        .iter()
        .map(|(p, _)| Path::new(p).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default())
        .collect();
    std::fs::write(
        req.out.join("README.txt"),
        format!(
            "fashion-det: a SYNTHETIC detection set made by `resnet data fashion-det` (seed {}).\n\
Fashion-MNIST items (train split -> train, test split -> val), 16-64 px, pasted with alpha = intensity in a random \
tint on random crops of real photos ({}), 0-4 per {}x{} canvas. Boxes are the items' tight pixel bounds; area is \
the item's pixel count; items with both box sides under 24 px are difficult.\n\
VOC tree: JPEGImages/, Annotations/, ImageSets/Main/{{train,val}}.txt, classes.txt. COCO: annotations/instances_{{train,val}}.json \
(file names relative to JPEGImages/).\n",
            req.seed,
            photo_names.join(", "),
            req.size,
            req.size
        ),
    )?;
    Ok(summary)
}
