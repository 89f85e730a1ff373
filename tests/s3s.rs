//! The S3-protocol server of the S3 tests: s3s-fs, started by each test from `$AVTO_S3S_FS`
//! (installed by `.ci/s3.sh`; the tests fail, never skip, without it), and small helpers.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use avto::files::s3::{S3Config, S3ObjectStore};
use avto::files::ObjectStore;

pub const ACCESS: &str = "avto-test-access";
pub const SECRET_KEY: &str = "avto-test-secret";

/// One s3s-fs process on a free loopback port with its own data directory; killed on drop.
pub struct S3Server {
    pub endpoint: String,
    child: Child,
    data: PathBuf,
}

fn s3s_fs_binary() -> PathBuf {
    let path = std::env::var_os("AVTO_S3S_FS").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("AVTO_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/avto"));
        cache.join("s3s-fs/bin/s3s-fs")
    });
    assert!(
        path.is_file(),
        "the S3 tests need the s3s-fs server at {} (set AVTO_S3S_FS to another path); install it with \
         `bash .ci/s3.sh install` (cargo install s3s-fs@0.14.1 --features binary, about 5 minutes once)",
        path.display()
    );
    path
}

impl S3Server {
    pub fn start() -> S3Server {
        let bin = s3s_fs_binary();
        let data = std::env::temp_dir().join(format!("avto-s3s-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&data).unwrap();
        let mut child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", "0", "--access-key", ACCESS, "--secret-key", SECRET_KEY])
            .arg(&data)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        // s3s-fs logs `server is running at http://127.0.0.1:PORT` once it listens; the reader keeps
        // draining its output afterwards so the pipe never fills.
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("server is running at ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line[at + "server is running at ".len()..].trim().to_owned());
                    }
                }
            }
        });
        let endpoint = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(e) => e,
            Err(_) => {
                let _ = child.kill();
                panic!("s3s-fs ({}) did not report its address within 20 s", bin.display());
            }
        };
        S3Server { endpoint, child, data }
    }

    pub fn config(&self, bucket: &str) -> S3Config {
        S3Config::new(&self.endpoint, ACCESS, SECRET_KEY).bucket(bucket)
    }

    /// The orchestrator's S3 variables.
    pub fn env<'a>(&'a self, bucket: &'a str) -> Vec<(&'a str, &'a str)> {
        vec![
            ("S3_ENDPOINT_URL", self.endpoint.as_str()),
            ("S3_ACCESS_KEY", ACCESS),
            ("S3_SECRET_KEY", SECRET_KEY),
            ("S3_DEFAULT_BUCKET", bucket),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// A fresh bucket name per test.
pub fn bucket(tag: &str) -> String {
    format!("avto-{tag}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

pub fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("avto-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A deterministic pseudo-random body.
pub fn body_of(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(seed as u32 % 31) as u8 ^ seed).collect()
}

pub async fn started_store(s3: &S3Server, bucket: &str) -> Arc<S3ObjectStore> {
    let store = Arc::new(S3ObjectStore::new(s3.config(bucket)));
    store.init().await.expect("the bucket is created");
    store
}
