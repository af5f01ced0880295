//! Validation with Neon's official client: `validate.sh` runs
//! `@neondatabase/api-client` (npm, pinned by client/package-lock.json)
//! against the `neon-emulator` binary and psql through the proxy.

use std::process::Command;

#[test]
fn neon_official_api_client_and_psql() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/validate.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_neon-emulator"))
        .output()
        .expect("validate.sh runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "validate.sh failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains(": OK"), "{stdout}");
}
