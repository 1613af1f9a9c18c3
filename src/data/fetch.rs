//! Download the official dataset files, verifying each one's MD5 while it streams to disk.
//!
//! Every file goes to `DIR/.NAME.part` first and is renamed to `DIR/NAME` only once its MD5 matches, so `DIR`
//! never holds a partial or unverified file under an official name. A file already present with the right
//! MD5 is not downloaded again. CIFAR archives are kept as downloaded (`.tar.gz`): [`crate::data::load`]
//! reads them directly; MNIST-style sets stay four `.gz` files, which it reads too.
//!
//! The client is plain HTTP unless the crate is built with the `tls` feature: every official host below
//! serves plain http, and an https URL (from `--mirror` or a redirect) in a build without TLS fails with an
//! error naming the URL. Proxies are taken from the usual environment variables (`HTTP_PROXY`, `NO_PROXY`, ...).

use super::{CifarForm, Format};
use anyhow::{Context, Result, anyhow, bail};
use md5::{Digest, Md5};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One published file: its name on the host and its MD5 (lowercase hex).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    pub file: &'static str,
    pub md5: &'static str,
}

/// Where a data set is published: base URLs (each ending in `/`), tried in order for each file, and its files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Published {
    pub hosts: &'static [&'static str],
    pub files: &'static [Remote],
}

// CIFAR: the dataset authors' page, https://www.cs.toronto.edu/~kriz/cifar.html, lists each archive with its
// md5sum; torchvision/datasets/cifar.py (CIFAR10.url / tgz_md5, CIFAR100.url / tgz_md5) uses the same host
// and the same MD5s for the python versions (it does not fetch the binary versions).
const TORONTO: &[&str] = &["http://www.cs.toronto.edu/~kriz/"];
const CIFAR10_BINARY: &[Remote] = &[Remote { file: "cifar-10-binary.tar.gz", md5: "c32a1d4ab5d03f1284b67883e8d87530" }];
const CIFAR10_PYTHON: &[Remote] = &[Remote { file: "cifar-10-python.tar.gz", md5: "c58f30108f718f92721af3b95e74349a" }];
const CIFAR100_BINARY: &[Remote] =
    &[Remote { file: "cifar-100-binary.tar.gz", md5: "03b5dce01913d631647c71ecec9e9cb8" }];
const CIFAR100_PYTHON: &[Remote] =
    &[Remote { file: "cifar-100-python.tar.gz", md5: "eb9058c3a382ffc7106e4002c42a8d85" }];

// MNIST: torchvision/datasets/mnist.py (MNIST.mirrors, MNIST.resources) lists http://yann.lecun.com/exdb/mnist/
// and https://ossci-datasets.s3.amazonaws.com/mnist/ with these MD5s. yann.lecun.com has answered 403 to
// scripted downloads since 2024, so the S3 copy comes first, over plain http (S3 serves both); its https URL
// is the last resort (it needs a build with the `tls` feature).
const MNIST_HOSTS: &[&str] = &[
    "http://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
];
const MNIST_FILES: &[Remote] = &[
    Remote { file: "train-images-idx3-ubyte.gz", md5: "f68b3c2dcbeaaa9fbdd348bbdeb94873" },
    Remote { file: "train-labels-idx1-ubyte.gz", md5: "d53e105ee54ea40749a09fcbcd1e9432" },
    Remote { file: "t10k-images-idx3-ubyte.gz", md5: "9fb629c4189551a2d022fa330f9573f3" },
    Remote { file: "t10k-labels-idx1-ubyte.gz", md5: "ec29112dd5afa0611ce80d1b7f02629c" },
];

// Fashion-MNIST: torchvision/datasets/mnist.py (FashionMNIST.mirrors, FashionMNIST.resources); the S3 website
// host serves plain http only.
const FASHION_HOSTS: &[&str] = &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"];
const FASHION_FILES: &[Remote] = &[
    Remote { file: "train-images-idx3-ubyte.gz", md5: "8d4fb7e6c68d591d4c3dfef9ec88bf0d" },
    Remote { file: "train-labels-idx1-ubyte.gz", md5: "25c81989df183df01b3e8a0aad5dffbe" },
    Remote { file: "t10k-images-idx3-ubyte.gz", md5: "bef4ecab320f06d8554ea6380940ec79" },
    Remote { file: "t10k-labels-idx1-ubyte.gz", md5: "bb300cfdad3c16e7a12a480ee83cd310" },
];

