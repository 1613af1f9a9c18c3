//! Checkpoints: safetensors files with every parameter and BN statistic under
//! its torchvision name (torchvision layout), the SGD momentum buffer, the
//! preprocessing (mean image) and, as metadata, what is needed to rebuild
//! the network and continue the run. Writes are atomic: a temporary file,
//! fsync, rename, fsync of the directory — a kill at any instant leaves the
//! previous file intact.

use super::{StateDict, Tensor};
use crate::arch::ArchSpec;
use crate::backend::Backend;
use crate::data::augment::Preprocess;
use anyhow::{Context, Result, anyhow, bail};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

pub const FORMAT: &str = "resnet-checkpoint-v1";

/// Everything in a checkpoint besides the tensors of the network.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub arch: ArchSpec,
    pub class_names: Vec<String>,
    /// network input side and the stored image size (H, W, C)
    pub input_size: usize,
    pub image: (usize, usize, usize),
    /// completed training iterations
    pub iteration: u64,
    /// iteration at which a warm-up learning rate ended (110+ layer nets)
    pub warmup_done_at: Option<u64>,
    /// best validation error so far (percent), for best.safetensors
    pub best_val_err: Option<f64>,
    /// The random state: every random draw of a run (data order, crops,
    /// flips) is a counter-based function of this seed and the stream
    /// position `iteration * batch`, so (seed, iteration) is the whole state.
    #[serde(default)]
    pub seed: u64,
    /// the batch size the run trains with (None in converted weights and older checkpoints)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    /// For converted torchvision weights: their evaluation transform, used
    /// instead of the mean image (which is then all zeros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<crate::data::image::ImagenetEval>,
    /// the plateau schedule's state (image-folder runs with --lr-plateau)
    #[serde(default)]
    pub plateau: crate::train::schedule::PlateauState,
}

