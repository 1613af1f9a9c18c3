//! The networks of the paper, as data.
//!
//! An [`ArchSpec`] says everything a [`crate::net::Net`] needs: the stem, the
//! stages (blocks per stage, width, stride), the block kind, the shortcut
//! option, the input. A family is a few lines below; plain vs residual and
//! options A/B/C are parameters, never copies.

use std::fmt;

/// CIFAR (Sec. 4.2, 6n+2 layers, 32x32 input) or ImageNet (Table 1, 224x224).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Cifar,
    Imagenet,
}

/// Basic block [3x3, C; 3x3, C] or bottleneck [1x1, C; 3x3, C; 1x1, 4C].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

/// Shortcut options of Sec. 4.1 / Table 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShortcutOpt {
    /// Identity; zero-padded channels + stride-2 subsampling where dims change.
    A,
    /// 1x1 conv + BN projection where dims change, identity elsewhere.
    B,
    /// 1x1 conv + BN projection on every shortcut.
    C,
}

/// Where a downsampling bottleneck puts its stride.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StrideIn {
    /// First 1x1 conv: the paper (v1).
    #[serde(rename = "1x1")]
    OneByOne,
    /// The 3x3 conv: torchvision ("v1.5").
    #[serde(rename = "3x3")]
    ThreeByThree,
}

/// One stage: `blocks` blocks of width `width` (the 3x3 width), the first with `stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stage {
    pub blocks: usize,
    pub width: usize,
    pub stride: usize,
}

/// A fully resolved network description.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArchSpec {
    /// Canonical name, e.g. `resnet20`, `plain34`.
    pub name: String,
    pub family: Family,
    pub depth: usize,
    pub block: BlockKind,
    /// `None` for a plain network.
    pub shortcut: Option<ShortcutOpt>,
    pub stride_in: StrideIn,
    pub stages: Vec<Stage>,
    pub classes: usize,
    pub in_channels: usize,
    /// Side of the square input the family is defined at (32 or 224).
    pub input_size: usize,
}

/// What a user may leave unset; [`ArchSpec::parse`] fills in the family defaults.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ArchOptions {
    pub family: Option<Family>,
    pub shortcut: Option<ShortcutOpt>,
    pub stride_in: Option<StrideIn>,
    pub classes: Option<usize>,
    pub in_channels: Option<usize>,
}

/// A user error in an architecture request, with a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchError(pub String);

impl fmt::Display for ArchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ArchError {}

const VALID_FORMS: &str = "valid forms: resnetD or plainD with D = 6n+2 for the CIFAR family \
(20, 32, 44, 56, 110, 1202, ...) or D in 18, 34, 50, 101, 152 for the ImageNet family; \
50 and 152 mean ImageNet unless --family cifar";

/// The deepest network built (the paper's deepest is 1202 layers).
pub const MAX_DEPTH: usize = 10_000;

/// Blocks per stage of the ImageNet family (Table 1).
fn imagenet_blocks(depth: usize) -> Option<([usize; 4], BlockKind)> {
    use BlockKind::*;
    Some(match depth {
        18 => ([2, 2, 2, 2], Basic),
        34 => ([3, 4, 6, 3], Basic),
        50 => ([3, 4, 6, 3], Bottleneck),
        101 => ([3, 4, 23, 3], Bottleneck),
        152 => ([3, 8, 36, 3], Bottleneck),
        _ => return None,
    })
}

/// n of a CIFAR depth 6n+2.
fn cifar_n(depth: usize) -> Option<usize> {
    (depth >= 8 && (depth - 2).is_multiple_of(6)).then_some((depth - 2) / 6)
}

