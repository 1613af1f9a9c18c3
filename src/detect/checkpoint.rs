//! A detector's checkpoint: one safetensors file in the style of `weights::checkpoint` (f32
//! tensors under stable names, metadata as JSON strings, atomic writes), with the format tag
//! [`FORMAT`] so that neither kind of checkpoint is mistaken for the other.
//!
//! **Tensor names** are the `state_dict` names of torchvision's `FasterRCNN` built on a C4 ResNet
//! (as `scripts/faster_rcnn_fixtures.py` builds it: an `IntermediateLayerGetter` body up to the
//! last-but-one stage, a `box_head` module holding the last stage, torchvision 0.29's `RPNHead`
//! and `FastRCNNPredictor`), in torchvision layout (convolutions OIHW):
//!
//! | part | our name | checkpoint name |
//! |---|---|---|
//! | C4 prefix ([`FasterRcnn::prefix`]) | `conv1.weight`, `bn1.*`, `layer1.0.conv1.weight`, ... `layer3.*` | `backbone.body.` + name |
//! | C4 suffix ([`FasterRcnn::suffix`]) | `layer4.0.conv1.weight`, ... (the last stage) | `roi_heads.box_head.` + name |
//! | RPN head ([`FasterRcnn::rpn`]) | `conv.0.0.weight` / `.bias`, `cls_logits.*`, `bbox_pred.*` | `rpn.head.` + name |
//! | box predictor ([`FasterRcnn::predictor`]) | `cls_score.weight` / `.bias`, `bbox_pred.*` | `roi_heads.box_predictor.` + name |
//!
//! BN layers contribute `weight`, `bias`, `running_mean`, `running_var` (torchvision's
//! `FrozenBatchNorm2d` buffers; no `num_batches_tracked`, which a reader ignores if present).
//!
//! **Metadata** (`"format"`: [`FORMAT`], `"detector"`: [`DetMeta`] as JSON): the backbone
//! ([`ArchSpec`]), the classes (K + 1 with the background, and the K names), the preset by name
//! with only the values that differ from it ([`PresetRecord`]), what is frozen, the largest image
//! the detector was built for, the test-time image transform ([`DetTransform`]) and, for training
//! checkpoints, the iteration and seed ([`TrainMeta`]).
//!
//! Reading checks everything a stranger's file could get wrong, with errors naming the file:
//! not a detector checkpoint (and which kind it is instead), metadata that does not resolve,
//! missing / unexpected / mis-shaped tensors key by key ([`Mismatch`]), non-finite values.

use super::model::{DetOptim, DetectorSpec, FasterRcnn};
use super::preset::{Preset, PresetName, RoiOp};
use super::{roi_head::HeadConfig, rpn::RpnConfig};
use crate::arch::ArchSpec;
use crate::net::Freeze;
use crate::weights::{self, Mismatch, StateDict, Tensor};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// The metadata tag of a detector checkpoint.
pub const FORMAT: &str = "resnet-detector-v1";

/// Name prefixes of the four parts (torchvision's `FasterRCNN` attribute paths).
pub const PREFIX: &str = "backbone.body.";
pub const SUFFIX: &str = "roi_heads.box_head.";
pub const RPN: &str = "rpn.head.";
pub const PREDICTOR: &str = "roi_heads.box_predictor.";
/// Training checkpoints: each part's SGD momentum buffer, `optimizer.<part>` (prefix, rpn,
/// suffix, predictor), flat in the part's own parameter order.
pub const OPTIMIZER: &str = "optimizer.";

