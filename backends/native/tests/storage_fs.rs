//! Storage drivers on real filesystems: a loop-mounted btrfs and an XFS
//! with `reflink=1`, made per test (needs root, `mkfs.btrfs`, `mkfs.xfs`).
//! Checks detection, clone correctness, that clones share extents, and a
//! whole create → connect → delete through `NativeBackend` on each.

use ogel_backend_native::storage::{self, StorageDriver};
use ogel_backend_native::{NativeBackend, NativeConfig};
use ogel_e2e::{sh, LoopFs};
use ogel_plugin_sdk::{Backend, BranchPoint, BranchSpec, ComputeName, Credentials, DatabaseSpec};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// A small cluster-like tree: nested dirs with modes, files, a symlink,
/// postmaster files that must not be cloned.
fn make_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("pgdata/base/1")).unwrap();
    std::fs::create_dir_all(dir.join("pgdata/pg_wal")).unwrap();
    std::fs::write(dir.join("pgdata/PG_VERSION"), b"15\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("pgdata/base/1/1259"), &big).unwrap();
    std::fs::write(dir.join("pgdata/pg_wal/000000010000000000000001"), b"wal").unwrap();
    std::os::unix::fs::symlink("base/1", dir.join("pgdata/link")).unwrap();
    for (p, m) in [
        ("pgdata", 0o700),
        ("pgdata/base/1/1259", 0o600),
        ("pgdata/PG_VERSION", 0o644),
        ("pgdata/pg_wal", 0o750),
    ] {
        std::fs::set_permissions(dir.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }
}

/// Asserts `b` has the same entries, bytes, modes and symlinks as `a`.
fn assert_same_tree(a: &Path, b: &Path) {
    let ma = std::fs::symlink_metadata(a).unwrap();
    let mb = std::fs::symlink_metadata(b).unwrap();
    assert_eq!(ma.mode(), mb.mode(), "mode of {}", b.display());
    if ma.file_type().is_symlink() {
        assert_eq!(
            std::fs::read_link(a).unwrap(),
            std::fs::read_link(b).unwrap()
        );
    } else if ma.is_dir() {
        let names = |d: &Path| {
            let mut v: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(a), names(b), "entries of {}", b.display());
        for name in names(a) {
            assert_same_tree(&a.join(&name), &b.join(&name));
        }
    } else {
        assert!(
            std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
            "bytes of {}",
            b.display()
        );
    }
}

fn clone_checked(driver: &dyn StorageDriver, src: &Path, dst: &Path) {
    let mut last = None;
    driver
        .clone_volume(src, dst, &mut |d, t| last = Some((d, t)))
        .unwrap();
    let (done, total) = last.expect("progress was never reported");
    assert_eq!(done, total);
    assert_same_tree(src, dst);
}

fn tree_kib(path: &Path) -> u64 {
    sh(Command::new("du").args(["-sk"]).arg(path))
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).unwrap();
    s.blocks_available() * s.fragment_size()
}

#[test]
fn btrfs_detects_and_clones_with_snapshots() {
    let fs = LoopFs::new("btrfs");
    let driver = storage::detect(&fs.mnt, None).unwrap();
    assert_eq!(driver.name(), "btrfs");
    assert!(driver.capabilities().instant_clone && driver.capabilities().atomic_snapshot);
    assert_eq!(
        storage::detect(&fs.mnt, Some("reflink")).unwrap().name(),
        "reflink"
    );
    let src = fs.mnt.join("template");
    driver.create_volume(&src).unwrap();
    make_tree(&src);
    std::fs::write(src.join("pgdata/postmaster.pid"), b"1").unwrap();
    std::fs::remove_file(src.join("pgdata/postmaster.pid")).unwrap();
    let dst = fs.mnt.join("app");
    clone_checked(driver.as_ref(), &src, &dst);
    let show = sh(Command::new("btrfs").args(["subvolume", "show"]).arg(&dst));
    assert!(show.contains("Parent UUID"), "{show}");
    // The clone is independent of its source.
    std::fs::write(dst.join("pgdata/PG_VERSION"), b"16\n").unwrap();
    assert_eq!(
        std::fs::read(src.join("pgdata/PG_VERSION")).unwrap(),
        b"15\n"
    );
    driver.delete_volume(&dst).unwrap();
    assert!(!dst.exists());
    // A plain directory as source (a template made before the driver).
    let plain = fs.mnt.join("plain");
    std::fs::create_dir(&plain).unwrap();
    make_tree(&plain);
    let dst = fs.mnt.join("from-plain");
    clone_checked(driver.as_ref(), &plain, &dst);
    sh(Command::new("btrfs").args(["subvolume", "show"]).arg(&dst));
    driver.delete_volume(&dst).unwrap();
}

