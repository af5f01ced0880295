//! `ogel tokens …`, `ogel keys …`, `ogel tenants …`, and `ogel db url
//! --token`: the CLI side of token URLs, signing keys and tenants.

use super::ApiClient;
use crate::api::access::{CreatedTenant, TenantInfo};
use crate::auth::tokens::KeyInfo;
use crate::catalog::TokenRecord;
use crate::control::access::IssuedToken;
use clap::Subcommand;
use reqwest::Method;

/// `ogel tokens …`.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Tokens issued for a database (ids, grants, expiry; never the tokens).
    List {
        /// Database.
        database: String,
    },
    /// Revoke a token by id: its next login fails.
    Revoke {
        /// Token id (`tok_…`, from `ogel tokens list`).
        id: String,
    },
}

/// `ogel keys …`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The token signing keys.
    List,
    /// Make a new key the signer; tokens signed by older keys keep working
    /// until those keys are removed.
    Rotate,
    /// Remove a retired key: every token it signed stops working.
    Remove {
        /// Key id (`ogel keys list`).
        kid: String,
    },
}

/// `ogel tenants …`.
#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// Make a tenant; prints its admin API token (shown only now). Use it
    /// as `--admin-token`/`OGEL_TOKEN`: it sees and manages only its databases.
    Create {
        /// Name: a-z, 0-9, _, -.
        name: String,
        /// Clients at once across its databases (default: limits.clients_per_tenant).
        #[arg(long)]
        max_clients: Option<u32>,
    },
    /// Tenants and the databases they own.
    List,
    /// Remove a tenant that owns no database.
    Delete {
        /// Tenant.
        name: String,
    },
}

fn when(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

/// `ogel db url NAME --token …`: prints the token URL.
pub(super) async fn mint(
    api: &ApiClient,
    database: &str,
    branch: Option<&str>,
    read_only: bool,
    ttl: Option<&str>,
) -> anyhow::Result<()> {
    let body = serde_json::json!({ "branch": branch, "read_only": read_only, "ttl": ttl });
    let issued: IssuedToken = api
        .call(
            Method::POST,
            &format!("/v1/databases/{database}/tokens"),
            Some(body),
        )
        .await?;
    let r = &issued.record;
    eprintln!(
        "token {} for {}@{}{}, expires {}; revoke with `ogel tokens revoke {}`",
        r.id,
        r.database,
        r.branch,
        if r.read_only { " (read-only)" } else { "" },
        when(r.expires_at_unix),
        r.id
    );
    println!("{}", issued.url);
    Ok(())
}

pub(super) async fn tokens(api: &ApiClient, command: &TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::List { database } => {
            let list: Vec<TokenRecord> = api
                .call(
                    Method::GET,
                    &format!("/v1/databases/{database}/tokens"),
                    None,
                )
                .await?;
            println!(
                "{:<22} {:<12} {:<9} {:<22} {:<22} KEY",
                "ID", "BRANCH", "ACCESS", "EXPIRES", "REVOKED"
            );
            for t in list {
                println!(
                    "{:<22} {:<12} {:<9} {:<22} {:<22} {}",
                    t.id,
                    t.branch,
                    if t.read_only { "read" } else { "write" },
                    when(t.expires_at_unix),
                    t.revoked_at_unix.map(when).unwrap_or_else(|| "-".into()),
                    t.kid
                );
            }
        }
        TokensCommand::Revoke { id } => {
            let t: TokenRecord = api
                .call(Method::POST, &format!("/v1/tokens/{id}/revoke"), None)
                .await?;
            println!("revoked {} ({}@{})", t.id, t.database, t.branch);
        }
    }
    Ok(())
}

pub(super) async fn keys(api: &ApiClient, command: &KeysCommand) -> anyhow::Result<()> {
    let keys: Vec<KeyInfo> = match command {
        KeysCommand::List => api.call(Method::GET, "/v1/keys", None).await?,
        KeysCommand::Rotate => api.call(Method::POST, "/v1/keys/rotate", None).await?,
        KeysCommand::Remove { kid } => {
            api.call(Method::DELETE, &format!("/v1/keys/{kid}"), None)
                .await?
        }
    };
    for k in keys {
        println!(
            "{} {} {}",
            k.kid,
            when(k.created_at_unix),
            if k.active { "signs" } else { "verifies" }
        );
    }
    Ok(())
}

pub(super) async fn tenants(api: &ApiClient, command: &TenantsCommand) -> anyhow::Result<()> {
    match command {
        TenantsCommand::Create { name, max_clients } => {
            let made: CreatedTenant = api
                .call(
                    Method::POST,
                    "/v1/tenants",
                    Some(serde_json::json!({ "name": name, "max_clients": max_clients })),
                )
                .await?;
            eprintln!(
                "created tenant \"{}\"; its admin token (shown only now) follows",
                made.tenant.name
            );
            println!("{}", made.token);
        }
        TenantsCommand::List => {
            let list: Vec<TenantInfo> = api.call(Method::GET, "/v1/tenants", None).await?;
            for t in list {
                println!(
                    "{} max_clients={} databases=[{}]",
                    t.name,
                    t.max_clients
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "default".into()),
                    t.databases.join(",")
                );
            }
        }
        TenantsCommand::Delete { name } => {
            let _: serde_json::Value = api
                .call(Method::DELETE, &format!("/v1/tenants/{name}"), None)
                .await?;
            println!("deleted tenant {name}");
        }
    }
    Ok(())
}