impl ArchSpec {
    /// An architecture record read from a stranger's file (a checkpoint's metadata) must be one
    /// this crate builds: what its name and options resolve to ([`ArchSpec::parse`]).
    pub fn check_record(&self) -> Result<(), String> {
        let opts = ArchOptions {
            family: Some(self.family),
            shortcut: self.shortcut,
            stride_in: (self.block == BlockKind::Bottleneck).then_some(self.stride_in),
            classes: Some(self.classes),
            in_channels: Some(self.in_channels),
        };
        let again = ArchSpec::parse(&self.name, &opts).map_err(|e| e.to_string())?;
        if &again != self {
            return Err(format!(
                "the architecture record of {} differs from what its name and options resolve to",
                self.name
            ));
        }
        Ok(())
    }

    /// Parse `resnetD` / `plainD` and resolve every option against the family defaults.
    pub fn parse(arch: &str, opts: &ArchOptions) -> Result<ArchSpec, ArchError> {
        let lower = arch.trim().to_ascii_lowercase();
        let (residual, digits) = if let Some(d) = lower.strip_prefix("resnet") {
            (true, d)
        } else if let Some(d) = lower.strip_prefix("plain") {
            (false, d)
        } else {
            return Err(ArchError(format!("unknown architecture '{arch}'; {VALID_FORMS}")));
        };
        let depth: usize =
            digits.parse().map_err(|_| ArchError(format!("unknown architecture '{arch}'; {VALID_FORMS}")))?;
        if depth > MAX_DEPTH {
            return Err(ArchError(format!("depth {depth} is beyond what this crate builds (at most {MAX_DEPTH})")));
        }
        let family = match opts.family {
            Some(f) => f,
            None if imagenet_blocks(depth).is_some() => Family::Imagenet,
            None if cifar_n(depth).is_some() => Family::Cifar,
            None => {
                return Err(ArchError(format!("no network of depth {depth} ('{arch}'); {VALID_FORMS}")));
            }
        };
        let (stages, block) = match family {
            Family::Cifar => {
                let n = cifar_n(depth).ok_or_else(|| {
                    ArchError(format!(
                        "the CIFAR family has depths 6n+2 (20, 32, 44, 56, 110, 1202, ...), not {depth}; {VALID_FORMS}"
                    ))
                })?;
                let stages = [(16, 1), (32, 2), (64, 2)]
                    .iter()
                    .map(|&(width, stride)| Stage { blocks: n, width, stride })
                    .collect();
                (stages, BlockKind::Basic)
            }
            Family::Imagenet => {
                let (blocks, kind) = imagenet_blocks(depth).ok_or_else(|| {
                    ArchError(format!(
                        "the ImageNet family has depths 18, 34, 50, 101, 152, not {depth}; {VALID_FORMS}"
                    ))
                })?;
                let stages = blocks
                    .iter()
                    .zip([(64, 1), (128, 2), (256, 2), (512, 2)])
                    .map(|(&b, (width, stride))| Stage { blocks: b, width, stride })
                    .collect();
                (stages, kind)
            }
        };
        let shortcut = if residual {
            let default = match (family, block) {
                (Family::Cifar, _) => ShortcutOpt::A,
                _ => ShortcutOpt::B,
            };
            let s = opts.shortcut.unwrap_or(default);
            if block == BlockKind::Bottleneck && s == ShortcutOpt::A {
                return Err(ArchError(format!(
                    "{arch} is a bottleneck network: option A (zero-padding) does not apply; use --shortcut b (default) or c"
                )));
            }
            Some(s)
        } else {
            if opts.shortcut.is_some() {
                return Err(ArchError(format!(
                    "{arch} is a plain network and has no shortcuts; drop --shortcut (or use resnet{depth})"
                )));
            }
            None
        };
        if opts.stride_in.is_some() && block != BlockKind::Bottleneck {
            return Err(ArchError(format!(
                "--stride-in applies to bottleneck networks (ImageNet 50/101/152) only; {arch} uses basic blocks"
            )));
        }
        let classes = opts.classes.unwrap_or(match family {
            Family::Cifar => 10,
            Family::Imagenet => 1000,
        });
        if classes == 0 {
            return Err(ArchError("--classes must be at least 1 (got 0)".into()));
        }
        let in_channels = opts.in_channels.unwrap_or(3);
        if in_channels == 0 {
            return Err(ArchError("--in-channels must be at least 1 (3 for RGB, 1 for grey-scale)".into()));
        }
        Ok(ArchSpec {
            name: format!("{}{depth}", if residual { "resnet" } else { "plain" }),
            family,
            depth,
            block,
            shortcut,
            stride_in: opts.stride_in.unwrap_or(StrideIn::OneByOne),
            stages,
            classes,
            in_channels,
            input_size: match family {
                Family::Cifar => 32,
                Family::Imagenet => 224,
            },
        })
    }