/// The test-time image transform (torchvision's `GeneralizedRCNNTransform`): the shorter side
/// scaled to `min_size` unless the longer would then exceed `max_size` (then the longer is
/// `max_size`), pixels in [0, 1] normalised per channel, `(p - mean) / std`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetTransform {
    pub min_size: usize,
    pub max_size: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl DetTransform {
    /// The preset's sizes with ImageNet's mean and std (torchvision's defaults).
    pub fn of_preset(p: &Preset) -> DetTransform {
        DetTransform {
            min_size: p.image_min_size,
            max_size: p.image_max_size,
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// The largest image it makes, (shorter side, longer side): every output has its shorter side
    /// at most `min_size` and its longer at most `max_size` (a detector built for this size, in
    /// either orientation, takes them all).
    pub fn largest(&self) -> (usize, usize) {
        (self.min_size, self.max_size)
    }

    /// Whether it can transform images for a network of `channels` input channels.
    pub fn check(&self, channels: usize) -> std::result::Result<(), String> {
        if self.min_size == 0 || self.max_size < self.min_size || self.max_size > super::input::MAX_SIDE {
            return Err(format!(
                "image sizes min {} / max {}: need 1 <= min <= max <= {}",
                self.min_size,
                self.max_size,
                super::input::MAX_SIDE
            ));
        }
        if self.mean.len() != channels
            || self.std.len() != channels
            || self.mean.iter().any(|m| !m.is_finite())
            || self.std.iter().any(|s| !s.is_finite() || *s <= 0.0)
        {
            return Err(format!(
                "a {channels}-channel network needs {channels} finite means and positive stds, not {:?} and {:?}",
                self.mean, self.std
            ));
        }
        Ok(())
    }
}

/// Where training stands (training checkpoints only).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainMeta {
    /// completed training iterations
    pub iteration: u64,
    /// every random draw of the run is a function of (seed, iteration)
    pub seed: u64,
    /// the best validation AP@[.5:.95] so far (best.safetensors holds that state)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_val_ap: Option<f64>,
}

/// [`Freeze`] as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FreezeRecord {
    pub bn: bool,
    pub at: usize,
}

/// A preset as recorded: its name and the values that differ from the named preset's, by
/// dotted field name (`"rpn.post_nms_top_n_test": 50`, `"image_min_size": 320`, `"roi_op":
/// {"align": {...}}`; the fields of [`PresetFields`]). A preset equal to its namesake records
/// no overrides.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PresetRecord {
    pub name: String,
    #[serde(default)]
    pub overrides: BTreeMap<String, serde_json::Value>,
}

/// Everything in a detector checkpoint besides its tensors.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DetMeta {
    pub arch: ArchSpec,
    /// K + 1, the background (class 0) included
    pub classes: usize,
    /// the K names of classes 1..=K (class `i`'s name is `class_names[i - 1]`)
    pub class_names: Vec<String>,
    pub preset: PresetRecord,
    pub freeze: FreezeRecord,
    /// the largest image (H, W, after resizing) the detector was built for
    pub max_image: (usize, usize),
    pub transform: DetTransform,
    /// training checkpoints: the iteration and seed
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainMeta>,
}

impl DetMeta {
    /// The metadata of a detector of `spec` with `class_names` (K of them) and `transform`.
    pub fn new(spec: &DetectorSpec, class_names: Vec<String>, transform: DetTransform) -> DetMeta {
        DetMeta {
            arch: spec.arch.clone(),
            classes: spec.classes,
            class_names,
            preset: PresetRecord::of(&spec.preset),
            freeze: FreezeRecord { bn: spec.freeze.bn, at: spec.freeze.at },
            max_image: spec.max_image,
            transform,
            train: None,
        }
    }

    /// The detector specification recorded (the preset rebuilt from its name and overrides).
    pub fn spec(&self) -> std::result::Result<DetectorSpec, String> {
        Ok(DetectorSpec {
            arch: self.arch.clone(),
            classes: self.classes,
            preset: self.preset.preset()?,
            freeze: Freeze { bn: self.freeze.bn, at: self.freeze.at },
            max_image: self.max_image,
        })
    }

    /// Class `id`'s name (1..=K; 0 is "background").
    pub fn label(&self, id: usize) -> String {
        match id {
            0 => "background".into(),
            i => self.class_names.get(i - 1).cloned().unwrap_or_else(|| format!("class {i}")),
        }
    }

