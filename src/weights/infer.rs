//! The architecture of a torchvision-named state_dict, from its keys and
//! shapes (prefix already stripped):
//!
//! - family: a 7x7 `conv1` with four stages `layer1..layer4` is ImageNet, a
//!   3x3 `conv1` with three stages is CIFAR;
//! - blocks per stage: the `layerS.B.conv1.weight` keys; bottleneck when
//!   `layer1.0.conv3.weight` exists; depth from both (Table 1, or 6n+2);
//! - shortcut: no `downsample` keys is option A, `downsample` only where the
//!   shape changes is B, on every block is C;
//! - classes from `fc.weight`, input channels from `conv1.weight`;
//! - torchvision files are "v1.5" (stride in the 3x3 of a bottleneck) unless
//!   the caller says otherwise.
//!
//! Options the caller sets (`--arch`, `--shortcut`, ...) win over inference;
//! the result is then checked tensor by tensor when the weights load.

use super::StateDict;
use crate::arch::{ArchOptions, ArchSpec, BlockKind, Family, ShortcutOpt, StrideIn};
use anyhow::{Result, bail};

/// Blocks in each stage `layer1`, `layer2`, ... (stops at the first absent stage).
fn stage_blocks(sd: &StateDict) -> Vec<usize> {
    let mut out = vec![];
    for s in 1.. {
        let prefix = format!("layer{s}.");
        let mut max: Option<usize> = None;
        for k in sd.keys() {
            if let Some(rest) = k.strip_prefix(&prefix) {
                // (block indices beyond any real network are ignored, not overflowed)
                if let Some(b) = rest.split('.').next().and_then(|b| b.parse::<usize>().ok()).filter(|&b| b < 100_000) {
                    max = Some(max.map_or(b, |m: usize| m.max(b)));
                }
            }
        }
        match max {
            Some(m) => out.push(m + 1),
            None => break,
        }
    }
    out
}

