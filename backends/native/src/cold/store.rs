//! Where cold objects live: the [`ObjectStore`] trait and its two stores,
//! a local directory ([`LocalDir`]) and an S3-compatible bucket
//! ([`S3Store`], aws-sdk-s3 over rustls with ring).
//!
//! A `put` returns once the object is durable, never before: locally a
//! temp file is fsynced, renamed over the key and the directories fsynced;
//! on S3 PutObject carries our own SHA-256 of the body
//! (`x-amz-checksum-sha256`), so the server refuses a body that arrived cut
//! or changed, and a 200 means it is stored.
//!
//! Errors say whether trying again can help ([`StoreError::is_transient`]);
//! [`with_retry`] does the trying. The SDK's own retries are kept to one
//! so that the caller's deadline is what counts.
//!
//! Keys are `/`-separated relative paths (`shop/main/1a2b/wal/0000…03`).
//! Both stores refuse the same keys: empty, absolute, with an empty, `.`
//! or `..` component, or with a component starting with `.` (locally,
//! dot-names are the store's temp files).

use super::{ColdConfig, S3Config};
use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object is not there.
    #[error("object \"{key}\" is not in {store}")]
    NotFound { key: String, store: String },
    /// Worth retrying: 5xx, throttling, timeouts, dropped connections, a
    /// truncated or checksum-failed upload, local EIO/ENOSPC.
    #[error("{store}: {message}")]
    Unavailable { store: String, message: String },
    /// Not worth retrying: access denied, no such bucket, bad
    /// configuration.
    #[error("{store}: {message}")]
    Refused { store: String, message: String },
}

impl StoreError {
    /// Whether trying again later can help (`Unavailable`).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
}

#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// "local directory /path" or "s3://bucket/prefix at <endpoint>" — for
    /// messages.
    fn describe(&self) -> String;
    /// Stores `body` under `key`; returns only once the object is durable.
    /// Overwrites.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError>;
    /// The whole object, or `NotFound`.
    async fn get(&self, key: &str) -> Result<Bytes, StoreError>;
    /// Every object whose key starts with `prefix`, all pages, sorted by
    /// key.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;
    /// Deletes; a missing object is Ok.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// The configured store: S3 when `config.s3` is set, else a [`LocalDir`]
/// at `config.dir` or `default_dir`.
pub async fn open_store(
    config: &ColdConfig,
    default_dir: &Path,
) -> Result<Arc<dyn ObjectStore>, StoreError> {
    if let Some(s3) = &config.s3 {
        return Ok(Arc::new(S3Store::connect(s3).await?));
    }
    let dir = config
        .dir
        .clone()
        .unwrap_or_else(|| default_dir.to_path_buf());
    Ok(Arc::new(LocalDir::new(dir)?))
}

/// Runs `op` until it succeeds, fails with a non-transient error, or
/// `deadline` passes; exponential backoff 100 ms doubling to 5 s, with
/// jitter (each wait is drawn from [half, all] of the current backoff).
/// Logs each retry with `tracing::warn!`. An attempt under way when the
/// deadline passes is let finish; the last wait is cut so that one attempt
/// is made at the deadline. A final `Unavailable` says how long it was
/// tried.
pub async fn with_retry<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    let start = Instant::now();
    let mut backoff = FIRST;
    let mut attempt: u32 = 1;
    loop {
        let e = match op().await {
            Ok(value) => return Ok(value),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => e,
        };
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(match e {
                StoreError::Unavailable { store, message } => StoreError::Unavailable {
                    store,
                    message: format!(
                        "{message} (gave up trying to {what} after {attempt} attempts in {:.1} s)",
                        elapsed.as_secs_f64()
                    ),
                },
                other => other,
            });
        }
        let wait = jitter(backoff).min(deadline - elapsed);
        tracing::warn!(
            attempt,
            retry_in_ms = wait.as_millis() as u64,
            error = %e,
            "could not {what}; retrying"
        );
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX);
        attempt += 1;
    }
}

fn jitter(backoff: Duration) -> Duration {
    use rand::Rng;
    let full = backoff.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(full / 2..=full))
}

/// Why `key` is not one this tier uses, if it is not.
fn bad_key(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        return Some("it is empty");
    }
    if key.starts_with('/') {
        return Some("it is absolute (starts with /)");
    }
    key.split('/').find_map(bad_component)
}

