//! `resnet detect`'s decisions: a detector checkpoint loaded for inference ([`Detector`]),
//! images run through it with boxes in their original pixels ([`Found`]), the JSON record, and
//! drawn PNGs with labelled boxes ([`draw`]), written where [`draw_paths`] says after the checks
//! of [`check_outputs`] (an output that is one of the inputs, an output folder that is a file).

use super::Box4;
use super::checkpoint::{self, DetMeta};
use super::input::{self, DetInput};
use super::model::FasterRcnn;
use anyhow::{Context, Result, anyhow, bail};
use image::{DynamicImage, RgbImage};
use std::path::{Path, PathBuf};

/// One detection in the original image's pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Found {
    /// `[x1, y1, x2, y2]`, original pixels
    pub bbox: Box4,
    /// 1..=K (0 is the background, never reported)
    pub class_id: usize,
    pub label: String,
    pub score: f32,
}

/// The detections of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageResult {
    pub image: PathBuf,
    /// the original size
    pub width: usize,
    pub height: usize,
    pub detections: Vec<Found>,
}

impl ImageResult {
    /// `{"image", "detections": [{"box": [x1, y1, x2, y2], "label", "class_id", "score"}]}`.
    pub fn to_json(&self) -> serde_json::Value {
        let dets: Vec<serde_json::Value> = self
            .detections
            .iter()
            .map(|d| serde_json::json!({"box": d.bbox, "label": d.label, "class_id": d.class_id, "score": d.score}))
            .collect();
        serde_json::json!({"image": self.image.display().to_string(), "detections": dets})
    }
}

/// A detector checkpoint ready for inference.
pub struct Detector {
    pub model: FasterRcnn,
    pub meta: DetMeta,
}

impl Detector {
    /// Load a detector checkpoint (errors name the file and what is wrong).
    pub fn load(path: &Path) -> Result<Detector> {
        let ck = checkpoint::read(path)?;
        let model = ck.build(false)?;
        Ok(Detector { model, meta: ck.meta })
    }

    /// The checkpoint's detector as it is.
    pub fn new(model: FasterRcnn, meta: DetMeta) -> Detector {
        Detector { model, meta }
    }

    /// Detections on a prepared input, boxes in the original pixels, scores above `min_score`
    /// (the preset's own threshold applies first).
    pub fn detect_input(&mut self, inp: &DetInput, min_score: f32) -> Result<Vec<Found>> {
        let d = self.model.detect(&inp.data, inp.h, inp.w).map_err(|e| anyhow!("{e}"))?;
        Ok(d.boxes
            .iter()
            .zip(&d.scores)
            .zip(&d.labels)
            .filter(|((_, s), _)| **s >= min_score)
            .map(|((b, s), l)| Found { bbox: inp.to_original(b), class_id: *l, label: self.meta.label(*l), score: *s })
            .collect())
    }

    /// Detections on a decoded image.
    pub fn detect_image(&mut self, img: &DynamicImage, min_score: f32) -> Result<Vec<Found>> {
        let inp = input::prepare(img, &self.meta.transform, self.model.spec.arch.in_channels)?;
        self.detect_input(&inp, min_score)
    }

    /// Decode the image file `path` and detect; the decoded image comes back for drawing.
    pub fn detect_file(&mut self, path: &Path, min_score: f32) -> Result<(DynamicImage, ImageResult)> {
        let (img, inp) = input::open(path, &self.meta.transform, self.model.spec.arch.in_channels)?;
        let detections = self.detect_input(&inp, min_score).with_context(|| format!("{}", path.display()))?;
        let r = ImageResult { image: path.to_path_buf(), width: inp.orig_w, height: inp.orig_h, detections };
        Ok((img, r))
    }
}

/// Check the inputs before anything is read: each a regular file (a missing file, a directory, a
/// FIFO refused by name).
pub fn check_inputs(images: &[PathBuf]) -> Result<()> {
    if images.is_empty() {
        bail!("no images given");
    }
    for p in images {
        crate::paths::check_regular(p)?;
    }
    Ok(())
}

/// Where the drawings of `images` go in `out_dir`: `<file stem>.png`, and `<file stem>-2.png`, ...
/// where two inputs share a stem.
pub fn draw_paths(images: &[PathBuf], out_dir: &Path) -> Vec<PathBuf> {
    let mut used = std::collections::HashSet::new();
    images
        .iter()
        .map(|p| {
            let stem = p.file_stem().map_or_else(|| "image".to_string(), |s| s.to_string_lossy().into_owned());
            let mut name = format!("{stem}.png");
            let mut k = 2;
            while !used.insert(name.clone()) {
                name = format!("{stem}-{k}.png");
                k += 1;
            }
            out_dir.join(name)
        })
        .collect()
}

/// Make `out_dir` (a directory, created if missing) ready for `outputs`: refused where it is a
/// file, or where an output is one of the inputs.
pub fn check_outputs(images: &[PathBuf], out_dir: &Path, outputs: &[PathBuf]) -> Result<()> {
    if out_dir.exists() && !out_dir.is_dir() {
        bail!("--draw {}: exists and is not a directory", out_dir.display());
    }
    crate::paths::refuse_any_same_file(images, outputs, "an input image and a drawing of --draw")?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("--draw {}: cannot create the directory", out_dir.display()))
}

