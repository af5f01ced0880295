//! The native backend's master key, one for the whole cluster.
//!
//! The native backend derives every compute password from one key
//! (`<data-dir>/native/secret`). A standby on another gateway logs in to
//! its primary, and after a takeover the new primary's gateway logs in to
//! roles created by the old one's: both work only if every gateway derives
//! the same passwords. So in a cluster the first gateway to start puts its
//! key in the catalog (`cluster/native_key`, created only if absent) and
//! every other one adopts it before its backend opens. A gateway whose own
//! key differs and which already holds databases is refused (their
//! passwords derive from its key); one without databases adopts the
//! cluster's and remakes its template. `ogel cluster import` proposes the
//! imported gateway's key. Anyone who reads the cluster's etcd can derive
//! compute passwords: etcd is as trusted as the gateways' disks.

use crate::catalog::Catalog;
use anyhow::{anyhow, bail, Context};
use rand::RngCore;
use std::path::Path;

/// The catalog key.
const KEY: &str = "native_key";

/// The key file of the native backend rooted at `root`, if any.
fn local(root: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    let path = root.join("secret");
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Puts `proposal` in the catalog unless a key is there; the key agreed.
fn agree(catalog: &Catalog, proposal: &[u8]) -> anyhow::Result<Vec<u8>> {
    let agreed: String = catalog.agree(KEY, &hex::encode(proposal)).map_err(|e| {
        anyhow!(
            "agreeing on the cluster's backend key: {}",
            crate::error::chain(&e)
        )
    })?;
    let key = hex::decode(agreed.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| anyhow!("the cluster's backend key in etcd (catalog/cluster/{KEY}) is not 32 hex-encoded bytes; restore it from a gateway's native/secret"))?;
    Ok(key)
}

/// Makes `<root>/secret` the cluster's key before the native backend opens.
pub fn share(catalog: &Catalog, root: &Path) -> anyhow::Result<()> {
    let mine = local(root)?;
    let proposal = mine.clone().unwrap_or_else(|| {
        let mut key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        key
    });
    let agreed = agree(catalog, &proposal)?;
    if mine.as_deref() == Some(agreed.as_slice()) {
        return Ok(());
    }
    let path = root.join("secret");
    if mine.is_some() {
        let has_databases = std::fs::read_dir(root.join("databases"))
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if has_databases {
            bail!(
                "this gateway's native backend key ({}) differs from the cluster's, and its databases' compute passwords derive from it; start it with an empty --data-dir, or make it the cluster's first gateway with `ogel cluster import`",
                path.display()
            );
        }
        // The template's superuser password derives from the old key.
        let template = root.join("template");
        if template.exists() {
            std::fs::remove_dir_all(&template)
                .with_context(|| format!("removing {} (it is made again)", template.display()))?;
        }
        eprintln!(
            "ogel: adopting the cluster's native backend key (this gateway holds no databases yet)"
        );
    }
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let _ = std::fs::remove_file(&path);
    ogel_plugin_sdk::files::write_private(&path, &agreed)
        .with_context(|| format!("writing {}", path.display()))
}

/// `ogel cluster import`: the imported gateway's key becomes the cluster's.
pub fn propose(catalog: &Catalog, root: &Path) -> anyhow::Result<()> {
    if let Some(mine) = local(root)? {
        let agreed = agree(catalog, &mine)?;
        if agreed != mine {
            bail!("the cluster already has another backend key; import into an empty prefix");
        }
    }
    Ok(())
}
