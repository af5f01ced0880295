//! The Postgres wire front end: accept → negotiate (SSL/GSS answered 'N',
//! cancels forwarded) → authenticate → wake → hand the client to the
//! pooler (or the admin console). One task per client; a failing or
//! hostile client ends its own task and nothing else.

pub mod limits;
pub mod tls;

use crate::admin;
use crate::auth::{self, scram::ScramVerifier, AuthError};
use crate::control::databases::Gateway;
use crate::error::ClientError;
use crate::pool;
use crate::relay::{self, Login};
use crate::wire::client_stream::ClientStream;
use crate::wire::messages::{send, send_fatal};
use crate::wire::startup::{self, FirstPacket, PROTOCOL_3_0};
use bytes::BytesMut;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// SSLRequest and GSSENCRequest may each precede the startup message once.
const NEGOTIATION_PACKETS_MAX: usize = 2;

/// Accepts clients until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let gateway = gateway.clone();
                tokio::spawn(async move {
                    let admitted = match gateway.limits.admit(peer.ip()) {
                        Ok(admitted) => admitted,
                        Err(e) => {
                            let mut stream = ClientStream::Plain(stream);
                            return send_fatal(&mut stream, &e).await;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    handle_client(ClientStream::Plain(stream), gateway).await;
                    drop(admitted);
                    tracing::trace!(%peer, "client gone");
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// What a client asked for, once authenticated.
enum Target {
    /// A database, through its pool.
    Database(Session),
    /// The admin console.
    Admin,
}

/// An authenticated database client.
struct Session {
    /// The compute: `database` or `database@branch`.
    database: String,
    /// The role (for a token login, the role it grants, never the token).
    user: String,
    lifecycle: std::sync::Arc<ogel_policies::Lifecycle>,
    params: Vec<(String, String)>,
    /// Served by the backend's read-only role.
    read_only: bool,
    /// Counts the client against its tenant's limit while it is connected.
    tenant_slot: crate::accept::limits::Admitted,
}

async fn handle_client(stream: ClientStream, gateway: Arc<Gateway>) {
    // Logging in is boxed: its state (SCRAM, startup packet) is freed once
    // done, so an idle client's task keeps only what the session needs.
    let Some((pool, login, tenant_slot)) = Box::pin(log_in(stream, &gateway)).await else {
        return;
    };
    relay::run(pool, login, &gateway.pools.clients).await;
    drop(tenant_slot);
}

/// Authenticates and wakes; `None` once the client was answered (an error,
/// a cancel, the admin console).
async fn log_in(
    mut stream: ClientStream,
    gateway: &Arc<Gateway>,
) -> Option<(Arc<pool::DbPool>, Login, crate::accept::limits::Admitted)> {
    let timeout = gateway.config.auth_timeout;
    let target = match tokio::time::timeout(timeout, startup(&mut stream, gateway)).await {
        Ok(Ok(Some(target))) => target,
        Ok(Ok(None)) => return None, // a cancel request: done
        Ok(Err(AuthError::Closed)) => return None,
        Ok(Err(AuthError::Client(e))) => {
            send_fatal(&mut stream, &e).await;
            return None;
        }
        Err(_) => {
            let e = ClientError::new("08P01", "authentication timed out")
                .hint(format!("log in within {timeout:?}"));
            send_fatal(&mut stream, &e).await;
            return None;
        }
    };
    let session = match target {
        Target::Admin => {
            admin::serve(stream, gateway).await;
            return None;
        }
        Target::Database(session) => session,
    };
    // Wakes the compute now, so a client learns at login if it cannot
    // start, and keeps it awake while the client is connected.
    let after_idle = session.lifecycle.stats(&session.database).active_clients == 0;
    gateway.predictor.arrived(&session.database, after_idle);
    let active = match session.lifecycle.connect(&session.database).await {
        Ok((_, active)) => active,
        Err(e) => {
            tracing::warn!(database = %session.database, error = %e, cause = ?e.source, "wake failed");
            send_fatal(&mut stream, &ClientError::from(&e)).await;
            return None;
        }
    };
    let pool = gateway
        .pools
        .get(&session.database, &session.lifecycle, session.read_only);
    let login = Login {
        stream,
        mode: gateway
            .pools
            .config()
            .mode(&session.database, &session.user),
        user: session.user,
        params: session.params,
        cancel: gateway.cancels.register(),
        active,
    };
    Some((pool, login, session.tenant_slot))
}

/// Reads the first packets and authenticates. `Ok(None)` for a cancel.
async fn startup(
    stream: &mut ClientStream,
    gateway: &Gateway,
) -> Result<Option<Target>, AuthError> {
    let max = gateway.config.startup_packet_max_bytes;
    let mut negotiations = 0;
    let (version, params) = loop {
        match startup::read_first_packet(stream, max).await? {
            FirstPacket::SslRequest if negotiations < NEGOTIATION_PACKETS_MAX => {
                negotiations += 1;
                match (
                    gateway.tls.acceptor(),
                    std::mem::replace(stream, ClientStream::Handshaking),
                ) {
                    (Some(acceptor), ClientStream::Plain(mut tcp)) => {
                        tcp.write_all(b"S").await.map_err(|_| AuthError::Closed)?;
                        let tls = acceptor.accept(tcp).await.map_err(|e| {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            AuthError::Closed
                        })?;
                        *stream = ClientStream::Tls(Box::new(tls));
                    }
                    (_, other) => {
                        *stream = other;
                        send(stream, b"N").await.map_err(|_| AuthError::Closed)?;
                    }
                }
            }
            FirstPacket::GssEncRequest if negotiations < NEGOTIATION_PACKETS_MAX => {
                negotiations += 1;
                send(stream, b"N").await.map_err(|_| AuthError::Closed)?;
            }
            FirstPacket::SslRequest | FirstPacket::GssEncRequest => {
                return Err(ClientError::protocol("too many encryption requests").into());
            }
            FirstPacket::CancelRequest { pid, secret } => {
                gateway.cancels.cancel(pid, secret).await;
                return Ok(None);
            }
            FirstPacket::Startup { version, params } => break (version, params),
        }
    };
    let unrecognized: Vec<&str> = params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| k.starts_with("_pq_."))
        .collect();
    if version != PROTOCOL_3_0 || !unrecognized.is_empty() {
        let mut out = BytesMut::new();
        // We speak 3.0 only. The field is the whole version number
        // (major << 16 | minor), as PostgreSQL sends it and libpq reads it.
        crate::wire::messages::negotiate_protocol_version(&mut out, PROTOCOL_3_0, &unrecognized);
        send(stream, &out).await.map_err(|_| AuthError::Closed)?;
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let user = param("user").filter(|u| !u.is_empty()).ok_or_else(|| {
        ClientError::new(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        )
    })?;
    let token_in_user = crate::auth::tokens::looks_like_jwt(&user);
    // Without a database name libpq sends the user name: for a token, the
    // token's own database is meant.
    let requested = param("database")
        .filter(|d| !(d.is_empty() || token_in_user && *d == user))
        .unwrap_or_else(|| {
            if token_in_user {
                String::new()
            } else {
                user.clone()
            }
        });
    // `shop@dev`, or `options=branch=dev` (Neon's style); both must agree.
    let (options, option_branch) = branch_option(param("options").as_deref());
    let (database, name_branch) = match requested.split_once('@') {
        Some((db, branch)) => (db.to_string(), Some(branch.to_string())),
        None => (requested.clone(), None),
    };
    let branch = match (name_branch, option_branch) {
        (Some(a), Some(b)) if a != b => {
            return Err(ClientError::new(
                "08P01",
                format!("the database name asks for branch \"{a}\" but options ask for \"{b}\""),
            )
            .into())
        }
        (a, b) => a.or(b),
    };
    // The TLS server name may name the database and branch too
    // (`shop--dev.<domain>`): all that is given must agree.
    let sni_route = stream
        .sni()
        .and_then(|sni| gateway.tls.route(sni))
        .map(|(d, b)| (d.to_string(), b.map(str::to_string)));
    let (database, asked_branch) = match (&sni_route, branch) {
        (Some((sni_db, _)), _) if !database.is_empty() && *sni_db != database => {
            return Err(ClientError::new(
                "08P01",
                format!("the TLS server name selects database \"{sni_db}\" but the startup packet asks for \"{database}\""),
            )
            .into())
        }
        (Some((_, Some(b))), Some(a)) if *b != a => {
            return Err(ClientError::new(
                "08P01",
                format!("the TLS server name selects branch \"{b}\" but the connection asks for \"{a}\""),
            )
            .into())
        }
        (Some((sni_db, sni_branch)), a) => (sni_db.clone(), a.or(sni_branch.clone())),
        (None, a) => (database, a),
    };
    let remote = stream.peer_addr().is_some_and(|a| !a.ip().is_loopback());
    if remote && !stream.is_tls() && gateway.tls.config.require_for_remote {
        return Err(
            ClientError::new("28000", "connections from other hosts must use TLS")
                .hint("connect with sslmode=require (or verify-full with the gateway's CA)")
                .into(),
        );
    }

    if param("replication").is_some_and(|r| !matches!(r.as_str(), "false" | "off" | "no" | "0")) {
        return Err(ClientError::new(
            "0A000",
            "replication connections are not supported by the gateway",
        )
        .into());
    }
    if admin::is_admin_database(&database) {
        // Only the admin user with the gateway's admin token: never a
        // database token, never a tenant's.
        let verifier = (user == admin::ADMIN_USER)
            .then(|| gateway.admin_verifier.clone())
            .flatten();
        checked_login(stream, gateway, &user, verifier).await?;
        return Ok(Some(Target::Admin));
    }

    // Who the client is: a token (in the user name, or in the password of
    // the reserved user `tokens.password_user`), or a role with SCRAM.
    let token_in_password = user == gateway.config.tokens.password_user;
    let (record, role, branch, read_only) = if token_in_user || token_in_password {
        let token = if token_in_user {
            user.clone()
        } else {
            if !stream.is_tls() && remote {
                return Err(ClientError::new(
                    "28000",
                    "a token in the password field needs TLS (or a loopback connection)",
                )
                .hint("connect with sslmode=require")
                .into());
            }
            auth::cleartext_password(stream).await?
        };
        let ip = stream.peer_addr().map(|a| a.ip());
        let grant = counted(ip, gateway, async {
            gateway
                .check_token(
                    &token,
                    (!database.is_empty()).then_some(database.as_str()),
                    asked_branch.as_deref(),
                )
                .map_err(AuthError::Client)
        })
        .await?;
        tracing::debug!(token = %grant.id, database = %grant.record.name, branch = %grant.branch, read_only = grant.read_only, "token login");
        (grant.record, grant.role, grant.branch, grant.read_only)
    } else {
        let branch = asked_branch.unwrap_or_else(|| "main".to_string());
        let Ok(record) = gateway.ready_database(&database) else {
            return Err(ClientError::unknown_database(&requested).into());
        };
        let verifier = gateway
            .catalog
            .role(&user)
            .map_err(|e| ClientError::catalog_unreadable(&e, "login"))?
            .filter(|role| role.databases.contains(&database))
            .and_then(|role| match ScramVerifier::parse(&role.verifier) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::error!(role = %role.name, error = %e, "stored verifier is invalid");
                    None
                }
            });
        checked_login(stream, gateway, &user, verifier).await?;
        (record, user, branch, false)
    };
    if !gateway
        .branch_exists(&record.name, &branch)
        .unwrap_or(false)
    {
        return Err(ClientError::new(
            "3D000",
            format!("database \"{}\" has no branch \"{branch}\"", record.name),
        )
        .hint(format!("see `ogel branch list {}`", record.name))
        .into());
    }
    let tenant_slot = gateway
        .limits
        .admit_tenant(&record.tenant, gateway.tenant_client_limit(&record.tenant))?;
    let lifecycle = gateway
        .lifecycle(&record)
        .map_err(|e| ClientError::new("57P03", e.to_string()))?;
    let mut params = params;
    params.retain(|(k, _)| k != "options");
    if let Some(options) = options {
        params.push(("options".to_string(), options));
    }
    Ok(Some(Target::Database(Session {
        database: crate::control::branches::compute_name(&record.name, &branch),
        user: role,
        lifecycle,
        params,
        read_only,
        tenant_slot,
    })))
}

/// Runs a login step, counting its failure (a wrong password or token)
/// against the client's address, and its success as clearing them.
async fn counted<T>(
    ip: Option<std::net::IpAddr>,
    gateway: &Gateway,
    step: impl std::future::Future<Output = Result<T, AuthError>>,
) -> Result<T, AuthError> {
    let result = step.await;
    if let Some(ip) = ip {
        match &result {
            Ok(_) => gateway.limits.auth_succeeded(ip),
            Err(AuthError::Client(e)) if matches!(e.code, "28P01" | "28000") => {
                gateway.limits.auth_failed(ip)
            }
            Err(_) => {}
        }
    }
    result
}

/// SCRAM, with failed logins counted against the client's address.
async fn checked_login(
    stream: &mut ClientStream,
    gateway: &Gateway,
    user: &str,
    verifier: Option<ScramVerifier>,
) -> Result<(), AuthError> {
    let ip = stream.peer_addr().map(|a| a.ip());
    counted(
        ip,
        gateway,
        auth::authenticate(stream, user, verifier, &gateway.mock_secret),
    )
    .await
}

/// Takes `branch=NAME` out of the `options` startup parameter: (the other
/// options, if any; the branch, if given).
fn branch_option(options: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(options) = options else {
        return (None, None);
    };
    let mut branch = None;
    let rest: Vec<&str> = options
        .split_whitespace()
        .filter(|w| match w.strip_prefix("branch=") {
            Some(b) => {
                branch = Some(b.to_string());
                false
            }
            None => true,
        })
        .collect();
    let rest = (!rest.is_empty()).then(|| rest.join(" "));
    (rest, branch)
}
