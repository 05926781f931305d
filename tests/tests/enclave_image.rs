//! The enclave image's binary, built the way `Dockerfile.enclave` builds it, where no Docker engine exists (as on
//! CI): the same target, the same RUSTFLAGS and SOURCE_DATE_EPOCH read from the Dockerfile itself, `--locked
//! --release`. The result must be statically linked (no program interpreter, no shared library needed), because the
//! image is `FROM scratch`: a dynamic binary would not start inside the enclave.
//!
//! It builds into `target/enclave-image/` so that the flags do not invalidate the workspace's own build cache.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The value of `NAME=...` in the Dockerfile's build stage (`ENV` or `ARG` lines, quoted or not).
fn dockerfile_value(text: &str, name: &str) -> String {
    let key = format!("{name}=");
    let at = text
        .find(&key)
        .unwrap_or_else(|| panic!("Dockerfile.enclave sets no {name}"));
    let rest = &text[at + key.len()..];
    if let Some(quoted) = rest.strip_prefix('"') {
        quoted[..quoted.find('"').unwrap()].to_owned()
    } else {
        rest.split_whitespace().next().unwrap().to_owned()
    }
}

#[test]
fn the_enclave_binary_builds_statically_linked_with_the_dockerfiles_flags() {
    let root = workspace();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile.enclave")).unwrap();
    let rustflags = dockerfile_value(&dockerfile, "RUSTFLAGS");
    let epoch = dockerfile_value(&dockerfile, "SOURCE_DATE_EPOCH");
    // The build command of the Dockerfile, whose target and package this test uses.
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("Dockerfile.enclave runs cargo build");
    for flag in [
        "--locked",
        "--release",
        "-p pod-enclave",
        "--bin pod-enclave",
    ] {
        assert!(build.contains(flag), "the Dockerfile's build lacks {flag}");
    }
    let target = build
        .split_whitespace()
        .skip_while(|w| *w != "--target")
        .nth(1)
        .expect("the Dockerfile names a --target")
        .to_owned();
    assert!(
        rustflags.contains("+crt-static"),
        "the Dockerfile must link statically"
    );
    // The Dockerfile builds in /src; here the workspace root plays that part.
    let rustflags = rustflags.replace("=/src=", &format!("={}=", root.display()));

    let target_dir = root.join("target/enclave-image");
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--locked",
            "--release",
            "--target",
            &target,
            "-p",
            "pod-enclave",
            "--bin",
            "pod-enclave",
        ])
        .current_dir(&root)
        .env("RUSTFLAGS", &rustflags)
        .env("SOURCE_DATE_EPOCH", &epoch)
        .env("CARGO_INCREMENTAL", "0")
        .env("CARGO_TARGET_DIR", &target_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the enclave build failed (CI installs the {target} target and musl-tools):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let binary = target_dir.join(&target).join("release/pod-enclave");

    // No program interpreter and no shared library: it runs in an empty image.
    let headers = Command::new("readelf")
        .args(["--program-headers", "--dynamic", "--wide"])
        .arg(&binary)
        .output()
        .expect("readelf (binutils) is installed");
    let text = String::from_utf8_lossy(&headers.stdout);
    assert!(headers.status.success());
    assert!(
        !text.contains("INTERP"),
        "the enclave binary asks for a dynamic loader:\n{text}"
    );
    assert!(
        !text.contains("(NEEDED)"),
        "the enclave binary needs shared libraries:\n{text}"
    );
    // The build path is remapped out of the binary (reproducibility across build directories).
    let bytes = std::fs::read(&binary).unwrap();
    let needle = root.display().to_string();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "the binary contains the build path {needle}"
    );
    // And it runs: the CLI answers without any library around it.
    let help = Command::new(&binary).arg("--help").output().unwrap();
    assert!(
        help.status.success(),
        "{}",
        String::from_utf8_lossy(&help.stderr)
    );
}
