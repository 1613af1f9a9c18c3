//! `resnet data fetch`: download the official data sets, verifying their MD5s.

use crate::data::Format;
use crate::data::fetch::{self, Form, Options};
use anyhow::{Result, bail};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(clap::Subcommand)]
enum DataCommand {
    /// Download an official data set into a directory, verifying each file's MD5
    #[command(
        long_about = "Download an official data set into a directory, verifying each file's MD5 while it streams to a \
    temporary file, which is renamed into place only when the checksum matches. A file already there with the right \
    MD5 is kept (\"ok (cached)\"). CIFAR archives are kept as .tar.gz, which `resnet train --data` reads directly; \
    MNIST and Fashion-MNIST stay four IDX .gz files.\n\nSources (the MD5s are those torchvision and the CIFAR page \
    publish): CIFAR-10/100 from http://www.cs.toronto.edu/~kriz/, MNIST from the ossci-datasets S3 copy (then \
    yann.lecun.com), Fashion-MNIST from its S3 website host. A default build fetches plain http:// URLs only; https \
    needs a build with the `tls` feature. Proxies come from HTTP_PROXY / NO_PROXY.",
        after_help = "Examples:\n  resnet data fetch cifar10                      # data/cifar10/cifar-10-binary.tar.gz\n  \
    resnet data fetch fashion-mnist --dir data/fmnist\n  \
    resnet data fetch cifar100 --form python       # the pickle batches (resnet train reads both forms)\n  \
    resnet data fetch mnist --mirror http://proxy.example:8080/mnist\n  \
    resnet data fetch mnist --mirror http://127.0.0.1:8000 --md5 train-images-idx3-ubyte.gz=0123456789abcdef0123456789abcdef"
    )]
    Fetch(FetchArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum NameArg {
    Cifar10,
    Cifar100,
    Mnist,
    FashionMnist,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormArg {
    /// The binary version, which `resnet train` reads (the default)
    Binary,
    /// The Python (pickle) version (read without running any pickle code)
    Python,
}

#[derive(clap::Args)]
struct FetchArgs {
    /// The data set
    #[arg(value_enum)]
    name: NameArg,
    /// Target directory (default: data/NAME)
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Fetch every file as BASE_URL/<file name> instead of from the official hosts
    #[arg(long, value_name = "BASE_URL")]
    mirror: Option<String>,
    /// Which CIFAR version (CIFAR only)
    #[arg(long, value_enum)]
    form: Option<FormArg>,
    /// Expected MD5 for a mirror's own copies of FILE, replacing the official one (repeatable; needs --mirror)
    #[arg(long, value_name = "FILE=MD5", requires = "mirror", value_parser = parse_md5)]
    md5: Vec<(String, String)>,
}

fn parse_md5(s: &str) -> Result<(String, String), String> {
    fetch::parse_md5_override(s).map_err(|e| e.to_string())
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        DataCommand::Fetch(f) => run_fetch(f),
    }
}

fn run_fetch(a: FetchArgs) -> Result<()> {
    let format = match a.name {
        NameArg::Cifar10 => Format::Cifar10,
        NameArg::Cifar100 => Format::Cifar100,
        NameArg::Mnist => Format::Mnist,
        NameArg::FashionMnist => Format::FashionMnist,
    };
    let name = fetch::name(format);
    let form = match (a.form, format) {
        (None, _) => Form::Binary,
        (Some(_), Format::Mnist | Format::FashionMnist) => {
            bail!("--form applies to cifar10 and cifar100; {name} has one form (four IDX .gz files)")
        }
        (Some(FormArg::Binary), _) => Form::Binary,
        (Some(FormArg::Python), _) => Form::Python,
    };
    let dir = a.dir.unwrap_or_else(|| Path::new("data").join(name));
    let opts = Options { dir: dir.clone(), mirror: a.mirror, md5: a.md5, progress: std::io::stderr().is_terminal() };
    let mut out = std::io::stdout().lock();
    let files = fetch::fetch(format, form, &opts, &mut out)?;
    drop(out);
    match (format, form) {
        (Format::Cifar10 | Format::Cifar100, _) => {
            // both forms load straight from the .tar.gz
            let path = files.first().map_or(dir.clone(), Clone::clone);
            println!("{name}: {}", path.display());
            println!("train with: resnet train --arch resnet20 --data {} --out runs/{name}", path.display());
        }
        (Format::Mnist | Format::FashionMnist, _) => {
            // the loader tells Fashion-MNIST from MNIST by "fashion" in the path; name it when that would miss
            let fashion_path = has_fashion(&dir);
            let format_arg = match (format, fashion_path) {
                (Format::FashionMnist, false) => " --format fashion-mnist",
                (Format::Mnist, true) => " --format mnist",
                _ => "",
            };
            println!("{name}: {}", dir.display());
            println!("train with: resnet train --arch resnet20 --data {}{format_arg} --out runs/{name}", dir.display());
        }
    }
    Ok(())
}

/// The loader's rule: "fashion" (any case) in the path as given or made absolute.
fn has_fashion(p: &Path) -> bool {
    let has = |p: &Path| p.to_string_lossy().to_lowercase().contains("fashion");
    has(p) || p.canonicalize().is_ok_and(|c| has(&c))
}