    /// Metadata comes from strangers' files: it must describe a detector this crate builds.
    fn check(&self) -> std::result::Result<DetectorSpec, String> {
        let a = &self.arch;
        a.check_record()?;
        if self.classes < 2 || self.class_names.len() + 1 != self.classes {
            return Err(format!(
                "{} classes (with the background) need {} class names, the file has {}",
                self.classes,
                self.classes.saturating_sub(1),
                self.class_names.len()
            ));
        }
        let (h, w) = self.max_image;
        if h == 0 || w == 0 || h.max(w) > super::input::MAX_SIDE {
            return Err(format!("largest image {h} x {w}: sides must be 1..={}", super::input::MAX_SIDE));
        }
        self.transform.check(a.in_channels)?;
        let spec = self.spec()?;
        if spec.freeze.at > a.stages.len() + 1 {
            return Err(format!(
                "freeze at {}: {} has only {} stages and the stem",
                spec.freeze.at,
                a.name,
                a.stages.len()
            ));
        }
        spec.preset.check_backbone(a)?;
        Ok(spec)
    }
}

/// Every value of a preset, serialisable (the [`Preset`] type holds `'static` anchor lists).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresetFields {
    pub rpn: RpnConfig,
    pub head: HeadConfig,
    pub anchor_sizes: Vec<f32>,
    pub aspect_ratios: Vec<f32>,
    pub legacy_anchors: bool,
    pub stride: usize,
    pub image_min_size: usize,
    pub image_max_size: usize,
    pub roi_op: RoiOp,
    pub roi_size: usize,
}

impl PresetFields {
    pub fn of(p: &Preset) -> PresetFields {
        PresetFields {
            rpn: p.rpn,
            head: p.head,
            anchor_sizes: p.anchor_sizes.to_vec(),
            aspect_ratios: p.aspect_ratios.to_vec(),
            legacy_anchors: p.legacy_anchors,
            stride: p.stride,
            image_min_size: p.image_min_size,
            image_max_size: p.image_max_size,
            roi_op: p.roi_op,
            roi_size: p.roi_size,
        }
    }

    /// The preset named `name` with these values. Anchor lists other than the named preset's
    /// are leaked to become `'static` (a few floats per checkpoint read).
    pub fn preset(&self, name: PresetName) -> Preset {
        let base = Preset::by_name(name);
        let keep = |v: &Vec<f32>, b: &'static [f32]| -> &'static [f32] {
            if v.as_slice() == b { b } else { Box::leak(v.clone().into_boxed_slice()) }
        };
        Preset {
            name,
            rpn: self.rpn,
            head: self.head,
            anchor_sizes: keep(&self.anchor_sizes, base.anchor_sizes),
            aspect_ratios: keep(&self.aspect_ratios, base.aspect_ratios),
            legacy_anchors: self.legacy_anchors,
            stride: self.stride,
            image_min_size: self.image_min_size,
            image_max_size: self.image_max_size,
            roi_op: self.roi_op,
            roi_size: self.roi_size,
        }
    }
}

/// The preset's name as recorded.
pub fn preset_name(n: PresetName) -> &'static str {
    match n {
        PresetName::Paper => "paper",
        PresetName::Torchvision => "torchvision",
    }
}

fn parse_preset_name(s: &str) -> std::result::Result<PresetName, String> {
    match s {
        "paper" => Ok(PresetName::Paper),
        "torchvision" => Ok(PresetName::Torchvision),
        _ => Err(format!("unknown preset {s:?} (known: paper, torchvision)")),
    }
}

/// A JSON object flattened one level: `{"rpn": {"x": 1}, "y": 2}` -> `rpn.x`, `y`.
fn flatten(v: serde_json::Value) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m {
            match v {
                serde_json::Value::Object(inner) if k == "rpn" || k == "head" => {
                    for (k2, v2) in inner {
                        out.insert(format!("{k}.{k2}"), v2);
                    }
                }
                v => {
                    out.insert(k, v);
                }
            }
        }
    }
    out
}

