//! The ZFS driver against `tests/fixtures/zfs`, a stand-in CLI over plain
//! directories (this machine has no ZFS module): checks the exact commands
//! the driver issues and that they leave the expected volumes. Alone in its
//! test binary because it puts the stand-in first on `PATH`.

use ogel_backend_native::storage::{self, StorageDriver, ZfsDriver};
use std::path::Path;

#[test]
fn zfs_driver_issues_the_documented_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let root = tmp.path().join("root");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::create_dir_all(root.join("databases")).unwrap();
    std::fs::write(
        state.join("datasets"),
        format!("tank\t/tank\ntank/ogel\t{}\n", root.display()),
    )
    .unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let path = format!(
        "{}:{}",
        fixtures.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::env::set_var("PATH", path);
    std::env::set_var("ZFS_STANDIN_STATE", &state);

    let zfs = ZfsDriver::new();
    assert_eq!(zfs.name(), "zfs");
    let template = root.join("template");
    zfs.create_volume(&template).unwrap();
    std::fs::create_dir(template.join("pgdata")).unwrap();
    std::fs::write(template.join("pgdata/PG_VERSION"), b"15\n").unwrap();
    let app = root.join("databases/app");
    let mut last = None;
    zfs.clone_volume(&template, &app, &mut |d, t| last = Some((d, t)))
        .unwrap();
    assert_eq!(last, Some((0, 0)));
    assert_eq!(
        std::fs::read(app.join("pgdata/PG_VERSION")).unwrap(),
        b"15\n"
    );
    let origin = std::fs::read_to_string(app.join(".ogel-origin")).unwrap();
    assert!(origin.starts_with("tank/ogel/template@clone-"), "{origin}");
    let trash = root.join("trash/app-1");
    zfs.rename_volume(&app, &trash).unwrap();
    assert!(!app.exists() && trash.join("pgdata/PG_VERSION").exists());
    zfs.delete_volume(&trash).unwrap();
    assert!(!trash.exists());
    // An error names the command and carries its stderr.
    let err = zfs.clone_volume(&root.join("databases"), &template, &mut |_, _| {});
    assert!(err.is_err());

    let log = std::fs::read_to_string(state.join("argv.log")).unwrap();
    let calls: Vec<&str> = log
        .lines()
        .filter(|l| *l != "list -H -o name,mountpoint")
        .collect();
    let r = root.display();
    assert_eq!(
        calls[0],
        format!("create -o mountpoint={r}/template tank/ogel/template")
    );
    let snap = calls[1].strip_prefix("snapshot ").unwrap();
    assert!(snap.starts_with("tank/ogel/template@clone-"), "{snap}");
    assert_eq!(
        calls[2],
        format!("clone -o mountpoint={r}/databases/app {snap} tank/ogel/databases:app")
    );
    assert_eq!(
        calls[3],
        "rename tank/ogel/databases:app tank/ogel/trash:app-1"
    );
    assert_eq!(
        calls[4],
        format!("set mountpoint={r}/trash/app-1 tank/ogel/trash:app-1")
    );
    assert_eq!(calls[5], "destroy -r tank/ogel/trash:app-1");
    assert_eq!(calls[6], format!("destroy {snap}"));
    assert_eq!(
        std::fs::read_dir(state.join("snapshots")).unwrap().count(),
        0
    );
    assert!(log.contains("list -H -o name,mountpoint"));

    // Only on ZFS is "zfs" accepted as native.storage.
    let err = storage::detect(&root, Some("zfs")).err().unwrap();
    assert!(err.contains("not a ZFS dataset"), "{err}");
}
