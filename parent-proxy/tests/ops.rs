//! The operator files in eif/: the scripts parse (and pass shellcheck where it is installed), build.sh and run.sh
//! behave as documented (run against stub `docker` and `nitro-cli`), the example configuration is a valid
//! `pod-proxy serve` configuration, and the units call commands that exist.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn eif(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../eif")
        .join(name)
}

#[test]
fn scripts_parse() {
    for script in ["build.sh", "run.sh"] {
        let o = Command::new("bash")
            .arg("-n")
            .arg(eif(script))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let ci = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/fuzz-short");
    assert!(
        Command::new("bash")
            .arg("-n")
            .arg(ci)
            .status()
            .unwrap()
            .success()
    );
    match Command::new("shellcheck").arg("--version").output() {
        Ok(_) => {
            let ci = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci");
            let o = Command::new("shellcheck")
                .arg(eif("build.sh"))
                .arg(eif("run.sh"))
                .arg(ci.join("run"))
                .arg(ci.join("fuzz-short"))
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
        Err(_) => {
            eprintln!("NOTE: shellcheck is not installed; only `bash -n` checked the scripts")
        }
    }
}

/// Where `tool` is on this machine's PATH.
fn which(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap();
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not installed"))
}

/// A copy of eif/build.sh and eif/run.sh in a fresh directory tree (`repo/eif/`), so that the tests never depend on
/// the repository's state (such as a local eif/rust-image), and a `bin/` that is the scripts' whole PATH: links to
/// the system tools they use, and the stubs a test adds. `docker` and `nitro-cli` exist only as stubs, so the tests
/// behave the same whether or not this machine has them.
struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo/eif")).unwrap();
        for script in ["build.sh", "run.sh"] {
            std::fs::copy(eif(script), dir.path().join("repo/eif").join(script)).unwrap();
        }
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        for tool in [
            "dirname", "awk", "grep", "head", "cat", "mkdir", "mktemp", "mv", "rm",
        ] {
            symlink(which(tool), dir.path().join("bin").join(tool)).unwrap();
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Adds `bin/NAME` running `body` (bash); `@LOG@` stands for a file that collects every stub's arguments.
    fn stub(&self, name: &str, body: &str) {
        let file = self.path("bin").join(name);
        let text = format!("#!{}\n{}", which("bash").display(), body)
            .replace("@LOG@", &self.path("calls.log").display().to_string());
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The stub calls so far, one line each.
    fn calls(&self) -> String {
        std::fs::read_to_string(self.path("calls.log")).unwrap_or_default()
    }

    /// Runs `repo/eif/SCRIPT ARGS` with only `env` and PATH=bin/.
    fn run(&self, script: &str, args: &[&Path], env: &[(&str, &str)]) -> Output {
        Command::new(which("bash"))
            .arg(self.path("repo/eif").join(script))
            .args(args)
            .env_clear()
            .env("PATH", self.path("bin"))
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }
}

const PINNED: &str =
    "rust:1.95-bookworm@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const PCRS: &str = r#"{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "aa", "PCR1": "bb", "PCR2": "cc"}}"#;

/// nitro-cli as build.sh and run.sh use it. `build-enclave` writes the output file, then prints the measurements,
/// or, when the file `fail` exists beside `bin/`, half of them and fails.
const NITRO_CLI: &str = r#"printf '%s\n' "nitro-cli $*" >> @LOG@
case "$1" in
  --version) echo "Nitro CLI 1.4.2" ;;
  build-enclave)
    while [[ $# -gt 0 ]]; do
      [[ "$1" == --output-file ]] && echo eif > "$2"
      shift
    done
    if [[ -e "$(dirname "$0")/../fail" ]]; then printf '{"Measurements": {'; exit 1; fi
    printf '%s\n' '@PCRS@' ;;
esac
"#;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_image_build_refuses_a_toolchain_not_pinned_by_digest() {
    let t = Tree::new();
    let out = t.path("out");
    let o = t.run("build.sh", &[&out], &[("RUST_IMAGE", "rust:1.95-bookworm")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not pinned by digest (rust:1.95-bookworm)"),
        "{err}"
    );
    assert!(err.contains("docker inspect"), "{err}");
    assert!(!out.exists(), "a refused build created {}", out.display());
}

#[test]
fn without_a_pin_file_the_build_explains_and_exits_2() {
    let t = Tree::new();
    let out = t.path("out");
    // No eif/rust-image at all, then one with nothing but comments and blank lines.
    for pin in [None, Some("# the build image\n\n   \n# none yet\n")] {
        if let Some(text) = pin {
            std::fs::write(t.path("repo/eif/rust-image"), text).unwrap();
        }
        let o = t.run("build.sh", &[&out], &[]);
        assert_eq!(o.status.code(), Some(2), "{pin:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("not pinned by digest (no RUST_IMAGE, and no image in eif/rust-image)"),
            "{pin:?}: {err}"
        );
        assert!(err.contains("docker inspect"), "{err}");
    }
}

#[test]
fn the_pin_file_skips_comments_and_blank_lines() {
    let t = Tree::new();
    std::fs::write(
        t.path("repo/eif/rust-image"),
        format!("\n# reviewed 2026-11-01\n\n  {PINNED}  \n"),
    )
    .unwrap();
    let o = t.run("build.sh", &[&t.path("out")], &[]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains("not pinned"), "{err}");
    assert!(err.contains("docker is not installed"), "{err}");
}

#[test]
fn allow_unpinned_gets_past_the_pin_check_only() {
    let t = Tree::new();
    let out = t.path("out");
    let unpinned_build = || {
        t.run(
            "build.sh",
            &[&out],
            &[
                ("ALLOW_UNPINNED", "1"),
                ("RUST_IMAGE", "rust:1.95-bookworm"),
            ],
        )
    };
    let o = unpinned_build();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("not pinned by digest"),
        "the warning stays: {err}"
    );
    assert!(err.contains("docker is not installed"), "{err}");
    // With docker but no nitro-cli, the next tool is named.
    t.stub("docker", "exit 0\n");
    let o = unpinned_build();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nitro-cli is not installed"),
        "{}",
        stderr(&o)
    );
    // ALLOW_UNPINNED does not stand in for an image.
    let o = t.run("build.sh", &[&out], &[("ALLOW_UNPINNED", "1")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("still needs an image"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn signing_needs_both_the_certificate_and_the_key() {
    let t = Tree::new();
    t.stub("docker", "printf '%s\\n' \"docker $*\" >> @LOG@\n");
    t.stub("nitro-cli", &NITRO_CLI.replace("@PCRS@", PCRS));
    for one in ["SIGNING_CERT", "SIGNING_KEY"] {
        let o = t.run(
            "build.sh",
            &[&t.path("out")],
            &[("RUST_IMAGE", PINNED), (one, "/etc/signing.pem")],
        );
        assert_eq!(o.status.code(), Some(2), "{one}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("only one of SIGNING_CERT and SIGNING_KEY is set"),
            "{one}: {}",
            stderr(&o)
        );
    }
    assert_eq!(t.calls(), "", "nothing is built");
}

#[test]
fn a_build_publishes_pcrs_and_build_information_and_a_failed_one_changes_nothing() {
    let t = Tree::new();
    t.stub("docker", "printf '%s\\n' \"docker $*\" >> @LOG@\n");
    t.stub("nitro-cli", &NITRO_CLI.replace("@PCRS@", PCRS));
    let out = t.path("out");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();

    // Unsigned: no signing arguments at all (an empty array under `set -u`).
    let o = t.run(
        "build.sh",
        &[&out],
        &[("RUST_IMAGE", PINNED), ("REGION", "eu-west-1")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read("pcrs.json").trim(), PCRS);
    assert_eq!(read("pod.eif"), "eif\n");
    let info = read("build-info.txt");
    assert_eq!(
        info,
        format!(
            "region: eu-west-1\nbuild image: {PINNED}\nnitro-cli: Nitro CLI 1.4.2\nsource commit: unknown\nsigned: no\n"
        )
    );
    let calls = t.calls();
    assert!(
        calls.contains(&format!(
            "docker build --file Dockerfile.enclave --build-arg REGION=eu-west-1 --build-arg RUST_IMAGE={PINNED}"
        )),
        "{calls}"
    );
    let build = calls
        .lines()
        .find(|l| l.starts_with("nitro-cli build-enclave"))
        .unwrap();
    assert!(!build.contains("--signing-certificate"), "{build}");

    // Signed: both files reach nitro-cli, and build-info.txt says so.
    let o = t.run(
        "build.sh",
        &[&out],
        &[
            ("RUST_IMAGE", PINNED),
            ("SIGNING_CERT", "/keys/cert.pem"),
            ("SIGNING_KEY", "/keys/key.pem"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        t.calls()
            .contains("--signing-certificate /keys/cert.pem --private-key /keys/key.pem"),
        "{}",
        t.calls()
    );
    let info = read("build-info.txt");
    assert!(info.contains("region: us-east-1\n"), "{info}");
    assert!(info.contains("signed: yes"), "{info}");

    // nitro-cli fails half-way through its output: the published files are the previous build's, whole.
    std::fs::write(t.path("fail"), "").unwrap();
    let o = t.run("build.sh", &[&out], &[("RUST_IMAGE", PINNED)]);
    assert!(!o.status.success());
    assert_eq!(read("pcrs.json").trim(), PCRS);
    assert_eq!(read("build-info.txt"), info);
    let mut left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["build-info.txt", "pcrs.json", "pod.eif"],
        "no scratch files left"
    );
}

#[test]
fn run_names_the_enclave_and_refuses_an_image_built_for_another_region() {
    let t = Tree::new();
    t.stub("nitro-cli", &NITRO_CLI.replace("@PCRS@", PCRS));
    let out = t.path("out");
    std::fs::create_dir(&out).unwrap();
    let eif_file = out.join("pod.eif");
    std::fs::write(&eif_file, "eif").unwrap();
    std::fs::write(
        out.join("build-info.txt"),
        "region: us-east-1\nbuild image: x\n",
    )
    .unwrap();

    let o = t.run("run.sh", &[&eif_file], &[("REGION", "eu-west-1")]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("was built for region us-east-1") && err.contains("REGION is eu-west-1"),
        "{err}"
    );
    assert_eq!(t.calls(), "", "no enclave was started");

    let o = t.run("run.sh", &[&eif_file], &[("REGION", "us-east-1")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let run = t
        .calls()
        .lines()
        .find(|l| l.starts_with("nitro-cli run-enclave"))
        .unwrap()
        .to_owned();
    assert!(
        run.starts_with(&format!(
            "nitro-cli run-enclave --enclave-name secure-pod --eif-path {}",
            eif_file.display()
        )),
        "{run}"
    );
    assert!(!run.contains("--debug-mode"), "{run}");
}

#[test]
fn the_example_configuration_loads() {
    let text = std::fs::read_to_string(eif("pod-proxy.toml.example")).unwrap();
    let c = pod_proxy::config::load(&text, |_| None).unwrap();
    assert_eq!(c.enclave.address, "vsock:16:5000");
    assert_eq!(c.kms.credentials, pod_proxy::config::CredentialSource::Imds);
}

#[test]
fn the_units_run_real_subcommands() {
    for (unit, words) in [
        (
            "systemd/secure-pod-proxy.service",
            vec!["pod-proxy serve --config"],
        ),
        (
            "systemd/secure-pod-kms-relay.service",
            vec![
                "EnvironmentFile=/etc/secure-pod/region.env",
                "pod-proxy kms-relay --listen vsock:8000 --to kms.${REGION}.amazonaws.com:443",
            ],
        ),
        (
            "systemd/secure-pod-enclave.service",
            vec![
                "EnvironmentFile=/etc/secure-pod/region.env",
                "run.sh",
                "ExecStop=/usr/bin/nitro-cli terminate-enclave --enclave-name secure-pod\n",
            ],
        ),
    ] {
        let text = std::fs::read_to_string(eif(unit)).unwrap();
        for w in words {
            assert!(text.contains(w), "{unit} lacks {w:?}");
        }
        // The region comes from one file, and stopping the pod stops no other enclave.
        assert!(
            !text.contains("Environment=REGION"),
            "{unit} sets its own REGION"
        );
        assert!(!text.contains("--all"), "{unit} terminates every enclave");
    }
    // The name the unit stops is the one run.sh starts.
    let run = std::fs::read_to_string(eif("run.sh")).unwrap();
    assert!(run.contains("--enclave-name secure-pod"));
    // And those subcommands exist with those flags.
    let help = Command::new(env!("CARGO_BIN_EXE_pod-proxy"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
    let help = Command::new(env!("CARGO_BIN_EXE_pod-proxy"))
        .args(["kms-relay", "--help"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--to"));
}