impl PresetRecord {
    /// `p` as its name and the values that differ from the named preset's.
    pub fn of(p: &Preset) -> PresetRecord {
        let json = |p: &Preset| flatten(serde_json::to_value(PresetFields::of(p)).expect("plain data"));
        let (mine, base) = (json(p), json(&Preset::by_name(p.name)));
        let overrides = mine.into_iter().filter(|(k, v)| base.get(k) != Some(v)).collect();
        PresetRecord { name: preset_name(p.name).into(), overrides }
    }

    /// The preset: the named one with the overrides applied; an unknown name or field, or a value
    /// of the wrong type, is an error naming it.
    pub fn preset(&self) -> std::result::Result<Preset, String> {
        let name = parse_preset_name(&self.name)?;
        let mut v = serde_json::to_value(PresetFields::of(&Preset::by_name(name))).expect("plain data");
        for (k, val) in &self.overrides {
            let slot = match k.split_once('.') {
                Some((outer @ ("rpn" | "head"), inner)) => v[outer].get_mut(inner),
                Some(_) => None,
                None => v.get_mut(k),
            };
            *slot.ok_or_else(|| format!("unknown preset field {k:?}"))? = val.clone();
        }
        let fields: PresetFields = serde_json::from_value(v)
            .map_err(|e| format!("preset {} with overrides {:?}: {e}", self.name, self.overrides))?;
        Ok(fields.preset(name))
    }
}

/// Every tensor of `d` under its checkpoint name, in torchvision layout: prefix, RPN head,
/// suffix, predictor (each in its own torchvision order).
pub fn state_dict(d: &FasterRcnn) -> StateDict {
    let mut tensors = vec![];
    for (name, shape) in d.prefix.tensors() {
        let data = d.prefix.get_torch(&name).expect("a tensor it lists");
        tensors.push((format!("{PREFIX}{name}"), Tensor { shape, data }));
    }
    for t in &d.rpn.tensors {
        let data = d.rpn.get_torch(&t.name).expect("a tensor it lists");
        tensors.push((format!("{RPN}{}", t.name), Tensor { shape: t.shape.clone(), data }));
    }
    for (name, shape) in d.suffix.tensors() {
        let data = d.suffix.get_torch(&name).expect("a tensor it lists");
        tensors.push((format!("{SUFFIX}{name}"), Tensor { shape, data }));
    }
    for t in &d.predictor.tensors {
        let data = d.predictor.get_torch(&t.name).expect("a tensor it lists");
        tensors.push((format!("{PREDICTOR}{}", t.name), Tensor { shape: t.shape.clone(), data }));
    }
    StateDict { tensors }
}

/// Every tensor name and shape `d` has, under checkpoint names (as [`state_dict`] orders them).
pub fn tensor_shapes(d: &FasterRcnn) -> Vec<(String, Vec<usize>)> {
    let mut out = vec![];
    out.extend(d.prefix.tensors().into_iter().map(|(n, s)| (format!("{PREFIX}{n}"), s)));
    out.extend(d.rpn.tensors.iter().map(|t| (format!("{RPN}{}", t.name), t.shape.clone())));
    out.extend(d.suffix.tensors().into_iter().map(|(n, s)| (format!("{SUFFIX}{n}"), s)));
    out.extend(d.predictor.tensors.iter().map(|t| (format!("{PREDICTOR}{}", t.name), t.shape.clone())));
    out
}

