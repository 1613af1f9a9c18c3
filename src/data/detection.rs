//! A detection data set as the evaluators and the detector see it, whatever file it came from
//! (COCO instances JSON: `coco.rs`; PASCAL VOC: `voc.rs`), and detections (COCO's results format).
//!
//! Boxes are COCO's `[x, y, w, h]` in f64 (pycocotools' type), continuous coordinates. A VOC box
//! (1-based inclusive pixels xmin..xmax) becomes `[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`.
//!
//! What the readers do with boxes that do not fit (the same for both formats, counted in
//! [`Cleaning`] and reported by the CLI): width or height <= 0 is refused (an error naming the
//! file and the box); a box partly outside its image is clipped to it (the annotation's `area`
//! is kept as the file says: pycocotools takes areas from that field); a box wholly outside is
//! dropped.
//!
//! [`check_images`]: every image file present, of the size its annotation says (headers only).

use crate::file_error::FileError;
use std::path::Path;

/// An image: its id, file (relative to the image folder) and size.
#[derive(Clone, Debug, PartialEq)]
pub struct DetImage {
    pub id: i64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DetCategory {
    pub id: i64,
    pub name: String,
}

/// A ground-truth object.
#[derive(Clone, Debug, PartialEq)]
pub struct DetAnnotation {
    pub id: i64,
    pub image_id: i64,
    pub category_id: i64,
    /// `[x, y, w, h]`
    pub bbox: [f64; 4],
    /// COCO: the file's `area` (the segment's, for COCO's own files); VOC: w * h.
    pub area: f64,
    /// COCO crowd regions: ignore regions for the COCO evaluator.
    pub iscrowd: bool,
    /// VOC's `difficult`: ignored by the VOC evaluator (COCO JSON: an optional `difficult` key).
    pub difficult: bool,
}

/// What the reader changed: boxes clipped to their image and boxes dropped as wholly outside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cleaning {
    pub clipped: usize,
    pub dropped_outside: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DetDataset {
    pub images: Vec<DetImage>,
    pub categories: Vec<DetCategory>,
    pub annotations: Vec<DetAnnotation>,
    pub cleaning: Cleaning,
}

/// One detection, COCO's results format: `{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Detection {
    pub image_id: i64,
    pub category_id: i64,
    pub bbox: [f64; 4],
    pub score: f64,
}

/// Clip `[x, y, w, h]` to a `width x height` image: Some(clipped box, whether it changed), None
/// when nothing of it is inside.
pub fn clip_to_image(b: [f64; 4], width: u32, height: u32) -> Option<([f64; 4], bool)> {
    let (w, h) = (width as f64, height as f64);
    let (x1, y1, x2, y2) = (b[0].max(0.0), b[1].max(0.0), (b[0] + b[2]).min(w), (b[1] + b[3]).min(h));
    if x2 <= x1 || y2 <= y1 {
        return None;
    }
    let out = [x1, y1, x2 - x1, y2 - y1];
    Some((out, out != b))
}

/// Check that every image of `ds` is a regular file under `dir` (its `file_name` relative to
/// it) whose header gives the size the annotations say. `said(i)` names where image `i`'s size
/// is written (`gt.json: images[3]`, `Annotations/000005.xml: <size>`), for the errors. Only the
/// image headers are read. The first problem is the error, naming the image file, what differs
/// and where the annotation says otherwise; the message counts the images with problems when
/// there are more. Returns the number of images checked.
pub fn check_images(ds: &DetDataset, dir: &Path, said: impl Fn(usize) -> String) -> Result<usize, FileError> {
    let mut first: Option<FileError> = None;
    let mut bad = 0usize;
    for (i, im) in ds.images.iter().enumerate() {
        if let Err(e) = check_image(im, dir, &said(i)) {
            bad += 1;
            first.get_or_insert(e);
        }
    }
    match first {
        None => Ok(ds.images.len()),
        Some(mut e) => {
            if bad > 1 {
                e.msg +=
                    &format!(" ({bad} of {} images are missing or do not match their annotation)", ds.images.len());
            }
            Err(e)
        }
    }
}

fn check_image(im: &DetImage, dir: &Path, said: &str) -> Result<(), FileError> {
    use std::path::Component;
    let rel = Path::new(&im.file_name);
    let path = dir.join(rel);
    if im.file_name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(FileError::new(
            &path,
            None,
            format!("{said} names {:?}, which is not a path inside the image folder", im.file_name),
        ));
    }
    let Some(_) = super::bounded::regular_file(&path).map_err(|mut e| {
        e.msg += &format!(" ({said} names it)");
        e
    })?
    else {
        return Err(FileError::new(&path, None, format!("no such file ({said} names it)")));
    };
    let dims = image::ImageReader::open(&path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| FileError::new(&path, None, format!("cannot read: {e}")))?
        .into_dimensions()
        .map_err(|e| FileError::new(&path, None, format!("not a readable JPEG or PNG image: {e} ({said} names it)")))?;
    if dims != (im.width, im.height) {
        return Err(FileError::new(
            &path,
            None,
            format!("{} x {} pixels (width x height), but {said} says {} x {}", dims.0, dims.1, im.width, im.height),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping() {
        assert_eq!(clip_to_image([1.0, 2.0, 3.0, 4.0], 10, 10), Some(([1.0, 2.0, 3.0, 4.0], false)));
        assert_eq!(clip_to_image([-1.0, 2.0, 3.0, 9.0], 10, 10), Some(([0.0, 2.0, 2.0, 8.0], true)));
        assert_eq!(clip_to_image([10.0, 2.0, 3.0, 4.0], 10, 10), None);
    }
}
