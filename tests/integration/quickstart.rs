//! The README's first command runs `examples/quickstart.rs`; this runs it too (through
//! `cargo run`, with this test's features so the build is shared) and checks it passes,
//! reports every step and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The features this test was built with, so the example reuses the same build.
fn features() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "cli") {
        out.push("cli");
    }
    if cfg!(feature = "mock") {
        out.push("mock");
    }
    if cfg!(feature = "testing") {
        out.push("testing");
    }
    out
}

#[test]
fn quickstart_passes_and_leaves_nothing_behind() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut command = Command::new(env!("CARGO"));
    command
        .args([
            "run",
            "--quiet",
            "--example",
            "quickstart",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--no-default-features");
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let features = features();
    if !features.is_empty() {
        command.arg("--features").arg(features.join(","));
    }
    let out = command.output().expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the quickstart failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("PASS"), "last line {last:?}:\n{stdout}");
    for step in [
        "tools",
        "sample tree",
        "s3 server",
        "check bucket",
        "create",
        "list",
        "verify",
        "damaged:",
        "restore",
        "compare",
    ] {
        assert!(stdout.contains(step), "no {step:?} step in:\n{stdout}");
    }
    assert!(stdout.contains("MB/s"), "no throughput in:\n{stdout}");
    assert!(
        stdout.contains("identical byte for byte"),
        "no comparison in:\n{stdout}"
    );

    // The sample tree's temp dir and the server's data dir are gone.
    let tree = path_after(&stdout, "sample tree")
        .and_then(|root| root.parent().map(Path::to_path_buf))
        .expect("the sample tree's path is printed");
    assert!(!tree.exists(), "{} was left behind", tree.display());
    let s3 = path_after(&stdout, "data in").expect("the server's data dir is printed");
    assert!(!s3.exists(), "{} was left behind", s3.display());
}

/// The first absolute path printed after `marker` (up to `:` or a space).
fn path_after(text: &str, marker: &str) -> Option<PathBuf> {
    let rest = &text[text.find(marker)? + marker.len()..];
    let start = rest.find('/')?;
    let end = rest[start..]
        .find([':', ' ', '\n'])
        .map_or(rest.len(), |e| start + e);
    Some(PathBuf::from(&rest[start..end]))
}