/// Copy every tensor of `sd` (checkpoint names) into `d`: all mismatches reported at once (missing,
/// unexpected, wrong shape; `num_batches_tracked` ignored), or nothing copied.
pub fn load_state(d: &mut FasterRcnn, sd: &StateDict) -> std::result::Result<(), Mismatch> {
    let mut m = Mismatch::default();
    let by_name: HashMap<&str, &Tensor> = sd.tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let want = tensor_shapes(d);
    for (name, shape) in &want {
        match by_name.get(name.as_str()) {
            None => m.missing.push(name.clone()),
            Some(t) if t.shape != *shape => m.wrong_shape.push((name.clone(), shape.clone(), t.shape.clone())),
            Some(_) => {}
        }
    }
    let known: HashSet<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    m.unexpected =
        sd.keys().filter(|k| !known.contains(k) && !k.ends_with("num_batches_tracked")).map(str::to_string).collect();
    if !m.is_empty() {
        return Err(m);
    }
    let fail = |e: String| Mismatch { unexpected: vec![e], ..Default::default() };
    for (name, _) in &want {
        let t = by_name[name.as_str()];
        let r = match Named::of(name).expect("every name has one of the four prefixes") {
            Named::Prefix(n) => d.prefix.set_torch(n, &t.shape, &t.data),
            Named::Rpn(n) => d.rpn.set_torch(n, &t.shape, &t.data),
            Named::Suffix(n) => d.suffix.set_torch(n, &t.shape, &t.data),
            Named::Predictor(n) => d.predictor.set_torch(n, &t.shape, &t.data),
        };
        r.map_err(fail)?;
    }
    Ok(())
}

/// The gradient of the last backward ([`FasterRcnn::forward_backward`]) at the parameter of
/// checkpoint name `name`, in torchvision layout (zeros for a frozen one). None for a name that
/// is no parameter (BN statistics, unknown names) or a detector built for inference.
pub fn gradient(d: &FasterRcnn, name: &str) -> Option<Vec<f32>> {
    match Named::of(name)? {
        Named::Prefix(n) => d.prefix.grad_torch(n),
        Named::Rpn(n) => d.rpn.grad_torch(n),
        Named::Suffix(n) => d.suffix.grad_torch(n),
        Named::Predictor(n) => d.predictor.grad_torch(n),
    }
}

/// A checkpoint name as the part it belongs to and the name within that part.
enum Named<'a> {
    Prefix(&'a str),
    Rpn(&'a str),
    Suffix(&'a str),
    Predictor(&'a str),
}

impl Named<'_> {
    fn of(name: &str) -> Option<Named<'_>> {
        if let Some(n) = name.strip_prefix(PREFIX) {
            Some(Named::Prefix(n))
        } else if let Some(n) = name.strip_prefix(RPN) {
            Some(Named::Rpn(n))
        } else if let Some(n) = name.strip_prefix(SUFFIX) {
            Some(Named::Suffix(n))
        } else {
            name.strip_prefix(PREDICTOR).map(Named::Predictor)
        }
    }
}

/// Serialise `d` with `meta` (the spec recorded is `d.spec`'s; `meta`'s own arch / classes /
/// preset / freeze / max image are replaced by it).
pub fn to_bytes(d: &FasterRcnn, meta: &DetMeta) -> Result<Vec<u8>> {
    to_bytes_with(d, meta, None)
}

/// [`to_bytes`] with the optimizer's state (a training checkpoint, [`OPTIMIZER`]).
pub fn to_bytes_with(d: &FasterRcnn, meta: &DetMeta, optim: Option<&DetOptim>) -> Result<Vec<u8>> {
    let mut meta = meta.clone();
    let fresh = DetMeta::new(&d.spec, meta.class_names.clone(), meta.transform.clone());
    meta = DetMeta { train: meta.train, ..fresh };
    if let Err(e) = meta.check() {
        bail!("cannot save this detector: {e}");
    }
    let mut md = HashMap::new();
    md.insert("format".to_string(), FORMAT.to_string());
    md.insert("detector".to_string(), serde_json::to_string(&meta)?);
    let mut sd = state_dict(d);
    if let Some(o) = optim {
        for (part, v) in o.velocities() {
            sd.tensors.push((format!("{OPTIMIZER}{part}"), Tensor { shape: vec![v.len()], data: v.to_vec() }));
        }
    }
    weights::safetensors_bytes(&sd, Some(md))
}

/// Write `d` to `path` atomically (`weights::checkpoint::write_atomic`).
pub fn save(path: &Path, d: &FasterRcnn, meta: &DetMeta) -> Result<()> {
    let bytes = to_bytes(d, meta)?;
    weights::checkpoint::write_atomic(path, &bytes)
}

/// A detector checkpoint read back (and checked): its metadata, the specification it records,
/// its tensors.
#[derive(Debug)]
pub struct DetCheckpoint {
    pub meta: DetMeta,
    pub spec: DetectorSpec,
    pub weights: StateDict,
    /// the file, for errors
    pub path: std::path::PathBuf,
    /// training checkpoints: the optimizer's state by part ([`OPTIMIZER`] stripped)
    pub optimizer: Vec<(String, Vec<f32>)>,
}

/// Whether `bytes` are a safetensors file with our detector metadata.
pub fn is_detector_checkpoint(bytes: &[u8]) -> bool {
    format_of(bytes).is_some_and(|f| f == FORMAT)
}

fn format_of(bytes: &[u8]) -> Option<String> {
    safetensors::SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, h)| h.metadata().as_ref().and_then(|m| m.get("format").cloned()))
}

