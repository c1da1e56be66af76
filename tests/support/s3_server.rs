//! A real S3-compatible server for tests: spawns `moto_server` (PyPI
//! `moto[server]`) on a free 127.0.0.1 port and kills it on drop.
//!
//! Lookup order for the executable: `$MOTO_SERVER`, then `moto_server` on
//! `PATH`, then `~/.pyenv/shims` and `~/.local/bin`. When it is missing,
//! [`S3Server::start`] returns `None` after a loud `SKIPPED` line, except under
//! `CI` (env set), where it panics: CI must not silently skip S3 coverage.
#![allow(dead_code)] // each test binary that includes `support` uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

const DUMMY_AUTH: &str = "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, \
                          SignedHeaders=host, Signature=0000";

/// A raw HTTP response: status, lower-cased header names, body.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// An executable named by `env_var`, else `name` on `PATH`, in `~/.pyenv/shims` or in
/// `~/.local/bin` (where `pip install` puts console scripts).
pub fn find_executable(env_var: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        let home = PathBuf::from(home);
        dirs.push(home.join(".pyenv/shims"));
        dirs.push(home.join(".local/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl S3Server {
    /// Start moto_server, or `None` (with a SKIPPED notice) when it is not
    /// installed and `CI` is unset.
    pub fn start() -> Option<S3Server> {
        let Some(exe) = find_executable("MOTO_SERVER", "moto_server") else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "moto_server not found but CI is set: install it with pip install 'moto[server]' \
                     (or point MOTO_SERVER at it)"
                );
            }
            eprintln!("SKIPPED: moto_server not found; install with pip install 'moto[server]'");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir for moto log");
        let log = dir.path().join("moto_server.log");
        for _attempt in 0..3 {
            let port = free_port();
            let out = std::fs::File::create(&log).expect("create moto log");
            let err = out.try_clone().expect("clone log handle");
            let mut child = Command::new(&exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", exe.display()));
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Some(S3Server {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        addr,
                        child,
                        log,
                        _dir: dir,
                    });
                }
                if let Ok(Some(status)) = child.try_wait() {
                    // Most likely lost the port race: try another port.
                    eprintln!(
                        "moto_server exited early ({status}); log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "moto_server did not accept connections on {addr} within 30 s; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("moto_server failed to start three times; see the log above");
    }

    /// Create a bucket with a raw, unsigned `PUT /name` (moto accepts those).
    pub fn create_bucket(&self, name: &str) {
        let r = self.raw_request("PUT", &format!("/{name}"));
        assert!(
            r.status == 200,
            "creating bucket '{name}' on moto failed: HTTP {}: {}",
            r.status,
            r.body
        );
    }

    /// Send a bodiless HTTP/1.1 request (`path` starts with `/`, path-style:
    /// `/bucket/key`). It carries a dummy SigV4 `Authorization` header: moto
    /// does not verify signatures, but treats requests without one as anonymous
    /// and answers 403 for private objects.
    pub fn raw_request(&self, method: &str, path: &str) -> RawResponse {
        let mut s = TcpStream::connect(self.addr).expect("connect to moto");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: {DUMMY_AUTH}\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .expect("write request");
        let mut resp = String::new();
        s.read_to_string(&mut resp).expect("read response");
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((resp.as_str(), ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        RawResponse {
            status,
            headers: head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect(),
            body: body.to_string(),
        }
    }

    /// Environment for a `walvault` subprocess talking to this server.
    pub fn env_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_ENDPOINT_URL_S3", self.endpoint.clone()),
        ]
    }

    /// The server's combined stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Give the in-process AWS SDK dummy credentials and a region, once per
/// process, without overriding values already set; also disables IMDS so no
/// test ever talks to 169.254.169.254.
///
/// `std::env::set_var` is `unsafe` in edition 2024 because another thread may
/// read the environment concurrently through libc. Call this at the start of
/// every S3 test before any SDK or network use: the `Once` makes later callers
/// wait until the writes are done, and the remaining tests running in parallel
/// (file-backend ones) do not read the environment via libc meanwhile.
pub fn set_test_aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ] {
            if std::env::var_os(k).is_none() {
                // SAFETY: see the function docs; done once, before any S3 test
                // starts its client, under a `Once`.
                unsafe { std::env::set_var(k, v) };
            }
        }
    });
}
