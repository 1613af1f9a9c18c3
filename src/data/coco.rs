//! COCO instances JSON (`images`, `annotations` with `bbox` [x, y, w, h], `area`, `iscrowd`,
//! `categories`) and COCO's results format, read from files of strangers: regular files only,
//! within a size bound, every id and box checked, errors naming the file and the JSON path
//! (`annotations[17].bbox`) or the line and column (and byte) of a syntax error. Unknown keys
//! (`segmentation`, `info`, `licenses`, ...) are skipped unread into memory.
//!
//! Boxes (see `detection.rs`): width or height <= 0 refused; partly outside the image clipped,
//! wholly outside dropped, both counted in `DetDataset::cleaning`.

use super::bounded::{Cap, Stop, read_capped, regular_file};
use super::detection::{Cleaning, DetAnnotation, DetCategory, DetDataset, DetImage, Detection, clip_to_image};
use crate::file_error::FileError;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The most bytes a COCO JSON file may hold: COCO's largest, instances_train2017.json, is 448 MB.
pub const MAX_JSON_BYTES: u64 = 1 << 30;

#[derive(Deserialize)]
struct File {
    images: Vec<Image>,
    annotations: Vec<Annotation>,
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct Image {
    id: i64,
    file_name: String,
    width: u32,
    height: u32,
}

#[derive(Deserialize)]
struct Category {
    id: i64,
    name: String,
}

#[derive(Deserialize)]
struct Annotation {
    id: i64,
    image_id: i64,
    category_id: i64,
    bbox: Vec<f64>,
    area: f64,
    iscrowd: Flag,
    #[serde(default)]
    difficult: Option<Flag>,
}

/// 0 / 1 or false / true.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Flag {
    Int(u8),
    Bool(bool),
}

