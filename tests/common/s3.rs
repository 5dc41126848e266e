//! An S3-compatible server (moto's, through `scripts/s3-server.py`) on a
//! free loopback port, for tests and benchmarks; stopped when dropped.
#![allow(dead_code)]

use std::{
    io::{Read, Write},
    process::{Child, Command, Stdio},
    time::Duration,
};

pub const ACCESS_KEY: &str = "lethe-test";
pub const SECRET_KEY: &str = "lethe-test-secret";

pub struct S3Server {
    pub port: u16,
    child: Child,
}

/// One object to seed: its key, Unix time of LastModified, user metadata.
pub struct Seed {
    pub key: String,
    pub modified: i64,
    pub metadata: Vec<(String, String)>,
}

impl Seed {
    pub fn new(key: impl Into<String>, modified: i64) -> Seed {
        Seed { key: key.into(), modified, metadata: vec![] }
    }
}

fn venv_python() -> String {
    let venv = std::env::var("LETHE_VENV").unwrap_or_else(|_| "/var/tmp/lethe-venv".into());
    format!("{venv}/bin/python")
}

impl S3Server {
    pub fn start() -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/s3-server.py");
        let child = Command::new(venv_python())
            .arg(script)
            .arg(port.to_string())
            .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the S3 test server (run scripts/setup-test-env.sh)");
        let server = S3Server { port, child };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the S3 test server did not start on port {port}");
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn options(&self) -> lethe::scrub::s3::S3Options {
        lethe::scrub::s3::S3Options {
            endpoint: Some(self.endpoint()),
            region: "us-east-1".into(),
            force_path_style: true,
            access_key_id: ACCESS_KEY.into(),
            secret_access_key: SECRET_KEY.into(),
            ca_pem: None,
        }
    }

    /// An S3 client as the driver builds it.
    pub fn client(&self) -> aws_sdk_s3::Client {
        lethe::scrub::s3::client(&self.options()).unwrap()
    }

    /// Stores objects with the given LastModified, through the server's
    /// own backend (the S3 API cannot back-date); returns version ids.
    pub fn seed(&self, bucket: &str, objects: &[Seed]) -> Vec<String> {
        let mut versions = Vec::new();
        for chunk in objects.chunks(10_000) {
            let objs: Vec<serde_json::Value> = chunk
                .iter()
                .map(|s| {
                    let meta: serde_json::Map<String, serde_json::Value> =
                        s.metadata.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
                    serde_json::json!({"key": s.key, "lastModified": s.modified, "metadata": meta})
                })
                .collect();
            let body = serde_json::json!({"bucket": bucket, "objects": objs}).to_string();
            let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
            write!(
                s,
                "POST /_lethe/seed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            assert!(out.starts_with("HTTP/1.1 200"), "seeding failed: {}", &out[..out.len().min(300)]);
            let json = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(json).unwrap();
            versions.extend(v["versions"].as_array().unwrap().iter().map(|v| v.as_str().unwrap_or("null").to_string()));
        }
        versions
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
