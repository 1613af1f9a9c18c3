//! `resnet data fetch` against a tiny HTTP/1.1 server on 127.0.0.1 serving small files in the official formats:
//! downloads, MD5 checks, caching, redirects and clear errors. No other host is ever contacted.

use flate2::{Compression, write::GzEncoder};
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
#[path = "common/scratch.rs"]
mod scratch;
use scratch::Scratch;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const IDX_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// What the server answers for a path.
#[derive(Clone)]
enum Reply {
    File(Vec<u8>),
    /// 302 Found to this Location.
    Redirect(String),
}

/// A one-thread HTTP/1.1 server on 127.0.0.1: GET only, one request per connection, 404 for unknown paths.
/// It stops when dropped, or by itself after a minute.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(routes: Vec<(String, Reply)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("local address").port();
        let routes: HashMap<String, Reply> = routes.into_iter().collect();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (stop2, requests2) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        serve(stream, &routes, &requests2);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server { port, stop, requests, thread: Some(thread) }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answer one request, its path recorded in `requests` before the reply is written: a client
/// that has the reply finds its request recorded (recorded after, a test that looked as soon as
/// the client exited could miss it).
fn serve(mut stream: TcpStream, routes: &HashMap<String, Reply>, requests: &Mutex<Vec<String>>) -> Option<()> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head);
    let mut first = head.lines().next()?.split(' ');
    let (method, path) = (first.next()?, first.next()?.to_string());
    let (status, extra, body): (&str, String, Vec<u8>) = match routes.get(&path) {
        _ if method != "GET" => ("405 Method Not Allowed", String::new(), Vec::new()),
        Some(Reply::File(b)) => ("200 OK", "Content-Type: application/octet-stream\r\n".into(), b.clone()),
        Some(Reply::Redirect(to)) => ("302 Found", format!("Location: {to}\r\n"), Vec::new()),
        None => ("404 Not Found", "Content-Type: text/plain\r\n".into(), b"not found".to_vec()),
    };
    requests.lock().unwrap().push(path);
    let head = format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(&body)).and_then(|_| stream.flush());
    Some(())
}

fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An IDX images file (magic 0x803, n x 28 x 28 u8) or labels file (magic 0x801, n u8), gzipped.
fn idx_images(n: u32, seed: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x0000_0803u32, n, 28, 28] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..n as usize * 28 * 28).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)));
    gzip(&b)
}

fn idx_labels(n: u32) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x0000_0801u32, n] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..n).map(|i| (i % 10) as u8));
    gzip(&b)
}

/// The four MNIST .gz files: 6 training and 4 test images.
fn idx_set() -> Vec<(&'static str, Vec<u8>)> {
    let files = vec![idx_images(6, 1), idx_labels(6), idx_images(4, 2), idx_labels(4)];
    IDX_FILES.into_iter().zip(files).collect()
}

/// A cifar-10-binary.tar.gz with two records in each of the six batch files.
fn cifar10_archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    let names = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
    for (k, name) in names.iter().chain(["test_batch.bin"].iter()).enumerate() {
        let mut data = Vec::new();
        for r in 0..2u8 {
            data.push((k as u8 + r) % 10);
            data.extend((0..3072usize).map(|i| (i as u8) ^ r));
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("cifar-10-batches-bin/{name}"), &data[..]).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn routes(prefix: &str, files: &[(&str, Vec<u8>)]) -> Vec<(String, Reply)> {
    files.iter().map(|(f, b)| (format!("{prefix}/{f}"), Reply::File(b.clone()))).collect()
}

/// `--md5 FILE=HEX` for each file.
fn md5_args(files: &[(&str, Vec<u8>)]) -> Vec<String> {
    files.iter().flat_map(|(f, b)| ["--md5".to_string(), format!("{f}={}", md5_hex(b))]).collect()
}

/// A fresh, empty directory for one test.
fn tmp(name: &str) -> Scratch {
    Scratch::new(&format!("fetch-{name}"))
}

fn resnet<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_resnet"));
    c.args(args);
    // no proxy from the environment: every request goes straight to 127.0.0.1
    for v in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        c.env_remove(v);
    }
    c.output().expect("run resnet")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn ok(args: &[String]) -> String {
    let o = resnet(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?} failed:\n{out}\n{err}");
    out
}

