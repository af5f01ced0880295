//! The loader against real libraries: files that are not libraries, shared
//! libraries that are not plugins, a plugin of another ABI, plugins that
//! panic or hang, the native backend's cdylib, and the out-of-tree
//! `external` example against a throwaway Postgres server.
//!
//! The fixture plugins (`tests/fixtures`) and the example
//! (`plugins/examples/external`) are separate Cargo workspaces; they are
//! built here, once per test process, with `cargo build --manifest-path`.
//! The native backend's cdylib is not a dependency of this crate, so it must
//! have been built already: `cargo build -p ogel-backend-native` (or point
//! `OGEL_NATIVE_PLUGIN` at it).

use ogel_plugin_host::{load, load_dir, LoadError, Plugin};
use ogel_plugin_sdk::abi::{ABI_MAJOR, ABI_MINOR, SDK_VERSION};
use ogel_plugin_sdk::{
    Backend, BackendErrorKind, ComputeName, ComputeState, Credentials, DatabaseSpec,
};
use serde_json::json;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Building the plugins under test.

/// The repository root.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the Cargo project at `manifest` into `target_dir` and returns its
/// `debug` directory. Panics with cargo's output on failure.
fn cargo_build(manifest: &Path, target_dir: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .arg("build")
        .arg("--manifest-path")
        .arg(manifest)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .unwrap_or_else(|e| panic!("could not run cargo to build {}: {e}", manifest.display()));
    assert!(
        output.status.success(),
        "building {} failed:\n{}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Path::new(target_dir).join("debug")
}

/// The fixture plugin `name` (`panicky`, `hangs`, `bumped_abi`, `old_minor`).
fn fixture(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        cargo_build(
            &repo_root().join("plugins/host/tests/fixtures/Cargo.toml"),
            "/var/tmp/ogel-fixtures-target",
        )
    });
    let file = dir.join(format!("libogel_fixture_{name}.so"));
    assert!(file.exists(), "fixture {} was not built", file.display());
    file
}

/// The `external` example plugin.
fn external_plugin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            cargo_build(
                &repo_root().join("plugins/examples/external/Cargo.toml"),
                "/var/tmp/ogel-examples-target",
            )
            .join("libogel_backend_external.so")
        })
        .clone()
}

/// The native backend's cdylib: `$OGEL_NATIVE_PLUGIN`, else the one in the
/// target directory this test binary was built in.
fn native_plugin() -> PathBuf {
    let file = match std::env::var_os("OGEL_NATIVE_PLUGIN") {
        Some(file) => PathBuf::from(file),
        None => {
            // <target>/debug/deps/loader-<hash> -> <target>/debug
            let exe = std::env::current_exe().expect("the test binary's path");
            let debug = exe
                .parent()
                .and_then(Path::parent)
                .expect("the test binary lives in <target>/debug/deps");
            debug.join("libogel_backend_native.so")
        }
    };
    assert!(
        file.exists(),
        "the native backend plugin {} is missing: run `cargo build -p ogel-backend-native` \
         (with the same CARGO_TARGET_DIR) first, or set OGEL_NATIVE_PLUGIN",
        file.display()
    );
    file
}

/// A shared library of the system that is not a plugin.
fn system_library() -> PathBuf {
    let dirs = [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ];
    let names = ["libz.so.1", "libm.so.6"];
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| Path::new(d).join(n)))
        .find(|p| p.exists())
        .expect("no system shared library (libz.so.1, libm.so.6) found")
}

fn temp_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("ogel-loader-")
        .tempdir_in("/tmp")
        .expect("a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn copy_to(file: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::copy(file, &to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", file.display(), to.display()));
    to
}

fn write_garbage(dir: &Path, name: &str) -> PathBuf {
    let file = dir.join(name);
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&file, bytes).unwrap();
    file
}

