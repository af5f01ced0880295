//! The etcd catalog store (`ogel::catalog::etcd::EtcdStore`) against a real
//! etcd cluster of three members (`ogel_e2e::etcd`, killed when the test
//! ends, also when it fails): two gateways' catalogs see each other's
//! writes through the watch, fenced writes are refused whole, reads go on
//! from the mirror while etcd has no quorum and writes then fail fast, a
//! store whose watch fell behind a compaction loads again, and an etcd that
//! is not there is a clear error, not a hang.
//!
//! etcd comes from `scripts/test` (Debian's `etcd-server`); without it
//! these tests fail (they do not skip).

use ogel::catalog::etcd::{with_fence, EtcdStore, Fence};
use ogel::catalog::{
    Catalog, CatalogError, CatalogStore, DatabaseRecord, RoleRecord, Table, DEFAULT_TENANT,
};
use ogel::error::chain;
use ogel_e2e::etcd::EtcdCluster;
use ogel_e2e::s3::free_port;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tests share 2 cores: one etcd cluster at a time (elections time out
/// after 500 ms).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// No test may hang the suite.
const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Each store's bound on one etcd request.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

async fn bounded<F: Future<Output = ()>>(test: F) {
    let _serial = SERIAL.lock().await;
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("the test finished in time");
}

fn store(endpoints: &[String], prefix: &str) -> Arc<EtcdStore> {
    Arc::new(
        EtcdStore::connect(endpoints, prefix, STORE_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to etcd: {}", chain(&e))),
    )
}

fn record(name: &str) -> (DatabaseRecord, RoleRecord) {
    // From JSON, as the store keeps it: fields added later take defaults.
    let db = serde_json::from_value(serde_json::json!({
        "name": name,
        "backend": "native",
        "owner": format!("{name}_owner"),
        "state": "ready",
        "created_at_unix": 1,
        "tenant": DEFAULT_TENANT,
    }))
    .expect("a database record");
    let role = RoleRecord {
        name: format!("{name}_owner"),
        verifier: "SCRAM-SHA-256$4096:c2FsdA==$a:b".into(),
        databases: vec![name.into()],
    };
    (db, role)
}

fn put(catalog: &Catalog, name: &str) -> Result<(), CatalogError> {
    let (db, role) = record(name);
    catalog.put_database(&db, &role)
}

/// Writes `name` until a write succeeds, within `limit`.
async fn put_within(catalog: &Catalog, name: &str, limit: Duration) {
    let started = Instant::now();
    loop {
        match put(catalog, name) {
            Ok(()) => return,
            Err(e) if started.elapsed() < limit => {
                eprintln!("write of {name} retried: {}", chain(&e));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("write of {name} with a quorum left: {}", chain(&e)),
        }
    }
}

fn names(catalog: &Catalog) -> Vec<String> {
    catalog
        .databases()
        .expect("list databases")
        .into_iter()
        .map(|d| d.name)
        .collect()
}

/// Waits until `catalog` lists exactly `want`, up to 15 s.
async fn sees(catalog: &Catalog, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let have = names(catalog);
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the catalog lists {have:?}, not {want:?}, after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The create_revision of `key`, as etcd has it (0: absent).
async fn create_revision(client: &mut etcd_client::Client, key: &str) -> i64 {
    client
        .get(key, None)
        .await
        .expect("get")
        .kvs()
        .first()
        .map_or(0, |kv| kv.create_revision())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_see_each_others_writes() {
    bounded(async {
        let cluster = EtcdCluster::start(3).await;
        let eps = cluster.endpoints();
        let a = Catalog::over(store(&eps, "/t"));
        let b_store = store(&eps, "/t/");
        let b = Catalog::over(b_store.clone());

        put(&a, "shop").expect("write through a");
        // Read-your-writes: in a's mirror when the write returns.
        assert!(a.database("shop").expect("read").is_some());
        assert!(a.role("shop_owner").expect("read").is_some());
        sees(&b, &["shop"]).await;
        assert!(b.role("shop_owner").expect("read").is_some());

        put(&b, "app").expect("write through b");
        sees(&a, &["app", "shop"]).await;

        // Two decisions on one reading: the first lands, the second is
        // refused by etcd, whatever b's mirror has seen yet.
        let read_by_a = a.database("app").expect("read").expect("app");
        let read_by_b = b.database("app").expect("read").expect("app");
        assert_eq!(read_by_a, read_by_b);
        let mut to_a = read_by_a.clone();
        to_a.node = Some("a".into());
        a.swap_database(&read_by_a, &to_a).expect("a's swap lands");
        let mut to_b = read_by_b.clone();
        to_b.node = Some("b".into());
        let raced = b.swap_database(&read_by_b, &to_b);
        assert!(
            matches!(raced, Err(CatalogError::Changed { .. })),
            "b's swap on a stale reading: {raced:?}"
        );
        assert_eq!(
            a.database("app").expect("read").and_then(|d| d.node),
            Some("a".into())
        );
        // One value agreed by all, whoever proposes first.
        assert_eq!(
            a.agree("k", &"from a".to_string()).expect("agree"),
            "from a"
        );
        assert_eq!(
            b.agree("k", &"from b".to_string()).expect("agree"),
            "from a"
        );

        let shop = a.database("shop").expect("read").expect("shop");
        a.remove_database(&shop).expect("remove through a");
        assert_eq!(names(&a), vec!["app"]);
        sees(&b, &["app"]).await;
        assert!(b.role("shop_owner").expect("read").is_none());
        assert!(b_store.revision() > 0);

        // A gateway that starts later loads everything in one read; one on
        // another prefix sees none of it.
        let c = Catalog::over(store(&eps, "/t"));
        assert_eq!(names(&c), vec!["app"]);
        assert!(c.role("app_owner").expect("read").is_some());
        let other = Catalog::over(store(&eps, "/other"));
        assert!(names(&other).is_empty());

        // The records are where the layout says, as the JSON the catalog made.
        let mut raw = cluster.client().await;
        let resp = raw
            .get("/t/catalog/databases/app", None)
            .await
            .expect("raw get");
        let value: serde_json::Value =
            serde_json::from_slice(resp.kvs()[0].value()).expect("JSON record");
        assert_eq!(value["name"], "app");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writes_are_refused_whole() {
    bounded(async {
        let cluster = EtcdCluster::start(3).await;
        let mut raw = cluster.client().await;
        let node_key = "/f/nodes/n1";
        raw.put(node_key, "n1", None).await.expect("put node key");
        let node = Fence {
            key: node_key.into(),
            create_revision: create_revision(&mut raw, node_key).await,
        };
        let s = store(&cluster.endpoints(), "/f");
        let catalog = Catalog::over(s.clone());
        s.set_fence(Some(node.clone()));
        put(&catalog, "kept").expect("a write under a valid fence");

        // Another node took the key over: same key, new creation revision.
        raw.delete(node_key, None).await.expect("delete node key");
        raw.put(node_key, "other", None)
            .await
            .expect("re-put node key");
        let revision = s.revision();
        let (db, role) = record("refused");
        match catalog.put_database(&db, &role) {
            Err(CatalogError::Fenced { key }) => assert_eq!(key, node_key),
            other => panic!("expected Fenced, got {other:?}"),
        }
        let e = catalog.put_database(&db, &role).expect_err("still fenced");
        assert_eq!(
            e.to_string(),
            "catalog: this gateway no longer holds its lease (fenced); the write was refused"
        );
        // Nothing of the batch was written, in etcd or in the mirror.
        for key in [
            "/f/catalog/databases/refused",
            "/f/catalog/roles/refused_owner",
        ] {
            let resp = raw.get(key, None).await.expect("raw get");
            assert!(resp.kvs().is_empty(), "{key} was written");
        }
        assert!(catalog.database("refused").expect("read").is_none());
        assert!(catalog.role("refused_owner").expect("read").is_none());
        assert_eq!(s.revision(), revision);
        assert_eq!(names(&catalog), vec!["kept"]);

        // The node's new fence works.
        let node = Fence {
            key: node_key.into(),
            create_revision: create_revision(&mut raw, node_key).await,
        };
        s.set_fence(Some(node));
        put(&catalog, "second").expect("a write under the new fence");

        // The task-local leader fence goes into the same transaction. (The
        // leader key is made through the store's own connection, from this
        // runtime and from the store's.)
        let leader_key = "/f/leader";
        let handle = s.client_handle();
        assert_eq!(handle.prefix, "/f");
        let mut shared = handle.client.clone();
        shared
            .put(leader_key, "n1", None)
            .await
            .expect("put through the store's client");
        let mut on_store_thread = handle.client.clone();
        let made = handle
            .runtime
            .spawn(async move { create_revision(&mut on_store_thread, "/f/leader").await })
            .await
            .expect("a task on the store's runtime");
        let leader = Fence {
            key: leader_key.into(),
            create_revision: create_revision(&mut raw, leader_key).await,
        };
        assert_eq!(made, leader.create_revision);
        with_fence(leader.clone(), async {
            put(&catalog, "as_leader").expect("a write as the leader");
        })
        .await;
        let stale = Fence {
            create_revision: leader.create_revision - 1,
            ..leader.clone()
        };
        let refused = with_fence(stale, async { put(&catalog, "stale_leader") }).await;
        match refused {
            Err(CatalogError::Fenced { key }) => assert_eq!(key, leader_key),
            other => panic!("expected Fenced by the leader key, got {other:?}"),
        }
        // Outside the scope the leader fence is gone again.
        put(&catalog, "after").expect("a write outside with_fence");

        // A per-call fence on a key that does not exist.
        let missing = Fence {
            key: "/f/nobody".into(),
            create_revision: 7,
        };
        match s.write_fenced(&[(Table::Tenants, "t", Some(b"{}".to_vec()))], &missing) {
            Err(CatalogError::Fenced { key }) => assert_eq!(key, "/f/nobody"),
            other => panic!("expected Fenced, got {other:?}"),
        }
        assert!(s.get(Table::Tenants, "t").expect("read").is_none());
        assert_eq!(
            names(&catalog),
            vec!["after", "as_leader", "kept", "second"]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_etcd_and_writes_fail_fast_without_quorum() {
    bounded(async {
        let mut cluster = EtcdCluster::start(3).await;
        let eps = cluster.endpoints();
        let a = Catalog::over(store(&eps, "/q"));
        let b = Catalog::over(store(&eps, "/q"));
        put(&a, "before").expect("write");
        sees(&b, &["before"]).await;

        // One member of three down: a quorum is left.
        cluster.kill(0);
        // If it led, the others elect a leader first (a write meanwhile
        // may time out: etcd's semantics); then writes go through.
        put_within(&a, "one_down_a", Duration::from_secs(15)).await;
        put_within(&b, "one_down_b", Duration::from_secs(15)).await;
        sees(&a, &["before", "one_down_a", "one_down_b"]).await;
        sees(&b, &["before", "one_down_a", "one_down_b"]).await;

        // Two down: no quorum. Reads come from the mirror; writes fail
        // within the timeout, saying why.
        cluster.kill(1);
        let want = vec!["before", "one_down_a", "one_down_b"];
        assert_eq!(names(&a), want);
        assert_eq!(names(&b), want);
        assert!(a.role("before_owner").expect("read").is_some());
        for _ in 0..2 {
            let started = Instant::now();
            let e = put(&a, "no_quorum").expect_err("a write without quorum fails");
            let took = started.elapsed();
            assert!(
                took < STORE_TIMEOUT + Duration::from_millis(1500),
                "the write took {took:?}"
            );
            let text = chain(&e);
            assert!(
                matches!(
                    e,
                    CatalogError::Store {
                        action: "write to etcd",
                        ..
                    }
                ),
                "{text}"
            );
            assert!(text.contains("not reachable"), "{text}");
            assert!(text.contains(&eps[2]), "{text}");
        }
        assert!(a.database("no_quorum").expect("read").is_none());
        assert_eq!(names(&a), want);

        // Back: writes work again and the other gateway sees them.
        cluster.restart(0).await;
        cluster.restart(1).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match put(&a, "healed") {
                Ok(()) => break,
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "writes still fail 30 s after the restart: {}\n{}",
                    chain(&e),
                    cluster.logs()
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A write that timed out may still have been applied (etcd
        // committed it once it had a quorum again): remove it, so what
        // follows does not depend on it.
        a.remove_database(&record("no_quorum").0)
            .expect("remove the ambiguous write");
        sees(&b, &["before", "healed", "one_down_a", "one_down_b"]).await;
        put(&b, "healed_b").expect("b writes again");
        sees(
            &a,
            &["before", "healed", "healed_b", "one_down_a", "one_down_b"],
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_behind_a_compaction_loads_again() {
    bounded(async {
        let mut cluster = EtcdCluster::start(3).await;
        let a = Catalog::over(store(&cluster.endpoints(), "/c"));
        // b talks to member 2 only.
        let b_store = store(&[cluster.endpoint(2)], "/c");
        let b = Catalog::over(b_store.clone());
        put(&a, "old").expect("write");
        sees(&b, &["old"]).await;

        cluster.kill(2);
        let old = a.database("old").expect("read").expect("old");
        a.remove_database(&old).expect("remove");
        put(&a, "new1").expect("write");
        put(&a, "new2").expect("write");
        let mut raw = etcd_client::Client::connect([cluster.endpoint(0)], None)
            .await
            .expect("client to member 0");
        let now = raw
            .get("/c", None)
            .await
            .expect("get")
            .header()
            .map_or(0, |h| h.revision());
        raw.compact(now, None).await.expect("compact");
        // b's mirror still holds what it had.
        assert_eq!(names(&b), vec!["old"]);

        cluster.restart(2).await;
        sees(&b, &["new1", "new2"]).await;
        assert!(b.role("old_owner").expect("read").is_none());
        assert!(b_store.revision() >= now);
        // And it keeps following.
        put(&a, "new3").expect("write");
        sees(&b, &["new1", "new2", "new3"]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_etcd_is_a_clear_error_not_a_hang() {
    let timeout = Duration::from_secs(1);
    // Nothing listens.
    let refused = format!("http://127.0.0.1:{}", free_port());
    // Something accepts connections and never answers.
    let silent_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent = format!(
        "http://127.0.0.1:{}",
        silent_listener.local_addr().expect("addr").port()
    );
    for endpoint in [refused, silent] {
        let started = Instant::now();
        let e = match EtcdStore::connect(std::slice::from_ref(&endpoint), "/n", timeout) {
            Ok(_) => panic!("connected to {endpoint}"),
            Err(e) => e,
        };
        let took = started.elapsed();
        assert!(
            took < timeout + Duration::from_millis(1500),
            "took {took:?}"
        );
        let text = chain(&e);
        assert!(
            text.contains(&format!("etcd at {endpoint}: not reachable (")),
            "{text}"
        );
        assert!(text.contains("start etcd or fix [cluster] etcd"), "{text}");
    }
    let e = match EtcdStore::connect(&[], "/n", timeout) {
        Ok(_) => panic!("connected to no endpoint"),
        Err(e) => e,
    };
    assert!(chain(&e).contains("[cluster] etcd"), "{}", chain(&e));
}