/// Fails with exit code 2 and an error containing every needle; never panics. Returns stderr.
fn fails_with(args: &[String], needles: &[&str]) -> String {
    let o = resnet(args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}:\n{out}\n{err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' not in:\n{err}");
    }
    err
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

#[test]
fn fetches_an_idx_set_that_loads() {
    let files = idx_set();
    let server = Server::start(routes("/mnist", &files));
    let top = tmp("idx");
    let dir = top.join("mnist");
    let mut a = args(&["data", "fetch", "mnist", "--dir", dir.to_str().unwrap(), "--mirror"]);
    a.push(server.url("/mnist/"));
    a.extend(md5_args(&files));
    let out = ok(&a);
    for (f, b) in &files {
        assert!(out.contains(&format!("{f}: downloading {}", server.url(&format!("/mnist/{f}")))), "{out}");
        assert!(out.contains(&format!("{f}: ok ({} bytes, MD5 {})", b.len(), md5_hex(b))), "{out}");
        assert_eq!(&std::fs::read(dir.join(f)).unwrap(), b, "{f} differs");
    }
    assert!(out.contains(&format!("--data {}", dir.display())), "{out}");
    let mut want: Vec<String> = IDX_FILES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names_in(&dir), want, "only the four files, no partial file");
    // what `resnet train --data DIR` does
    let (splits, format) = resnet::data::load(&dir, None).unwrap();
    assert_eq!(format, resnet::data::Format::Mnist);
    assert_eq!((splits.train.len(), splits.test.len()), (6, 4));
    assert_eq!((splits.train.h, splits.train.w, splits.train.c, splits.train.classes), (28, 28, 1, 10));
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn second_fetch_is_cached_and_a_bad_copy_is_replaced() {
    let files = idx_set();
    let server = Server::start(routes("/m", &files));
    let top = tmp("cached");
    let dir = top.join("fashion");
    let mut a = args(&["data", "fetch", "fashion-mnist", "--dir", dir.to_str().unwrap(), "--mirror"]);
    a.push(server.url("/m"));
    a.extend(md5_args(&files));
    ok(&a);
    assert_eq!(server.requests().len(), 4);

    let out = ok(&a);
    assert_eq!(out.matches("ok (cached)").count(), 4, "{out}");
    assert_eq!(server.requests().len(), 4, "a cached fetch makes no request");
    assert!(!out.contains("--format"), "the path says fashion: {out}");

    // a damaged copy fails its check and is downloaded again; the others stay cached
    std::fs::write(dir.join("t10k-images-idx3-ubyte.gz"), b"damaged").unwrap();
    let out = ok(&a);
    assert_eq!(out.matches("ok (cached)").count(), 3, "{out}");
    assert!(out.contains("t10k-images-idx3-ubyte.gz: present but its MD5 is"), "{out}");
    let requests = server.requests();
    assert_eq!((requests.len(), requests[4].as_str()), (5, "/m/t10k-images-idx3-ubyte.gz"));
    let (splits, format) = resnet::data::load(&dir, None).unwrap();
    assert_eq!((format, splits.test.len()), (resnet::data::Format::FashionMnist, 4));
}

#[test]
fn checksum_mismatch_names_the_file_and_leaves_nothing() {
    let files = idx_set();
    let server = Server::start(routes("/m", &files));

    // an expected MD5 given for the last file that its bytes do not have
    let dir = tmp("mismatch");
    let wrong = "0123456789abcdef0123456789abcdef";
    let mut a = args(&["data", "fetch", "mnist", "--dir", dir.to_str().unwrap(), "--mirror"]);
    a.push(server.url("/m"));
    a.extend(md5_args(&files[..3]));
    a.extend(args(&["--md5", &format!("t10k-labels-idx1-ubyte.gz={}", wrong.to_uppercase())]));
    let actual = md5_hex(&files[3].1);
    fails_with(
        &a,
        &["t10k-labels-idx1-ubyte.gz", "MD5 mismatch", &format!("expected {wrong}"), &format!("got {actual}")],
    );
    let mut want: Vec<String> = IDX_FILES[..3].iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names_in(&dir), want, "the bad file is gone, partial file included; the good ones stay");

    // the official MD5s (no --md5) do not match these small files: the first one fails
    let dir = tmp("official");
    let mut a = args(&["data", "fetch", "fashion-mnist", "--dir", dir.to_str().unwrap(), "--mirror"]);
    a.push(server.url("/m"));
    fails_with(&a, &["train-images-idx3-ubyte.gz", "expected 8d4fb7e6c68d591d4c3dfef9ec88bf0d", &md5_hex(&files[0].1)]);
    assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
}

#[test]
fn http_404_names_the_url() {
    let server = Server::start(Vec::new());
    let dir = tmp("404");
    let mut a = args(&["data", "fetch", "cifar100", "--dir", dir.to_str().unwrap(), "--mirror"]);
    a.push(server.url("/nothing/here"));
    let url = server.url("/nothing/here/cifar-100-binary.tar.gz");
    fails_with(&a, &[&url, "HTTP 404 Not Found"]);
    assert!(names_in(&dir).is_empty(), "{:?}", names_in(&dir));
}

#[test]
fn connection_refused_is_clear() {
    // a port that was just free: nothing listens there
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let top = tmp("refused");
    let dir = top.join("new/mnist");
    let base = format!("http://127.0.0.1:{port}/x");
    let a = args(&["data", "fetch", "mnist", "--dir", dir.to_str().unwrap(), "--mirror", &base]);
    fails_with(&a, &[&format!("{base}/train-images-idx3-ubyte.gz"), "connection refused"]);
    assert!(names_in(&top).is_empty(), "the directories it made are removed again: {:?}", names_in(&top));
}

