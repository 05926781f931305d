//! The short version of the soak that CI runs: `pod-soak` for a few seconds with a few clients. It checks the same
//! things as the long run (no unexpected error, exactly one audit entry per request, the chain verifies); memory
//! figures come from the long run documented in docs/PERFORMANCE.md, not from here.

#![allow(clippy::unwrap_used)]

#[test]
fn a_short_soak_loses_no_audit_entry_and_has_no_unexpected_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pod-soak"))
        .args(["--clients", "16", "--seconds", "5"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("SOAK OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("unexpected errors 0"), "{stdout}");
    let count = |label: &str| -> u64 {
        stdout
            .split(label)
            .nth(1)
            .and_then(|r| r.trim_start().split([',', ' ']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_default()
    };
    assert!(
        count("released ") > 0 && count("refused ") > 0 && count("membership changes ") > 0,
        "the mix ran: {stdout}"
    );
}
