//! PyTorch `torch.save` files of a state_dict, read without running Python:
//!
//! - **zip format** (PyTorch >= 1.6): an archive `<name>/data.pkl` (the
//!   pickle), `<name>/byteorder`, and one member `<name>/data/<key>` per
//!   storage, raw little-endian elements.
//! - **legacy format**: five pickles in a row (magic number, protocol
//!   version 1001, system info, the object, the sorted storage keys), then
//!   for each key the storage's element count (8 bytes, little-endian) and
//!   its raw elements.
//!
//! The pickles go through [`crate::pickle::parse_torch`], which accepts only
//! the globals a state_dict needs and refuses any other by name. A storage
//! is read only as far as the file holds it: sizes are checked against the
//! bytes present before anything is allocated.

use super::{StateDict, Tensor, to_f32};
use crate::pickle::{self, Kind, TorchTensor, Value};
use anyhow::{Result, anyhow, bail};
use std::collections::HashMap;
use std::io::Read;

/// The state_dict inside a loaded object: the object itself when its values
/// are tensors, else its `state_dict` / `model` / `model_state_dict` /
/// `net` / `module` entry (up to two levels).
fn unwrap_state_dict<'v, 'a>(name: &str, root: &'v Value<'a>) -> Result<&'v [(Value<'a>, Value<'a>)]> {
    let mut v = root;
    for _ in 0..3 {
        let Kind::Dict(entries) = &v.kind else {
            bail!("{name}: the saved object is a {}, not a dict of tensors (a state_dict)", v.type_name());
        };
        if entries.iter().any(|(_, t)| matches!(t.kind, Kind::Tensor(_))) {
            return Ok(entries);
        }
        let inner = ["state_dict", "model_state_dict", "model", "net", "module"].iter().find_map(|k| v.get(k));
        match inner {
            Some(i) => v = i,
            None => {
                let keys: Vec<&str> = v.text_keys().into_iter().take(10).collect();
                bail!("{name}: no tensors and no state_dict entry in the saved dict (its keys: {})", keys.join(", "));
            }
        }
    }
    bail!("{name}: no state_dict found within three levels of wrapping")
}

/// The tensors of a state_dict, each read from its storage by `storage(key, bytes needed)`.
fn collect(
    name: &str,
    entries: &[(Value<'_>, Value<'_>)],
    mut storage: impl FnMut(&TorchTensor) -> Result<Vec<u8>>,
) -> Result<StateDict> {
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut cache: HashMap<String, Vec<u8>> = HashMap::new();
    // each storage key keeps the type and size it was first declared with
    let mut declared: HashMap<&str, (&str, u64)> = HashMap::new();
    // gathered bytes are bounded by twice the storages' bytes (views of one storage may overlap a little)
    let (mut stored, mut gathered) = (0u64, 0u64);
    for (k, v) in entries {
        let Some(key) = k.text() else {
            bail!("{name}: byte {}: a state_dict key is a {}, not text", k.offset, k.type_name());
        };
        let t = match &v.kind {
            Kind::Tensor(t) => t,
            // non-tensor entries (e.g. a version number) are not weights
            _ => continue,
        };
        match declared.get(t.storage.as_str()) {
            Some(&(dtype, numel)) if (dtype, numel) != (t.dtype, t.numel) => bail!(
                "{name}: tensor {key}: storage '{}' declared again as {} x {} (first {dtype} x {numel})",
                t.storage,
                t.numel,
                t.dtype
            ),
            Some(_) => {}
            None => {
                declared.insert(&t.storage, (t.dtype, t.numel));
            }
        }
        if !cache.contains_key(&t.storage) {
            let bytes = storage(t)?;
            stored += bytes.len() as u64;
            cache.insert(t.storage.clone(), bytes);
        }
        let bytes = &cache[&t.storage];
        if (bytes.len() as u64) < storage_bytes(name, t)? {
            bail!("{name}: tensor {key}: storage '{}' holds {} bytes, fewer than it declares", t.storage, bytes.len());
        }
        let count: u64 = t.shape.iter().map(|&d| d as u64).try_fold(1u64, |a, d| a.checked_mul(d)).unwrap_or(u64::MAX);
        if count > t.numel.max(1) {
            bail!("{name}: tensor {key}: {count} elements from a storage of {}", t.numel);
        }
        let out_bytes = count * t.itemsize as u64; // <= numel * itemsize <= the bytes present
        gathered += out_bytes;
        if gathered > 2 * stored + (1 << 20) {
            bail!("{name}: tensor {key}: the state_dict's views add up to far more than its storages");
        }
        // gather the strided view, element by element (rebuild_tensor checked the view lies in the storage)
        let mut raw = Vec::with_capacity(out_bytes as usize);
        let mut idx = vec![0usize; t.shape.len()];
        for _ in 0..count {
            let e = idx
                .iter()
                .zip(&t.stride)
                .try_fold(t.offset as usize, |a, (i, s)| i.checked_mul(*s).and_then(|d| a.checked_add(d)));
            let b = e
                .and_then(|e| Some(e.checked_mul(t.itemsize)?..(e + 1).checked_mul(t.itemsize)?))
                .and_then(|r| bytes.get(r));
            let b = b.ok_or_else(|| anyhow!("{name}: tensor {key} reaches beyond storage '{}'", t.storage))?;
            raw.extend_from_slice(b);
            for d in (0..idx.len()).rev() {
                idx[d] += 1;
                if idx[d] < t.shape[d] {
                    break;
                }
                idx[d] = 0;
            }
        }
        let data =
            to_f32(t.dtype, &raw).ok_or_else(|| anyhow!("{name}: tensor {key}: unsupported type {}", t.dtype))?;
        // a repeated key: the last one wins, as in Python
        tensors.retain(|(n, _)| n != key);
        tensors.push((key.to_string(), Tensor { shape: t.shape.clone(), data }));
    }
    if tensors.is_empty() {
        bail!("{name}: the state_dict holds no tensors");
    }
    Ok(StateDict { tensors })
}