    /// Stem: CIFAR 3x3/1 conv of 16; ImageNet 7x7/2 conv of 64 then 3x3/2 max pool.
    pub fn stem(&self) -> (usize, usize, usize, usize) {
        // (kernel, stride, pad, width)
        match self.family {
            Family::Cifar => (3, 1, 1, 16),
            Family::Imagenet => (7, 2, 3, 64),
        }
    }

    pub fn has_maxpool(&self) -> bool {
        self.family == Family::Imagenet
    }

    /// The input side to build the network for: `requested` (`--input-size`) or the family's
    /// default, refused when too small for the network's downsampling.
    pub fn input_side(&self, requested: Option<usize>) -> Result<usize, ArchError> {
        let size = requested.unwrap_or(self.input_size);
        let min = if self.has_maxpool() { 32 } else { 8 };
        if size < min {
            return Err(ArchError(format!("--input-size {size} is too small for {}: at least {min}", self.name)));
        }
        Ok(size)
    }

    /// Channels a block of this width outputs.
    pub fn expansion(&self) -> usize {
        match self.block {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }

    /// Width of the final feature map (the fc's input).
    pub fn features(&self) -> usize {
        self.stages.last().map(|s| s.width).unwrap_or(0) * self.expansion()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(a: &str) -> Result<ArchSpec, ArchError> {
        ArchSpec::parse(a, &ArchOptions::default())
    }

    #[test]
    fn family_inference() {
        assert_eq!(p("resnet20").unwrap().family, Family::Cifar);
        assert_eq!(p("resnet50").unwrap().family, Family::Imagenet);
        assert_eq!(p("resnet152").unwrap().family, Family::Imagenet);
        let c =
            ArchSpec::parse("resnet50", &ArchOptions { family: Some(Family::Cifar), ..Default::default() }).unwrap();
        assert_eq!(c.stages[0].blocks, 8);
        assert_eq!(c.block, BlockKind::Basic);
        assert_eq!(p("resnet1202").unwrap().stages[2].blocks, 200);
    }

    #[test]
    fn defaults_and_errors() {
        assert_eq!(p("resnet20").unwrap().shortcut, Some(ShortcutOpt::A));
        assert_eq!(p("resnet18").unwrap().shortcut, Some(ShortcutOpt::B));
        assert_eq!(p("plain20").unwrap().shortcut, None);
        let e = p("resnet21").unwrap_err().0;
        assert!(e.contains("valid forms"), "{e}");
        assert!(p("vgg19").is_err());
        let o = ArchOptions { shortcut: Some(ShortcutOpt::A), ..Default::default() };
        assert!(ArchSpec::parse("resnet50", &o).unwrap_err().0.contains("bottleneck"));
        assert!(ArchSpec::parse("plain20", &o).unwrap_err().0.contains("plain"));
        let o = ArchOptions { classes: Some(0), ..Default::default() };
        assert!(ArchSpec::parse("resnet20", &o).is_err());
        let o = ArchOptions { stride_in: Some(StrideIn::ThreeByThree), ..Default::default() };
        assert!(ArchSpec::parse("resnet18", &o).is_err());
        assert!(ArchSpec::parse("resnet50", &o).is_ok());
    }
}
