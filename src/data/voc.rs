//! PASCAL VOC: `Annotations/<id>.xml` (1-based inclusive boxes, `difficult`), `ImageSets/Main/<split>.txt`,
//! `JPEGImages/<id>.jpg`, read from files of strangers. The XML reader (quick-xml) expands no
//! entity and reads no DTD: a DOCTYPE (where entity declarations live) is refused, as is any
//! entity reference other than XML's five and character references. Errors name the file and the
//! byte offset or the object.
//!
//! Into a [`DetDataset`]: image ids are the ids' digits (`000005` -> 5, `2008_000001` ->
//! 2008000001; anything else is refused), so COCO-format results can name them; a VOC box
//! `xmin..xmax` (inclusive pixels) becomes `[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]`
//! with area w * h; categories are `classes.txt` at the root (one name per line, ids 1, 2, ...),
//! or VOC's 20 classes in their usual order. Boxes as `detection.rs` says: xmin > xmax refused,
//! partly outside the image clipped, wholly outside dropped.

use super::coco::read_bounded;
use super::detection::{Cleaning, DetAnnotation, DetCategory, DetDataset, DetImage, clip_to_image};
use crate::file_error::FileError;
use quick_xml::events::Event;
use std::path::Path;

pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

const MAX_XML_BYTES: u64 = 1 << 20;
const MAX_LIST_BYTES: u64 = 64 << 20;

/// One `<object>`.
#[derive(Clone, Debug, PartialEq)]
pub struct VocObject {
    pub name: String,
    /// xmin, ymin, xmax, ymax: 1-based inclusive pixels
    pub bndbox: [f64; 4],
    pub difficult: bool,
}

/// One annotation file.
#[derive(Clone, Debug, PartialEq)]
pub struct VocAnnotation {
    pub filename: String,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<VocObject>,
}

#[derive(Default)]
struct Partial {
    name: Option<String>,
    bndbox: [Option<f64>; 4],
    difficult: bool,
}

