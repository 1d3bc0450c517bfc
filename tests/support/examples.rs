//! Example programs as the tests run them: built once with cargo, for the
//! running test's profile and target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `examples` with `features` for the profile and target directory
/// of the running test, and returns the directory the binaries are in.
///
/// `cargo test` builds examples too, but `cargo test --test NAME` does not,
/// so the binaries are built here. Cargo releases its lock before it runs
/// the tests; after a full `cargo test` with the same features this build
/// has nothing to do.
pub fn build(examples: &[&str], features: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("the target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let mut command = Command::new(env!("CARGO"));
    command.args(["build", "--quiet", "--profile", profile]);
    for example in examples {
        command.args(["--example", example]);
    }
    let output = command
        .args(["--features", &features.join(",")])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "building the examples {examples:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    profile_dir.join("examples")
}