fn bad_component(component: &str) -> Option<&'static str> {
    if component.is_empty() {
        Some("it has an empty component (// or a trailing /)")
    } else if component == "." || component == ".." {
        Some("it has a . or .. component")
    } else if component.starts_with('.') {
        Some("it has a component starting with . (reserved for temp files)")
    } else if component.contains('\0') {
        Some("it contains a NUL byte")
    } else {
        None
    }
}

fn check_key(store: &dyn ObjectStore, key: &str) -> Result<(), StoreError> {
    match bad_key(key) {
        None => Ok(()),
        Some(why) => Err(StoreError::Refused {
            store: store.describe(),
            message: format!("refused the object key {key:?}: {why}"),
        }),
    }
}

/// A list prefix: any string whose complete components (those before its
/// last `/`) would be valid in a key.
fn check_prefix(store: &dyn ObjectStore, prefix: &str) -> Result<(), StoreError> {
    let why = if prefix.starts_with('/') {
        Some("it is absolute (starts with /)")
    } else {
        match prefix.rsplit_once('/') {
            Some((dirs, _)) => dirs.split('/').find_map(bad_component),
            None => None,
        }
    };
    match why {
        None => Ok(()),
        Some(why) => Err(StoreError::Refused {
            store: store.describe(),
            message: format!("refused the list prefix {prefix:?}: {why}"),
        }),
    }
}

// ---------------------------------------------------------------------------
// Local directory

/// Objects as files under a directory: `<dir>/<key>`. Temp files are
/// `.tmp-<random>` beside their target and never listed.
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    /// Creates the directory (0700) if it is not there.
    pub fn new(dir: PathBuf) -> Result<Self, StoreError> {
        let store = |dir: &Path| format!("local directory {}", dir.display());
        if fs::symlink_metadata(&dir).is_ok_and(|m| !m.is_dir()) && !dir.is_dir() {
            return Err(StoreError::Refused {
                store: store(&dir),
                message: "it is not a directory".to_string(),
            });
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| local_error(store(&dir), "create the directory", e))?;
        // Best effort: the directory's own entry reaches the disk.
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = sync_dir(parent);
        }
        let meta =
            fs::metadata(&dir).map_err(|e| local_error(store(&dir), "look at the directory", e))?;
        if !meta.is_dir() {
            return Err(StoreError::Refused {
                store: store(&dir),
                message: "it is not a directory".to_string(),
            });
        }
        Ok(LocalDir { root: dir })
    }

    async fn blocking<T, F>(&self, what: String, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> io::Result<T> + Send + 'static,
    {
        let root = self.root.clone();
        match tokio::task::spawn_blocking(move || f(&root)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(local_error(self.describe(), &what, e)),
            Err(e) => Err(StoreError::Unavailable {
                store: self.describe(),
                message: format!("could not {what}: the I/O task failed: {e}"),
            }),
        }
    }
}

/// Local I/O errors: no permission, a read-only file system or a file
/// where a directory should be won't fix themselves; the rest (EIO,
/// ENOSPC, …) might.
fn local_error(store: String, what: &str, e: io::Error) -> StoreError {
    use nix::libc;
    let refused = matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::ENOTDIR | libc::EISDIR)
    );
    let message = format!("could not {what}: {e}");
    if refused {
        StoreError::Refused { store, message }
    } else {
        StoreError::Unavailable { store, message }
    }
}

