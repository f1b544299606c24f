//! Who may do what: every HTTP route and the QUIC handshake authenticate a token against
//! the side store's `api_tokens` and check its role against the route's [`Access`].
//!
//! Tokens come as `Authorization: Bearer <token>`; the InfluxDB-compatible write routes
//! also take `Authorization: Token <token>`, HTTP Basic (the token as password) and the v1
//! `p` query parameter. A route missing from the route table is refused (deny by default).
//! A refused mutation appends a `denied` audit row.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use vigil_relational::{Db, Error as StoreError, Outcome, Principal, Role};

use crate::error::ApiError;
use crate::http::AppState;
use crate::routes::{Access, route_spec};

/// File name of the admin token in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// How long a checked token is trusted without asking the side store again. Revoking a
/// token through this server takes effect at once; elsewhere (another server on the same
/// PostgreSQL) within this time.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(10);
const TOKEN_CACHE_MAX: usize = 10_000;

impl Access {
    /// The roles this access class admits.
    pub fn allows(self, role: Role) -> bool {
        use Role::*;
        match self {
            Access::Any => true,
            Access::Ingest => matches!(role, Admin | Agent),
            Access::Read => matches!(role, Admin | Analyst | Viewer | Auditor),
            Access::Triage => matches!(role, Admin | Analyst),
            Access::Audit => matches!(role, Admin | Auditor),
            Access::Admin => role == Admin,
        }
    }
}

/// Checks token secrets against the side store, remembering good ones for
/// [`TOKEN_CACHE_TTL`].
#[derive(Debug)]
pub struct Authenticator {
    db: Db,
    cache: Mutex<HashMap<String, (Principal, Instant)>>,
}

impl Authenticator {
    pub fn new(db: Db) -> Self {
        Self {
            db,
            cache: Mutex::default(),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The principal of a token secret; `Unauthenticated` when unknown, revoked or expired.
    pub async fn authenticate(&self, secret: &str) -> Result<Principal, StoreError> {
        if secret.is_empty() {
            return Err(StoreError::Unauthenticated);
        }
        let key = vigil_relational::token_digest(secret);
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .filter(|(_, at)| at.elapsed() < TOKEN_CACHE_TTL)
            .map(|(p, _)| p.clone());
        let principal = match cached {
            Some(p) => p,
            None => {
                let p = self.db.authenticate(secret).await?;
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                if cache.len() >= TOKEN_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, (p.clone(), Instant::now()));
                p
            }
        };
        if principal.expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(StoreError::Unauthenticated);
        }
        Ok(principal)
    }

    /// Forgets every remembered token (after a revocation).
    pub fn forget(&self) {
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// The token of a request: `Bearer` or `Token` authorization, Basic with the token as
/// password, or (Influx 1.x) the `p` query parameter.
fn token_of(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = value.trim().split_once(' ')?;
        let rest = rest.trim();
        return if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            Some(rest.to_string())
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64_decode(rest)?;
            let text = String::from_utf8(decoded).ok()?;
            text.split_once(':').map(|(_, p)| p.to_string())
        } else {
            None
        };
    }
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "p").then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 (with or without padding).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn unauthenticated(message: &str) -> Response {
    let mut resp =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"vigil\""),
    );
    resp
}

/// The middleware on every route: authenticates, checks the role against the route's
/// access class, records refused mutations, and hands the handler its [`Principal`].
pub(crate) async fn require(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let Some(path) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
    else {
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "no such route is open")
            .into_response();
    };
    let Some(spec) = route_spec(&method, &path) else {
        // A route without an entry in the route table: deny by default.
        tracing::error!(%method, %path, "route has no access rule; refused");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this route has no access rule",
        )
        .into_response();
    };
    let Some(secret) = token_of(req.headers(), req.uri().query()) else {
        return unauthenticated("this route needs a token: Authorization: Bearer <token>");
    };
    let mut principal = match state.auth.authenticate(&secret).await {
        Ok(p) => p,
        Err(StoreError::Unauthenticated) => {
            return unauthenticated("unknown, revoked or expired token");
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    principal.ip_address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    principal.user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    if !spec.access.allows(principal.role) {
        let message = format!(
            "role {} may not {method} {path} (needs {})",
            principal.role,
            spec.access.roles()
        );
        if method != Method::GET && method != Method::HEAD {
            let entry = principal.entry(
                &format!("{method} {path}"),
                "route",
                Some(req.uri().path().to_string()),
                Outcome::Denied,
                serde_json::json!({"role": principal.role, "needs": spec.access.roles()}),
            );
            if let Err(e) = state.auth.db().audit(&entry).await {
                tracing::error!(error = %e, "could not record a refused request in the audit log");
                return ApiError::from(e).into_response();
            }
        }
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response();
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Path of the admin token in a data directory.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// The data directory's admin token; created (mode 0600) on first start. The second
/// value is true when it was created now (the caller prints it once).
pub fn load_or_create_admin_token(data_dir: &Path) -> std::io::Result<(String, bool)> {
    let path = admin_token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_string(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = vigil_relational::new_token_secret();
    std::fs::create_dir_all(data_dir)?;
    crate::quic::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok((token, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_every_place_influx_clients_put_them() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(token_of(&h, None).as_deref(), Some("abc"));
        h.insert(header::AUTHORIZATION, "Token xyz".parse().unwrap());
        assert_eq!(token_of(&h, None).as_deref(), Some("xyz"));
        // "user:tok" in base64
        h.insert(header::AUTHORIZATION, "Basic dXNlcjp0b2s=".parse().unwrap());
        assert_eq!(token_of(&h, None).as_deref(), Some("tok"));
        h.insert(header::AUTHORIZATION, "Digest x".parse().unwrap());
        assert_eq!(token_of(&h, None), None);
        let none = HeaderMap::new();
        assert_eq!(
            token_of(&none, Some("db=x&u=me&p=s%2Fe+t")).as_deref(),
            Some("s/e t")
        );
        assert_eq!(token_of(&none, Some("db=x")), None);
        assert_eq!(token_of(&none, Some("p=%zz")).as_deref(), Some("%zz"));
    }
}