/// Read a detector checkpoint; every problem is an error naming the file.
pub fn read(path: &Path) -> Result<DetCheckpoint> {
    let bytes = crate::paths::read_regular(path)?;
    parse(path, &bytes)
}

/// [`read`] of bytes in memory (`path` names them in errors).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<DetCheckpoint> {
    let file = path.display().to_string();
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|_| match weights::file_kind(bytes) {
        Some(weights::FileKind::PthZip | weights::FileKind::PthLegacy) => anyhow!(
            "{file}: a PyTorch state_dict, not a detector checkpoint (a backbone to initialise a detector from, \
             with train-det --init-from)"
        ),
        _ => anyhow!("{file}: not a detector checkpoint (not a safetensors file)"),
    })?;
    let md = header.metadata().clone().unwrap_or_default();
    match md.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        Some(f) if f == weights::checkpoint::FORMAT => bail!(
            "{file}: a classification checkpoint ({f}), not a detector checkpoint (a backbone to initialise a \
             detector from, with train-det --init-from)"
        ),
        Some(f) => bail!("{file}: not a detector checkpoint (metadata \"format\" is {f:?}, not {FORMAT:?})"),
        None => bail!("{file}: not a detector checkpoint (a safetensors file without our metadata)"),
    }
    let meta: DetMeta =
        serde_json::from_str(md.get("detector").ok_or_else(|| anyhow!("{file}: no detector metadata"))?)
            .with_context(|| format!("{file}: bad detector metadata"))?;
    let spec = meta.check().map_err(|e| anyhow!("{file}: inconsistent detector metadata: {e}"))?;
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| anyhow!("{file}: {e}"))?;
    let mut tensors = vec![];
    for (name, view) in st.tensors() {
        let dtype = format!("{:?}", view.dtype());
        let data = weights::to_f32(&dtype, view.data())
            .ok_or_else(|| anyhow!("{file}: tensor {name} has unsupported type {dtype}"))?;
        weights::check_finite(&file, &name, &data)?;
        tensors.push((name, Tensor { shape: view.shape().to_vec(), data }));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let (opt, tensors): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(n, _)| n.starts_with(OPTIMIZER));
    let optimizer = opt.into_iter().map(|(n, t)| (n[OPTIMIZER.len()..].to_string(), t.data)).collect();
    Ok(DetCheckpoint { meta, spec, weights: StateDict { tensors }, path: path.to_path_buf(), optimizer })
}

