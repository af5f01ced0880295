//! Real PostgreSQL behind the API: projects, branches (now and at an LSN),
//! roles, databases, the SNI proxy, scale to zero, 423 and injected
//! operation failures.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what} missing"))
}

async fn endpoint_state(api: &Api, project: &str, endpoint: &str) -> String {
    let (status, body) = api
        .get(&format!("/projects/{project}/endpoints/{endpoint}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    str_of(&body["endpoint"]["current_state"], "current_state").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_branches_roles_and_databases_on_real_postgres() {
    let _serial = SERIAL.lock().await;
    let e = start().await;
    let api = &e.api;

    // Create: 201 with Neon's shape; operations really run in the background.
    let (status, created) = api
        .post("/projects", json!({"project": {"name": "shop"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let project = str_of(&created["project"]["id"], "project id").to_string();
    for key in [
        "connection_uris",
        "roles",
        "databases",
        "operations",
        "branch",
        "endpoints",
    ] {
        assert!(created.get(key).is_some(), "{key} missing: {created}");
    }
    assert_eq!(created["branch"]["name"], "main");
    assert_eq!(created["branch"]["default"], true);
    assert_eq!(created["roles"][0]["name"], "neondb_owner");
    assert_eq!(created["databases"][0]["name"], "neondb");
    assert_eq!(created["endpoints"][0]["type"], "read_write");
    let actions: Vec<&str> = created["operations"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| str_of(&o["action"], "action"))
        .collect();
    assert_eq!(actions, ["create_timeline", "start_compute"]);
    assert_eq!(created["operations"][0]["status"], "scheduling");
    let endpoint = str_of(&created["endpoints"][0]["id"], "endpoint").to_string();
    assert_eq!(
        created["endpoints"][0]["host"],
        format!("{endpoint}.{}", e.emu.domain)
    );
    let main_branch = str_of(&created["branch"]["id"], "branch").to_string();

    // While the project's operations run, mutating calls are refused (423).
    let (status, body) = api
        .post(&format!("/projects/{project}/branches"), json!({}))
        .await;
    assert_eq!(status, StatusCode::LOCKED, "{body}");
    let ops = api.wait_ok(&project).await;
    assert_eq!(ops.len(), 2);
    assert_eq!(endpoint_state(api, &project, &endpoint).await, "active");
    let (_, branch) = api
        .get(&format!("/projects/{project}/branches/{main_branch}"))
        .await;
    assert_eq!(branch["branch"]["current_state"], "ready");
    let (_, op) = api
        .get(&format!(
            "/projects/{project}/operations/{}",
            str_of(&ops[0]["id"], "op id")
        ))
        .await;
    assert_eq!(op["operation"]["status"], "finished");

    // TLS + SNI through the proxy, verified against the emulator's CA.
    let params = &created["connection_uris"][0]["connection_parameters"];
    let client = connect_params(&e.emu, params).await;
    client
        .batch_execute("CREATE TABLE items (id int PRIMARY KEY); INSERT INTO items VALUES (1)")
        .await
        .expect("write");
    let lsn: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .expect("lsn")
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let at: String = client
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
            &[],
        )
        .await
        .expect("timestamp")
        .get(0);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    client
        .batch_execute("INSERT INTO items VALUES (2)")
        .await
        .expect("later write");
    // A wrong password is refused by the real postgres behind the proxy.
    let wrong = connect(
        &e.emu,
        str_of(&params["host"], "host"),
        "neondb_owner",
        "not-the-password",
        "neondb",
    )
    .await;
    assert!(wrong.is_err(), "a wrong password must fail");

    // The connection URI endpoint.
    let (status, body) = api
        .get(&format!(
            "/projects/{project}/connection_uri?database_name=neondb&role_name=neondb_owner"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["uri"], created["connection_uris"][0]["connection_uri"]);
    let (status, _) = api
        .get(&format!(
            "/projects/{project}/connection_uri?database_name=neondb"
        ))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A branch at now, with an endpoint: both rows, and it is isolated.
    let (status, dev) = api
        .post(
            &format!("/projects/{project}/branches"),
            json!({"branch": {"name": "dev"}, "endpoints": [{"type": "read_write"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dev}");
    assert_eq!(dev["branch"]["current_state"], "init");
    assert_eq!(dev["branch"]["parent_id"], main_branch.as_str());
    let dev_ops: Vec<&str> = dev["operations"]
        .as_array()
        .expect("ops")
        .iter()
        .map(|o| str_of(&o["action"], "action"))
        .collect();
    assert_eq!(dev_ops, ["create_branch", "start_compute"]);
    api.wait_ok(&project).await;
    let dev_id = str_of(&dev["branch"]["id"], "branch id").to_string();
    let (_, dev_branch) = api
        .get(&format!("/projects/{project}/branches/{dev_id}"))
        .await;
    assert_eq!(dev_branch["branch"]["current_state"], "ready");
    let dev_params = &dev["connection_uris"][0]["connection_parameters"];
    assert_eq!(dev_params["password"], params["password"]);
    let dev_client = connect_params(&e.emu, dev_params).await;
    let rows = dev_client
        .query("SELECT id FROM items ORDER BY id", &[])
        .await
        .expect("read on branch");
    assert_eq!(
        rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [1, 2]
    );
    dev_client
        .batch_execute("INSERT INTO items VALUES (100)")
        .await
        .expect("write on branch");
    let main_count: i64 = client
        .query_one("SELECT count(*) FROM items", &[])
        .await
        .expect("main still works")
        .get(0);
    assert_eq!(main_count, 2, "a write on the branch must not reach main");

    // A branch at the LSN taken before the second write: only row 1.
    let (status, old) = api
        .post(
            &format!("/projects/{project}/branches"),
            json!({"branch": {"parent_id": main_branch, "parent_lsn": lsn}, "endpoints": [{"type": "read_write"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{old}");
    assert_eq!(old["branch"]["parent_lsn"], lsn.as_str());
    api.wait_ok(&project).await;
    let old_client =
        connect_params(&e.emu, &old["connection_uris"][0]["connection_parameters"]).await;
    let rows = old_client
        .query("SELECT id FROM items ORDER BY id", &[])
        .await
        .expect("read on LSN branch");
    assert_eq!(
        rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [1]
    );
    drop(old_client);

    // A branch at a time between the two writes: only row 1 too.
    let (status, then) = api
        .post(
            &format!("/projects/{project}/branches"),
            json!({"branch": {"parent_timestamp": at}, "endpoints": [{"type": "read_write"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{then}");
    assert_eq!(then["branch"]["parent_timestamp"], at.as_str());
    api.wait_ok(&project).await;
    let then_client =
        connect_params(&e.emu, &then["connection_uris"][0]["connection_parameters"]).await;
    let rows = then_client
        .query("SELECT id FROM items ORDER BY id", &[])
        .await
        .expect("read on timestamp branch");
    assert_eq!(
        rows.iter().map(|r| r.get::<_, i32>(0)).collect::<Vec<_>>(),
        [1]
    );
    drop(then_client);

    // Bad branch requests.
    let (status, _) = api
        .post(
            &format!("/projects/{project}/branches"),
            json!({"branch": {"parent_lsn": "nonsense"}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = api
        .post(
            &format!("/projects/{project}/branches"),
            json!({"branch": {"parent_id": "br-no-such-1"}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Roles: created in postgres with SCRAM; reveal and reset the password.
    let (status, role) = api
        .post(
            &format!("/projects/{project}/branches/{main_branch}/roles"),
            json!({"role": {"name": "alice"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{role}");
    assert_eq!(role["operations"][0]["action"], "apply_config");
    let alice_pw = str_of(&role["role"]["password"], "password").to_string();
    api.wait_ok(&project).await;
    let host = str_of(&params["host"], "host").to_string();
    connect(&e.emu, &host, "alice", &alice_pw, "neondb")
        .await
        .expect("the new role logs in");
    let (_, revealed) = api
        .get(&format!(
            "/projects/{project}/branches/{main_branch}/roles/alice/reveal_password"
        ))
        .await;
    assert_eq!(revealed["password"], alice_pw.as_str());
    let (status, reset) = api
        .post(
            &format!("/projects/{project}/branches/{main_branch}/roles/alice/reset_password"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reset}");
    let new_pw = str_of(&reset["role"]["password"], "password").to_string();
    assert_ne!(new_pw, alice_pw);
    api.wait_ok(&project).await;
    assert!(connect(&e.emu, &host, "alice", &alice_pw, "neondb")
        .await
        .is_err());
    connect(&e.emu, &host, "alice", &new_pw, "neondb")
        .await
        .expect("the reset password works");
    let (status, _) = api
        .post(
            &format!("/projects/{project}/branches/{main_branch}/roles"),
            json!({"role": {"name": "alice"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Databases: created in postgres, owned by the role; deleted again.
    let (status, db) = api
        .post(
            &format!("/projects/{project}/branches/{main_branch}/databases"),
            json!({"database": {"name": "appdb", "owner_name": "alice"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{db}");
    api.wait_ok(&project).await;
    let app = connect(&e.emu, &host, "alice", &new_pw, "appdb")
        .await
        .expect("the new database accepts connections");
    app.batch_execute("CREATE TABLE t (x int)")
        .await
        .expect("owner can create");
    drop(app);
    let (_, dbs) = api
        .get(&format!(
            "/projects/{project}/branches/{main_branch}/databases"
        ))
        .await;
    let names: Vec<&str> = dbs["databases"]
        .as_array()
        .expect("databases")
        .iter()
        .map(|d| str_of(&d["name"], "name"))
        .collect();
    assert_eq!(names, ["neondb", "appdb"]);
    let (status, _) = api
        .delete(&format!(
            "/projects/{project}/branches/{main_branch}/databases/appdb"
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    api.wait_ok(&project).await;
    assert!(connect(&e.emu, &host, "alice", &new_pw, "appdb")
        .await
        .is_err());

    // Deleting: the default branch cannot go; a child branch can; then the project.
    let (status, _) = api
        .delete(&format!("/projects/{project}/branches/{main_branch}"))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    drop(dev_client);
    let (status, body) = api
        .delete(&format!("/projects/{project}/branches/{dev_id}"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    api.wait_ok(&project).await;
    let (status, _) = api
        .get(&format!("/projects/{project}/branches/{dev_id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api.get(&format!("/projects/{project}/operations")).await;
    assert_eq!(status, StatusCode::OK);
    drop(client);
    let (status, body) = api.delete(&format!("/projects/{project}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = api.get(&format!("/projects/{project}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    e.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_to_zero_wake_on_connect_and_locking() {
    let _serial = SERIAL.lock().await;
    let e = start().await;
    let api = &e.api;
    let created = api.create_project("sleepy").await;
    let project = str_of(&created["project"]["id"], "id").to_string();
    let endpoint = str_of(&created["endpoints"][0]["id"], "endpoint").to_string();
    let params = created["connection_uris"][0]["connection_parameters"].clone();

    // Suspend through the API: the endpoint goes idle.
    let (status, body) = api
        .post(
            &format!("/projects/{project}/endpoints/{endpoint}/suspend"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["operations"][0]["action"], "suspend_compute");
    api.wait_ok(&project).await;
    assert_eq!(endpoint_state(api, &project, &endpoint).await, "idle");

    // A connection wakes it (a start_compute operation is recorded).
    let client = connect_params(&e.emu, &params).await;
    let one: i32 = client
        .query_one("SELECT 1", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(one, 1);
    assert_eq!(endpoint_state(api, &project, &endpoint).await, "active");
    let ops = api.wait_ok(&project).await;
    assert_eq!(ops[0]["action"], "start_compute", "newest first: {ops:?}");
    assert_eq!(ops[1]["action"], "suspend_compute");

    // An idle timeout of 1 s: after the last connection ends, it suspends itself.
    let (status, body) = api
        .patch(
            &format!("/projects/{project}/endpoints/{endpoint}"),
            json!({"endpoint": {"suspend_timeout_seconds": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["endpoint"]["suspend_timeout_seconds"], 1);
    api.wait_ok(&project).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        endpoint_state(api, &project, &endpoint).await,
        "active",
        "an open connection keeps the endpoint active"
    );
    drop(client);
    eventually(30, "the idle endpoint to suspend", || async {
        endpoint_state(api, &project, &endpoint).await == "idle"
    })
    .await;
    let ops = api.wait_ok(&project).await;
    assert_eq!(ops[0]["action"], "suspend_compute");
    let client = connect_params(&e.emu, &params).await;
    client
        .query_one("SELECT 1", &[])
        .await
        .expect("woken again");
    drop(client);

    // 423 Locked while an operation runs (slowed down by a fault).
    let (status, _) = api
        .patch(
            &format!("/projects/{project}/endpoints/{endpoint}"),
            json!({"endpoint": {"suspend_timeout_seconds": -1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    api.wait_ok(&project).await;
    reqwest::Client::new()
        .post(format!("{}/faults", e.emu.emulator_url))
        .json(&json!({"operation_delay_ms": 1500}))
        .send()
        .await
        .expect("fault set");
    let (status, body) = api
        .post(
            &format!("/projects/{project}/endpoints/{endpoint}/suspend"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api
        .post(
            &format!("/projects/{project}/endpoints/{endpoint}/start"),
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::LOCKED, "{body}");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    // Reads are still served while locked.
    assert_eq!(
        api.get(&format!("/projects/{project}")).await.0,
        StatusCode::OK
    );
    api.wait_ok(&project).await;
    assert_eq!(endpoint_state(api, &project, &endpoint).await, "idle");

    e.emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_operations_and_proxy_refusals() {
    let _serial = SERIAL.lock().await;
    let e = start().await;
    let api = &e.api;
    let created = api.create_project("faulty").await;
    let project = str_of(&created["project"]["id"], "id").to_string();
    let endpoint = str_of(&created["endpoints"][0]["id"], "endpoint").to_string();
    let params = created["connection_uris"][0]["connection_parameters"].clone();
    let faults = format!("{}/faults", e.emu.emulator_url);
    let http = reqwest::Client::new();

    // The next operation fails: the branch is not left behind, the project unlocks.
    http.post(&faults)
        .json(&json!({"fail_next_operation": true}))
        .send()
        .await
        .expect("fault set");
    let (status, body) = api
        .post(
            &format!("/projects/{project}/branches"),
            json!({"endpoints": [{"type": "read_write"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let branch_id = str_of(&body["branch"]["id"], "branch").to_string();
    let ops = api.wait_ops(&project).await;
    assert_eq!(ops[1]["action"], "create_branch");
    assert_eq!(ops[1]["status"], "failed");
    assert!(ops[1]["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(ops[1]["failures_count"], 1);
    assert_eq!(ops[0]["action"], "start_compute");
    assert_eq!(ops[0]["status"], "cancelled");
    let (status, _) = api
        .get(&format!("/projects/{project}/branches/{branch_id}"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api
        .post(&format!("/projects/{project}/branches"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "a retry works: {body}");
    api.wait_newest_ok(&project, 1).await;

    // A failed wake: the client gets an error, the next connection works.
    api.post(
        &format!("/projects/{project}/endpoints/{endpoint}/suspend"),
        json!({}),
    )
    .await;
    api.wait_newest_ok(&project, 1).await;
    http.post(&faults)
        .json(&json!({"fail_next_operation": true}))
        .send()
        .await
        .expect("fault set");
    let err = connect(
        &e.emu,
        str_of(&params["host"], "host"),
        str_of(&params["role"], "role"),
        str_of(&params["password"], "password"),
        "neondb",
    )
    .await
    .expect_err("the wake fails");
    let text = err
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| err.to_string());
    assert!(text.contains("could not start the compute"), "{text}");
    assert_eq!(endpoint_state(api, &project, &endpoint).await, "idle");
    connect_params(&e.emu, &params).await;

    // psql: no SNI (an IP host) and no endpoint option → refused; the
    // option works; unknown endpoints and plaintext are refused.
    let port = e.emu.proxy_addr.port();
    let user = str_of(&params["role"], "role");
    let env = [("PGPASSWORD", str_of(&params["password"], "pw").to_string())];
    let base = format!("host=127.0.0.1 port={port} user={user} dbname=neondb");
    let (ok, _, err) = psql(&format!("{base} sslmode=require"), "SELECT 1", &env);
    assert!(!ok && err.contains("Endpoint ID is not specified"), "{err}");
    let (ok, out, err) = psql(
        &format!("{base} sslmode=require options=endpoint={endpoint}"),
        "SELECT 41 + 1",
        &env,
    );
    assert!(ok, "{err}");
    assert_eq!(out, "42");
    let (ok, _, err) = psql(
        &format!("{base} sslmode=require options=endpoint=ep-no-such-12345678"),
        "SELECT 1",
        &env,
    );
    assert!(!ok && err.contains("could not be found"), "{err}");
    let (ok, _, err) = psql(&format!("{base} sslmode=disable"), "SELECT 1", &env);
    assert!(!ok && err.contains("insecure"), "{err}");
    // verify-full with the real host name (SNI) through PGHOSTADDR.
    let (ok, out, err) = psql(
        &format!(
            "host={} hostaddr=127.0.0.1 port={port} user={user} dbname=neondb sslmode=verify-full sslrootcert={}",
            str_of(&params["host"], "host"),
            e.emu.ca_path.display()
        ),
        "SELECT current_user",
        &env,
    );
    assert!(ok, "{err}");
    assert_eq!(out, user);

    // Down: the proxy refuses connections too.
    http.post(&faults)
        .json(&json!({"down": true}))
        .send()
        .await
        .expect("fault set");
    let refused = connect(
        &e.emu,
        str_of(&params["host"], "host"),
        user,
        str_of(&params["password"], "pw"),
        "neondb",
    )
    .await;
    assert!(refused.is_err());
    http.delete(&faults).send().await.expect("cleared");

    e.emu.shutdown().await;
}

/// Dropping the emulator (as a panicking test does) stops its postgres processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_emulator_stops_every_postgres() {
    let _serial = SERIAL.lock().await;
    let e = start().await;
    e.api.create_project("dropped").await;
    let databases = e.dir.path().join("emu/native/databases");
    let pids: Vec<i32> = std::fs::read_dir(&databases)
        .expect("databases dir")
        .flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("pgdata/postmaster.pid")).ok())
        .filter_map(|text| text.lines().next().and_then(|l| l.trim().parse().ok()))
        .collect();
    assert!(!pids.is_empty(), "a compute runs");
    let Emu { emu, api: _, dir } = e;
    drop(emu);
    for pid in pids {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        });
        assert!(
            !alive,
            "postgres {pid} still runs after the emulator was dropped"
        );
    }
    drop(dir);
}