/// The name `resnet data fetch` takes for a data set.
pub fn name(format: Format) -> &'static str {
    match format {
        Format::Cifar10 => "cifar10",
        Format::Cifar100 => "cifar100",
        Format::Mnist => "mnist",
        Format::FashionMnist => "fashion-mnist",
    }
}

/// Every data set, in the order `resnet data fetch` lists them.
pub const ALL: [Format; 4] = [Format::Cifar10, Format::Cifar100, Format::Mnist, Format::FashionMnist];

/// The hosts and files of `format` in `form`. The form matters for CIFAR only.
pub fn published(format: Format, form: CifarForm) -> Published {
    match (format, form) {
        (Format::Cifar10, CifarForm::Binary) => Published { hosts: TORONTO, files: CIFAR10_BINARY },
        (Format::Cifar10, CifarForm::Python) => Published { hosts: TORONTO, files: CIFAR10_PYTHON },
        (Format::Cifar100, CifarForm::Binary) => Published { hosts: TORONTO, files: CIFAR100_BINARY },
        (Format::Cifar100, CifarForm::Python) => Published { hosts: TORONTO, files: CIFAR100_PYTHON },
        (Format::Mnist, _) => Published { hosts: MNIST_HOSTS, files: MNIST_FILES },
        (Format::FashionMnist, _) => Published { hosts: FASHION_HOSTS, files: FASHION_FILES },
    }
}

/// How to fetch.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Target directory (created when missing).
    pub dir: PathBuf,
    /// Fetch every file as `MIRROR/<file name>` instead of from the official hosts.
    pub mirror: Option<String>,
    /// Expected MD5s that replace the official ones, by file name: for a mirror's own copies.
    pub md5: Vec<(String, String)>,
    /// Draw a progress bar on stderr while downloading.
    pub progress: bool,
}

