//! The HTTP API and the `ogel` CLI against a running gateway.

use ogel_e2e::{connect, Gateway};

#[tokio::test]
async fn api_errors_are_json_with_a_code_and_a_message() {
    let gw = Gateway::start().await;
    let (status, body) = gw.api("GET", "/v1/databases/nope", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ogel db list"));

    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({"name": "Bad-Name"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_request");

    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({"nom": "x"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({"name": "app"})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "already_exists");

    let anonymous = reqwest::get(format!("{}/v1/databases", gw.api))
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: serde_json::Value = anonymous.json().await.unwrap();
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("admin-token"));
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let gw = Gateway::start().await;
    let doc: serde_json::Value = reqwest::get(format!("{}/v1/openapi.json", gw.api))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for path in [
        "/v1/databases",
        "/v1/databases/{name}",
        "/v1/databases/{name}/suspend",
        "/v1/databases/{name}/wake",
        "/v1/databases/{name}/password",
        "/v1/status",
    ] {
        assert!(
            paths.contains_key(path),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn delete_removes_data_and_role_and_password_reset_works() {
    let gw = Gateway::start().await;
    let url = gw.create_db("temp", None).await;
    connect(&url).await.unwrap();
    let (status, body) = gw.api("POST", "/v1/databases/temp/password", None).await;
    assert_eq!(status, 200);
    let new_url = body["url"].as_str().unwrap().to_string();
    assert!(
        connect(&url).await.is_err(),
        "the old password stops working"
    );
    connect(&new_url).await.expect("the new password works");

    let (status, _) = gw.api("DELETE", "/v1/databases/temp", None).await;
    assert_eq!(status, 204);
    assert!(!gw.data_dir.join("native/databases/temp").exists());
    let err = connect(&new_url).await.unwrap_err();
    assert_eq!(ogel_e2e::sqlstate(&err), "3D000");
    // The name can be used again.
    gw.create_db("temp", None).await;

    // Resetting the default database's password keeps `ogel up`'s record of it current.
    let (status, body) = gw.api("POST", "/v1/databases/app/password", None).await;
    assert_eq!(status, 200);
    let recorded = std::fs::read_to_string(gw.data_dir.join("default-database.password")).unwrap();
    assert_eq!(recorded, body["password"].as_str().unwrap());
}

#[tokio::test]
async fn cli_commands_drive_the_gateway() {
    let gw = Gateway::start().await;
    let out = gw.cli(&["db", "create", "shop", "--suspend-after", "0s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(url.starts_with("postgresql://shop_owner:"), "{url}");
    connect(&url).await.expect("the printed URL works");

    let list = String::from_utf8_lossy(&gw.cli(&["db", "list"]).stdout).to_string();
    assert!(list.contains("shop") && list.contains("app"), "{list}");

    let out = gw.cli(&["db", "suspend", "shop"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "shop: suspended"
    );
    let out = gw.cli(&["db", "wake", "shop"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("shop: running"));

    let status = String::from_utf8_lossy(&gw.cli(&["status"]).stdout).to_string();
    assert!(
        status.contains("gateway") && status.contains("running"),
        "{status}"
    );

    let out = gw.cli(&["db", "url", "shop"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("postgresql://shop_owner@{}/shop", gw.pg_addr)
    );

    let out = gw.cli(&["db", "delete", "shop"]);
    assert!(out.status.success());
    let out = gw.cli(&["db", "url", "shop"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[tokio::test]
async fn secrets_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let gw = Gateway::start().await;
    for file in ["admin-token", "default-database.password", "native/secret"] {
        let mode = std::fs::metadata(gw.data_dir.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file}");
    }
    // The catalog holds a verifier, never the password.
    let password = std::fs::read_to_string(gw.data_dir.join("default-database.password")).unwrap();
    let catalog = std::fs::read(gw.data_dir.join("catalog.redb")).unwrap();
    let needle = password.trim().as_bytes();
    assert!(!catalog.windows(needle.len()).any(|w| w == needle));
}

#[tokio::test]
async fn a_second_gateway_on_the_same_data_dir_is_refused() {
    let gw = Gateway::start().await;
    let out = std::process::Command::new(ogel_e2e::ogel_bin())
        .arg("up")
        .arg("--data-dir")
        .arg(&gw.data_dir)
        .args(["--listen", "127.0.0.1:0", "--api", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already running"), "{stderr}");
    // The first gateway is unharmed.
    connect(&gw.app_url)
        .await
        .expect("first gateway still serves");
}

#[tokio::test]
async fn plugins_are_listed_and_a_bad_library_is_refused_without_harm() {
    let dir = ogel_e2e::shared_tempdir();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(data_dir.join("plugins")).unwrap();
    std::fs::write(
        data_dir.join("plugins/libgarbage.so"),
        b"this is not an ELF file",
    )
    .unwrap();
    let gw = Gateway::start_in(&data_dir, &[])
        .await
        .expect("the gateway starts despite a bad plugin");

    let (status, list) = gw.api("GET", "/v1/plugins", None).await;
    assert_eq!(status, 200);
    let native = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "native")
        .expect("native listed");
    assert_eq!(
        native["abi"], "1.6",
        "the native plugin speaks the newest ABI"
    );
    assert_eq!(native["running"], true);
    assert_eq!(native["can_suspend"], true);
    assert!(
        native["file"]
            .as_str()
            .unwrap()
            .ends_with("libogel_backend_native.so"),
        "{native}"
    );
    let refused = &list["refused"][0];
    assert!(
        refused["file"].as_str().unwrap().ends_with("libgarbage.so"),
        "{list}"
    );
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("not a loadable library"),
        "{list}"
    );

    let out = gw.cli(&["plugins", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("native") && text.contains("refused"),
        "{text}"
    );

    let (status, body) = gw
        .api(
            "POST",
            "/v1/databases",
            Some(serde_json::json!({"name": "shop", "backend": "nope"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no backend named \"nope\""),
        "{body}"
    );
    connect(&gw.app_url)
        .await
        .expect("native databases still served");
    drop(gw);
    ogel_e2e::kill_postgres_under(dir.path());
}
