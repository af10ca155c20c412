//! Session tickets kept in a file, so the next `voq call` (another process) resumes with 0-RTT:
//! its prompt leaves with the first flight.
//!
//! One line per ticket: `KEY \t BASE64`, where the key is the server name, the ALPN and the
//! trust policy the ticket was obtained under (a ticket is only offered under the same policy:
//! a session made while trusting one certificate must not resume while trusting another). At
//! most [`PER_KEY`] tickets per key; each is used once (TLS 1.3 tickets are single-use) and
//! removed from the file when taken. The file holds resumption secrets: it is written with mode
//! 0600, under the user's cache directory. Two `voq call`s at once may both rewrite it; the
//! last write wins (at worst a ticket is lost and that call does a full handshake).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use rustls::NamedGroup;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, ResolvesClientCert, Tls12ClientSessionValue,
    Tls13ClientSessionValue,
};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;

/// Tickets kept per server name, ALPN and trust policy.
pub const PER_KEY: usize = 4;
/// Lines the file may hold in all (older ones are dropped first).
pub const MAX_LINES: usize = 256;

/// The default ticket file: `$XDG_CACHE_HOME/voq/tickets`, else `~/.cache/voq/tickets`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("voq").join("tickets"))
}

/// A [`ClientSessionStore`] whose TLS 1.3 tickets live in a file (see the module docs).
pub struct FileSessionStore {
    path: PathBuf,
    /// ALPN and trust policy: the part of each line's key beyond the server name.
    scope: String,
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
    client_creds: Arc<dyn ResolvesClientCert>,
    /// Key-exchange hints (and TLS 1.2, which voq does not use) stay in memory.
    memory: ClientSessionMemoryCache,
    lock: Mutex<()>,
}

impl std::fmt::Debug for FileSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSessionStore")
            .field("path", &self.path)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl FileSessionStore {
    /// A store at `path` for tickets obtained with `alpn` under the trust policy `trust` (a
    /// stable description of it), decoding them for `verifier` and `client_creds`.
    pub fn new(
        path: PathBuf,
        alpn: &[u8],
        trust: &str,
        provider: Arc<CryptoProvider>,
        verifier: Arc<dyn ServerCertVerifier>,
        client_creds: Arc<dyn ResolvesClientCert>,
    ) -> Self {
        let scope = format!("{}|{trust}", String::from_utf8_lossy(alpn));
        Self {
            path,
            scope: scope.replace(['\t', '\n'], " "),
            provider,
            verifier,
            client_creds,
            memory: ClientSessionMemoryCache::new(32),
            lock: Mutex::new(()),
        }
    }

    fn key(&self, server_name: &ServerName<'_>) -> String {
        format!("{}|{}", server_name.to_str(), self.scope).replace(['\t', '\n'], " ")
    }

    /// The file's lines; a missing or unreadable file is an empty cache (a full handshake).
    fn read_lines(&self) -> Vec<(String, String)> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|line| line.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write_lines(&self, lines: &[(String, String)]) {
        if let Err(e) = write_private(&self.path, lines) {
            tracing::warn!(
                path = %self.path.display(),
                "cannot save session tickets (the next call will not resume): {e}"
            );
        }
    }
}

/// Writes the ticket file readable by its owner only, through a temporary file and a rename so
/// a reader never sees half of it.
fn write_private(path: &Path, lines: &[(String, String)]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    for (k, v) in lines {
        writeln!(file, "{k}\t{v}")?;
    }
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl ClientSessionStore for FileSessionStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.memory.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.memory.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.memory.set_tls12_session(server_name, value);
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.memory.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.memory.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let key = self.key(&server_name);
        let mut lines = self.read_lines();
        let encoded = base64::engine::general_purpose::STANDARD.encode(value.to_bytes());
        lines.push((key.clone(), encoded));
        // Keep the newest PER_KEY of this key and MAX_LINES in all.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut keep = vec![false; lines.len()];
        for (i, (k, _)) in lines.iter().enumerate().rev() {
            let n = seen.entry(k.as_str()).or_default();
            *n += 1;
            keep[i] = *n <= PER_KEY;
        }
        let mut kept: Vec<_> = lines
            .iter()
            .zip(keep)
            .filter(|(_, k)| *k)
            .map(|(l, _)| l.clone())
            .collect();
        if kept.len() > MAX_LINES {
            kept.drain(..kept.len() - MAX_LINES);
        }
        self.write_lines(&kept);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let key = self.key(server_name);
        let mut lines = self.read_lines();
        // The newest ticket first; ones that no longer decode are dropped on the way.
        let mut taken = None;
        while let Some(i) = lines.iter().rposition(|(k, _)| *k == key) {
            let (_, encoded) = lines.remove(i);
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .ok()
                .and_then(|bytes| {
                    Tls13ClientSessionValue::from_bytes(
                        &bytes,
                        &self.provider,
                        &self.verifier,
                        &self.client_creds,
                    )
                });
            if decoded.is_some() {
                taken = decoded;
                break;
            }
        }
        self.write_lines(&lines);
        taken
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_default_path_is_under_the_cache_directory() {
        if let Some(p) = default_path() {
            assert!(p.ends_with("voq/tickets"), "{}", p.display());
        }
    }

    #[test]
    fn a_garbled_file_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tickets");
        std::fs::write(&path, "no tabs here\nkey\tnot base64 !!\n\u{0}\t\n").unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = crate::tls::client_config(&crate::Trust::Insecure, b"voq/1").unwrap();
        let store = FileSessionStore::new(
            path.clone(),
            b"voq/1",
            "insecure",
            provider,
            crate::tls::verifier_of(&crate::Trust::Insecure).unwrap(),
            config.client_auth_cert_resolver.clone(),
        );
        let name = ServerName::try_from("key").unwrap();
        assert!(store.take_tls13_ticket(&name).is_none());
    }
}