/// Bytes a tensor's storage must hold.
fn storage_bytes(name: &str, t: &TorchTensor) -> Result<u64> {
    t.numel.checked_mul(t.itemsize as u64).ok_or_else(|| anyhow!("{name}: storage '{}' size overflows", t.storage))
}

/// A zip-format `.pth`.
pub fn read_zip(name: &str, bytes: &[u8]) -> Result<StateDict> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| anyhow!("{name}: not a readable zip archive: {e}"))?;
    let pkl = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .min_by_key(|n| n.len())
        .ok_or_else(|| anyhow!("{name}: a zip archive without <name>/data.pkl: not a torch.save file"))?;
    let root_dir = pkl.trim_end_matches("data.pkl").to_string();
    let member = |zip: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>, m: &str, limit: u64| -> Result<Vec<u8>> {
        let f = zip.by_name(m).map_err(|e| anyhow!("{name}: member {m}: {e}"))?;
        // torch.save stores members uncompressed: their size is bounded by the file's
        if f.compression() != zip::CompressionMethod::Stored {
            bail!("{name}: member {m} is compressed ({:?}); torch.save writes stored members", f.compression());
        }
        if f.size() > limit || f.size() > bytes.len() as u64 {
            bail!(
                "{name}: member {m} declares {} bytes, more than expected ({limit}) or than the file holds",
                f.size()
            );
        }
        let mut out = Vec::with_capacity(f.size() as usize);
        f.take(limit).read_to_end(&mut out).map_err(|e| anyhow!("{name}: member {m}: {e}"))?;
        Ok(out)
    };
    if let Ok(order) = member(&mut zip, &format!("{root_dir}byteorder"), 16)
        && order != b"little"
    {
        bail!("{name}: byte order {:?}: only little-endian files are read", String::from_utf8_lossy(&order));
    }
    let pkl_bytes = member(&mut zip, &pkl, bytes.len() as u64)?;
    let pkl_name = format!("{name}:{pkl}");
    let (root, _) = pickle::parse_torch(&pkl_name, &pkl_bytes)?;
    let entries = unwrap_state_dict(name, &root)?;
    collect(name, entries, |t| {
        let need = storage_bytes(name, t)?;
        let m = format!("{root_dir}data/{}", t.storage);
        let b = member(&mut zip, &m, need)?;
        if (b.len() as u64) < need {
            bail!("{name}: member {m} holds {} bytes, its storage needs {need}", b.len());
        }
        Ok(b)
    })
}