impl Meta {
    /// A new network's metadata: nothing trained yet, no warm-up, no evaluation transform.
    pub fn new(arch: ArchSpec, class_names: Vec<String>, image: (usize, usize, usize), input_size: usize) -> Meta {
        Meta {
            arch,
            class_names,
            input_size,
            image,
            iteration: 0,
            warmup_done_at: None,
            best_val_err: None,
            seed: 0,
            batch: None,
            eval: None,
            plateau: Default::default(),
        }
    }
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn floats_of(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Serialise `net` (+ momentum and preprocessing) with `meta`.
pub fn to_bytes(net: &impl Backend, velocity: Option<&[f32]>, pre: &Preprocess, meta: &Meta) -> Result<Vec<u8>> {
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = vec![];
    for (name, shape) in net.tensors() {
        let data = net.get_tensor(&name).ok_or_else(|| anyhow!("no tensor {name}"))?;
        owned.push((name, shape, bytes_of(&data)));
    }
    if let Some(v) = velocity {
        owned.push(("optimizer.velocity".into(), vec![v.len()], bytes_of(v)));
    }
    let c = pre.src.2;
    owned.push(("preprocess.mean_image".into(), vec![pre.size, pre.size, c], bytes_of(&pre.mean)));
    let views: Vec<(String, TensorView)> = owned
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let mut md = HashMap::new();
    md.insert("format".to_string(), FORMAT.to_string());
    md.insert("meta".to_string(), serde_json::to_string(meta)?);
    md.insert("preprocess".to_string(), serde_json::to_string(&(pre.crop_pad, pre.flip))?);
    Ok(safetensors::serialize(views, Some(md))?)
}

/// Temporary files of this process get distinct names: two writers never share one.
static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Write `bytes` to `path` atomically: a temporary file in the same directory (named for this
/// process and write), fsync, rename over `path`, fsync of the directory. On any failure the
/// temporary file is removed and `path` is untouched; `Ok` means the bytes are durable.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("output");
    let n = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
    let written = (|| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(bytes).with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // the rename is durable once the directory is synced (some file systems cannot sync a directory)
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// A checkpoint read back: the network's weights as a state_dict (sorted by name), the optimizer
/// state split off, the input pipeline's record.
pub struct Loaded {
    pub meta: Meta,
    pub weights: StateDict,
    /// the SGD momentum buffer (training checkpoints)
    pub velocity: Option<Vec<f32>>,
    pub preprocess: Preprocess,
}

/// Metadata comes from files of strangers: it must describe a network this crate builds, as
/// [`ArchSpec::parse`] resolves it, and image sizes that fit its input.
fn check_meta(m: &Meta) -> std::result::Result<(), String> {
    let a = &m.arch;
    a.check_record()?;
    let (h, w, c) = m.image;
    if !(8..=4096).contains(&m.input_size)
        || c != a.in_channels
        || h == 0
        || w == 0
        || h > m.input_size
        || w > m.input_size
    {
        return Err(format!(
            "image {h}x{w}x{c} and input size {} do not fit a {}-channel network (input 8..=4096, image within it)",
            m.input_size, a.in_channels
        ));
    }
    if m.class_names.len() > a.classes {
        return Err(format!("{} class names for {} classes", m.class_names.len(), a.classes));
    }
    Ok(())
}

/// Parse a checkpoint; every problem is an error naming the file.
pub fn read(path: &Path) -> Result<Loaded> {
    let bytes = crate::paths::read_regular(path)?;
    parse(path, &bytes)
}

/// Whether `bytes` are a safetensors file with our checkpoint metadata.
pub fn is_checkpoint(bytes: &[u8]) -> bool {
    safetensors::SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, h)| h.metadata().as_ref().and_then(|m| m.get("format").cloned()))
        .is_some_and(|f| f == FORMAT)
}

/// [`read`] of bytes in memory (`path` names them in errors). A tensor holding a NaN or an infinity
/// is refused, naming it ([`crate::weights::check_finite`]).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Loaded> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let md = header.metadata().clone().unwrap_or_default();
    if md.get("format").map(String::as_str) != Some(FORMAT) {
        bail!("{}: not a resnet checkpoint (metadata \"format\" is not {FORMAT})", path.display());
    }
    let meta: Meta = serde_json::from_str(md.get("meta").ok_or_else(|| anyhow!("{}: no metadata", path.display()))?)
        .with_context(|| format!("{}: bad metadata", path.display()))?;
    check_meta(&meta).map_err(|e| anyhow!("{}: inconsistent metadata: {e}", path.display()))?;
    let (crop_pad, flip): (usize, bool) = md
        .get("preprocess")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .with_context(|| format!("{}: bad preprocess metadata", path.display()))?
        .unwrap_or((4, true));
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut tensors = vec![];
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            bail!("{}: tensor {name} is {:?}, expected F32", path.display(), view.dtype());
        }
        let data = floats_of(view.data());
        // parameters, BN statistics, the momentum buffer (a NaN there would poison a resumed run), the mean image
        super::check_finite(&path.display().to_string(), &name, &data)?;
        tensors.push((name, Tensor { shape: view.shape().to_vec(), data }));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut take = |key: &str| tensors.iter().position(|(n, _)| n == key).map(|i| tensors.remove(i).1.data);
    let mean = take("preprocess.mean_image")
        .ok_or_else(|| anyhow!("{}: missing tensor preprocess.mean_image", path.display()))?;
    let velocity = take("optimizer.velocity");
    let preprocess = Preprocess { src: meta.image, size: meta.input_size, mean, crop_pad, flip };
    if preprocess.mean.len() != meta.input_size * meta.input_size * meta.image.2 {
        bail!("{}: preprocess.mean_image has the wrong size", path.display());
    }
    Ok(Loaded { meta, weights: StateDict { tensors }, velocity, preprocess })
}

impl Loaded {
    /// Copy every network tensor into `net`; a missing or mis-shaped tensor is an error.
    pub fn restore(&self, net: &mut impl Backend) -> Result<()> {
        for (name, _) in net.tensors() {
            let t = self.weights.get(&name).ok_or_else(|| anyhow!("checkpoint lacks tensor {name}"))?;
            net.set_tensor(&name, &t.shape, &t.data).map_err(|e| anyhow!("checkpoint: {e}"))?;
        }
        Ok(())
    }

    pub fn velocity(&self) -> Option<&Vec<f32>> {
        self.velocity.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("resnet-ckpt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entries(d: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let d = scratch("ok");
        let p = d.join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(entries(&d), ["a.bin"]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn failed_writes_remove_their_temp_file_and_keep_the_target() {
        let d = scratch("fail");
        // the output is a directory: the rename fails
        std::fs::create_dir(d.join("out")).unwrap();
        std::fs::write(d.join("out/keep"), b"x").unwrap();
        let e = write_atomic(&d.join("out"), b"bytes").unwrap_err();
        assert!(format!("{e:#}").contains("out"), "{e:#}");
        assert_eq!(entries(&d), ["out"], "no temp file left beside the target");
        assert_eq!(entries(&d.join("out")), ["keep"]);
        // the parent is a regular file: nothing can be created
        std::fs::write(d.join("file"), b"f").unwrap();
        assert!(write_atomic(&d.join("file/x"), b"bytes").is_err());
        assert_eq!(entries(&d), ["file", "out"]);
        let _ = std::fs::remove_dir_all(d);
    }
}