/// Parse one annotation XML (`file` names it in errors).
pub fn parse_xml(file: &Path, bytes: &[u8]) -> Result<VocAnnotation, FileError> {
    let err = |at: Option<u64>, msg: String| FileError::new(file, at, msg);
    let text = std::str::from_utf8(bytes).map_err(|e| err(Some(e.valid_up_to() as u64), "not UTF-8".into()))?;
    let mut r = quick_xml::Reader::from_str(text);
    let mut path: Vec<String> = vec![];
    let mut buf = String::new();
    let (mut filename, mut width, mut height) = (None, None, None);
    let mut objects = vec![];
    let mut obj: Option<Partial> = None;
    loop {
        let pos = r.buffer_position();
        let ev = r.read_event().map_err(|e| err(Some(r.error_position()), format!("not XML: {e}")))?;
        match ev {
            Event::DocType(_) => {
                return Err(err(
                    Some(pos),
                    "a DOCTYPE declaration: DTDs and entity declarations are not read (VOC annotations have none)"
                        .into(),
                ));
            }
            Event::Start(s) => {
                let name = s.name().as_ref().to_string();
                if path.len() == 1 && name == "object" {
                    obj = Some(Partial::default());
                }
                path.push(name);
                buf.clear();
                if path.len() > 16 {
                    return Err(err(Some(pos), "elements nested more than 16 deep".into()));
                }
            }
            Event::Text(t) => buf.push_str(&t),
            Event::CData(t) => buf.push_str(&t),
            Event::GeneralRef(g) => match g.resolve_char_ref() {
                Ok(Some(c)) => buf.push(c),
                Ok(None) => match &*g {
                    "lt" => buf.push('<'),
                    "gt" => buf.push('>'),
                    "amp" => buf.push('&'),
                    "apos" => buf.push('\''),
                    "quot" => buf.push('"'),
                    other => {
                        return Err(err(
                            Some(pos),
                            format!("an entity reference &{other};: entities are not expanded"),
                        ));
                    }
                },
                Err(e) => return Err(err(Some(pos), format!("a bad character reference: {e}"))),
            },
            Event::End(_) => {
                let joined = path.join("/");
                let value = buf.trim().to_string();
                let number = |what: &str| -> Result<f64, FileError> {
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| err(Some(pos), format!("<{what}>: {value:?} is not a number")))
                };
                match joined.as_str() {
                    "annotation/filename" => filename = Some(value.clone()),
                    "annotation/size/width" => width = Some(number("width")?),
                    "annotation/size/height" => height = Some(number("height")?),
                    "annotation/object/name" => obj.get_or_insert_with(Partial::default).name = Some(value.clone()),
                    "annotation/object/difficult" => {
                        obj.get_or_insert_with(Partial::default).difficult = number("difficult")? != 0.0
                    }
                    "annotation/object/bndbox/xmin" => {
                        obj.get_or_insert_with(Partial::default).bndbox[0] = Some(number("xmin")?)
                    }
                    "annotation/object/bndbox/ymin" => {
                        obj.get_or_insert_with(Partial::default).bndbox[1] = Some(number("ymin")?)
                    }
                    "annotation/object/bndbox/xmax" => {
                        obj.get_or_insert_with(Partial::default).bndbox[2] = Some(number("xmax")?)
                    }
                    "annotation/object/bndbox/ymax" => {
                        obj.get_or_insert_with(Partial::default).bndbox[3] = Some(number("ymax")?)
                    }
                    "annotation/object" => {
                        let o = obj.take().unwrap_or_default();
                        let k = objects.len();
                        let name = o.name.ok_or_else(|| err(None, format!("object {k}: no <name>")))?;
                        let [Some(x1), Some(y1), Some(x2), Some(y2)] = o.bndbox else {
                            return Err(err(
                                None,
                                format!("object {k} ({name}): <bndbox> lacks xmin, ymin, xmax or ymax"),
                            ));
                        };
                        if x1 > x2 || y1 > y2 {
                            return Err(err(
                                None,
                                format!("object {k} ({name}): xmin {x1} > xmax {x2} or ymin {y1} > ymax {y2}"),
                            ));
                        }
                        objects.push(VocObject { name, bndbox: [x1, y1, x2, y2], difficult: o.difficult });
                    }
                    _ => {}
                }
                path.pop();
                buf.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    let size = |v: Option<f64>, what: &str| -> Result<u32, FileError> {
        let v = v.ok_or_else(|| err(None, format!("no <size><{what}>")))?;
        if v >= 1.0 && v <= u32::MAX as f64 && v.fract() == 0.0 {
            Ok(v as u32)
        } else {
            Err(err(None, format!("<size><{what}>: {v} is not a size in pixels")))
        }
    };
    Ok(VocAnnotation {
        filename: filename.unwrap_or_default(),
        width: size(width, "width")?,
        height: size(height, "height")?,
        objects,
    })
}

/// A VOC id's image id: its digits (underscores dropped), None for anything else.
pub fn image_id(stem: &str) -> Option<i64> {
    let digits: String = stem.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The class names: `classes.txt` at `root`, else VOC's 20.
pub fn classes(root: &Path) -> Result<Vec<String>, FileError> {
    let p = root.join("classes.txt");
    if !p.exists() {
        return Ok(VOC_CLASSES.iter().map(|s| s.to_string()).collect());
    }
    let bytes = read_bounded(&p, MAX_LIST_BYTES, "a class list is a few KiB")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| FileError::new(&p, None, "not UTF-8"))?;
    let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect();
    if names.is_empty() {
        return Err(FileError::new(&p, None, "no class names"));
    }
    Ok(names)
}

/// The ids of a split (`ImageSets/Main/<split>.txt`).
pub fn split_ids(root: &Path, split: &str) -> Result<Vec<String>, FileError> {
    let p = root.join("ImageSets").join("Main").join(format!("{split}.txt"));
    let bytes = read_bounded(&p, MAX_LIST_BYTES, "an image list of a million ids is under 64 MiB")?;
    let text = std::str::from_utf8(&bytes).map_err(|_| FileError::new(&p, None, "not UTF-8"))?;
    let mut ids = vec![];
    for (n, line) in text.lines().enumerate() {
        let id = line.split_whitespace().next().unwrap_or("");
        if id.is_empty() {
            continue;
        }
        if image_id(id).is_none() {
            return Err(FileError::new(&p, None, format!("line {}: {id:?} is not a VOC id (digits and _)", n + 1)));
        }
        ids.push(id.to_string());
    }
    Ok(ids)
}

/// Read split `split` of the VOC tree at `root`.
pub fn read_voc(root: &Path, split: &str) -> Result<DetDataset, FileError> {
    let names = classes(root)?;
    let ids = split_ids(root, split)?;
    let mut seen = std::collections::HashMap::new();
    let mut ds = DetDataset {
        categories: names.iter().enumerate().map(|(i, n)| DetCategory { id: i as i64 + 1, name: n.clone() }).collect(),
        ..Default::default()
    };
    let mut cleaning = Cleaning::default();
    for stem in &ids {
        let id = image_id(stem).unwrap();
        if let Some(first) = seen.insert(id, stem.clone()) {
            let list = root.join("ImageSets").join("Main").join(format!("{split}.txt"));
            return Err(FileError::new(list, None, format!("{stem} and {first} are both image {id}")));
        }
        let xml = root.join("Annotations").join(format!("{stem}.xml"));
        let a = parse_xml(&xml, &read_bounded(&xml, MAX_XML_BYTES, "a VOC annotation is a few KiB")?)?;
        for (k, o) in a.objects.iter().enumerate() {
            let Some(cat) = names.iter().position(|n| *n == o.name) else {
                return Err(FileError::new(
                    &xml,
                    None,
                    format!(
                        "object {k}: class {:?} is not one of the {} classes ({})",
                        o.name,
                        names.len(),
                        names.join(", ")
                    ),
                ));
            };
            let [x1, y1, x2, y2] = o.bndbox;
            let b = [x1 - 1.0, y1 - 1.0, x2 - x1 + 1.0, y2 - y1 + 1.0];
            let Some((bbox, clipped)) = clip_to_image(b, a.width, a.height) else {
                cleaning.dropped_outside += 1;
                continue;
            };
            cleaning.clipped += clipped as usize;
            ds.annotations.push(DetAnnotation {
                id: ds.annotations.len() as i64 + 1,
                image_id: id,
                category_id: cat as i64 + 1,
                bbox,
                area: bbox[2] * bbox[3],
                iscrowd: false,
                difficult: o.difficult,
            });
        }
        ds.images.push(DetImage { id, file_name: format!("{stem}.jpg"), width: a.width, height: a.height });
    }
    ds.cleaning = cleaning;
    Ok(ds)
}

/// One annotation file's XML, as VOC writes it.
pub fn to_xml(a: &VocAnnotation, folder: &str) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut s = format!(
        "<annotation>\n\t<folder>{}</folder>\n\t<filename>{}</filename>\n\t<size>\n\t\t<width>{}</width>\n\t\t<height>{}</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n",
        esc(folder),
        esc(&a.filename),
        a.width,
        a.height
    );
    for o in &a.objects {
        let [x1, y1, x2, y2] = o.bndbox;
        s += &format!(
            "\t<object>\n\t\t<name>{}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>{}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x1}</xmin>\n\t\t\t<ymin>{y1}</ymin>\n\t\t\t<xmax>{x2}</xmax>\n\t\t\t<ymax>{y2}</ymax>\n\t\t</bndbox>\n\t</object>\n",
            esc(&o.name),
            o.difficult as u8
        );
    }
    s + "</annotation>\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<annotation><folder>VOC2007</folder><filename>000005.jpg</filename>
        <size><width>500</width><height>375</height><depth>3</depth></size>
        <object><name>chair</name><pose>Rear</pose><truncated>0</truncated><difficult>0</difficult>
          <bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object>
        <object><name>chair</name><difficult>1</difficult>
          <bndbox><xmin>5</xmin><ymin>244</ymin><xmax>67</xmax><ymax>374</ymax></bndbox></object>
        </annotation>";

    fn parse(s: &str) -> Result<VocAnnotation, String> {
        parse_xml(Path::new("a.xml"), s.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_voc_xml_and_round_trips() {
        let a = parse(XML).unwrap();
        assert_eq!((a.width, a.height, a.objects.len()), (500, 375, 2));
        assert_eq!(
            a.objects[1],
            VocObject { name: "chair".into(), bndbox: [5.0, 244.0, 67.0, 374.0], difficult: true }
        );
        assert_eq!(parse(&to_xml(&a, "VOC2007")).unwrap(), a);
    }

    #[test]
    fn refuses_entities_doctypes_and_bad_boxes() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><annotation>&lol2;</annotation>";
        let e = parse(bomb).unwrap_err();
        assert!(e.starts_with("a.xml: byte 21: a DOCTYPE declaration"), "{e}");
        let e = parse(&XML.replace("<pose>Rear</pose>", "<pose>&ext;</pose>")).unwrap_err();
        assert!(e.contains("an entity reference &ext;: entities are not expanded"), "{e}");
        assert_eq!(parse(&XML.replace("Rear", "R&amp;r&#65;")).unwrap().objects.len(), 2);
        let e = parse(&XML.replace("<xmin>263</xmin>", "<xmin>400</xmin>")).unwrap_err();
        assert_eq!(e, "a.xml: object 0 (chair): xmin 400 > xmax 324 or ymin 211 > ymax 339");
        let e = parse(&XML.replace("<xmin>263</xmin>", "<xmin>abc</xmin>")).unwrap_err();
        assert!(e.contains("<xmin>: \"abc\" is not a number"), "{e}");
        let e = parse(&XML.replace("<xmax>324</xmax>", "")).unwrap_err();
        assert!(e.contains("object 0 (chair): <bndbox> lacks"), "{e}");
        let e = parse(&XML[..200]).unwrap_err();
        assert!(e.starts_with("a.xml: "), "{e}");
        assert!(parse(&XML.replace("</object>", "")).is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(image_id("000005"), Some(5));
        assert_eq!(image_id("2008_000001"), Some(2008000001));
        assert_eq!(image_id("../x"), None);
        assert_eq!(image_id(""), None);
    }
}
