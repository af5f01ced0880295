//! The plugin conformance kit, `ogel plugins check FILE`: runs a throwaway
//! gateway whose default backend is the plugin under test, and drives it
//! the way users do — the HTTP API and real Postgres connections through
//! the gateway — checking what every backend must do and, by its declared
//! capabilities, what it says it can do (or that it refuses cleanly).

use crate::wake;
use anyhow::{anyhow, bail, Context};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A gateway started for the check; stopped (SIGTERM) when dropped.
struct Throwaway {
    child: Child,
    api: String,
    token: String,
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcome of the check.
struct Report {
    failures: usize,
}

impl Report {
    fn check(&mut self, what: &str, result: anyhow::Result<()>) {
        match result {
            Ok(()) => println!("  ok    {what}"),
            Err(e) => {
                self.failures += 1;
                println!("  FAIL  {what}: {e:#}");
            }
        }
    }
    fn skip(&self, what: &str, why: &str) {
        println!("  skip  {what}: {why}");
    }
}

fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Runs the conformance suite against the plugin library `file`, with its
/// configuration section read from `config` (a TOML table), if given.
pub async fn check(file: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let plugin =
        ogel_plugin_host::load(file).map_err(|e| anyhow!("{} refused: {e}", file.display()))?;
    println!(
        "plugin {} {} (ABI {}.{}, SDK {}, {}) from {}",
        plugin.name,
        plugin.version,
        plugin.abi.0,
        plugin.abi.1,
        plugin.sdk_version,
        plugin.rustc_version,
        file.display()
    );
    let name = plugin.name.clone();
    let section = match config {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
        }
        None => String::new(),
    };
    let dir = tempfile::Builder::new()
        .prefix("ogel-check-")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let plugins_dir = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins_dir)?;
    let already_bundled = wake::plugin_files(Path::new("/nonexistent"))
        .iter()
        .any(|f| f.canonicalize().ok() == file.canonicalize().ok());
    if !already_bundled {
        std::fs::copy(file, plugins_dir.join(file.file_name().unwrap_or_default()))?;
    }
    let data_dir = dir.path().join("data");
    let section_header = if name == "native" {
        "[native]".to_string()
    } else {
        format!("[backends.{name}]")
    };
    let toml = format!(
        "default_database = \"\"\ndefault_backend = \"{}\"\nplugins_dir = \"{}\"\nsuspend_after = \"0s\"\n{section_header}\n{section}\n",
        toml_escape(&name),
        toml_escape(&plugins_dir.display().to_string()),
    );
    let toml_path = dir.path().join("ogel.toml");
    std::fs::write(&toml_path, toml)?;

    let gateway = start(&data_dir, &toml_path).await?;
    println!(
        "throwaway gateway: api {} (data in {})",
        gateway.api,
        data_dir.display()
    );
    let mut report = Report { failures: 0 };
    run_suite(&gateway, &name, &mut report).await;
    drop(gateway);
    if report.failures > 0 {
        bail!("{} check(s) failed", report.failures);
    }
    println!("plugin {name} passes the conformance suite");
    Ok(())
}

async fn start(data_dir: &Path, toml: &Path) -> anyhow::Result<Throwaway> {
    std::fs::create_dir_all(data_dir)?;
    let log = std::fs::File::create(data_dir.parent().unwrap_or(data_dir).join("gateway.log"))?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("up")
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(toml)
        .env_remove("OGEL_API")
        .env_remove("OGEL_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()?;
    let run_info = crate::app::run_info_path(data_dir);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(info) = std::fs::read(&run_info)
            .ok()
            .and_then(|b| serde_json::from_slice::<crate::app::RunInfo>(&b).ok())
        {
            let token = std::fs::read_to_string(crate::app::token_path(data_dir))?
                .trim()
                .to_string();
            return Ok(Throwaway {
                child,
                api: format!("http://{}", info.api),
                token,
            });
        }
        if let Some(status) = child.try_wait()? {
            let log =
                std::fs::read_to_string(data_dir.parent().unwrap_or(data_dir).join("gateway.log"))
                    .unwrap_or_default();
            bail!("the gateway exited ({status}) before it was ready:\n{log}");
        }
        if Instant::now() > deadline {
            bail!("the gateway was not ready after 180 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Throwaway {
    async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, json))
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| e.to_string())
}

