//! Who may write: bearer tokens.
//!
//! Until the side store holds users and tokens, the accepted tokens are the admin token
//! of the data directory (`<data-dir>/admin.token`, created on first start) and any
//! configured with `--token`. Tokens are compared by their SHA-256 digests.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// File name of the admin token in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The accepted tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    digests: HashSet<[u8; 32]>,
}

impl Tokens {
    /// Accepts exactly `tokens`.
    pub fn new<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            digests: tokens
                .into_iter()
                .filter(|t| !t.is_empty())
                .map(digest)
                .collect(),
        }
    }

    /// May this token write data?
    pub fn allows_ingest(&self, token: &str) -> bool {
        !token.is_empty() && self.digests.contains(&digest(token))
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
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
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| std::io::Error::other("no randomness for the admin token"))?;
    let token = format!(
        "vgl_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    std::fs::create_dir_all(data_dir)?;
    crate::quic::write_private(&path, format!("{token}\n").as_bytes())?;
    Ok((token, true))
}
