//! The README's walkthrough, command by command: keygen → attest → room → grant → seal → open → revoke → audit,
//! with podctl against `pod-proxy local`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use pod_tests::local::start;
use std::process::Output;

struct Podctl<'a> {
    pod: &'a pod_tests::local::LocalPod,
    dir: std::path::PathBuf,
}

impl Podctl<'_> {
    fn run(&self, args: &[&str]) -> Output {
        pod_tests::local::podctl(&self.dir, &self.pod.state, &self.pod.url)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "podctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

#[test]
fn the_readme_walkthrough_works() {
    let pod = start();
    let work = tempfile::tempdir().unwrap();
    let p = Podctl {
        pod: &pod,
        dir: work.path().to_path_buf(),
    };
    for name in ["owner", "alice", "bob"] {
        p.ok(&["keygen", "--out", name]);
    }
    assert!(p.ok(&["attest"]).contains("pod verified"));
    let room = p
        .ok(&["room", "create", "--owner", "owner.key"])
        .trim()
        .to_owned();
    assert_eq!(room.len(), 64, "only the room id on stdout: {room:?}");
    p.ok(&[
        "room",
        "grant",
        "--owner",
        "owner.key",
        "--room",
        &room,
        "--user",
        "alice.pub",
    ]);
    p.ok(&[
        "room",
        "grant",
        "--owner",
        "owner.key",
        "--room",
        &room,
        "--user",
        "bob.pub",
    ]);
    std::fs::write(work.path().join("term-sheet.txt"), b"Series A term sheet").unwrap();
    p.ok(&[
        "seal",
        "--room",
        &room,
        "--in",
        "term-sheet.txt",
        "--out",
        "term-sheet.pod",
    ]);
    p.ok(&[
        "open",
        "--key",
        "bob.key",
        "--in",
        "term-sheet.pod",
        "--out",
        "bob.txt",
    ]);
    assert_eq!(
        std::fs::read(work.path().join("bob.txt")).unwrap(),
        b"Series A term sheet"
    );
    // The plaintext is readable by its owner only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(work.path().join("bob.txt"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "bob.txt has mode {mode:o}");

    p.ok(&[
        "room",
        "revoke",
        "--owner",
        "owner.key",
        "--room",
        &room,
        "--user",
        "bob.pub",
    ]);
    let refused = p.run(&[
        "open",
        "--key",
        "bob.key",
        "--in",
        "term-sheet.pod",
        "--out",
        "bob2.txt",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not_a_member"));
    assert!(!work.path().join("bob2.txt").exists());
    p.ok(&[
        "open",
        "--key",
        "alice.key",
        "--in",
        "term-sheet.pod",
        "--out",
        "alice.txt",
    ]);

    let audit = p.ok(&["audit", "verify", "--show"]);
    assert!(
        audit.contains("audit log verified: 3 entries (1 refused"),
        "{audit}"
    );
    assert!(audit.contains("not a member"));

    // Alice cannot change the room.
    let o = p.run(&[
        "room",
        "grant",
        "--owner",
        "alice.key",
        "--room",
        &room,
        "--user",
        "bob.pub",
    ]);
    assert!(!o.status.success());
}

#[test]
fn a_pod_with_other_pcrs_is_refused_before_anything_is_sent() {
    let pod = start();
    let work = tempfile::tempdir().unwrap();
    let p = Podctl {
        pod: &pod,
        dir: work.path().to_path_buf(),
    };
    let wrong = work.path().join("wrong-pcrs.json");
    std::fs::write(&wrong, format!(r#"{{"PCR0": "{}"}}"#, "ab".repeat(48))).unwrap();
    let o = p.run(&["--pcrs", wrong.to_str().unwrap(), "attest"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("PCR0 does not match"));
    // A pinned key that changed is refused too.
    std::fs::write(
        work.path().join("pod-pin.json"),
        format!(r#"{{"pod_key_fingerprint": "{}"}}"#, "00".repeat(32)),
    )
    .unwrap();
    p.ok(&["keygen", "--out", "owner"]);
    let o = p.run(&["room", "create", "--owner", "owner.key"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("pod key changed since it was pinned"));
}

#[test]
fn a_truncated_audit_log_is_caught_by_the_checkpoint() {
    let pod = start();
    let work = tempfile::tempdir().unwrap();
    let p = Podctl {
        pod: &pod,
        dir: work.path().to_path_buf(),
    };
    p.ok(&["keygen", "--out", "owner"]);
    p.ok(&["keygen", "--out", "alice"]);
    let room = p
        .ok(&["room", "create", "--owner", "owner.key"])
        .trim()
        .to_owned();
    p.ok(&[
        "room",
        "grant",
        "--owner",
        "owner.key",
        "--room",
        &room,
        "--user",
        "alice.pub",
    ]);
    std::fs::write(work.path().join("d.txt"), b"x").unwrap();
    p.ok(&["seal", "--room", &room, "--in", "d.txt", "--out", "d.pod"]);
    for i in 0..3 {
        p.ok(&[
            "open",
            "--key",
            "alice.key",
            "--in",
            "d.pod",
            "--out",
            &format!("o{i}.txt"),
        ]);
    }
    assert!(p.ok(&["audit", "verify"]).contains("3 entries"));
    // The parent drops the last record behind the pod's back: the log still chains, but the signed checkpoint
    // names an entry it no longer has.
    let log = pod.state.join("audit.log");
    let bytes = std::fs::read(&log).unwrap();
    let mut at = 0usize;
    let mut starts = Vec::new();
    while at < bytes.len() {
        starts.push(at);
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len + 4;
    }
    std::fs::write(&log, &bytes[..*starts.last().unwrap()]).unwrap();
    // Restart on the same state, so the truncated file is what is served.
    let mut pod = pod;
    pod.restart();
    let p = Podctl {
        pod: &pod,
        dir: work.path().to_path_buf(),
    };
    let o = p.run(&["audit", "verify"]);
    assert!(!o.status.success(), "a truncated log verified");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("truncated"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn large_documents_stream_through_the_pod() {
    let pod = start();
    let work = tempfile::tempdir().unwrap();
    let p = Podctl {
        pod: &pod,
        dir: work.path().to_path_buf(),
    };
    p.ok(&["keygen", "--out", "owner"]);
    let room = p
        .ok(&["room", "create", "--owner", "owner.key"])
        .trim()
        .to_owned();
    // Sizes on and around chunk boundaries, and a few MiB.
    for (i, size) in [0usize, 65_536, 131_072, 131_073, 3 * 1024 * 1024 + 5]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..size).map(|j| (j * 31 % 251) as u8).collect();
        let name = format!("f{i}");
        std::fs::write(work.path().join(&name), &data).unwrap();
        p.ok(&[
            "seal",
            "--room",
            &room,
            "--in",
            &name,
            "--out",
            &format!("{name}.pod"),
        ]);
        p.ok(&[
            "open",
            "--key",
            "owner.key",
            "--in",
            &format!("{name}.pod"),
            "--out",
            &format!("{name}.out"),
        ]);
        assert_eq!(
            std::fs::read(work.path().join(format!("{name}.out"))).unwrap(),
            data,
            "size {size}"
        );
    }
    // A sealed file cut short: refused, and no partial plaintext is left.
    let sealed = std::fs::read(work.path().join("f4.pod")).unwrap();
    std::fs::write(work.path().join("cut.pod"), &sealed[..sealed.len() - 100]).unwrap();
    let o = p.run(&[
        "open",
        "--key",
        "owner.key",
        "--in",
        "cut.pod",
        "--out",
        "cut.out",
    ]);
    assert!(!o.status.success());
    assert!(!work.path().join("cut.out").exists());
    assert!(!work.path().join("cut.partial").exists());
}