impl DetCheckpoint {
    /// The detector it records with its weights, buffers for training if `train`. For inference
    /// (`!train`) the buffers are sized for the test-time settings: the largest image covers the
    /// recorded one and every output of the transform ([`DetTransform::largest`]), and the RoI
    /// capacity is the test-time proposal count (the training count is not used at test).
    pub fn build(&self, train: bool) -> Result<FasterRcnn> {
        let file = self.path.display();
        let mut spec = self.spec.clone();
        if !train {
            let (a, b) = spec.max_image;
            let (short, long) = self.meta.transform.largest();
            spec.max_image = (a.min(b).max(short), a.max(b).max(long));
            spec.preset.rpn.post_nms_top_n_train = spec.preset.rpn.post_nms_top_n_test;
        }
        let mut d = FasterRcnn::new(spec, train, self.meta.train.as_ref().map_or(0, |t| t.seed))
            .map_err(|e| anyhow!("{file}: {e}"))?;
        load_state(&mut d, &self.weights)
            .map_err(|m| anyhow!("{file}: the tensors do not fit the detector it describes:\n{m}"))?;
        // the specification as recorded (buffers aside)
        d.spec = DetectorSpec { max_image: d.spec.max_image, ..self.spec.clone() };
        Ok(d)
    }

    /// Put the recorded optimizer state into `optim` (every part's, of the right sizes, or an
    /// error naming the file and what is missing).
    pub fn restore_optimizer(&self, optim: &mut DetOptim) -> Result<()> {
        let file = self.path.display();
        for (part, v) in optim.velocities_mut() {
            let Some((_, saved)) = self.optimizer.iter().find(|(n, _)| n == part) else {
                bail!("{file}: no optimizer state for the {part} (not a training checkpoint?)");
            };
            if saved.len() != v.len() {
                bail!("{file}: optimizer state of the {part} has {} values, the detector {}", saved.len(), v.len());
            }
            v.copy_from_slice(saved);
        }
        Ok(())
    }

    /// Refuse data whose classes differ from the checkpoint's (K names, background excluded).
    pub fn check_classes(&self, data_names: &[String]) -> Result<()> {
        if data_names != self.meta.class_names.as_slice() {
            bail!(
                "{}: the checkpoint's {} classes ({}) differ from the data's {} ({})",
                self.path.display(),
                self.meta.class_names.len(),
                self.meta.class_names.join(", "),
                data_names.len(),
                data_names.join(", ")
            );
        }
        Ok(())
    }
}

/// Initialise `d`'s backbone (prefix and suffix) from a classification network's weights at
/// `path`: our classification checkpoint or a torchvision state_dict (`.pth`, `.pt`,
/// `.safetensors`; wrapped or prefixed), by torchvision name, BN statistics included (they are
/// what a frozen BN applies). The fc and the other tensors are not the backbone's business. The
/// RPN head and the predictor keep their initialisation. Returns the number of tensors copied.
pub fn init_backbone(d: &mut FasterRcnn, path: &Path) -> Result<usize> {
    let file = path.display().to_string();
    let bytes = crate::paths::read_regular(path)?;
    if is_detector_checkpoint(&bytes) {
        bail!("{file}: a detector checkpoint, not a classification network's weights (resume from it instead)");
    }
    let sd = if weights::checkpoint::is_checkpoint(&bytes) {
        let ck = weights::checkpoint::parse(path, &bytes)?;
        let (a, b) = (&ck.meta.arch, &d.spec.arch);
        if (&a.name, a.shortcut, a.stride_in, a.in_channels) != (&b.name, b.shortcut, b.stride_in, b.in_channels) {
            bail!(
                "{file}: a checkpoint of {} ({} input channels), the detector's backbone is {} ({} input channels)",
                a.name,
                a.in_channels,
                b.name,
                b.in_channels
            );
        }
        ck.weights
    } else {
        let mut sd = weights::parse_state_dict(&file, &bytes)?;
        sd.strip_prefix();
        sd
    };
    let name = d.spec.arch.name.clone();
    weights::load_part(&mut d.prefix, &sd)
        .map_err(|m| anyhow!("{file}: the weights do not fit {name}'s C4 prefix (the detector's backbone):\n{m}"))?;
    weights::load_part(&mut d.suffix, &sd)
        .map_err(|m| anyhow!("{file}: the weights do not fit {name}'s last stage (the detector's box head):\n{m}"))?;
    Ok(d.prefix.tensors().len() + d.suffix.tensors().len())
}

#[cfg(test)]
#[path = "checkpoint_tests.rs"]
mod tests;
