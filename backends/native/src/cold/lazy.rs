//! The configured store, opened on first use: the native backend is made
//! outside any async context (and in tests, outside any runtime), and an
//! S3 bucket is only reached asynchronously. A failed open is not kept: the
//! next use tries again, so a store that was down at start-up is picked up
//! when it comes back.

use super::store::{open_store, ObjectMeta, ObjectStore, StoreError};
use super::ColdConfig;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::OnceCell;

/// An [`ObjectStore`] that opens the configured one on first use.
pub struct LazyStore {
    config: ColdConfig,
    default_dir: PathBuf,
    store: OnceCell<Arc<dyn ObjectStore>>,
}

impl LazyStore {
    pub fn new(config: ColdConfig, default_dir: PathBuf) -> Self {
        LazyStore {
            config,
            default_dir,
            store: OnceCell::new(),
        }
    }

    async fn opened(&self) -> Result<&Arc<dyn ObjectStore>, StoreError> {
        self.store
            .get_or_try_init(|| open_store(&self.config, &self.default_dir))
            .await
    }
}

#[async_trait::async_trait]
impl ObjectStore for LazyStore {
    fn describe(&self) -> String {
        match (&self.config.s3, &self.config.dir) {
            (Some(s3), _) => format!(
                "s3://{}{}{}",
                s3.bucket,
                match s3.prefix.trim_matches('/') {
                    "" => String::new(),
                    prefix => format!("/{prefix}"),
                },
                s3.endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            ),
            (None, Some(dir)) => format!("local directory {}", dir.display()),
            (None, None) => format!("local directory {}", self.default_dir.display()),
        }
    }
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<(), StoreError> {
        self.opened().await?.put(key, body).await
    }
    async fn get(&self, key: &str) -> Result<bytes::Bytes, StoreError> {
        self.opened().await?.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.opened().await?.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.opened().await?.delete(key).await
    }
}
