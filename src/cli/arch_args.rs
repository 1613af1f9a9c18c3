//! The architecture options every subcommand that builds a network shares.

use crate::arch::{ArchOptions, ArchSpec, Family, ShortcutOpt, StrideIn};
use clap::{Args, ValueEnum};

#[derive(Copy, Clone, ValueEnum)]
pub enum FamilyArg {
    Cifar,
    Imagenet,
}

#[derive(Copy, Clone, ValueEnum)]
pub enum ShortcutArg {
    A,
    B,
    C,
}

#[derive(Copy, Clone, ValueEnum)]
pub enum StrideInArg {
    #[value(name = "1x1")]
    OneByOne,
    #[value(name = "3x3")]
    ThreeByThree,
}

#[derive(Args, Clone)]
pub struct ArchArgs {
    /// Network: resnetD or plainD; D = 6n+2 (20, 32, 44, 56, 110, 1202, ...) for CIFAR,
    /// 18/34/50/101/152 for ImageNet
    #[arg(long, short = 'a')]
    pub arch: String,
    #[command(flatten)]
    pub opts: ArchOpts,
}

/// Everything about the network but its name.
#[derive(Args, Clone)]
pub struct ArchOpts {
    /// Family; inferred from the depth (50 and 152 mean ImageNet unless --family cifar)
    #[arg(long, value_enum)]
    pub family: Option<FamilyArg>,
    /// Shortcut option (residual nets only): a = zero-padding, b = projection where
    /// dimensions change, c = projection everywhere. Default: a for CIFAR, b for ImageNet;
    /// bottleneck nets (50/101/152) take b or c
    #[arg(long, value_enum)]
    pub shortcut: Option<ShortcutArg>,
    /// Where a downsampling bottleneck puts its stride: 1x1 = the paper (default),
    /// 3x3 = torchvision ("v1.5")
    #[arg(long, value_enum)]
    pub stride_in: Option<StrideInArg>,
    /// Number of classes (default 10 for CIFAR, 1000 for ImageNet)
    #[arg(long)]
    pub classes: Option<usize>,
    /// Input channels (3 for RGB, 1 for grey-scale)
    #[arg(long)]
    pub in_channels: Option<usize>,
    /// Side of the square input (default 32 for CIFAR, 224 for ImageNet)
    #[arg(long)]
    pub input_size: Option<usize>,
}

impl ArchArgs {
    /// Validate into a spec and the input side.
    pub fn resolve(&self) -> anyhow::Result<(ArchSpec, usize)> {
        self.opts.resolve(&self.arch)
    }
}

impl ArchOpts {
    /// Whether any option was given.
    pub fn any_set(&self) -> bool {
        self.family.is_some()
            || self.shortcut.is_some()
            || self.stride_in.is_some()
            || self.classes.is_some()
            || self.in_channels.is_some()
            || self.input_size.is_some()
    }

    /// Validate `arch` with these options into a spec and the input side.
    pub fn resolve(&self, arch: &str) -> anyhow::Result<(ArchSpec, usize)> {
        let spec = ArchSpec::parse(arch, &self.options())?;
        let size = spec.input_side(self.input_size)?;
        Ok((spec, size))
    }

    /// The options as given (unset ones stay unset).
    pub fn options(&self) -> ArchOptions {
        ArchOptions {
            family: self.family.map(|f| match f {
                FamilyArg::Cifar => Family::Cifar,
                FamilyArg::Imagenet => Family::Imagenet,
            }),
            shortcut: self.shortcut.map(|s| match s {
                ShortcutArg::A => ShortcutOpt::A,
                ShortcutArg::B => ShortcutOpt::B,
                ShortcutArg::C => ShortcutOpt::C,
            }),
            stride_in: self.stride_in.map(|s| match s {
                StrideInArg::OneByOne => StrideIn::OneByOne,
                StrideInArg::ThreeByThree => StrideIn::ThreeByThree,
            }),
            classes: self.classes,
            in_channels: self.in_channels,
        }
    }
}