/// A class's colour (colour-blind-safe palette, by class id).
pub fn colour(class_id: usize) -> [u8; 3] {
    const P: [[u8; 3]; 8] = [
        [230, 159, 0],
        [86, 180, 233],
        [0, 158, 115],
        [240, 228, 66],
        [0, 114, 178],
        [213, 94, 0],
        [204, 121, 167],
        [255, 255, 255],
    ];
    P[class_id % P.len()]
}

/// `img` (as RGB) with each detection's box (2-pixel outline in its class colour) and a label
/// "name 0.87" on a filled tab above the box (inside it at the top edge), in DejaVu Sans.
pub fn draw(img: &DynamicImage, dets: &[Found]) -> Result<RgbImage> {
    use plotters::prelude::*;
    crate::analysis::plot::register_font();
    let mut rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    {
        let root = BitMapBackend::with_buffer(rgb.as_mut(), (w, h)).into_drawing_area();
        let size = (h.min(w) as f64 / 32.0).clamp(10.0, 24.0);
        for d in dets {
            let [r, g, b] = colour(d.class_id);
            let c = RGBColor(r, g, b);
            let clampx = |v: f32| (v.round() as i32).clamp(0, w as i32 - 1);
            let clampy = |v: f32| (v.round() as i32).clamp(0, h as i32 - 1);
            let (x1, y1, x2, y2) = (clampx(d.bbox[0]), clampy(d.bbox[1]), clampx(d.bbox[2]), clampy(d.bbox[3]));
            for k in 0..2 {
                let rect = Rectangle::new([(x1 + k, y1 + k), (x2 - k, y2 - k)], c.stroke_width(1));
                root.draw(&rect).map_err(|e| anyhow!("drawing a box: {e}"))?;
            }
            let text = format!("{} {:.2}", d.label, d.score);
            let style = TextStyle::from(("sans-serif", size).into_font()).color(&BLACK);
            let (tw, th) = root.estimate_text_size(&text, &style).map_err(|e| anyhow!("measuring a label: {e}"))?;
            let (tw, th) = (tw as i32 + 4, th as i32 + 2);
            // above the box where there is room, else inside its top edge; kept within the image
            let ty = if y1 >= th { y1 - th } else { y1 };
            let tx = x1.min(w as i32 - tw).max(0);
            root.draw(&Rectangle::new([(tx, ty), (tx + tw, ty + th)], c.filled()))
                .map_err(|e| anyhow!("drawing a label: {e}"))?;
            root.draw(&Text::new(text, (tx + 2, ty + 1), style)).map_err(|e| anyhow!("drawing a label: {e}"))?;
        }
        root.present().map_err(|e| anyhow!("drawing: {e}"))?;
    }
    Ok(rgb)
}

/// Write `img` as a PNG at `path`, atomically.
pub fn write_png(path: &Path, img: &RgbImage) -> Result<()> {
    let mut bytes = vec![];
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .with_context(|| format!("encoding {}", path.display()))?;
    crate::weights::checkpoint::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawing_keeps_the_size_and_marks_the_box() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(120, 80, image::Rgb([0, 0, 0])));
        let f = Found { bbox: [10.0, 30.0, 90.0, 70.0], class_id: 1, label: "shirt".into(), score: 0.87 };
        let out = draw(&img, &[f.clone(), Found { bbox: [-5.0, -5.0, 500.0, 500.0], ..f }]).unwrap();
        assert_eq!(out.dimensions(), (120, 80));
        let c = colour(1);
        // the left edge of the first box, below its label tab
        assert_eq!(out.get_pixel(10, 60).0, c);
        assert_eq!(out.get_pixel(11, 60).0, c);
        assert_eq!(out.get_pixel(50, 50).0, [0, 0, 0], "inside stays");
        // the label tab above the box carries dark text on the colour
        let tab: Vec<[u8; 3]> =
            (12..60).flat_map(|x| (18..30).map(move |y| (x, y))).map(|(x, y)| out.get_pixel(x, y).0).collect();
        assert!(tab.contains(&c) && tab.iter().any(|p| p[0] < 100), "a filled tab with text");
    }

    #[test]
    fn draw_paths_are_unique() {
        let ins =
            [PathBuf::from("a/x.jpg"), PathBuf::from("b/x.png"), PathBuf::from("y.jpg"), PathBuf::from("x-2.jpg")];
        let outs = draw_paths(&ins, Path::new("out"));
        let names: Vec<String> = outs.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(names, ["out/x.png", "out/x-2.png", "out/y.png", "out/x-2-2.png"]);
    }

    #[test]
    fn outputs_over_inputs_and_files_as_folders_are_refused() {
        let t = crate::data::testutil::TempDir::new("det-run-out");
        let img = t.write("x.png", b"not read");
        let file = t.write("file", b"f");
        let e = check_outputs(std::slice::from_ref(&img), &file, &[file.join("x.png")]).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
        let outs = draw_paths(std::slice::from_ref(&img), t.path());
        let e = check_outputs(std::slice::from_ref(&img), t.path(), &outs).unwrap_err().to_string();
        assert!(e.contains("same file") && e.contains("x.png"), "{e}");
        let e = format!("{:#}", check_inputs(&[t.path().join("missing.jpg")]).unwrap_err());
        assert!(e.contains("missing.jpg"), "{e}");
        assert!(check_inputs(&[t.path().to_path_buf()]).unwrap_err().to_string().contains("a directory"));
        let fresh = t.path().join("new/deeper");
        check_outputs(&[img], &fresh, &[fresh.join("x.png")]).unwrap();
        assert!(fresh.is_dir());
    }
}
