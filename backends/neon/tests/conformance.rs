//! The Neon plugin through the real gateway: `ogel plugins check
//! libogel_backend_neon.so --config <section>` (the conformance kit: a
//! throwaway gateway driven through its API and real connections, which
//! reach the emulator's endpoints over TLS with SNI) against the Neon
//! emulator running in this test. Needs the `ogel` binary and the plugin
//! library in this target dir: `cargo build -p ogel -p ogel-backend-neon`.

mod common;

use common::{start, SERIAL};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `$OGEL_BIN`, else `target/<profile>/ogel` next to this test.
fn target_dir_file(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/conformance-xxxx → target/debug/<name>
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join(name))
        .expect("target dir")
}

fn ogel_bin() -> PathBuf {
    let bin = std::env::var("OGEL_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir_file("ogel"));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p ogel -p ogel-backend-neon` first",
        bin.display()
    );
    bin
}

/// The check runs in its own process group (it starts a gateway); the
/// whole group is stopped when the test ends, even on failure.
struct Group(i32);

impl Drop for Group {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        let pgid = Pid::from_raw(self.0);
        if killpg(pgid, Signal::SIGTERM).is_err() {
            return; // already gone
        }
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(50));
            if killpg(pgid, None).is_err() {
                return;
            }
        }
        let _ = killpg(pgid, Signal::SIGKILL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_neon_plugin_passes_the_conformance_suite_against_the_emulator() {
    let _serial = SERIAL.lock().await;
    let plugin = target_dir_file("libogel_backend_neon.so");
    assert!(
        plugin.exists(),
        "{} is missing: run `cargo build -p ogel -p ogel-backend-neon` first",
        plugin.display()
    );
    let bin = ogel_bin();
    let emu = start().await;
    let section = emu.dir.path().join("neon.toml");
    std::fs::write(&section, emu.config_toml()).expect("write the section");

    let mut command = tokio::process::Command::new(&bin);
    command
        .args(["plugins", "check"])
        .arg(&plugin)
        .arg("--config")
        .arg(&section)
        .env_remove("NEON_API_KEY")
        .env_remove("OGEL_API")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command.as_std_mut().process_group(0);
    let child = command.spawn().expect("ogel plugins check starts");
    let _group = Group(child.id().expect("pid") as i32);
    let out = tokio::time::timeout(Duration::from_secs(600), child.wait_with_output())
        .await
        .expect("the check ends within 10 minutes")
        .expect("the check ran");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}"); // shown with --nocapture
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for step in [
        "plugin neon passes the conformance suite",
        "ok    create a database",
        "ok    connect through the gateway, write and read back",
        "ok    suspend, then a connection wakes it with the data intact",
        "ok    a branch is a writable copy, isolated from its parent, and deletes cleanly",
        "ok    snapshots are refused cleanly",
        "ok    delete the database; its URL then gets 3D000",
        "ok    the name can be used again after delete",
    ] {
        assert!(
            stdout.contains(step),
            "missing {step:?}:\n{stdout}\n{stderr}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(common::KEY), "the API key leaked:\n{text}");
    }
    // Everything the check made in Neon is gone.
    assert!(emu.project_names().await.is_empty());
}