/// Infer the architecture of `sd`; `arch` (e.g. "resnet50" or "plain20") and
/// `opts` override what the keys say.
pub fn infer_arch(sd: &StateDict, arch: Option<&str>, opts: &ArchOptions) -> Result<ArchSpec> {
    let conv1 = sd.get("conv1.weight").filter(|t| t.shape.len() == 4);
    let fc = sd.get("fc.weight").filter(|t| t.shape.len() == 2);
    let mut o = opts.clone();
    if o.classes.is_none() {
        o.classes = fc.map(|t| t.shape[0]);
    }
    if o.in_channels.is_none() {
        o.in_channels = conv1.map(|t| t.shape[1]);
    }
    let blocks = stage_blocks(sd);
    let bottleneck = sd.get("layer1.0.conv3.weight").is_some();
    if o.family.is_none() {
        o.family = match (conv1.map(|t| t.shape[2]), blocks.len()) {
            (Some(7), 4) => Some(Family::Imagenet),
            (Some(3), 3) => Some(Family::Cifar),
            _ => None,
        };
    }
    let name = match arch {
        Some(a) => a.to_string(),
        None => {
            let (Some(conv1), Some(_)) = (conv1, fc) else {
                bail!(
                    "cannot tell the architecture: no 4-D conv1.weight and 2-D fc.weight (after the prefix); name it with --arch"
                );
            };
            let depth = match (o.family, bottleneck) {
                (Some(Family::Imagenet), false) => 2 * blocks.iter().sum::<usize>() + 2,
                (Some(Family::Imagenet), true) => 3 * blocks.iter().sum::<usize>() + 2,
                (Some(Family::Cifar), false) if blocks.iter().all(|&b| b == blocks[0]) => 6 * blocks[0] + 2,
                _ => bail!(
                    "cannot tell the architecture: a {}x{} conv1 with blocks per stage {blocks:?}{} is neither the ImageNet nor the CIFAR family; name it with --arch",
                    conv1.shape[2],
                    conv1.shape[3],
                    if bottleneck { " (bottleneck)" } else { "" }
                ),
            };
            format!("resnet{depth}")
        }
    };
    let residual = !name.trim().to_ascii_lowercase().starts_with("plain");
    if residual && o.shortcut.is_none() {
        let ds: Vec<&str> = sd.keys().filter(|k| k.contains(".downsample.0.weight")).collect();
        let total: usize = blocks.iter().sum();
        o.shortcut = Some(if ds.is_empty() {
            ShortcutOpt::A
        } else if ds.len() == total && total > 0 {
            ShortcutOpt::C
        } else {
            ShortcutOpt::B
        });
    }
    if o.stride_in.is_none() && bottleneck && o.family == Some(Family::Imagenet) {
        o.stride_in = Some(StrideIn::ThreeByThree);
    }
    let spec = ArchSpec::parse(&name, &o)?;
    if spec.block == BlockKind::Bottleneck && !bottleneck && conv1.is_some() {
        bail!("{name} is a bottleneck network, but the file has no layer1.0.conv3.weight (basic blocks)");
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Net;
    use crate::weights::StateDict;

    fn sd_of(arch: &str, opts: &ArchOptions) -> (ArchSpec, StateDict) {
        let spec = ArchSpec::parse(arch, opts).unwrap();
        let size = if spec.family == Family::Imagenet { 32 } else { 8 };
        let net = Net::new(&spec, 1, size, size, false, 1).unwrap();
        (spec, StateDict::of_net(&net))
    }

    #[test]
    fn every_family_and_option_is_recognised() {
        let d = ArchOptions::default();
        let b3 = ArchOptions { stride_in: Some(StrideIn::ThreeByThree), ..Default::default() };
        let cases = [
            ("resnet20", d.clone()),
            ("resnet56", ArchOptions { shortcut: Some(ShortcutOpt::B), ..Default::default() }),
            ("resnet32", ArchOptions { shortcut: Some(ShortcutOpt::C), classes: Some(100), ..Default::default() }),
            ("resnet18", d.clone()),
            ("resnet34", ArchOptions { shortcut: Some(ShortcutOpt::C), ..Default::default() }),
            ("resnet50", b3.clone()),
            ("resnet101", ArchOptions { in_channels: Some(1), classes: Some(7), ..b3.clone() }),
        ];
        for (arch, opts) in cases {
            let (spec, sd) = sd_of(arch, &opts);
            assert_eq!(infer_arch(&sd, None, &ArchOptions::default()).unwrap(), spec, "{arch}");
        }
        // a plain net has option A's tensors: inference says resnet, --arch says plain
        let (spec, sd) = sd_of("plain20", &d);
        assert_eq!(infer_arch(&sd, None, &d).unwrap().shortcut, Some(ShortcutOpt::A));
        assert_eq!(infer_arch(&sd, Some("plain20"), &d).unwrap(), spec);
        // the paper's stride placement when asked
        let (spec, sd) = sd_of("resnet50", &d);
        let one = ArchOptions { stride_in: Some(StrideIn::OneByOne), ..Default::default() };
        assert_eq!(infer_arch(&sd, None, &one).unwrap(), spec);
    }

    #[test]
    fn unknown_shapes_are_errors_not_guesses() {
        let (_, mut sd) = sd_of("resnet18", &ArchOptions::default());
        sd.tensors.retain(|(k, _)| !k.starts_with("layer4"));
        let e = infer_arch(&sd, None, &ArchOptions::default()).unwrap_err().to_string();
        assert!(e.contains("--arch"), "{e}");
        let e = infer_arch(&StateDict::default(), None, &ArchOptions::default()).unwrap_err().to_string();
        assert!(e.contains("conv1.weight"), "{e}");
        let (_, sd) = sd_of("resnet18", &ArchOptions::default());
        let e = infer_arch(&sd, Some("resnet50"), &ArchOptions::default()).unwrap_err().to_string();
        assert!(e.contains("bottleneck"), "{e}");
    }
}