/// "No such object" errors of a path lookup: nothing there, or a file or
/// directory where the key expects the other.
fn is_missing(e: &io::Error) -> bool {
    use nix::libc;
    e.kind() == io::ErrorKind::NotFound
        || matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::EISDIR))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn put_blocking(root: &Path, key: &str, body: &[u8]) -> io::Result<()> {
    let path = root.join(key);
    let relative_dir = Path::new(key).parent().unwrap_or(Path::new(""));
    // Make the missing directories (0700), then write the temp file.
    let mut dir = root.to_path_buf();
    for component in relative_dir.components() {
        dir.push(component);
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let tmp = dir.join(format!(".tmp-{:016x}", rand::random::<u64>()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(body)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename, and every directory made on the way (possibly by a
    // concurrent put that has not synced it yet), reach the disk: sync the
    // object's directory and each parent up to the root.
    let mut dir = dir.as_path();
    loop {
        sync_dir(dir)?;
        if dir == root {
            return Ok(());
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return Ok(()),
        }
    }
}

fn list_blocking(root: &Path, prefix: &str) -> io::Result<Vec<ObjectMeta>> {
    // Start at the deepest directory the prefix names completely.
    let start = match prefix.rsplit_once('/') {
        Some((dirs, _)) => dirs,
        None => "",
    };
    let mut out = Vec::new();
    walk(&root.join(start), start, prefix, &mut out)?;
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn walk(dir: &Path, relative: &str, prefix: &str, out: &mut Vec<ObjectMeta>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if is_missing(&e) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        // Not a key: temp files, and names that are not UTF-8.
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let key = if relative.is_empty() {
            name.to_string()
        } else {
            format!("{relative}/{name}")
        };
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if file_type.is_dir() {
            let as_dir = format!("{key}/");
            if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                walk(&entry.path(), &key, prefix, out)?;
            }
        } else if file_type.is_file() && key.starts_with(prefix) {
            match entry.metadata() {
                Ok(meta) => out.push(ObjectMeta {
                    key,
                    size: meta.len(),
                }),
                // Deleted while listing.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalDir {
    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        check_key(self, key)?;
        let owned = key.to_string();
        self.blocking(format!("store {key}"), move |root| {
            put_blocking(root, &owned, &body)
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        check_key(self, key)?;
        let owned = key.to_string();
        let read = self
            .blocking(format!("read {key}"), move |root| {
                match fs::read(root.join(&owned)) {
                    Ok(data) => Ok(Some(Bytes::from(data))),
                    Err(e) if is_missing(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        read.ok_or_else(|| StoreError::NotFound {
            key: key.to_string(),
            store: self.describe(),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        check_prefix(self, prefix)?;
        let owned = prefix.to_string();
        self.blocking(format!("list {prefix:?}"), move |root| {
            list_blocking(root, &owned)
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(self, key)?;
        let owned = key.to_string();
        self.blocking(format!("delete {key}"), move |root| {
            let path = root.join(&owned);
            match fs::remove_file(&path) {
                Ok(()) => match path.parent() {
                    Some(dir) => sync_dir(dir),
                    None => Ok(()),
                },
                Err(e) if is_missing(&e) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// S3

/// A bucket (and a key prefix in it) on AWS S3 or an S3-compatible server.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// "" or "prefix/": prepended to every key.
    prefix: String,
    /// "AWS S3 (us-east-1)" or the configured endpoint.
    endpoint: String,
}

/// Error codes meaning the credentials were not accepted or not allowed.
const ACCESS_CODES: &[&str] = &[
    "AccessDenied",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
    "NotSignedUp",
];

/// Error codes meaning the configuration (bucket, region, endpoint) is
/// wrong.
const CONFIG_CODES: &[&str] = &[
    "NoSuchBucket",
    "InvalidBucketName",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
    "InvalidBucketState",
    "InvalidObjectState",
];

impl S3Store {
    /// Builds the client and checks the bucket with HeadBucket: a missing
    /// bucket, or credentials that cannot reach it, is reported now, naming
    /// the bucket and endpoint and what to check.
    pub async fn connect(config: &S3Config) -> Result<Self, StoreError> {
        use aws_smithy_http_client::tls;
        let bucket = config.bucket.trim().to_string();
        let prefix = match config.prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        if bucket.is_empty() {
            return Err(StoreError::Refused {
                store: "S3".to_string(),
                message: "cold.s3.bucket is empty: name the bucket cold objects go to".to_string(),
            });
        }
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        // One SDK retry at most: `with_retry` and its deadline decide.
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http)
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &config.endpoint {
            loader = loader.endpoint_url(url);
        }
        let shared = loader.load().await;
        let region = shared
            .region()
            .map(|r| r.to_string())
            .unwrap_or_else(|| "us-east-1".to_string());
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .region(Region::new(region.clone()))
            .force_path_style(config.force_path_style.unwrap_or(config.endpoint.is_some()))
            // We send our own SHA-256 with every put; nothing else needs
            // the SDK's default CRC32 (nor the aws-chunked encoding it
            // brings, which some S3-compatible servers lack).
            .request_checksum_calculation(
                aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
            );
        let store = S3Store {
            client: aws_sdk_s3::Client::from_conf(s3.build()),
            bucket,
            prefix,
            endpoint: match &config.endpoint {
                Some(url) => url.clone(),
                None => format!("AWS S3 ({region})"),
            },
        };
        store.check_bucket(&region).await?;
        Ok(store)
    }

    async fn check_bucket(&self, region: &str) -> Result<(), StoreError> {
        let e = match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        let (bucket, endpoint) = (&self.bucket, &self.endpoint);
        let refused = |message: String| StoreError::Refused {
            store: self.describe(),
            message,
        };
        if let SdkError::ServiceError(s) = &e {
            let status = s.raw().status().as_u16();
            let code = s.err().code().unwrap_or("");
            match status {
                404 => {
                    return Err(refused(format!(
                        "bucket \"{bucket}\" does not exist at {endpoint}: check cold.s3.bucket, cold.s3.endpoint and cold.s3.region, or create the bucket"
                    )))
                }
                403 => {
                    return Err(refused(format!(
                        "{endpoint} denied access to bucket \"{bucket}\" (HTTP 403): check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the instance role) and that they are allowed s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on it"
                    )))
                }
                301 | 307 => {
                    let actual = s
                        .raw()
                        .headers()
                        .get("x-amz-bucket-region")
                        .unwrap_or("another region");
                    return Err(refused(format!(
                        "bucket \"{bucket}\" at {endpoint} is in {actual}, not {region}: set cold.s3.region"
                    )));
                }
                400 => {
                    return Err(refused(format!(
                        "{endpoint} refused a request for bucket \"{bucket}\" (HTTP 400 {code}): check cold.s3.bucket and cold.s3.region"
                    )))
                }
                _ => {}
            }
        }
        Err(self.error(&format!("check bucket \"{bucket}\""), "", e))
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Maps a failed call (`what`: "store shop/main/…") to a store error;
    /// `key` is the object's key for `NotFound`.
    fn error<E>(&self, what: &str, key: &str, e: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let store = self.describe();
        let endpoint = &self.endpoint;
        match &e {
            SdkError::ServiceError(s) => {
                let status = s.raw().status().as_u16();
                let code = s.err().code().unwrap_or("");
                let aws_message = s.err().message().unwrap_or("");
                if code == "NoSuchKey" || (status == 404 && code != "NoSuchBucket") {
                    StoreError::NotFound {
                        key: key.to_string(),
                        store,
                    }
                } else if status == 403 || ACCESS_CODES.contains(&code) {
                    // AWS's text is left out: auth errors may echo request
                    // details.
                    StoreError::Refused {
                        store,
                        message: format!(
                            "access denied when trying to {what} (HTTP {status} {code}): check the credentials and their rights on bucket \"{}\"",
                            self.bucket
                        ),
                    }
                } else if code == "NoSuchBucket" {
                    StoreError::Refused {
                        store,
                        message: format!(
                            "bucket \"{}\" does not exist at {endpoint} (when trying to {what}): check cold.s3.bucket",
                            self.bucket
                        ),
                    }
                } else if CONFIG_CODES.contains(&code) || status == 301 {
                    StoreError::Refused {
                        store,
                        message: format!(
                            "could not {what}: HTTP {status} {code}: {aws_message}; check cold.s3.bucket, cold.s3.region and cold.s3.endpoint"
                        ),
                    }
                } else {
                    // 5xx, throttling (503 SlowDown), and 4xx such as
                    // BadDigest, IncompleteBody or RequestTimeout: the
                    // request, not the configuration, failed.
                    let code = if code.is_empty() { "(no error code)" } else { code };
                    StoreError::Unavailable {
                        store,
                        message: format!("could not {what}: HTTP {status} {code} {aws_message}")
                            .trim_end()
                            .to_string(),
                    }
                }
            }
            SdkError::TimeoutError(_) => StoreError::Unavailable {
                store,
                message: format!(
                    "{endpoint} did not answer in time when trying to {what}; check the network path to it"
                ),
            },
            _ => {
                let detail = DisplayErrorContext(&e).to_string();
                let construction = matches!(e, SdkError::ConstructionFailure(_));
                if detail.contains("credential") || detail.contains("identity") {
                    StoreError::Refused {
                        store,
                        message: format!(
                            "no usable AWS credentials to {what}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role ({})",
                            first_cause(&detail)
                        ),
                    }
                } else if construction {
                    StoreError::Refused {
                        store,
                        message: format!("could not {what}: {}", first_cause(&detail)),
                    }
                } else {
                    StoreError::Unavailable {
                        store,
                        message: format!(
                            "could not reach {endpoint} to {what}: {}; check cold.s3.endpoint and the network path to it",
                            first_cause(&detail)
                        ),
                    }
                }
            }
        }
    }
}

/// The innermost cause of an SDK error, which is the useful part
/// ("Connection refused (os error 111)"): `DisplayErrorContext` renders
/// the chain as "a: b: c (DebugOfTheError…)"; the debug dump is dropped,
/// then the last link kept.
fn first_cause(detail: &str) -> &str {
    let mut chain = detail;
    let mut from = 0;
    while let Some(i) = detail[from..].find(" (") {
        let at = from + i;
        let rest = &detail[at + 2..];
        let ident_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let starts_upper = rest.starts_with(|c: char| c.is_ascii_uppercase());
        let after = &rest[ident_len..];
        if starts_upper && (after.starts_with('(') || after.starts_with(" {")) {
            chain = &detail[..at];
            break;
        }
        from = at + 2;
    }
    chain
        .rsplit(": ")
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(chain)
}

#[async_trait]
impl ObjectStore for S3Store {
    fn describe(&self) -> String {
        let prefix = self.prefix.trim_end_matches('/');
        if prefix.is_empty() {
            format!("s3://{} at {}", self.bucket, self.endpoint)
        } else {
            format!("s3://{}/{prefix} at {}", self.bucket, self.endpoint)
        }
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        check_key(self, key)?;
        let sha256 = aws_smithy_types::base64::encode(Sha256::digest(&body));
        let output = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Sha256)
            .checksum_sha256(&sha256)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.error(&format!("store {key}"), key, e))?;
        // A server that answers with a checksum must answer with ours.
        match output.checksum_sha256() {
            Some(theirs) if theirs != sha256 => Err(StoreError::Unavailable {
                store: self.describe(),
                message: format!(
                    "storing {key}: the server's SHA-256 of the body ({theirs}) is not ours ({sha256})"
                ),
            }),
            _ => Ok(()),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        check_key(self, key)?;
        let what = format!("read {key}");
        let output = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            // The server's stored checksum, checked by the SDK as the body
            // arrives.
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|e| self.error(&what, key, e))?;
        let expected = output.content_length();
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable {
                store: self.describe(),
                message: format!(
                    "could not {what}: the body did not arrive whole: {}",
                    first_cause(&DisplayErrorContext(&e).to_string())
                ),
            })?
            .into_bytes();
        if let Some(expected) = expected {
            if u64::try_from(expected).ok() != Some(body.len() as u64) {
                return Err(StoreError::Unavailable {
                    store: self.describe(),
                    message: format!(
                        "could not {what}: got {} of its {expected} bytes",
                        body.len()
                    ),
                });
            }
        }
        Ok(body)
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        check_prefix(self, prefix)?;
        let what = format!("list {prefix:?}");
        let full_prefix = self.full_key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .set_prefix((!full_prefix.is_empty()).then(|| full_prefix.clone()))
                .set_continuation_token(token.clone())
                .send()
                .await
                .map_err(|e| self.error(&what, prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                out.push(ObjectMeta {
                    key: key.to_string(),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                });
            }
            match (page.is_truncated(), page.next_continuation_token()) {
                (Some(true), Some(next)) if token.as_deref() != Some(next) => {
                    token = Some(next.to_string());
                }
                (Some(true), _) => {
                    return Err(StoreError::Unavailable {
                        store: self.describe(),
                        message: format!(
                            "could not {what}: the server said there was more but gave no new continuation token"
                        ),
                    })
                }
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        check_key(self, key)?;
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error(&format!("delete {key}"), key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalDir::new(dir.path().join("cold")).unwrap();
        (dir, store)
    }

    fn keys(list: &[ObjectMeta]) -> Vec<&str> {
        list.iter().map(|m| m.key.as_str()).collect()
    }

    #[tokio::test]
    async fn local_put_get_overwrite_delete() {
        let (_dir, store) = store();
        let key = "shop/main/1a2b/wal/000000010000000000000003";
        store.put(key, Bytes::from_static(b"first")).await.unwrap();
        assert_eq!(store.get(key).await.unwrap(), Bytes::from_static(b"first"));
        store
            .put(key, Bytes::from_static(b"second, longer"))
            .await
            .unwrap();
        assert_eq!(
            store.get(key).await.unwrap(),
            Bytes::from_static(b"second, longer")
        );
        store.put("empty", Bytes::new()).await.unwrap();
        assert_eq!(store.get("empty").await.unwrap(), Bytes::new());

        store.delete(key).await.unwrap();
        // Deleting again, or something never stored, is fine.
        store.delete(key).await.unwrap();
        store.delete("never/was").await.unwrap();
        match store.get(key).await {
            Err(StoreError::NotFound { key: k, store: s }) => {
                assert_eq!(k, key);
                assert!(s.starts_with("local directory "), "{s}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn local_not_found() {
        let (_dir, store) = store();
        store.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        for key in ["nothing", "a/c", "a", "a/b/c"] {
            let e = store.get(key).await.unwrap_err();
            assert!(matches!(e, StoreError::NotFound { .. }), "{key}: {e:?}");
            assert!(!e.is_transient());
            assert!(
                e.to_string()
                    .contains(&format!("\"{key}\" is not in local directory")),
                "{e}"
            );
        }
    }

    #[tokio::test]
    async fn local_list_prefix_sorted() {
        let (_dir, store) = store();
        let all = [
            "shop/main/wal/3",
            "shop/main/wal/1",
            "shop/main/wal/2",
            "shop/main/base/0001.tar",
            "shop/mainline/wal/1",
            "shopping/x",
            "other/y",
        ];
        for (i, key) in all.iter().enumerate() {
            store.put(key, Bytes::from(vec![0u8; i])).await.unwrap();
        }
        let list = store.list("").await.unwrap();
        let mut sorted = all.to_vec();
        sorted.sort();
        assert_eq!(keys(&list), sorted);
        assert_eq!(
            list.iter()
                .find(|m| m.key == "shop/main/base/0001.tar")
                .unwrap()
                .size,
            3
        );
        assert_eq!(
            keys(&store.list("shop/main/wal/").await.unwrap()),
            ["shop/main/wal/1", "shop/main/wal/2", "shop/main/wal/3"]
        );
        assert_eq!(
            keys(&store.list("shop/main").await.unwrap()),
            [
                "shop/main/base/0001.tar",
                "shop/main/wal/1",
                "shop/main/wal/2",
                "shop/main/wal/3",
                "shop/mainline/wal/1"
            ]
        );
        assert_eq!(keys(&store.list("shop").await.unwrap()).len(), 6);
        assert_eq!(
            keys(&store.list("shop/main/wal/2").await.unwrap()),
            ["shop/main/wal/2"]
        );
        assert!(store.list("nothing/here/").await.unwrap().is_empty());
        assert!(store.list("shop/main/wal/1/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn local_temp_files_are_not_listed() {
        let (dir, store) = store();
        store.put("a/b", Bytes::from_static(b"x")).await.unwrap();
        // What a put that crashed before its rename leaves behind.
        std::fs::write(dir.path().join("cold/a/.tmp-0123456789abcdef"), b"partial").unwrap();
        assert_eq!(keys(&store.list("").await.unwrap()), ["a/b"]);
        assert_eq!(keys(&store.list("a/").await.unwrap()), ["a/b"]);
    }

    #[tokio::test]
    async fn local_refuses_bad_keys() {
        let (dir, store) = store();
        for key in [
            "",
            "/etc/passwd",
            "../outside",
            "a/../../outside",
            "a/./b",
            "a//b",
            "a/b/",
            ".hidden",
            "a/.tmp-1234",
            "nul\0byte",
        ] {
            for result in [
                store.put(key, Bytes::from_static(b"x")).await.err(),
                store.get(key).await.err(),
                store.delete(key).await.err(),
            ] {
                match result {
                    Some(StoreError::Refused { message, .. }) => {
                        assert!(message.contains("refused the object key"), "{message}")
                    }
                    other => panic!("{key:?}: {other:?}"),
                }
            }
        }
        for prefix in ["/etc", "../", "a/../b/", "a//b"] {
            let e = store.list(prefix).await.unwrap_err();
            assert!(matches!(e, StoreError::Refused { .. }), "{prefix:?}: {e:?}");
        }
        // Nothing was written outside (or inside) the store.
        assert!(!dir.path().join("outside").exists());
        assert!(store.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn local_dir_is_private_and_files_too() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, store) = store();
        store.put("a/b/c", Bytes::from_static(b"x")).await.unwrap();
        for (path, mode) in [
            ("cold", 0o700),
            ("cold/a", 0o700),
            ("cold/a/b", 0o700),
            ("cold/a/b/c", 0o600),
        ] {
            let meta = std::fs::metadata(dir.path().join(path)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
        }
        assert_eq!(
            store.describe(),
            format!("local directory {}", dir.path().join("cold").display())
        );
        // A file where the directory should be.
        std::fs::write(dir.path().join("file"), b"").unwrap();
        assert!(matches!(
            LocalDir::new(dir.path().join("file")),
            Err(StoreError::Refused { .. })
        ));
    }

    #[tokio::test]
    async fn local_concurrent_puts() {
        let (_dir, store) = store();
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("db/{}/wal/{i:04}", i % 3);
                store.put(&key, Bytes::from(format!("body {i}"))).await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(store.list("db/").await.unwrap().len(), 40);
        assert_eq!(
            store.get("db/1/wal/0007").await.unwrap(),
            Bytes::from_static(b"body 7")
        );
    }

    #[tokio::test]
    async fn open_store_defaults_to_local() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&ColdConfig::default(), &dir.path().join("default"))
            .await
            .unwrap();
        assert!(
            store.describe().ends_with("/default"),
            "{}",
            store.describe()
        );
        let config = ColdConfig {
            dir: Some(dir.path().join("configured")),
            ..ColdConfig::default()
        };
        let store = open_store(&config, &dir.path().join("default"))
            .await
            .unwrap();
        store.put("k", Bytes::from_static(b"v")).await.unwrap();
        assert!(dir.path().join("configured/k").exists());
    }

    fn unavailable() -> StoreError {
        StoreError::Unavailable {
            store: "test".into(),
            message: "down".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_until_success() {
        let mut calls = 0;
        let start = tokio::time::Instant::now();
        let value = with_retry("test", Duration::from_secs(60), || {
            calls += 1;
            let n = calls;
            async move {
                if n < 4 {
                    Err(unavailable())
                } else {
                    Ok(n)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(value, 4);
        // Waits of 50–100, 100–200 and 200–400 ms.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(350), "{waited:?}");
        assert!(waited <= Duration::from_millis(700), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_a_permanent_error() {
        let mut calls = 0;
        let e = with_retry("test", Duration::from_secs(60), || {
            calls += 1;
            async {
                Err::<(), _>(StoreError::Refused {
                    store: "test".into(),
                    message: "no".into(),
                })
            }
        })
        .await
        .unwrap_err();
        assert!(matches!(e, StoreError::Refused { .. }));
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_at_the_deadline() {
        let mut calls = 0u32;
        let start = tokio::time::Instant::now();
        let e = with_retry("store x", Duration::from_secs(20), || {
            calls += 1;
            async { Err::<(), _>(unavailable()) }
        })
        .await
        .unwrap_err();
        let waited = start.elapsed();
        assert!(waited >= Duration::from_secs(20), "{waited:?}");
        assert!(waited < Duration::from_secs(21), "{waited:?}");
        // 100 ms doubling to 5 s caps: about 9 attempts in 20 s, not 200.
        assert!((6..=16).contains(&calls), "{calls}");
        assert!(e.is_transient());
        assert!(
            e.to_string().contains("gave up trying to store x after"),
            "{e}"
        );
    }

    #[test]
    fn first_cause_of_sdk_errors() {
        let dispatch = "dispatch failure: io error: client error (Connect): tcp connect error: Connection refused (os error 111) (DispatchFailure(DispatchFailure { source: ConnectorError { kind: Io } }))";
        assert_eq!(first_cause(dispatch), "Connection refused (os error 111)");
        let body = "streaming error: error reading a body from connection: end of file before message length reached (Error { kind: StreamingError(hyper::Error(Body)) })";
        assert_eq!(
            first_cause(body),
            "end of file before message length reached"
        );
        assert_eq!(first_cause("plain"), "plain");
        assert_eq!(first_cause("a: b"), "b");
    }

    #[test]
    fn keys_and_prefixes() {
        assert_eq!(bad_key("shop/main/1a2b/wal/000000010000000000000003"), None);
        assert_eq!(bad_key("a.b/c.d"), None);
        assert!(bad_key("a/b/").is_some());
        let (_dir, store) = store();
        for ok in ["", "shop", "shop/", "shop/ma", "shop/main/wal/"] {
            assert!(check_prefix(&store, ok).is_ok(), "{ok}");
        }
    }
}