/// Parse `FILE=HEX` (an expected MD5 for one file); the digest is returned in lowercase.
pub fn parse_md5_override(s: &str) -> Result<(String, String)> {
    let (file, hex) = s.split_once('=').ok_or_else(|| anyhow!("expected FILE=MD5"))?;
    let (file, hex) = (file.trim(), hex.trim());
    if file.is_empty() {
        bail!("the file name is empty (expected FILE=MD5)");
    }
    if !is_md5_hex(hex) {
        bail!("the MD5 must be 32 hex digits, got '{hex}'");
    }
    Ok((file.to_string(), hex.to_ascii_lowercase()))
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Fetch every file of `format` in `form` into `opts.dir`, writing one status line per step to `log`.
/// Returns the paths of the files, in the published order.
pub fn fetch(format: Format, form: CifarForm, opts: &Options, log: &mut dyn Write) -> Result<Vec<PathBuf>> {
    let published = published(format, form);
    let names: Vec<&str> = published.files.iter().map(|r| r.file).collect();
    for (file, _) in &opts.md5 {
        if !names.contains(&file.as_str()) {
            bail!("--md5 {file}=...: {} has no file '{file}'; its files are: {}", name(format), names.join(", "));
        }
    }
    let hosts: Vec<String> = match &opts.mirror {
        Some(m) => vec![mirror_base(m)?],
        None => published.hosts.iter().map(|h| h.to_string()).collect(),
    };
    let created = first_missing(&opts.dir);
    fs::create_dir_all(&opts.dir).with_context(|| format!("{}: cannot create the directory", opts.dir.display()))?;
    let agent = agent();
    let mut out = Vec::new();
    for remote in published.files {
        let expected = match opts.md5.iter().rev().find(|(f, _)| f == remote.file) {
            Some((_, hex)) => hex.as_str(),
            None => remote.md5,
        };
        match fetch_one(&agent, &hosts, remote.file, expected, opts, log) {
            Ok(path) => out.push(path),
            Err(e) => {
                if let Some(top) = &created {
                    remove_empty_dirs(&opts.dir, top);
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// The outermost directory of `dir` (itself or an ancestor) that does not exist yet, if any.
fn first_missing(dir: &Path) -> Option<PathBuf> {
    let mut missing = None;
    for a in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if a.exists() {
            break;
        }
        missing = Some(a.to_path_buf());
    }
    missing
}

/// After a failed fetch, remove the directories it created (`dir` up to `top`) while they are empty.
fn remove_empty_dirs(dir: &Path, top: &Path) {
    for a in dir.ancestors() {
        if fs::remove_dir(a).is_err() || a == top {
            break;
        }
    }
}

/// `BASE/` for a `--mirror` base URL (http:// or https://, any path; a trailing slash is optional).
fn mirror_base(m: &str) -> Result<String> {
    let lower = m.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) || m.len() <= "https://".len() {
        bail!("--mirror '{m}': expected an http:// (or https://) base URL, e.g. http://127.0.0.1:8000/mnist");
    }
    Ok(format!("{}/", m.trim_end_matches('/')))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        // redirects are followed by hand, so that an https target is reported with its URL
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("resnet/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// Fetch one file from the first host that serves it; a checksum mismatch stops at once.
fn fetch_one(
    agent: &ureq::Agent,
    hosts: &[String],
    file: &str,
    expected: &str,
    opts: &Options,
    log: &mut dyn Write,
) -> Result<PathBuf> {
    let dest = opts.dir.join(file);
    if dest.is_file() {
        let actual = md5_file(&dest)?;
        if actual == expected {
            say(log, format_args!("{file}: ok (cached)"));
            return Ok(dest);
        }
        say(log, format_args!("{file}: present but its MD5 is {actual}, expected {expected}: downloading it again"));
    }
    let part = opts.dir.join(format!(".{file}.part"));
    let mut failures: Vec<String> = Vec::new();
    for host in hosts {
        let url = format!("{host}{file}");
        say(log, format_args!("{file}: downloading {url}"));
        let mut partial = Partial::create(&part)?;
        let (bytes, actual) = match download(agent, &url, &mut partial, opts.progress) {
            Ok(done) => done,
            Err(Failure::Local(e)) => return Err(e),
            Err(Failure::Remote(e)) => {
                if hosts.len() > 1 {
                    say(log, format_args!("{file}: failed: {e:#}"));
                }
                failures.push(format!("{e:#}"));
                continue;
            }
        };
        if actual != expected {
            drop(partial); // removes the partial file
            bail!(
                "{file}: MD5 mismatch: expected {expected}, got {actual} ({bytes} bytes from {url}); the download was \
                 discarded"
            );
        }
        partial.persist(&dest)?;
        say(log, format_args!("{file}: ok ({bytes} bytes, MD5 {actual})"));
        return Ok(dest);
    }
    match failures.as_slice() {
        [one] => bail!("{one}"),
        all => bail!("{file}: every host failed:\n  {}", all.join("\n  ")),
    }
}

fn say(log: &mut dyn Write, msg: std::fmt::Arguments) {
    // status lines are informative only: a closed stdout must not fail the download
    let _ = writeln!(log, "{msg}");
    let _ = log.flush();
}

/// A download failure: `Remote` (network, HTTP: another host may do) or `Local` (disk: stop).
enum Failure {
    Remote(anyhow::Error),
    Local(anyhow::Error),
}

/// The `.part` file being written; removed when dropped unless persisted.
struct Partial {
    path: PathBuf,
    file: Option<File>,
}

impl Partial {
    fn create(path: &Path) -> Result<Partial> {
        let file = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
        Ok(Partial { path: path.to_path_buf(), file: Some(file) })
    }

    /// Flush to disk and rename onto `dest` (atomic on one file system).
    fn persist(mut self, dest: &Path) -> Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all().with_context(|| format!("{}: cannot write", self.path.display()))?;
        }
        fs::rename(&self.path, dest)
            .with_context(|| format!("cannot rename {} to {}", self.path.display(), dest.display()))?;
        self.path = PathBuf::new();
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        self.file = None;
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// GET `url` (following up to 5 redirects) into `partial`, hashing as it streams. Returns (bytes, MD5 hex).
fn download(agent: &ureq::Agent, url: &str, partial: &mut Partial, progress: bool) -> Result<(u64, String), Failure> {
    let mut res = get(agent, url).map_err(Failure::Remote)?;
    let total = res.body().content_length();
    let mut reader = res.body_mut().as_reader();
    let bar = progress.then(|| progress_bar(total));
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    let Some(file) = partial.file.as_mut() else {
        return Err(Failure::Local(anyhow!("{}: not open for writing", partial.path.display())));
    };
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let e = anyhow!("{url}: download broke off after {bytes} bytes: {}", io_message(&e));
                return Err(Failure::Remote(e));
            }
        };
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| Failure::Local(anyhow!("{}: cannot write: {e}", partial.path.display())))?;
        bytes += n as u64;
        if let Some(b) = &bar {
            b.inc(n as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if let Some(t) = total.filter(|&t| t != bytes) {
        return Err(Failure::Remote(anyhow!("{url}: the server announced {t} bytes but sent {bytes}")));
    }
    Ok((bytes, hex(&hasher.finalize())))
}

/// The message of an I/O error from ureq's body reader (which wraps ureq's own errors).
fn io_message(e: &io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()) {
        Some(u) => u.to_string(),
        None => e.to_string(),
    }
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let target = indicatif::ProgressDrawTarget::stderr();
    match total {
        Some(t) => {
            let bar = indicatif::ProgressBar::with_draw_target(Some(t), target);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        }
        None => {
            let bar = indicatif::ProgressBar::with_draw_target(None, target);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar
        }
    }
}

/// GET `url`, following redirects by hand; any status but 200 is an error naming the URL.
fn get(agent: &ureq::Agent, url: &str) -> Result<ureq::http::Response<ureq::Body>> {
    const MAX_REDIRECTS: usize = 5;
    let mut url = url.to_string();
    let mut chain: Vec<String> = Vec::new();
    loop {
        check_scheme(&url, &chain)?;
        let res = agent.get(&url).call().map_err(|e| request_error(&url, e))?;
        let status = res.status();
        if status.is_redirection() {
            let location = res.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
            let Some(location) = location else {
                bail!("{url}: HTTP {} without a Location header", status_text(status));
            };
            if chain.len() >= MAX_REDIRECTS {
                bail!("{url}: more than {MAX_REDIRECTS} redirects (from {})", chain[0]);
            }
            let next = resolve(&url, &location);
            chain.push(std::mem::replace(&mut url, next));
            continue;
        }
        if status != ureq::http::StatusCode::OK {
            let via = chain.first().map(|c| format!(" (redirected from {c})")).unwrap_or_default();
            bail!("{url}: HTTP {}{via}", status_text(status));
        }
        return Ok(res);
    }
}

fn status_text(s: ureq::http::StatusCode) -> String {
    match s.canonical_reason() {
        Some(r) => format!("{} {r}", s.as_u16()),
        None => s.as_u16().to_string(),
    }
}

/// Refuse a URL this build cannot fetch before trying it: https without TLS, or another scheme.
fn check_scheme(url: &str, chain: &[String]) -> Result<()> {
    let lower = url.to_ascii_lowercase();
    let via = chain.last().map(|c| format!(" (redirected from {c})")).unwrap_or_default();
    if lower.starts_with("https://") {
        if cfg!(feature = "tls") {
            return Ok(());
        }
        bail!(
            "{url}{via}: https needs TLS, which this build of resnet lacks (it was built without the `tls` \
             feature); rebuild with `cargo build --release --features tls`, or fetch from an http:// mirror with \
             --mirror"
        );
    }
    if !lower.starts_with("http://") {
        match scheme_of(url) {
            Some(scheme) => {
                bail!("{url}{via}: the {scheme}: scheme is refused; only http:// and https:// URLs are fetched")
            }
            None => bail!("{url}{via}: only http:// and https:// URLs can be fetched"),
        }
    }
    Ok(())
}

/// A request error, worded for a person and naming the URL.
fn request_error(url: &str, e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Io(io) if io.kind() == io::ErrorKind::ConnectionRefused => {
            anyhow!("{url}: connection refused (no server listens there; check the host and port)")
        }
        ureq::Error::Io(io) if io.to_string().contains("lookup address") => {
            anyhow!("{url}: cannot resolve the host name ({io}); is there a network?")
        }
        ureq::Error::Io(io) => anyhow!("{url}: {io}"),
        ureq::Error::HostNotFound => anyhow!("{url}: host not found (no DNS answer; is there a network?)"),
        ureq::Error::ConnectionFailed => anyhow!("{url}: cannot connect"),
        ureq::Error::Timeout(t) => anyhow!("{url}: timed out ({t})"),
        ureq::Error::TlsRequired => anyhow!("{url}: https needs TLS, which this build of resnet lacks"),
        e => anyhow!("{url}: {e}"),
    }
}

/// The scheme of `url` when it has one (RFC 3986: a letter, then letters, digits, `+`, `-` or `.`,
/// then `:`), lowercase.
fn scheme_of(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once(':')?;
    let mut c = scheme.chars();
    let valid = c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '+' | '-' | '.'));
    valid.then(|| scheme.to_ascii_lowercase())
}

/// The absolute URL of a redirect's `Location`, relative to `base`. A location with a scheme is
/// absolute whatever its scheme (`file:///etc/passwd` is not a relative path): [`check_scheme`]
/// then refuses what is not http(s).
fn resolve(base: &str, location: &str) -> String {
    if scheme_of(location).is_some() {
        return location.to_string();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    if let Some(net) = location.strip_prefix("//") {
        return format!("{scheme}://{net}");
    }
    let host_end = rest.find('/').unwrap_or(rest.len());
    let (host, path) = rest.split_at(host_end);
    if location.starts_with('/') {
        return format!("{scheme}://{host}{location}");
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{scheme}://{host}{dir}{location}")
}

/// The MD5 of a file, lowercase hex.
pub fn md5_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(anyhow!("{}: cannot read: {e}", path.display())),
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_published() -> Vec<(Format, CifarForm, Published)> {
        let mut v = Vec::new();
        for f in ALL {
            for form in [CifarForm::Binary, CifarForm::Python] {
                v.push((f, form, published(f, form)));
            }
        }
        v
    }

    #[test]
    fn table_has_one_or_four_files_with_md5s() {
        for (f, form, p) in all_published() {
            let want = match f {
                Format::Cifar10 | Format::Cifar100 => 1,
                Format::Mnist | Format::FashionMnist => 4,
            };
            assert_eq!(p.files.len(), want, "{f:?} {form:?}");
            assert!(!p.hosts.is_empty(), "{f:?}");
            for r in p.files {
                assert!(is_md5_hex(r.md5) && r.md5 == r.md5.to_ascii_lowercase(), "{f:?} {}: {}", r.file, r.md5);
                assert!(r.file.ends_with(".gz") && !r.file.contains('/'), "{}", r.file);
            }
            for h in p.hosts {
                assert!(h.starts_with("http://") || h.starts_with("https://"), "{h}");
                assert!(h.ends_with('/'), "{h}");
            }
            // the first host of every set is plain http, so a build without TLS can fetch it
            assert!(p.hosts[0].starts_with("http://"), "{f:?}");
        }
    }

    #[test]
    fn table_names_the_official_files() {
        assert_eq!(published(Format::Cifar10, CifarForm::Binary).files[0].file, "cifar-10-binary.tar.gz");
        assert_eq!(published(Format::Cifar10, CifarForm::Python).files[0].file, "cifar-10-python.tar.gz");
        assert_eq!(published(Format::Cifar100, CifarForm::Binary).files[0].file, "cifar-100-binary.tar.gz");
        assert_eq!(published(Format::Cifar100, CifarForm::Python).files[0].file, "cifar-100-python.tar.gz");
        for f in [Format::Mnist, Format::FashionMnist] {
            let files: Vec<&str> = published(f, CifarForm::Binary).files.iter().map(|r| r.file).collect();
            let want: Vec<String> = super::super::idx::FILES.iter().map(|n| format!("{n}.gz")).collect();
            assert_eq!(files, want);
            assert_eq!(published(f, CifarForm::Binary), published(f, CifarForm::Python));
        }
        // all MD5s differ: no copy-paste slip in the table
        let mut md5s: Vec<&str> = all_published().iter().flat_map(|(_, _, p)| p.files.iter().map(|r| r.md5)).collect();
        md5s.sort();
        md5s.dedup();
        assert_eq!(md5s.len(), 4 + 4 + 4);
    }

    #[test]
    fn md5_of_known_vectors() {
        // RFC 1321, appendix A.5
        assert_eq!(hex(&Md5::digest(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(&Md5::digest(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
    }

    #[test]
    fn md5_override_parses() {
        let hex = "D41D8CD98F00B204E9800998ECF8427E";
        assert_eq!(parse_md5_override(&format!("a.gz={hex}")).unwrap(), ("a.gz".to_string(), hex.to_ascii_lowercase()));
        assert!(parse_md5_override("a.gz").is_err());
        assert!(parse_md5_override("=d41d8cd98f00b204e9800998ecf8427e").is_err());
        assert!(parse_md5_override("a.gz=d41d8cd98f00b204e9800998ecf8427").is_err());
        assert!(parse_md5_override("a.gz=x41d8cd98f00b204e9800998ecf8427e").is_err());
    }

    #[test]
    fn mirror_base_takes_any_path() {
        assert_eq!(mirror_base("http://127.0.0.1:8000").unwrap(), "http://127.0.0.1:8000/");
        assert_eq!(mirror_base("http://h/x/y/").unwrap(), "http://h/x/y/");
        assert!(mirror_base("ftp://h/x").is_err());
        assert!(mirror_base("127.0.0.1:8000").is_err());
        assert!(mirror_base("http://").is_err());
    }

    #[test]
    fn redirects_resolve() {
        let base = "http://h:1/a/b/f.gz?q=1";
        assert_eq!(resolve(base, "https://o/x"), "https://o/x");
        assert_eq!(resolve(base, "//o/x"), "http://o/x");
        assert_eq!(resolve(base, "/x/y"), "http://h:1/x/y");
        assert_eq!(resolve(base, "g.gz"), "http://h:1/a/b/g.gz");
        assert_eq!(resolve("http://h", "g.gz"), "http://h/g.gz");
        // another scheme is absolute, not a relative path (and refused by check_scheme)
        assert_eq!(resolve(base, "file:///etc/passwd"), "file:///etc/passwd");
        assert_eq!(resolve(base, "FTP://o/x"), "FTP://o/x");
        assert_eq!(resolve(base, "./a:b"), "http://h:1/a/b/./a:b");
        assert_eq!(scheme_of("File:///x").as_deref(), Some("file"));
        assert_eq!(scheme_of("1x:y"), None);
        let e = check_scheme("file:///etc/passwd", &[base.to_string()]).unwrap_err().to_string();
        assert!(e.contains("the file: scheme is refused") && e.contains(base), "{e}");
    }

    #[test]
    fn schemes_are_checked_before_connecting() {
        assert!(check_scheme("http://h/x", &[]).is_ok());
        let e = check_scheme("ftp://h/x", &[]).unwrap_err().to_string();
        assert!(e.contains("ftp://h/x"), "{e}");
        if !cfg!(feature = "tls") {
            let e = check_scheme("https://h/x", &["http://h/y".to_string()]).unwrap_err().to_string();
            assert!(e.contains("https://h/x") && e.contains("TLS") && e.contains("http://h/y"), "{e}");
        }
    }
}