#[test]
fn xfs_reflink_detects_and_shares_extents() {
    let fs = LoopFs::new("xfs");
    let driver = storage::detect(&fs.mnt, None).unwrap();
    assert_eq!(driver.name(), "reflink");
    assert!(driver.capabilities().instant_clone && !driver.capabilities().atomic_snapshot);
    let err = storage::detect(&fs.mnt, Some("btrfs")).err().unwrap();
    assert!(err.contains("xfs"), "{err}");
    let src = fs.mnt.join("template");
    driver.create_volume(&src).unwrap();
    make_tree(&src);
    std::fs::write(src.join("pgdata/postmaster.opts"), b"postgres").unwrap();
    let dst = fs.mnt.join("app");
    let mut last = None;
    driver
        .clone_volume(&src, &dst, &mut |d, t| last = Some((d, t)))
        .unwrap();
    assert!(!dst.join("pgdata/postmaster.opts").exists());
    std::fs::remove_file(src.join("pgdata/postmaster.opts")).unwrap();
    assert_same_tree(&src, &dst);
    let (done, total) = last.unwrap();
    assert_eq!(done, total);
    let frag = sh(Command::new("filefrag")
        .arg("-v")
        .arg(dst.join("pgdata/base/1/1259")));
    assert!(frag.contains("shared"), "{frag}");
    // Cloning 200 MB costs (almost) no space.
    let big = fs.mnt.join("big");
    std::fs::create_dir(&big).unwrap();
    std::fs::write(big.join("file"), vec![42u8; 200 << 20]).unwrap();
    nix::unistd::sync();
    let before = free_bytes(&fs.mnt);
    driver
        .clone_volume(&big, &fs.mnt.join("big-clone"), &mut |_, _| {})
        .unwrap();
    nix::unistd::sync();
    let after = free_bytes(&fs.mnt);
    assert!(
        before.saturating_sub(after) < 10 << 20,
        "a 200 MB reflink clone used {} bytes",
        before.saturating_sub(after)
    );
    driver.delete_volume(&dst).unwrap();
    assert!(!dst.exists());
}

