//! A real etcd cluster for tests: Debian's `etcd-server` (installed by
//! scripts/test; a clear panic saying so when it is not), each member on
//! free loopback ports with its data under a temp dir, small timeouts so
//! elections take well under a second. Members can be killed (SIGKILL) and
//! restarted on the same data; every member is killed when the cluster is
//! dropped, also when a test fails.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `etcd` binary: `$OGEL_TEST_ETCD`, else `/usr/bin/etcd`, else `etcd`
/// on PATH.
pub fn etcd_bin() -> PathBuf {
    if let Ok(bin) = std::env::var("OGEL_TEST_ETCD") {
        return PathBuf::from(bin);
    }
    let debian = PathBuf::from("/usr/bin/etcd");
    if debian.exists() {
        return debian;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("etcd"))
            .find(|p| p.exists())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "etcd is not installed: run scripts/test (it installs Debian's etcd-server), or `apt-get install etcd-server`"
        )
    })
}

/// A free loopback port below the kernel's ephemeral range: members start
/// one after another (and restart later) on ports fixed up front, and a
/// port from the ephemeral range may meanwhile become the source port of
/// some connection — the other members' own, to begin with.
fn member_port(taken: &mut BTreeSet<u16>) -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (from, to) = if low > 12000 {
        (10000, low)
    } else {
        (low / 2, low)
    };
    for _ in 0..1000 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = from + (random % u64::from(to - from)) as u16;
        if taken.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {from}..{to}");
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    /// Starts `members` members and waits until each can put and get.
    pub async fn start(members: usize) -> EtcdCluster {
        assert!(members > 0, "an etcd cluster needs a member");
        let bin = etcd_bin();
        let dir = tempfile::Builder::new()
            .prefix("ogel-e2e-etcd-")
            .tempdir_in("/tmp")
            .expect("etcd tempdir");
        let mut taken = BTreeSet::new();
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: member_port(&mut taken),
                peer_port: member_port(&mut taken),
                data_dir: dir.path().join(format!("m{i}")),
                log: dir.path().join(format!("m{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "ogel-e2e-{}",
            dir.path()
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        );
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token,
            _dir: dir,
        };
        assert!(bin.exists(), "{} is missing", bin.display());
        for i in 0..cluster.members.len() {
            cluster.spawn(i);
        }
        cluster.wait_healthy(Duration::from_secs(60)).await;
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster.clone();
        let token = self.token.clone();
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "member {i} is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("etcd log");
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let mut cmd = Command::new(etcd_bin());
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--quota-backend-bytes", &(64u64 << 20).to_string()])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("etcd log")))
            .stderr(Stdio::from(log));
        // Nothing from the environment may configure these members.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        // etcd 3.4 refuses to start on architectures other than amd64
        // without this (Debian ships it for arm64 and others too).
        match std::env::consts::ARCH {
            "x86_64" => {}
            "aarch64" => {
                cmd.env("ETCD_UNSUPPORTED_ARCH", "arm64");
            }
            other => {
                cmd.env("ETCD_UNSUPPORTED_ARCH", other);
            }
        }
        m.child = Some(cmd.spawn().expect("etcd starts"));
    }

    /// The environment of a gateway joining this cluster as `node` with
    /// lease TTL `lease_ttl` (`[cluster]` through `OGEL_CLUSTER__*`).
    pub fn gateway_env(&self, node: &str, lease_ttl: Duration) -> Vec<(String, String)> {
        let list = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            ("OGEL_CLUSTER__ETCD".into(), format!("[{list}]")),
            ("OGEL_CLUSTER__NODE_NAME".into(), node.into()),
            (
                "OGEL_CLUSTER__LEASE_TTL".into(),
                format!("{}ms", lease_ttl.as_millis()),
            ),
        ]
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// Member `i`'s client URL.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// What member `i` logged.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }

    /// Every member's log, for failure messages.
    pub fn logs(&self) -> String {
        (0..self.members.len())
            .map(|i| format!("--- {} ---\n{}", self.members[i].name, self.log(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data and waits until it listens (it
    /// serves requests only once the cluster has a quorum again).
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        let port = self.members[i].client_port;
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            self.check_running(i);
            assert!(
                Instant::now() < deadline,
                "etcd member {i} not listening on {port} after 30 s:\n{}",
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn check_running(&mut self, i: usize) {
        let exited = self.members[i]
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            self.members[i].child = None;
            panic!("etcd member {i} exited ({status}):\n{}", self.log(i));
        }
    }

    /// Waits until every running member can put and get through itself.
    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                continue;
            }
            let endpoint = self.endpoint(i);
            loop {
                self.check_running(i);
                let last =
                    match tokio::time::timeout(Duration::from_secs(2), put_get(&endpoint)).await {
                        Ok(Ok(())) => break,
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "no answer within 2 s".to_string(),
                    };
                assert!(
                    Instant::now() < deadline,
                    "etcd member {i} not healthy after {timeout:?} ({last}):\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// A plain client to every member.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect(self.endpoints(), None)
            .await
            .expect("etcd client")
    }

    /// The cluster's temp dir.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }
}

async fn put_get(endpoint: &str) -> Result<(), etcd_client::Error> {
    let mut client = etcd_client::Client::connect([endpoint], None).await?;
    client.put("ogel-e2e/health", "ok", None).await?;
    let resp = client.get("ogel-e2e/health", None).await?;
    match resp.kvs().first() {
        Some(kv) if kv.value() == b"ok" => Ok(()),
        _ => Err(etcd_client::Error::InvalidArgs(
            "the health key did not read back".into(),
        )),
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
