//! Generated secrets: the admin token and the JT/T 808 authentication key, from the operating
//! system's CSPRNG (a guessable token would open the admin API; a guessable key would let anyone
//! compute a terminal's authentication code).

use crate::config::Config;
use crate::store::Store;
use std::sync::Arc;

/// 32 hex characters (128 bits) from the OS's CSPRNG.
pub fn random_hex() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("the system's random source failed: {e}"))?;
    Ok(hex::encode(b))
}

/// The JT/T 808 key: configured, or generated once and kept in the store.
pub fn jt808_auth_key(cfg: &Config, store: &Store) -> Result<Arc<[u8]>, String> {
    if let Some(k) = &cfg.ingest.jt808_auth_key {
        return Ok(Arc::from(k.as_bytes()));
    }
    // Drawn every start, kept only the first time: simpler than a fallible init closure.
    let fresh = random_hex()?;
    let key = store
        .meta_or_init("jt808_auth_key", || fresh.into_bytes())
        .map_err(|e| e.to_string())?;
    Ok(Arc::from(key))
}

/// The admin token: configured, or generated once and kept in `<storage>/admin.token` (0600) so
/// that `lienwatch run` works with no config and the operator can read the token from a file.
pub fn admin_token(cfg: &Config) -> Result<String, String> {
    if let Some(t) = &cfg.admin.token {
        return Ok(t.trim().to_string());
    }
    if let Some(p) = &cfg.admin.token_file {
        return crate::config::read_secret(p);
    }
    let p = cfg.storage.path.join("admin.token");
    if let Ok(t) = crate::config::read_secret(&p) {
        return Ok(t);
    }
    let t = random_hex()?;
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        f.write_all(t.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    tracing::info!(file = %p.display(), "generated an admin API token");
    Ok(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_hex_is_128_bits_and_differs() {
        let a = super::random_hex().unwrap();
        let b = super::random_hex().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
