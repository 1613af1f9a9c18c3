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