impl Flag {
    fn get(self) -> Option<bool> {
        match self {
            Flag::Bool(b) => Some(b),
            Flag::Int(0) => Some(false),
            Flag::Int(1) => Some(true),
            Flag::Int(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct Result_ {
    image_id: i64,
    category_id: i64,
    bbox: Vec<f64>,
    score: f64,
}

/// The bytes of `path`: a regular file, at most [`MAX_JSON_BYTES`].
pub fn read_bounded(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, FileError> {
    let name = path.display().to_string();
    let Some(len) = regular_file(path)? else { return Err(FileError::new(path, None, "no such file")) };
    let f = std::fs::File::open(path).map_err(|e| FileError::new(path, None, format!("cannot read: {e}")))?;
    read_capped(&name, f, Cap::Fixed { max, what }, Some(len)).map(|(b, _)| b).map_err(|s| match s {
        Stop::Refused(e) => e,
        Stop::Io(e) => FileError::new(path, None, format!("cannot read: {e}")),
    })
}

/// A serde error: at a JSON path, or (syntax) at a line and column, with the byte offset.
fn json_error(file: &Path, bytes: &[u8], e: &serde_path_to_error::Error<serde_json::Error>) -> FileError {
    let path = e.path().to_string();
    let inner = e.inner();
    let (line, col) = (inner.line(), inner.column());
    let offset = (line > 0).then(|| {
        let start: usize = bytes.split(|&b| b == b'\n').take(line - 1).map(|l| l.len() + 1).sum();
        (start + col.saturating_sub(1)).min(bytes.len()) as u64
    });
    let what = if inner.is_eof() {
        format!("truncated JSON: {inner}")
    } else if inner.is_syntax() {
        format!("not JSON: {inner}")
    } else {
        inner.to_string()
    };
    let msg = if path.is_empty() || path == "." { what } else { format!("{path}: {what}") };
    FileError::new(file, offset, msg)
}

fn parse<'a, T: Deserialize<'a>>(file: &Path, bytes: &'a [u8]) -> Result<T, FileError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let out: T = serde_path_to_error::deserialize(&mut de).map_err(|e| json_error(file, bytes, &e))?;
    de.end().map_err(|e| FileError::new(file, None, format!("not JSON: {e}")))?;
    Ok(out)
}

/// Box `[x, y, w, h]` at `at`: 4 numbers, w and h > 0.
fn bbox(file: &Path, at: &str, b: &[f64]) -> Result<[f64; 4], FileError> {
    let &[x, y, w, h] = b else {
        return Err(FileError::new(file, None, format!("{at}: {} numbers, not 4 ([x, y, w, h])", b.len())));
    };
    if ![x, y, w, h].iter().all(|v| v.is_finite()) {
        return Err(FileError::new(file, None, format!("{at}: not 4 finite numbers")));
    }
    if w <= 0.0 || h <= 0.0 {
        return Err(FileError::new(file, None, format!("{at}: width {w} x height {h}: boxes of no area are refused")));
    }
    Ok([x, y, w, h])
}

/// Read a COCO instances file.
pub fn read_instances(path: &Path) -> Result<DetDataset, FileError> {
    let bytes = read_bounded(path, MAX_JSON_BYTES, "COCO's largest instances file is 448 MB")?;
    parse_instances(path, &bytes)
}

/// Parse COCO instances JSON (`file` names it in errors).
pub fn parse_instances(file: &Path, bytes: &[u8]) -> Result<DetDataset, FileError> {
    let f: File = parse(file, bytes)?;
    let err = |msg: String| FileError::new(file, None, msg);
    let mut images: HashMap<i64, usize> = HashMap::new();
    for (i, im) in f.images.iter().enumerate() {
        if let Some(first) = images.insert(im.id, i) {
            return Err(err(format!("images[{i}].id: {} is also the id of images[{first}]", im.id)));
        }
        if im.width == 0 || im.height == 0 {
            return Err(err(format!("images[{i}]: an image of {} x {} pixels", im.width, im.height)));
        }
    }
    let mut cats: HashMap<i64, usize> = HashMap::new();
    for (i, c) in f.categories.iter().enumerate() {
        if let Some(first) = cats.insert(c.id, i) {
            return Err(err(format!("categories[{i}].id: {} is also the id of categories[{first}]", c.id)));
        }
    }
    let mut ann_ids: HashMap<i64, usize> = HashMap::new();
    let mut annotations = Vec::with_capacity(f.annotations.len());
    let mut cleaning = Cleaning::default();
    for (i, a) in f.annotations.iter().enumerate() {
        let at = format!("annotations[{i}]");
        if let Some(first) = ann_ids.insert(a.id, i) {
            return Err(err(format!("{at}.id: {} is also the id of annotations[{first}]", a.id)));
        }
        let Some(&im) = images.get(&a.image_id) else {
            return Err(err(format!("{at}.image_id: no image has id {}", a.image_id)));
        };
        if !cats.contains_key(&a.category_id) {
            return Err(err(format!("{at}.category_id: no category has id {}", a.category_id)));
        }
        let b = bbox(file, &format!("{at}.bbox"), &a.bbox)?;
        if !a.area.is_finite() || a.area < 0.0 {
            return Err(err(format!("{at}.area: {} is not an area", a.area)));
        }
        let flag = |f: Flag, key: &str| f.get().ok_or_else(|| err(format!("{at}.{key}: not 0, 1, true or false")));
        let iscrowd = flag(a.iscrowd, "iscrowd")?;
        let difficult = match a.difficult {
            Some(d) => flag(d, "difficult")?,
            None => false,
        };
        let image = &f.images[im];
        let Some((bbox, clipped)) = clip_to_image(b, image.width, image.height) else {
            cleaning.dropped_outside += 1;
            continue;
        };
        cleaning.clipped += clipped as usize;
        annotations.push(DetAnnotation {
            id: a.id,
            image_id: a.image_id,
            category_id: a.category_id,
            bbox,
            area: a.area,
            iscrowd,
            difficult,
        });
    }
    Ok(DetDataset {
        images: f
            .images
            .into_iter()
            .map(|i| DetImage { id: i.id, file_name: i.file_name, width: i.width, height: i.height })
            .collect(),
        categories: f.categories.into_iter().map(|c| DetCategory { id: c.id, name: c.name }).collect(),
        annotations,
        cleaning,
    })
}

/// Read detections in COCO's results format for the ground truth `gt`: an image or category id
/// that `gt` lacks is refused (a results file for another data set, or a class-id mapping off by
/// one); an empty list is fine.
pub fn read_results(path: &Path, gt: &DetDataset) -> Result<Vec<Detection>, FileError> {
    let bytes = read_bounded(
        path,
        MAX_JSON_BYTES,
        "a results file of 100 detections per image for 100k images is under 1 GiB",
    )?;
    parse_results(path, &bytes, gt)
}

pub fn parse_results(file: &Path, bytes: &[u8], gt: &DetDataset) -> Result<Vec<Detection>, FileError> {
    let rs: Vec<Result_> = parse(file, bytes)?;
    let images: std::collections::HashSet<i64> = gt.images.iter().map(|i| i.id).collect();
    let cats: std::collections::HashSet<i64> = gt.categories.iter().map(|c| c.id).collect();
    let mut out = Vec::with_capacity(rs.len());
    for (i, r) in rs.into_iter().enumerate() {
        if !images.contains(&r.image_id) {
            return Err(FileError::new(
                file,
                None,
                format!("[{i}].image_id: the ground truth has no image {}", r.image_id),
            ));
        }
        if !cats.contains(&r.category_id) {
            return Err(FileError::new(
                file,
                None,
                format!("[{i}].category_id: the ground truth has no category {}", r.category_id),
            ));
        }
        let b = &r.bbox;
        let &[x, y, w, h] = &b[..] else {
            return Err(FileError::new(file, None, format!("[{i}].bbox: {} numbers, not 4 ([x, y, w, h])", b.len())));
        };
        if !r.score.is_finite() {
            return Err(FileError::new(file, None, format!("[{i}].score: not a finite number")));
        }
        out.push(Detection { image_id: r.image_id, category_id: r.category_id, bbox: [x, y, w, h], score: r.score });
    }
    Ok(out)
}

/// COCO instances JSON of `ds` (what pycocotools loads): `images`, `annotations` (with
/// `iscrowd` 0/1 and, where set, `difficult`), `categories`.
pub fn to_json(ds: &DetDataset) -> String {
    use serde_json::json;
    let images: Vec<_> = ds
        .images
        .iter()
        .map(|i| json!({"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height}))
        .collect();
    let annotations: Vec<_> = ds
        .annotations
        .iter()
        .map(|a| {
            let mut v = json!({"id": a.id, "image_id": a.image_id, "category_id": a.category_id, "bbox": a.bbox,
                "area": a.area, "iscrowd": a.iscrowd as u8});
            if a.difficult {
                v["difficult"] = json!(1);
            }
            v
        })
        .collect();
    let categories: Vec<_> =
        ds.categories.iter().map(|c| json!({"id": c.id, "name": c.name, "supercategory": "none"})).collect();
    serde_json::to_string(&json!({"images": images, "annotations": annotations, "categories": categories})).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("gt.json")
    }

    const GOOD: &str = r#"{"info": {"x": 1}, "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        "categories": [{"id": 3, "name": "cat"}],
        "annotations": [
          {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "area": 300, "iscrowd": 0, "segmentation": [[1,2]]},
          {"id": 2, "image_id": 1, "category_id": 3, "bbox": [90, 70, 20, 20], "area": 400, "iscrowd": 1},
          {"id": 3, "image_id": 1, "category_id": 3, "bbox": [200, 10, 5, 5], "area": 25, "iscrowd": 0}]}"#;

    #[test]
    fn reads_clips_and_drops() {
        let ds = parse_instances(p(), GOOD.as_bytes()).unwrap();
        assert_eq!(ds.annotations.len(), 2);
        assert_eq!(ds.annotations[1].bbox, [90.0, 70.0, 10.0, 10.0]);
        assert!(ds.annotations[1].iscrowd);
        assert_eq!(ds.annotations[1].area, 400.0);
        assert_eq!(ds.cleaning, Cleaning { clipped: 1, dropped_outside: 1 });
        let back = parse_instances(p(), to_json(&ds).as_bytes()).unwrap();
        assert_eq!(back.annotations, ds.annotations);
    }

    fn err(s: &str) -> String {
        parse_instances(p(), s.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_name_the_place() {
        let e = err("{\"images\": [");
        assert!(e.starts_with("gt.json: byte 11: images: truncated JSON") && e.ends_with("line 1 column 12"), "{e}");
        let e = err("{\n nope");
        assert!(e.starts_with("gt.json: byte ") && e.contains("not JSON") && e.contains("line 2"), "{e}");
        let e = err(&GOOD.replace(r#""area": 300, "#, ""));
        assert!(e.contains("annotations[0]: missing field `area`"), "{e}");
        let e = err(&GOOD.replace(
            r#""image_id": 1, "category_id": 3, "bbox": [90"#,
            r#""image_id": 9, "category_id": 3, "bbox": [90"#,
        ));
        assert_eq!(e, "gt.json: annotations[1].image_id: no image has id 9");
        let e = err(&GOOD.replace(r#""category_id": 3, "bbox": [200"#, r#""category_id": 4, "bbox": [200"#));
        assert_eq!(e, "gt.json: annotations[2].category_id: no category has id 4");
        let e = err(&GOOD.replace(r#""id": 3, "image_id""#, r#""id": 1, "image_id""#));
        assert_eq!(e, "gt.json: annotations[2].id: 1 is also the id of annotations[0]");
        let e = err(&GOOD.replace("[10, 10, 20, 20]", "[10, 10, 20]"));
        assert_eq!(e, "gt.json: annotations[0].bbox: 3 numbers, not 4 ([x, y, w, h])");
        let e = err(&GOOD.replace("[10, 10, 20, 20]", "[10, 10, \"a\", 20]"));
        assert!(e.contains("annotations[0].bbox[2]: invalid type: string"), "{e}");
        let e = err(&GOOD.replace("[10, 10, 20, 20]", "[10, 10, 0, 20]"));
        assert_eq!(e, "gt.json: annotations[0].bbox: width 0 x height 20: boxes of no area are refused");
        let e = err(&GOOD.replace("[10, 10, 20, 20]", "[10, 10, 1e999, 20]"));
        assert!(e.contains("number out of range"), "{e}");
    }

    #[test]
    fn results_refuse_unknown_images_and_accept_empty() {
        let gt = parse_instances(p(), GOOD.as_bytes()).unwrap();
        let r = Path::new("r.json");
        assert_eq!(parse_results(r, b"[]", &gt).unwrap(), vec![]);
        let e = parse_results(r, br#"[{"image_id": 2, "category_id": 3, "bbox": [1,1,2,2], "score": 0.5}]"#, &gt)
            .unwrap_err();
        assert_eq!(e.to_string(), "r.json: [0].image_id: the ground truth has no image 2");
        let ok =
            parse_results(r, br#"[{"image_id": 1, "category_id": 3, "bbox": [1,1,2,2], "score": 0.5}]"#, &gt).unwrap();
        assert_eq!(ok[0].bbox, [1.0, 1.0, 2.0, 2.0]);
        let e = parse_results(r, br#"{"image_id": 1}"#, &gt).unwrap_err().to_string();
        assert!(e.contains("invalid type: map, expected a sequence"), "{e}");
    }
}