fn spec(name: &str) -> DatabaseSpec {
    DatabaseSpec {
        name: name.into(),
        owner: format!("{name}_owner"),
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Refusing what is not a plugin.

#[test]
fn a_file_that_is_not_a_library_is_refused() {
    let dir = temp_dir();
    let file = write_garbage(dir.path(), "garbage.so");
    match load(&file) {
        Err(LoadError::NotALibrary(reason)) => assert!(!reason.is_empty()),
        other => panic!("expected NotALibrary, got {other:?}"),
    }
}

#[test]
fn a_shared_library_that_is_not_a_plugin_is_refused() {
    let dir = temp_dir();
    let file = copy_to(&system_library(), dir.path(), "libz.so");
    match load(&file) {
        Err(LoadError::NotAPlugin) => {}
        other => panic!("expected NotAPlugin, got {other:?}"),
    }
}

#[test]
fn a_plugin_of_another_abi_major_is_refused_naming_both_versions() {
    let err = load(&fixture("bumped_abi")).expect_err("another ABI major must be refused");
    match &err {
        LoadError::AbiMismatch {
            found_major,
            found_minor,
        } => {
            assert_eq!(*found_major, ABI_MAJOR + 1);
            assert_eq!(*found_minor, ABI_MINOR);
        }
        other => panic!("expected AbiMismatch, got {other:?}"),
    }
    let text = err.to_string();
    let theirs = format!("{}.{}", ABI_MAJOR + 1, ABI_MINOR);
    let ours = format!("{ABI_MAJOR}.{ABI_MINOR}");
    assert!(text.contains(&theirs), "{text}");
    assert!(text.contains(&ours), "{text}");
}

#[test]
fn load_dir_loads_the_plugins_and_reports_the_others() {
    let dir = temp_dir();
    let garbage = write_garbage(dir.path(), "garbage.so");
    let system = copy_to(&system_library(), dir.path(), "libz.so");
    let bumped = copy_to(&fixture("bumped_abi"), dir.path(), "libbumped.so");
    let panicky = copy_to(&fixture("panicky"), dir.path(), "libpanicky.so");
    // Not a `.so`: not even looked at.
    std::fs::write(dir.path().join("README.txt"), "not a library").unwrap();

    let (plugins, refused) = load_dir(dir.path());

    let loaded: Vec<(&str, &Path)> = plugins
        .iter()
        .map(|p| (p.name.as_str(), p.file.as_path()))
        .collect();
    assert_eq!(loaded, vec![("panicky", panicky.as_path())]);
    assert_eq!(refused.len(), 3, "{refused:?}");
    for (file, error) in &refused {
        match error {
            LoadError::NotALibrary(_) => assert_eq!(file, &garbage),
            LoadError::NotAPlugin => assert_eq!(file, &system),
            LoadError::AbiMismatch { .. } => assert_eq!(file, &bumped),
            other => panic!(
                "{} refused for an unexpected reason: {other}",
                file.display()
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Misbehaving plugins.

#[tokio::test]
async fn a_panic_fails_only_that_call_and_the_instance_survives() {
    let plugin = Arc::new(load(&fixture("panicky")).expect("the panicky fixture loads"));
    assert_eq!(plugin.name, "panicky");
    let backend = plugin
        .instantiate(json!({}), Duration::from_secs(10))
        .await
        .expect("instantiate");
    assert!(backend.capabilities().suspend);

    backend
        .create_database(&spec("shop"))
        .await
        .expect("create");
    for _ in 0..2 {
        let err = backend
            .ensure_running(&ComputeName::main("shop"))
            .await
            .expect_err("ensure_running panics");
        assert_eq!(err.kind, BackendErrorKind::Internal, "{err}");
        assert!(err.message.contains("panicked"), "{}", err.message);
        assert!(err.message.contains("boom"), "{}", err.message);
        // The instance still answers.
        backend
            .create_database(&spec("shop"))
            .await
            .expect("create after a panic");
        let status = backend
            .compute_status(&ComputeName::main("shop"))
            .await
            .expect("status");
        assert_eq!(status.state, ComputeState::Suspended);
    }
}

#[test]
fn a_hung_call_times_out_and_the_runtime_stays_responsive() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let plugin = Arc::new(load(&fixture("hangs")).expect("the hangs fixture loads"));
        let backend = plugin
            .instantiate(json!({}), Duration::from_millis(500))
            .await
            .expect("instantiate");

        let started = Instant::now();
        let err = backend
            .ensure_running(&ComputeName::main("shop"))
            .await
            .expect_err("a hung call must time out");
        let took = started.elapsed();
        assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
        assert!(
            took < Duration::from_secs(2),
            "timed out only after {took:?}"
        );
        assert!(
            took >= Duration::from_millis(450),
            "answered after {took:?}"
        );

        // The runtime is not blocked: timers, tasks and other calls into the
        // same instance (while the hung one still holds its thread) complete.
        let responsive = tokio::time::timeout(Duration::from_secs(2), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tokio::spawn(async { 42 }).await.unwrap()
        })
        .await;
        assert_eq!(responsive, Ok(42));
        tokio::time::timeout(
            Duration::from_secs(2),
            backend.create_database(&spec("shop")),
        )
        .await
        .expect("another call answers in time")
        .expect("create");
    });
    // The hung call keeps a blocking-pool thread forever; dropping a tokio
    // runtime waits for its blocking threads without limit, so this (like
    // the gateway's shutdown) must not wait for it.
    runtime.shutdown_timeout(Duration::from_millis(100));
}

#[tokio::test]
async fn a_plugin_of_an_older_minor_gets_string_compute_names_and_works() {
    let plugin = Arc::new(load(&fixture("old_minor")).expect("a 1.2 plugin loads"));
    assert_eq!(plugin.abi, (ABI_MAJOR, 2));
    let backend = plugin
        .instantiate(json!({}), Duration::from_secs(10))
        .await
        .expect("instantiate");
    for (name, text) in [
        (ComputeName::new("shop", "dev"), "shop@dev"),
        (ComputeName::main("shop"), "shop"),
    ] {
        // The fixture refuses a typed name, as a real 1.2 plugin would.
        let endpoint = backend.ensure_running(&name).await.expect("ensure_running");
        assert_eq!(endpoint.database, text);
        let Credentials::Password { user, password } = &endpoint.credentials;
        assert_eq!(
            (user.as_str(), password.as_str()),
            (name.database.as_str(), name.branch.as_str())
        );
        let status = backend.compute_status(&name).await.expect("compute_status");
        assert_eq!(status.state, ComputeState::Running);
        assert_eq!(status.generation, if name.is_main() { 1 } else { 2 });
        backend.suspend(&name).await.expect("suspend");
        let progress = backend.progress(&name).await.expect("progress");
        assert_eq!(
            progress.map(|p| p.done_bytes),
            Some(name.branch.len() as u64)
        );
    }
    backend
        .create_database(&spec("shop"))
        .await
        .expect("create");
    // Backups came with 1.4: the host answers for an older plugin, which
    // would not know the request.
    let refused = backend
        .create_backup("shop", "main", false)
        .await
        .expect_err("a 1.2 plugin makes no backups");
    assert_eq!(refused.kind, BackendErrorKind::Unsupported);
    assert!(refused.message.contains("ABI 1.2"), "{}", refused.message);
    assert_eq!(
        backend
            .archive_status(&ComputeName::main("shop"))
            .await
            .expect("archive status"),
        None
    );
    // Standbys came with 1.5: none, and no promotion, said by the host.
    assert_eq!(
        backend
            .standby_status(&ComputeName::main("shop"))
            .await
            .expect("standby status"),
        None
    );
    let refused = backend
        .promote(
            &ComputeName::main("shop"),
            ogel_plugin_sdk::Takeover::Failover,
        )
        .await
        .expect_err("a 1.2 plugin promotes nothing");
    assert_eq!(refused.kind, BackendErrorKind::Unsupported);
    assert!(refused.message.contains("ABI 1.2"), "{}", refused.message);
    // Standbys on another gateway came with 1.6.
    assert!(!backend.capabilities().remote_standby);
    let refused = backend
        .replicate(
            &ComputeName::main("shop"),
            ogel_plugin_sdk::ReplicaRole::Primary { synchronous: true },
        )
        .await
        .expect_err("a 1.2 plugin keeps no standby on another gateway");
    assert_eq!(refused.kind, BackendErrorKind::Unsupported);
    assert!(refused.message.contains("ABI 1.2"), "{}", refused.message);
}

// ---------------------------------------------------------------------------
// The native backend, loaded as the gateway loads it.

/// Connects with an endpoint's credentials and returns the client.
async fn connect(endpoint: &ogel_plugin_sdk::ComputeEndpoint) -> tokio_postgres::Client {
    try_connect(endpoint, None)
        .await
        .unwrap_or_else(|e| panic!("connecting to {endpoint:?}: {e}"))
}

async fn try_connect(
    endpoint: &ogel_plugin_sdk::ComputeEndpoint,
    password_override: Option<&str>,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let Credentials::Password { user, password } = &endpoint.credentials;
    let (client, connection) = tokio_postgres::Config::new()
        .host(&endpoint.host)
        .port(endpoint.port)
        .dbname(&endpoint.database)
        .user(user)
        .password(password_override.unwrap_or(password))
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_native_backend_serves_a_database_through_the_loader() {
    let plugin = Arc::new(load(&native_plugin()).expect("the native plugin loads"));
    assert_eq!(plugin.name, "native");
    assert_eq!(plugin.abi, (ABI_MAJOR, ABI_MINOR));
    assert_eq!(plugin.abi, (1, 6));
    assert_eq!(plugin.sdk_version, SDK_VERSION.trim_end_matches('\0'));

    let dir = temp_dir();
    let root = dir.path().join("native");
    // The first start makes the template with initdb: give it time.
    let backend = plugin
        .instantiate(json!({"root": root}), Duration::from_secs(180))
        .await
        .expect("instantiate the native backend");
    assert!(backend.capabilities().suspend);
    assert!(
        backend.describe().starts_with("native: PostgreSQL"),
        "{}",
        backend.describe()
    );

    backend
        .create_database(&spec("shop"))
        .await
        .expect("create shop");
    let endpoint = backend
        .ensure_running(&ComputeName::main("shop"))
        .await
        .expect("ensure_running");
    assert_eq!(endpoint.database, "shop");
    let Credentials::Password { user, .. } = &endpoint.credentials;
    assert_eq!(user, "shop_owner");
    let client = connect(&endpoint).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    drop(client);

    let status = backend
        .compute_status(&ComputeName::main("shop"))
        .await
        .expect("status");
    assert_eq!(status.state, ComputeState::Running);

    backend
        .suspend(&ComputeName::main("shop"))
        .await
        .expect("suspend");
    let status = backend
        .compute_status(&ComputeName::main("shop"))
        .await
        .expect("status");
    assert_eq!(status.state, ComputeState::Suspended);

    backend.delete_database("shop").await.expect("delete");
    let err = backend
        .compute_status(&ComputeName::main("shop"))
        .await
        .expect_err("a deleted database is gone");
    assert_eq!(err.kind, BackendErrorKind::NotFound, "{err}");
}

// ---------------------------------------------------------------------------
// The out-of-tree example, against a throwaway Postgres server.

/// The PostgreSQL binaries: `pg_config --bindir`, else Debian's 15.
fn pg_bindir() -> PathBuf {
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|d| d.join("initdb").exists())
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// Makes sure the OS user `ogel` exists (as the native backend does: the
/// external test may run first on a fresh machine).
fn ensure_postgres_user() {
    let exists = || {
        Command::new("id")
            .args(["-u", "ogel"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !exists() {
        // May race with the native backend creating it: check again after.
        let _ = Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/usr/sbin/nologin", "ogel"])
            .output();
        assert!(
            exists(),
            "the OS user ogel does not exist and could not be created"
        );
    }
}

/// Postgres refuses to run as root: as root, run it as `ogel`.
fn as_postgres_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "ogel", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Postgres server on a loopback port; `admin` (superuser) logs in with
/// `ADMIN_PASSWORD`, everything over TCP with SCRAM. Stopped when dropped.
struct TestPostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

const ADMIN_PASSWORD: &str = "admin-pw";

impl TestPostgres {
    fn start() -> TestPostgres {
        let dir = temp_dir();
        if is_root() {
            ensure_postgres_user();
            run(Command::new("chown").arg("ogel:").arg(dir.path()));
        }
        let bin = pg_bindir();
        let pgdata = dir.path().join("pgdata");
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, ADMIN_PASSWORD).unwrap();
        std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o644)).unwrap();
        run(as_postgres_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&pgdata)
            .args([
                "-U",
                "admin",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["-E", "UTF8", "--locale=C", "--no-sync"]));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(pgdata.join("postgresql.conf"))
            .unwrap();
        use std::io::Write;
        writeln!(
            conf,
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\nfsync = off"
        )
        .unwrap();
        let server = TestPostgres { dir, bin, port };
        run(as_postgres_user(&server.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&pgdata)
            .arg("-l")
            .arg(server.dir.path().join("postgres.log"))
            .args(["-w", "-t", "60", "start"]));
        server
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgresql://{user}:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    async fn admin(&self) -> tokio_postgres::Client {
        let (client, connection) =
            tokio_postgres::connect(&self.url("admin", ADMIN_PASSWORD), tokio_postgres::NoTls)
                .await
                .expect("admin login");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = as_postgres_user(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("pgdata"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Takes the `external` backend (logged in with `url`) through a database's
/// whole life.
async fn exercise_external(plugin: &Arc<Plugin>, server: &TestPostgres, url: String) {
    let backend = plugin
        .instantiate(
            json!({"url": url, "secret": "test secret"}),
            Duration::from_secs(30),
        )
        .await
        .expect("instantiate the external backend");
    assert!(!backend.capabilities().suspend);
    assert_eq!(
        backend.describe(),
        format!("external: 127.0.0.1:{}", server.port)
    );

    backend.health().await.expect("the server answers");
    let err = backend
        .compute_status(&ComputeName::main("shop"))
        .await
        .expect_err("no shop yet");
    assert_eq!(err.kind, BackendErrorKind::NotFound, "{err}");

    backend
        .create_database(&spec("shop"))
        .await
        .expect("create shop");
    let err = backend
        .create_database(&spec("shop"))
        .await
        .expect_err("shop exists");
    assert_eq!(err.kind, BackendErrorKind::AlreadyExists, "{err}");

    let endpoint = backend
        .ensure_running(&ComputeName::main("shop"))
        .await
        .expect("ensure_running");
    assert_eq!(endpoint.host, "127.0.0.1");
    assert_eq!(endpoint.port, server.port);
    assert_eq!(endpoint.database, "shop");
    assert_eq!(endpoint.generation, 1);
    let Credentials::Password { user, .. } = &endpoint.credentials;
    assert_eq!(user, "shop_owner");
    // The same password every time: nothing is stored, it is derived.
    assert_eq!(
        backend
            .ensure_running(&ComputeName::main("shop"))
            .await
            .unwrap()
            .credentials,
        endpoint.credentials
    );

    let client = connect(&endpoint).await;
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
        .await
        .expect("the owner can create tables");
    client
        .execute("INSERT INTO items VALUES ($1, $2)", &[&7i32, &"widget"])
        .await
        .expect("insert");
    let name: String = client
        .query_one("SELECT name FROM items WHERE id = $1", &[&7i32])
        .await
        .expect("select")
        .get(0);
    assert_eq!(name, "widget");
    drop(client);
    // SCRAM is really checked: another password is refused.
    assert!(try_connect(&endpoint, Some("not the password"))
        .await
        .is_err());

    let err = backend
        .suspend(&ComputeName::main("shop"))
        .await
        .expect_err("cannot suspend");
    assert_eq!(err.kind, BackendErrorKind::Unsupported, "{err}");
    let status = backend
        .compute_status(&ComputeName::main("shop"))
        .await
        .expect("status");
    assert_eq!(status.state, ComputeState::Running);
    assert_eq!(status.generation, 1);

    // An open session does not stop the delete (WITH (FORCE)).
    let lingering = connect(&endpoint).await;
    backend.delete_database("shop").await.expect("delete");
    assert!(lingering.query_one("SELECT 1", &[]).await.is_err());
    let err = backend
        .compute_status(&ComputeName::main("shop"))
        .await
        .expect_err("shop is gone");
    assert_eq!(err.kind, BackendErrorKind::NotFound, "{err}");
    let err = backend
        .ensure_running(&ComputeName::main("shop"))
        .await
        .expect_err("shop is gone");
    assert_eq!(err.kind, BackendErrorKind::NotFound, "{err}");
    backend
        .delete_database("shop")
        .await
        .expect("deleting a missing database is not an error");
    let admin = server.admin().await;
    let roles = admin
        .query("SELECT 1 FROM pg_roles WHERE rolname = 'shop_owner'", &[])
        .await
        .unwrap();
    assert!(
        roles.is_empty(),
        "the owner role is dropped with the database"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_external_example_fronts_an_existing_server() {
    let plugin = Arc::new(load(&external_plugin()).expect("the external example loads"));
    assert_eq!(plugin.name, "external");
    assert_eq!(plugin.abi, (ABI_MAJOR, ABI_MINOR));

    // Configuration errors come back through the ABI as InvalidRequest.
    let err = plugin
        .instantiate(
            json!({"url": "postgresql://a@h/db"}),
            Duration::from_secs(10),
        )
        .await
        .err()
        .expect("no secret: refused");
    assert_eq!(err.kind, BackendErrorKind::InvalidRequest, "{err}");
    assert!(err.message.contains("secret"), "{}", err.message);

    let server = TestPostgres::start();
    // As a superuser...
    exercise_external(&plugin, &server, server.url("admin", ADMIN_PASSWORD)).await;
    // ...and as a role that may only create databases and roles, as on
    // managed services.
    server
        .admin()
        .await
        .batch_execute("CREATE ROLE manager LOGIN CREATEDB CREATEROLE PASSWORD 'manager-pw'")
        .await
        .unwrap();
    exercise_external(&plugin, &server, server.url("manager", "manager-pw")).await;

    // A server that is down makes calls fail with Unavailable; starting the
    // plugin does not need it.
    let url = server.url("admin", ADMIN_PASSWORD);
    drop(server);
    let backend = plugin
        .instantiate(json!({"url": url, "secret": "s"}), Duration::from_secs(30))
        .await
        .expect("instantiating needs no server");
    let err = backend.health().await.expect_err("the server is down");
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
    let err = backend
        .ensure_running(&ComputeName::main("shop"))
        .await
        .expect_err("the server is down");
    assert_eq!(err.kind, BackendErrorKind::Unavailable, "{err}");
}

/// The `ogel` binary next to this test's target dir.
fn ogel_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/debug/deps")
        .join("ogel");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build --workspace` first",
        bin.display()
    );
    bin
}

#[test]
fn the_external_example_passes_the_conformance_suite_through_the_gateway() {
    let server = TestPostgres::start();
    let dir = temp_dir();
    let config = dir.path().join("external.toml");
    std::fs::write(
        &config,
        format!(
            "url = \"{}\"\nsecret = \"conformance\"\n",
            server.url("admin", ADMIN_PASSWORD)
        ),
    )
    .unwrap();
    let out = Command::new(ogel_bin())
        .args(["plugins", "check"])
        .arg(external_plugin())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run ogel plugins check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("plugin external passes the conformance suite"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ok    suspend is refused cleanly"),
        "{stdout}"
    );
}
