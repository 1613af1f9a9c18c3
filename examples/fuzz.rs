//! Fuzz targets for the readers that take files from strangers, with a
//! mutation driver that runs on the stable toolchain (no nightly, no
//! sanitizers): `pth` (torch.save zip and legacy files, through the full
//! state_dict reader), `safetensors` (state_dicts and our checkpoints),
//! `image` (the JPEG/PNG decoding wrapper and the evaluation transform), `coco` (COCO instances and
//! results JSON, and the COCO evaluator on what was read) and `voc` (VOC annotation XML).
//!
//!     cargo run --profile fuzz --example fuzz -- pth --secs 60 [--seed 1]   (overflow checks on)
//!     bash scripts/fuzz.sh 20          # every target, 20 s each
//!
//! Each round takes a seed file (tests/fixtures, or generated here), applies
//! 1-8 random mutations (bit flips, byte sets to 0x00/0xff/0x7f/0x80,
//! little-endian length fields set to huge values, truncation, deletion,
//! duplication of a slice, splicing in another seed) and runs the target
//! under `catch_unwind`. A panic, or an input that takes more than a second,
//! is saved under `target/fuzz-findings/` and ends the run with exit code 1.
//! The driver is a random mutator, not coverage-guided: it finds crashes
//! near the seeds, where hostile files are made.

use resnet::rng::splitmix64;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A target reads one input; true when it was accepted (to report how deep the mutants get).
fn target(name: &str) -> Option<fn(&[u8]) -> bool> {
    Some(match name {
        "pth" => |d| resnet::weights::parse_state_dict("fuzz.pth", d).is_ok(),
        "safetensors" => |d| {
            let a = resnet::weights::parse_state_dict("fuzz.safetensors", d).is_ok();
            resnet::weights::checkpoint::parse("fuzz.safetensors".as_ref(), d).is_ok() || a
        },
        "image" => |d| match resnet::data::image::decode("fuzz.img", d) {
            Ok(img) => {
                let t = resnet::data::image::ImagenetEval { resize: 40, crop: 32, ..Default::default() };
                let mut out = vec![0.0; 32 * 32 * 3];
                t.apply(&img, 3, &mut out).is_ok()
            }
            Err(_) => false,
        },
        // COCO instances, then results against what was read (or an empty ground truth)
        "coco" => |d| {
            let p = std::path::Path::new("fuzz.json");
            let gt = resnet::data::coco::parse_instances(p, d);
            let empty = resnet::data::detection::DetDataset::default();
            let dets = resnet::data::coco::parse_results(p, d, gt.as_ref().unwrap_or(&empty));
            if let Ok(gt) = &gt {
                let _ = resnet::detect::coco_eval::evaluate(gt, &[]);
            }
            gt.is_ok() || dets.is_ok()
        },
        "voc" => |d| resnet::data::voc::parse_xml(std::path::Path::new("fuzz.xml"), d).is_ok(),
        _ => return None,
    })
}

fn fixtures(rel: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap_or_default()
}