async fn create_connect_delete(fs: &LoopFs, expected_driver: &str) {
    let root = fs.mnt.join("native");
    let backend = tokio::task::spawn_blocking(move || {
        NativeBackend::open(&root, NativeConfig::default()).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(backend.storage_driver(), expected_driver);
    assert!(
        backend
            .describe()
            .ends_with(&format!(", storage {expected_driver}")),
        "{}",
        backend.describe()
    );
    let spec = DatabaseSpec {
        name: "app".to_string(),
        owner: "app_owner".to_string(),
    };
    let started = Instant::now();
    backend.create_database(&spec).await.unwrap();
    eprintln!(
        "create_database with {expected_driver}: {} ms",
        started.elapsed().as_millis()
    );
    // Clone time of the template volume alone, this driver vs a full copy.
    let template = fs.mnt.join("native/template");
    let detected = storage::detect(&fs.mnt, None).unwrap();
    for driver in [
        detected.as_ref(),
        &storage::CopyDriver as &dyn StorageDriver,
    ] {
        let dst = fs.mnt.join(format!("measure-{}", driver.name()));
        let started = Instant::now();
        clone_checked(driver, &template, &dst);
        eprintln!(
            "clone of the template ({} KiB) with {}: {:.1} ms",
            tree_kib(&template),
            driver.name(),
            started.elapsed().as_secs_f64() * 1000.0
        );
        driver.delete_volume(&dst).unwrap();
    }
    let client = client_of(&backend, "app").await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    client
        .batch_execute("CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .unwrap();
    drop(client);

    // A branch of the running compute: on btrfs in one atomic snapshot,
    // elsewhere cloned in backup mode; either way the parent keeps running.
    let before = backend
        .compute_status(&ComputeName::parse("app"))
        .await
        .unwrap()
        .pid;
    let started = Instant::now();
    backend
        .create_branch(&BranchSpec {
            database: "app".into(),
            branch: "dev".into(),
            parent: "main".into(),
            point: BranchPoint::Now,
        })
        .await
        .unwrap();
    eprintln!(
        "branch of a running compute with {expected_driver}: {} ms",
        started.elapsed().as_millis()
    );
    let after = backend
        .compute_status(&ComputeName::parse("app"))
        .await
        .unwrap()
        .pid;
    assert!(after.is_some(), "the parent runs again");
    assert!(backend.capabilities().online_snapshot);
    assert_eq!(before, after, "the parent ran on, untouched");
    assert_eq!(count(&backend, "app@dev").await, 1000);
    exec(&backend, "app@dev", "DELETE FROM t WHERE n > 10").await;
    assert_eq!(count(&backend, "app@dev").await, 10);
    assert_eq!(
        count(&backend, "app").await,
        1000,
        "the parent is untouched"
    );
    let snapshots = backend.list_snapshots("app").await.unwrap();
    assert_eq!(
        snapshots.len(),
        2,
        "base snapshots of main and dev: {snapshots:?}"
    );

    backend.delete_database("app").await.unwrap();
    assert!(backend.list_databases().await.unwrap().is_empty());
    assert!(!fs.mnt.join("native/databases/app").exists());
    let trash = fs.mnt.join("native/trash");
    assert_eq!(std::fs::read_dir(&trash).unwrap().count(), 0);
}

async fn client_of(backend: &NativeBackend, compute: &str) -> tokio_postgres::Client {
    let endpoint = backend
        .ensure_running(&ComputeName::parse(compute))
        .await
        .unwrap();
    let Credentials::Password { user, password } = &endpoint.credentials;
    let (client, conn) = tokio_postgres::Config::new()
        .host(&endpoint.host)
        .port(endpoint.port)
        .user(user)
        .password(password)
        .dbname(&endpoint.database)
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn count(backend: &NativeBackend, compute: &str) -> i64 {
    client_of(backend, compute)
        .await
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .unwrap()
        .get(0)
}

async fn exec(backend: &NativeBackend, compute: &str, sql: &str) {
    client_of(backend, compute)
        .await
        .batch_execute(sql)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn btrfs_end_to_end() {
    let fs = LoopFs::new("btrfs");
    create_connect_delete(&fs, "btrfs").await;
    let template = fs.mnt.join("native/template");
    assert_eq!(
        std::fs::metadata(&template).unwrap().ino(),
        256,
        "template is a subvolume"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn xfs_end_to_end() {
    let fs = LoopFs::new("xfs");
    create_connect_delete(&fs, "reflink").await;
    // A configured driver the filesystem cannot do is refused, naming it.
    let root = fs.mnt.join("other");
    let config = NativeConfig {
        storage: Some("btrfs".to_string()),
        ..NativeConfig::default()
    };
    let err = tokio::task::spawn_blocking(move || NativeBackend::open(&root, config).err())
        .await
        .unwrap()
        .expect("btrfs on xfs must be refused");
    assert!(err.message.contains("(xfs)"), "{}", err.message);
}