#[test]
fn cifar_archive_is_kept_as_downloaded_through_a_redirect() {
    let archive = cifar10_archive();
    let server = Server::start(vec![
        ("/old/cifar-10-binary.tar.gz".into(), Reply::Redirect("/new/cifar-10-binary.tar.gz".into())),
        ("/new/cifar-10-binary.tar.gz".into(), Reply::File(archive.clone())),
    ]);
    let dir = tmp("cifar");
    let mut a = args(&["data", "fetch", "cifar10", "--dir", dir.to_str().unwrap(), "--mirror"]);
    a.push(server.url("/old"));
    a.extend(md5_args(&[("cifar-10-binary.tar.gz", archive.clone())]));
    let out = ok(&a);
    let path = dir.join("cifar-10-binary.tar.gz");
    assert_eq!(std::fs::read(&path).unwrap(), archive);
    assert_eq!(names_in(&dir), ["cifar-10-binary.tar.gz"]);
    assert!(out.contains(&format!("--data {}", path.display())), "{out}");
    assert_eq!(server.requests(), ["/old/cifar-10-binary.tar.gz", "/new/cifar-10-binary.tar.gz"]);
    let (splits, format) = resnet::data::load_with(&path, None, false).unwrap();
    assert_eq!(format, resnet::data::Format::Cifar10);
    assert_eq!((splits.train.len(), splits.test.len(), splits.train.classes), (10, 2, 10));
}

#[test]
fn redirect_to_a_missing_file_names_both_urls() {
    let server = Server::start(vec![("/a/cifar-100-python.tar.gz".into(), Reply::Redirect("/b/gone.tar.gz".into()))]);
    let dir = tmp("redirect404");
    let mut a = args(&["data", "fetch", "cifar100", "--form", "python", "--dir", dir.to_str().unwrap(), "--mirror"]);
    a.push(server.url("/a"));
    fails_with(&a, &["HTTP 404", &server.url("/b/gone.tar.gz"), &server.url("/a/cifar-100-python.tar.gz")]);
}

#[test]
fn a_redirect_to_another_scheme_is_refused_naming_it() {
    let server = Server::start(vec![
        ("/m/cifar-10-binary.tar.gz".into(), Reply::Redirect("file:///etc/passwd".into())),
        ("/n/cifar-10-binary.tar.gz".into(), Reply::Redirect("ftp://127.0.0.1/cifar-10-binary.tar.gz".into())),
    ]);
    let dir = tmp("redirect-scheme");
    for (path, scheme, to) in [("/m", "file:", "file:///etc/passwd"), ("/n", "ftp:", "ftp://127.0.0.1/")] {
        let mut a = args(&["data", "fetch", "cifar10", "--dir", dir.to_str().unwrap(), "--mirror"]);
        a.push(server.url(path));
        let from = server.url(&format!("{path}/cifar-10-binary.tar.gz"));
        fails_with(&a, &[&format!("the {scheme} scheme is refused"), to, &format!("redirected from {from}")]);
    }
    // the redirect was not followed as a relative path on the same server
    assert_eq!(server.requests(), ["/m/cifar-10-binary.tar.gz", "/n/cifar-10-binary.tar.gz"]);
    assert_eq!(names_in(&dir), Vec::<String>::new());
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_without_tls_names_the_url() {
    // refused before any connection is tried
    let dir = tmp("https");
    let a = args(&["data", "fetch", "cifar10", "--dir", dir.to_str().unwrap(), "--mirror", "https://127.0.0.1:1/c"]);
    fails_with(&a, &["https://127.0.0.1:1/c/cifar-10-binary.tar.gz", "TLS", "--features tls"]);
}

#[test]
fn bad_arguments_are_refused_before_any_request() {
    let hex = "0123456789abcdef0123456789abcdef";
    let md5 = format!("train-images-idx3-ubyte.gz={hex}");
    fails_with(&args(&["data", "fetch", "mnist", "--md5", &md5]), &["--mirror"]);
    // port 1 on 127.0.0.1 is never contacted: the argument checks come first
    let m = "http://127.0.0.1:1/m";
    fails_with(
        &args(&["data", "fetch", "mnist", "--mirror", m, "--md5", &format!("nope.gz={hex}")]),
        &["nope.gz", "train-images-idx3-ubyte.gz"],
    );
    fails_with(&args(&["data", "fetch", "mnist", "--mirror", m, "--md5", "a.gz=12"]), &["32 hex digits"]);
    fails_with(&args(&["data", "fetch", "mnist", "--form", "python"]), &["--form applies to cifar10 and cifar100"]);
    fails_with(&args(&["data", "fetch", "mnist", "--mirror", "ftp://127.0.0.1/m"]), &["ftp://127.0.0.1/m", "http://"]);
    fails_with(&args(&["data", "fetch", "imagenet"]), &["imagenet", "cifar10"]);
}

#[test]
fn help_shows_examples() {
    let o = resnet(&["data", "fetch", "--help"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    for s in ["Examples:", "resnet data fetch cifar10", "--mirror", "--md5", "fashion-mnist", "ok (cached)"] {
        assert!(out.contains(s), "{s} missing:\n{out}");
    }
}