/// The first pickle of a legacy file: protocol 2, the 80-bit magic number 0x1950a86a20f9469cfc6c, STOP.
pub const LEGACY_MAGIC: [u8; 15] =
    [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, b'.'];

/// A legacy-format `.pth`.
pub fn read_legacy(name: &str, bytes: &[u8]) -> Result<StateDict> {
    let mut pos = LEGACY_MAGIC.len();
    let mut next = |what: &str| -> Result<(Value<'_>, usize)> {
        let start = pos;
        let (v, used) = pickle::parse_torch(name, &bytes[start..]).map_err(|e| {
            let at = e.offset.map(|o| o + start as u64);
            anyhow!("{}", crate::file_error::FileError::new(name, at, format!("{what}: {}", e.msg)))
        })?;
        pos = start + used;
        Ok((v, start))
    };
    if !bytes.starts_with(&LEGACY_MAGIC) {
        bail!("{name}: not a legacy torch.save file (no magic number)");
    }
    let (proto, at) = next("protocol version")?;
    if proto.as_int() != Some(1001) {
        bail!("{name}: byte {at}: legacy protocol version {:?}, expected 1001", proto.as_int());
    }
    let (info, at) = next("system info")?;
    if let Some(v) = info.get("little_endian")
        && !matches!(v.kind, Kind::Bool(true))
    {
        bail!("{name}: byte {at}: written on a big-endian machine: only little-endian files are read");
    }
    let (root, _) = next("state_dict")?;
    let (keys, at) = next("storage keys")?;
    let keys: Vec<String> = keys
        .items()
        .ok_or_else(|| anyhow!("{name}: byte {at}: the storage keys are not a list"))?
        .iter()
        .map(|k| k.text().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow!("{name}: byte {at}: a storage key is not text"))?;
    // the storages follow in key order: each an 8-byte element count, then the elements
    // element sizes from every tensor in the file (optimizer state included), not only the state_dict's
    let mut itemsizes: HashMap<&str, usize> = HashMap::new();
    let mut todo = vec![&root];
    while let Some(v) = todo.pop() {
        match &v.kind {
            Kind::Tensor(t) => {
                itemsizes.insert(&t.storage, t.itemsize);
            }
            Kind::List(items) | Kind::Tuple(items) => todo.extend(items),
            Kind::Dict(entries) => todo.extend(entries.iter().flat_map(|(k, v)| [k, v])),
            _ => {}
        }
    }
    let entries = unwrap_state_dict(name, &root)?;
    let mut spans: HashMap<String, (usize, usize)> = HashMap::new();
    for k in &keys {
        let head =
            bytes.get(pos..pos + 8).ok_or_else(|| anyhow!("{name}: byte {pos}: file ends before storage '{k}'"))?;
        let numel = u64::from_le_bytes(head.try_into().expect("8 bytes"));
        let size = itemsizes.get(k.as_str()).copied().unwrap_or(1) as u64;
        let len = numel.checked_mul(size).filter(|&l| l <= (bytes.len() - pos - 8) as u64).ok_or_else(|| {
            anyhow!("{name}: byte {pos}: storage '{k}' claims {numel} elements, more than the file holds")
        })?;
        spans.insert(k.clone(), (pos + 8, len as usize));
        pos += 8 + len as usize;
    }
    if pos != bytes.len() {
        bail!("{name}: byte {pos}: {} bytes after the last storage", bytes.len() - pos);
    }
    collect(name, entries, |t| {
        let &(start, len) =
            spans.get(&t.storage).ok_or_else(|| anyhow!("{name}: storage '{}' is not in the file", t.storage))?;
        let need = storage_bytes(name, t)?;
        if (len as u64) < need {
            bail!("{name}: storage '{}' holds {len} bytes, its tensor needs {need}", t.storage);
        }
        Ok(bytes[start..start + len].to_vec())
    })
}
