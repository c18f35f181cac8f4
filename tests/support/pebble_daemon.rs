//! A real Pebble daemon for tests: `pebble run --create-dirs` as this (root) process's
//! child, in a temporary `$PEBBLE` directory with a layer defining a `synapse` stand-in
//! service, reached through its socket. Stopped (services too) when dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The layer every daemon starts with: `synapse`, a long-running stand-in (not started).
pub const LAYER: &str = r#"summary: synapse-backup tests
services:
  synapse:
    override: replace
    command: sleep 100000
    startup: disabled
"#;

/// The `pebble` binary: on `PATH`, or in `go env GOPATH`/bin. Panics with the command
/// that installs it when it is missing.
pub fn pebble_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("pebble"))
        .find(|p| p.is_file());
    let from_go = || {
        let go = ["go", "/usr/local/go/bin/go"].into_iter().find_map(|go| {
            Command::new(go)
                .args(["env", "GOPATH"])
                .output()
                .ok()
                .filter(|o| o.status.success())
        })?;
        let path = PathBuf::from(String::from_utf8_lossy(&go.stdout).trim()).join("bin/pebble");
        path.is_file().then_some(path)
    };
    on_path.or_else(from_go).unwrap_or_else(|| {
        panic!(
            "the pebble daemon is missing: run `source scripts/pebble.sh` (it installs it with \
             `go install github.com/canonical/pebble/cmd/pebble@v1.32.1`)"
        )
    })
}

/// A running daemon.
pub struct PebbleDaemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl PebbleDaemon {
    /// Starts a daemon with [`LAYER`], persistence off.
    pub fn start() -> Self {
        Self::start_with(LAYER, false)
    }

    /// Starts a daemon with `layer`; `persist` keeps Pebble's state file
    /// (`$PEBBLE/.pebble.state`) on.
    pub fn start_with(layer: &str, persist: bool) -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the Pebble tests start the daemon as root (exec as other users needs it)"
        );
        let binary = pebble_binary();
        let dir = tempfile::Builder::new()
            .prefix("pebble-test-")
            .tempdir()
            .expect("a temporary PEBBLE directory");
        std::fs::create_dir(dir.path().join("layers")).expect("layers dir");
        std::fs::write(dir.path().join("layers/001-test.yaml"), layer).expect("the layer");
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("a log file");
        let mut command = Command::new(&binary);
        command
            .args(["run", "--create-dirs"])
            .env("PEBBLE", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if persist {
            command.env_remove("PEBBLE_PERSIST");
        } else {
            command.env("PEBBLE_PERSIST", "never");
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", binary.display()));
        let daemon = Self { child, dir };
        daemon.wait_healthy();
        daemon
    }

    /// `$PEBBLE`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join(".pebble.socket")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// A raw `GET` on the socket (HTTP/1.0, so the daemon closes after answering).
    pub fn get(&self, path: &str) -> String {
        let mut stream = UnixStream::connect(self.socket()).expect("connect to pebble");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("request");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    }

    /// The `current` status Pebble reports for the service `name` (`active`,
    /// `inactive`, `backoff`, `error`), from `/v1/services`.
    pub fn service_status(&self, name: &str) -> String {
        let answer = self.get(&format!("/v1/services?names={name}"));
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("pebble's /v1/services answer is not JSON ({e}): {answer}"));
        v["result"][0]["current"]
            .as_str()
            .unwrap_or_else(|| panic!("pebble knows no service {name}: {answer}"))
            .to_string()
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // The socket file exists a moment before the daemon listens on it: a
            // refused connection is "not yet", not a failure.
            if UnixStream::connect(self.socket()).is_ok()
                && self.get("/v1/health").contains("\"healthy\":true")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not become healthy within 30 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PebbleDaemon {
    fn drop(&mut self) {
        // SIGTERM: Pebble stops its services, then exits.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