/// Seed inputs per target.
fn seeds(name: &str) -> Vec<Vec<u8>> {
    use resnet::arch::{ArchOptions, ArchSpec};
    match name {
        "pth" => vec![fixtures("tests/fixtures/pth/zip.pth"), fixtures("tests/fixtures/pth/legacy.pth")],
        "safetensors" => {
            let spec = ArchSpec::parse("resnet20", &ArchOptions { classes: Some(2), ..Default::default() }).unwrap();
            let net = resnet::net::Net::new(&spec, 1, 8, 8, false, 0).unwrap();
            let mut sd = resnet::weights::StateDict::of_net(&net);
            sd.tensors.truncate(6);
            let small = resnet::weights::safetensors_bytes(&sd, None).unwrap();
            let pre = resnet::data::augment::Preprocess {
                src: (8, 8, 1),
                size: 8,
                mean: vec![0.0; 64],
                crop_pad: 0,
                flip: false,
            };
            let meta = resnet::weights::checkpoint::Meta {
                iteration: 3,
                ..resnet::weights::checkpoint::Meta::new(spec.clone(), vec!["a".into(), "b".into()], (8, 8, 1), 8)
            };
            let ck = resnet::weights::checkpoint::to_bytes(&net, None, &pre, &meta).unwrap();
            vec![small, ck]
        }
        "image" => {
            let img = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([(x * 20) as u8, (y * 28) as u8, 77]));
            let mut out = vec![];
            for fmt in [image::ImageFormat::Png, image::ImageFormat::Jpeg] {
                let mut b = vec![];
                image::DynamicImage::ImageRgb8(img.clone()).write_to(&mut std::io::Cursor::new(&mut b), fmt).unwrap();
                out.push(b);
            }
            let grey = image::GrayImage::from_fn(5, 7, |x, y| image::Luma([(x * y * 9) as u8]));
            let mut b = vec![];
            image::DynamicImage::ImageLuma8(grey)
                .write_to(&mut std::io::Cursor::new(&mut b), image::ImageFormat::Png)
                .unwrap();
            out.push(b);
            out
        }
        "coco" => vec![
            br#"{"info": {}, "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
 "categories": [{"id": 3, "name": "cat"}, {"id": 4, "name": "dog"}],
 "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10.5, 20, 20], "area": 300, "iscrowd": 0},
  {"id": 2, "image_id": 1, "category_id": 4, "bbox": [90, 70, 20, 20], "area": 400, "iscrowd": 1, "difficult": 1}]}"#
                .to_vec(),
            br#"[{"image_id": 1, "category_id": 3, "bbox": [10, 10, 20, 20], "score": 0.9}]"#.to_vec(),
        ],
        "voc" => vec![
            b"<annotation><folder>VOC2007</folder><filename>000005.jpg</filename>
<size><width>500</width><height>375</height><depth>3</depth></size>
<object><name>chair</name><pose>Rear</pose><truncated>0</truncated><difficult>0</difficult>
<bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object>
<object><name>dog &amp; cat</name><difficult>1</difficult>
<bndbox><xmin>5</xmin><ymin>244</ymin><xmax>67</xmax><ymax>374</ymax></bndbox></object></annotation>"
                .to_vec(),
        ],
        _ => vec![],
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        splitmix64(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut d = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(8) {
        let len = d.len();
        if len == 0 {
            d.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(len);
        match rng.below(7) {
            0 => d[at] ^= 1 << rng.below(8),
            1 => d[at] = [0x00, 0xff, 0x7f, 0x80][rng.below(4)],
            2 => {
                let v: [u8; 8] = [u64::MAX, 1 << 62, u32::MAX as u64, 0x8000_0000, 0][rng.below(5)].to_le_bytes();
                let n = [2, 4, 8][rng.below(3)].min(len - at);
                d[at..at + n].copy_from_slice(&v[..n]);
            }
            3 => d.truncate(at),
            4 => {
                let n = rng.below(64).min(len - at);
                d.drain(at..at + n);
            }
            5 => {
                let n = rng.below(64).min(len - at);
                let s: Vec<u8> = d[at..at + n].to_vec();
                let to = rng.below(d.len());
                d.splice(to..to, s);
            }
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len());
                let n = rng.below(256).min(other.len() - from).min(len - at);
                d[at..at + n].copy_from_slice(&other[from..from + n]);
            }
        }
    }
    d
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("");
    let Some(run) = target(name) else {
        eprintln!("usage: fuzz pth|safetensors|image [--secs N] [--seed S]");
        std::process::exit(2);
    };
    let opt = |flag: &str, default: u64| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (secs, seed) = (opt("--secs", 30), opt("--seed", 1));
    let seeds = seeds(name);
    assert!(seeds.iter().all(|s| !s.is_empty()), "missing seed files (run from the repository)");
    std::panic::set_hook(Box::new(|_| {}));
    let mut rng = Rng(seed);
    let (start, mut n) = (Instant::now(), 0u64);
    let (mut findings, mut accepted) = (0, 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        let input = mutate(&mut rng, &seeds);
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| run(&input));
        let slow = t.elapsed() > Duration::from_secs(1);
        accepted += matches!(r, Ok(true)) as u64;
        if r.is_err() || slow {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{name}-{}-{n}", if slow { "slow" } else { "panic" }));
            std::fs::write(&path, &input).unwrap();
            eprintln!(
                "{name}: {} on input {n}, saved to {}",
                if slow { "took over 1 s" } else { "panic" },
                path.display()
            );
            findings += 1;
            if findings >= 5 {
                break;
            }
        }
        n += 1;
    }
    println!(
        "{name}: {n} inputs in {:.0} s ({accepted} read without error), {findings} findings",
        start.elapsed().as_secs_f64()
    );
    std::process::exit(if findings > 0 { 1 } else { 0 });
}