fn expect_status(
    what: &str,
    got: (u16, serde_json::Value),
    want: u16,
) -> anyhow::Result<serde_json::Value> {
    if got.0 != want {
        bail!("{what}: HTTP {} (want {want}): {}", got.0, got.1);
    }
    Ok(got.1)
}

async fn count_rows(url: &str) -> anyhow::Result<i64> {
    let client = connect(url).await?;
    Ok(client
        .query_one("SELECT count(*) FROM conformance", &[])
        .await?
        .get(0))
}

async fn run_suite(gw: &Throwaway, backend: &str, report: &mut Report) {
    use reqwest::Method;
    const DB: &str = "conformance_db";
    let mut capabilities = serde_json::Value::Null;
    report.check(
        "the plugin is loaded and running",
        async {
            let list = expect_status(
                "GET /v1/plugins",
                gw.api(Method::GET, "/v1/plugins", None).await?,
                200,
            )?;
            let entry = list["plugins"]
                .as_array()
                .and_then(|p| p.iter().find(|p| p["name"] == backend))
                .ok_or_else(|| anyhow!("not listed: {list}"))?;
            if entry["running"] != true {
                bail!("not running: {}", entry["status"]);
            }
            capabilities = entry.clone();
            Ok(())
        }
        .await,
    );
    let mut url = String::new();
    report.check(
        "create a database",
        async {
            let body = serde_json::json!({"name": DB, "backend": backend, "suspend_after_secs": 0});
            let created = expect_status(
                "create",
                gw.api(Method::POST, "/v1/databases", Some(body.clone()))
                    .await?,
                201,
            )?;
            url = created["url"]
                .as_str()
                .ok_or_else(|| anyhow!("no url in {created}"))?
                .to_string();
            let again = gw.api(Method::POST, "/v1/databases", Some(body)).await?;
            expect_status("creating it twice", again, 409).map(|_| ())
        }
        .await,
    );
    if url.is_empty() {
        report.skip("the rest", "no database to work with");
        return;
    }
    report.check("connect through the gateway, write and read back", async {
        let client = connect(&url).await?;
        client
            .batch_execute("CREATE TABLE conformance (id int PRIMARY KEY, note text); INSERT INTO conformance SELECT g, 'row ' || g FROM generate_series(1, 100) g")
            .await?;
        let n = count_rows(&url).await?;
        if n != 100 {
            bail!("a second session sees {n} rows, want 100");
        }
        Ok(())
    }
    .await);
    report.check(
        "a wrong password is refused with 28P01",
        async {
            let (head, tail) = url.split_once('@').ok_or_else(|| anyhow!("odd url"))?;
            let user = head.rsplit_once(':').map(|(u, _)| u).unwrap_or(head);
            match connect(&format!("{user}:wrong@{tail}")).await {
                Ok(_) => bail!("logged in with a wrong password"),
                Err(e) if sqlstate(&e) == "28P01" => Ok(()),
                Err(e) => bail!("got {} ({e})", sqlstate(&e)),
            }
        }
        .await,
    );
    let can_suspend = capabilities["can_suspend"] == true;
    if can_suspend {
        report.check(
            "suspend, then a connection wakes it with the data intact",
            async {
                let view = expect_status(
                    "suspend",
                    gw.api(Method::POST, &format!("/v1/databases/{DB}/suspend"), None)
                        .await?,
                    200,
                )?;
                if view["compute"]["state"] != "suspended" {
                    bail!("state after suspend: {}", view["compute"]["state"]);
                }
                let n = count_rows(&url).await?;
                if n != 100 {
                    bail!("after wake: {n} rows, want 100");
                }
                Ok(())
            }
            .await,
        );
    } else {
        report.check(
            "suspend is refused cleanly (the backend says it cannot)",
            async {
                let got = gw
                    .api(Method::POST, &format!("/v1/databases/{DB}/suspend"), None)
                    .await?;
                let body = expect_status("suspend", got, 422)?;
                let message = body["error"]["message"].as_str().unwrap_or_default();
                if !message.contains("cannot suspend") {
                    bail!("unclear refusal: {message}");
                }
                if count_rows(&url).await? != 100 {
                    bail!("data changed after a refused suspend");
                }
                Ok(())
            }
            .await,
        );
    }
    let caps = &capabilities["capabilities"];
    if caps["branching"].as_str().unwrap_or("none") != "none" {
        report.check(
            "a branch is a writable copy, isolated from its parent, and deletes cleanly",
            async {
                let path = format!("/v1/databases/{DB}/branches");
                if caps["slow_branches"].as_bool().unwrap_or(false) {
                    // A slow branch is made only when asked for.
                    let body = serde_json::json!({"name": "conformance-dev"});
                    expect_status(
                        "create a slow branch without allow_slow",
                        gw.api(Method::POST, &path, Some(body)).await?,
                        422,
                    )?;
                }
                // The kit accepts slow (snapshot-copy) branches: it tests them.
                let body = serde_json::json!({"name": "conformance-dev", "allow_slow": true});
                expect_status(
                    "create a branch",
                    gw.api(Method::POST, &path, Some(body)).await?,
                    201,
                )?;
                let branch_url = format!("{url}@conformance-dev");
                if count_rows(&branch_url).await? != 100 {
                    bail!("the branch does not start as its parent");
                }
                connect(&branch_url)
                    .await?
                    .batch_execute("DELETE FROM conformance WHERE id > 10")
                    .await?;
                if count_rows(&branch_url).await? != 10 || count_rows(&url).await? != 100 {
                    bail!("a write on the branch is not isolated from its parent");
                }
                expect_status(
                    "delete the branch",
                    gw.api(Method::DELETE, &format!("{path}/conformance-dev"), None)
                        .await?,
                    204,
                )?;
                match connect(&branch_url).await {
                    Ok(_) => bail!("the branch is reachable after delete"),
                    Err(e) if sqlstate(&e) == "3D000" => Ok(()),
                    Err(e) => bail!("after delete: {} ({e})", sqlstate(&e)),
                }
            }
            .await,
        );
    } else {
        report.check(
            "branches are refused cleanly (the backend says it cannot)",
            async {
                let body = serde_json::json!({"name": "conformance-dev"});
                let got = gw
                    .api(
                        Method::POST,
                        &format!("/v1/databases/{DB}/branches"),
                        Some(body),
                    )
                    .await?;
                expect_status("create a branch", got, 422).map(|_| ())
            }
            .await,
        );
    }
    if caps["snapshots"] == true {
        report.check(
            "a snapshot is listed and restores as a branch",
            async {
                let path = format!("/v1/databases/{DB}/snapshots");
                let snap = expect_status(
                    "take a snapshot",
                    gw.api(Method::POST, &path, None).await?,
                    201,
                )?;
                let id = snap["id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("no id in {snap}"))?
                    .to_string();
                let list = expect_status(
                    "list snapshots",
                    gw.api(Method::GET, &path, None).await?,
                    200,
                )?;
                if !list.to_string().contains(&id) {
                    bail!("snapshot {id} not listed: {list}");
                }
                let body = serde_json::json!({"as": "conformance-snap"});
                expect_status(
                    "restore",
                    gw.api(Method::POST, &format!("{path}/{id}/restore"), Some(body))
                        .await?,
                    200,
                )?;
                if count_rows(&format!("{url}@conformance-snap")).await? != 100 {
                    bail!("the restored branch does not hold the snapshot's rows");
                }
                Ok(())
            }
            .await,
        );
    } else {
        report.check(
            "snapshots are refused cleanly (the backend says it cannot)",
            async {
                let got = gw
                    .api(Method::POST, &format!("/v1/databases/{DB}/snapshots"), None)
                    .await?;
                expect_status("take a snapshot", got, 422).map(|_| ())
            }
            .await,
        );
    }
    report.check(
        "delete the database; its URL then gets 3D000",
        async {
            expect_status(
                "delete",
                gw.api(Method::DELETE, &format!("/v1/databases/{DB}"), None)
                    .await?,
                204,
            )?;
            match connect(&url).await {
                Ok(_) => bail!("still reachable after delete"),
                Err(e) if sqlstate(&e) == "3D000" => {}
                Err(e) => bail!("got {} ({e})", sqlstate(&e)),
            }
            expect_status(
                "get after delete",
                gw.api(Method::GET, &format!("/v1/databases/{DB}"), None)
                    .await?,
                404,
            )?;
            Ok(())
        }
        .await,
    );
    report.check(
        "the name can be used again after delete",
        async {
            let body = serde_json::json!({"name": DB, "backend": backend});
            expect_status(
                "re-create",
                gw.api(Method::POST, "/v1/databases", Some(body)).await?,
                201,
            )?;
            expect_status(
                "delete",
                gw.api(Method::DELETE, &format!("/v1/databases/{DB}"), None)
                    .await?,
                204,
            )?;
            Ok(())
        }
        .await,
    );
}
