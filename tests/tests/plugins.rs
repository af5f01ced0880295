//! Backend plugins through the real binary: the conformance kit
//! (`ogel plugins check`) on the native backend's library, and its
//! refusal of files that are not plugins.

use std::process::Command;

fn native_plugin() -> std::path::PathBuf {
    let so = ogel_e2e::ogel_bin().with_file_name("libogel_backend_native.so");
    assert!(
        so.exists(),
        "{} is missing: run `cargo build --workspace` (scripts/test does)",
        so.display()
    );
    so
}

#[test]
fn the_native_plugin_passes_the_conformance_suite() {
    let out = Command::new(ogel_e2e::ogel_bin())
        .args(["plugins", "check"])
        .arg(native_plugin())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("plugin native passes the conformance suite"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    suspend, then a connection wakes it"),
        "{stdout}"
    );
    for step in [
        "ok    a branch is a writable copy",
        "ok    a snapshot is listed and restores as a branch",
    ] {
        assert!(stdout.contains(step), "{step}: {stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn checking_a_file_that_is_not_a_plugin_says_why() {
    let dir = ogel_e2e::shared_tempdir();
    let fake = dir.path().join("libfake.so");
    std::fs::write(&fake, b"\x7fELF but not really").unwrap();
    let out = Command::new(ogel_e2e::ogel_bin())
        .args(["plugins", "check"])
        .arg(&fake)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused") && stderr.contains("not a loadable library"),
        "{stderr}"
    );
}
