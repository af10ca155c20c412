//! Resumable sessions: the resume token a session hands its client, and the store its snapshot
//! lives in, so that a client whose connection is lost gets its session back — on this server
//! or, with a shared store and the fleet's secret, on any server of the fleet.
//!
//! **The token** is `v1.PAYLOAD.MAC`: PAYLOAD is base64url of `{"sid","gen","exp"}` (the
//! session id, the generation it may claim, expiry in Unix seconds), MAC an HMAC-SHA256 of
//! `v1.PAYLOAD` under a key derived from the fleet secret (or a random per-server key). It
//! carries no secret: it names a session and proves the server made it.
//!
//! **The store** maps a session id to `(generation, snapshot)`. Taking a session back is a
//! *claim*: it succeeds only if the stored generation is the token's, and moves it one on, in
//! one atomic step — so a token works once, two clients racing with one token get one session
//! between them, and the server that lost the session (if it still runs: a WebSocket cut by
//! the network) can no longer overwrite it: every save is conditional on the generation too.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine;
use redb::ReadableTable;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// How long a session may be resumed after its last save, by default.
pub const DEFAULT_RESUME_WINDOW: Duration = Duration::from_secs(120);
/// The most a snapshot may weigh in a store (two open turns and a reply at their bounds, and
/// the JSON around them).
pub const MAX_SNAPSHOT_BYTES: usize = 4 << 20;

type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// Where sessions' snapshots live (docs/DEPLOY.md, "Resumable sessions").
pub trait SessionStore: Send + Sync + 'static {
    /// Stores `snapshot` as generation `generation` of `session_id` for `ttl`, unless the
    /// session was claimed since (the stored generation is newer): then `Ok(false)`.
    fn save<'a>(
        &'a self,
        session_id: &'a str,
        generation: u64,
        snapshot: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, bool>;

    /// Takes `session_id` back with a token of `generation`: its snapshot, with the stored
    /// generation moved to `generation + 1`. `Ok(None)` if there is no such session, or its
    /// generation is not `generation` (the token was used already).
    fn claim<'a>(
        &'a self,
        session_id: &'a str,
        generation: u64,
    ) -> StoreFuture<'a, Option<Vec<u8>>>;

    /// What the store is, for logs (`memory`, `file:PATH`, `redis://ADDR`).
    fn describe(&self) -> String;

    /// A secret the store keeps for this server's resume tokens when no fleet secret is given,
    /// so that tokens still check after a restart (the embedded store's point). `None`: the
    /// server makes a random key of its own.
    fn token_secret(&self) -> Option<[u8; 32]> {
        None
    }
}

/// Opens the store `spec` names: `memory`, `file:PATH` (an embedded database, surviving a
/// restart of this server) or `redis://HOST:PORT[/DB]` (shared by a fleet).
pub fn open_store(spec: &str) -> anyhow::Result<Arc<dyn SessionStore>> {
    if spec == "memory" {
        return Ok(Arc::new(MemoryStore::default()));
    }
    if let Some(path) = spec.strip_prefix("file:") {
        return Ok(Arc::new(FileStore::open(Path::new(path))?));
    }
    if spec.starts_with("redis://") {
        return Ok(Arc::new(RedisStore::new(spec)?));
    }
    anyhow::bail!("session store \"{spec}\": use memory, file:PATH or redis://HOST:PORT")
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// ---- tokens ----

/// Mints and checks resume tokens.
pub struct ResumeKeys {
    key: hmac::Key,
}

impl std::fmt::Debug for ResumeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResumeKeys(<secret>)")
    }
}

#[derive(Serialize, Deserialize)]
struct TokenBody {
    sid: String,
    #[serde(rename = "gen")]
    generation: u64,
    exp: u64,
}

/// A checked resume token: the session and generation it may claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeClaim {
    /// The session.
    pub session_id: String,
    /// The generation the token claims.
    pub generation: u64,
}

/// Why a resume token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a voq resume token at all.
    #[error("the resume token is malformed")]
    Malformed,
    /// Its MAC does not check: forged, altered, or another fleet's.
    #[error("the resume token's signature does not check (another fleet's, or altered)")]
    BadSignature,
    /// Past its expiry.
    #[error("the resume token expired {0} s ago")]
    Expired(u64),
}

impl ResumeKeys {
    /// Keys from a secret the servers share (derived apart from its other uses).
    pub fn from_secret(secret: &[u8]) -> Self {
        let salt = hmac::Key::new(hmac::HMAC_SHA256, b"voq resume token v1");
        let derived = hmac::sign(&salt, secret);
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()),
        }
    }

    /// A random key of this server alone: its tokens resume only here (and, with a
    /// `file:` store, not after a restart).
    pub fn random() -> anyhow::Result<Self> {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .map_err(|_| anyhow::anyhow!("no randomness for the resume key"))?;
        Ok(Self { key })
    }

    /// A token for `session_id` at `generation`, valid until `expires` (Unix seconds).
    pub fn mint(&self, session_id: &str, generation: u64, expires: u64) -> String {
        let body = TokenBody {
            sid: session_id.into(),
            generation,
            exp: expires,
        };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = b64.encode(serde_json::to_vec(&body).unwrap_or_default());
        let signed = format!("v1.{payload}");
        let mac = hmac::sign(&self.key, signed.as_bytes());
        format!("{signed}.{}", b64.encode(mac.as_ref()))
    }

    /// Checks a token at `now` (Unix seconds).
    pub fn check(&self, token: &str, now: u64) -> Result<ResumeClaim, TokenError> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        if token.len() > 1024 {
            return Err(TokenError::Malformed);
        }
        let (signed, mac) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let payload = signed.strip_prefix("v1.").ok_or(TokenError::Malformed)?;
        let mac = b64.decode(mac).map_err(|_| TokenError::Malformed)?;
        hmac::verify(&self.key, signed.as_bytes(), &mac).map_err(|_| TokenError::BadSignature)?;
        let body = b64.decode(payload).map_err(|_| TokenError::Malformed)?;
        let body: TokenBody = serde_json::from_slice(&body).map_err(|_| TokenError::Malformed)?;
        if now > body.exp {
            return Err(TokenError::Expired(now - body.exp));
        }
        Ok(ResumeClaim {
            session_id: body.sid,
            generation: body.generation,
        })
    }
}

/// Everything a server needs to make sessions resumable.
pub struct Resumption {
    /// Token keys.
    pub keys: ResumeKeys,
    /// Where snapshots live.
    pub store: Arc<dyn SessionStore>,
    /// How long after its last save a session may be taken back.
    pub window: Duration,
}

impl std::fmt::Debug for Resumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resumption")
            .field("store", &self.store.describe())
            .field("window", &self.window)
            .finish()
    }
}

impl Resumption {
    /// A token for the session's `generation`, expiring with the resume window.
    pub fn token(&self, session_id: &str, generation: u64) -> String {
        self.keys
            .mint(session_id, generation, now_unix() + self.window.as_secs())
    }

    /// Checks `token` and claims its session: the snapshot and the new generation.
    pub async fn claim(&self, token: &str) -> Result<(u64, Vec<u8>), ResumeError> {
        let claim = self.keys.check(token, now_unix())?;
        match self.store.claim(&claim.session_id, claim.generation).await {
            Ok(Some(bytes)) => Ok((claim.generation + 1, bytes)),
            Ok(None) => Err(ResumeError::Gone(claim.session_id)),
            Err(e) => Err(ResumeError::Store(format!("{e:#}"))),
        }
    }
}

/// Why a session could not be taken back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// The token.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// The store holds no such session at the token's generation.
    #[error("session {0} cannot be resumed: it expired, or it was resumed already with this token")]
    Gone(String),
    /// The store failed or is slow.
    #[error("the session store is unavailable: {0}")]
    Store(String),
    /// The snapshot could not be used.
    #[error("the session's snapshot cannot be used: {0}")]
    Snapshot(String),
}

// ---- the stores ----

/// A store's `Debug` is what it is and where ([`SessionStore::describe`]).
macro_rules! debug_as_described {
    ($($store:ident),*) => {$(
        impl std::fmt::Debug for $store {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($store), self.describe())
            }
        }
    )*};
}
debug_as_described!(MemoryStore, FileStore, RedisStore);

/// Snapshots in this process's memory: for tests, and for a server that needs resumption
/// across connections but not across its own restarts.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<String, MemoryRecord>>,
}

/// Generation, snapshot, expiry (Unix ms).
type MemoryRecord = (u64, Vec<u8>, u64);

impl MemoryStore {
    fn prune(map: &mut HashMap<String, MemoryRecord>, now_ms: u64) {
        map.retain(|_, (_, _, expires)| *expires > now_ms);
    }
}

impl SessionStore for MemoryStore {
    fn save<'a>(
        &'a self,
        session_id: &'a str,
        generation: u64,
        snapshot: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let now = now_unix_ms();
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            Self::prune(&mut map, now);
            if map.get(session_id).is_some_and(|(g, ..)| *g != generation) {
                return Ok(false);
            }
            let expires = now + ttl.as_millis() as u64;
            map.insert(session_id.into(), (generation, snapshot.to_vec(), expires));
            Ok(true)
        })
    }

    fn claim<'a>(
        &'a self,
        session_id: &'a str,
        generation: u64,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            Self::prune(&mut map, now_unix_ms());
            match map.get_mut(session_id) {
                Some((g, bytes, _)) if *g == generation => {
                    *g += 1;
                    Ok(Some(bytes.clone()))
                }
                _ => Ok(None),
            }
        })
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}

/// Snapshots in an embedded database file (redb): they survive a restart (or a crash) of this
/// server. Writes are committed with redb's default durability (fsync'd).
pub struct FileStore {
    db: Arc<redb::Database>,
    path: PathBuf,
    secret: [u8; 32],
}

const SESSIONS: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("sessions");
/// The store's own settings: `resume_secret`, made at its creation.
const META: redb::TableDefinition<'_, &str, &[u8]> = redb::TableDefinition::new("meta");

impl FileStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let db = redb::Database::create(path)
            .with_context(|| format!("cannot open the session store {}", path.display()))?;
        let secret = Self::secret_of(&db)
            .with_context(|| format!("session store {}: its token secret", path.display()))?;
        Ok(Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
            secret,
        })
    }

    /// The database's resume-token secret, made (random) the first time.
    fn secret_of(db: &redb::Database) -> anyhow::Result<[u8; 32]> {
        use ring::rand::SecureRandom;
        let tx = db.begin_write()?;
        let secret = {
            let mut table = tx.open_table(META)?;
            let stored = table
                .get("resume_secret")?
                .and_then(|v| <[u8; 32]>::try_from(v.value()).ok());
            match stored {
                Some(s) => s,
                None => {
                    let mut s = [0u8; 32];
                    ring::rand::SystemRandom::new()
                        .fill(&mut s)
                        .map_err(|_| anyhow::anyhow!("no randomness for the token secret"))?;
                    table.insert("resume_secret", s.as_slice())?;
                    s
                }
            }
        };
        tx.commit()?;
        Ok(secret)
    }

    /// A record: generation (8 octets), expiry in Unix ms (8), snapshot.
    fn record(generation: u64, expires: u64, snapshot: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + snapshot.len());
        v.extend_from_slice(&generation.to_be_bytes());
        v.extend_from_slice(&expires.to_be_bytes());
        v.extend_from_slice(snapshot);
        v
    }

    fn parse(record: &[u8]) -> Option<(u64, u64, &[u8])> {
        let generation = u64::from_be_bytes(record.get(..8)?.try_into().ok()?);
        let expires = u64::from_be_bytes(record.get(8..16)?.try_into().ok()?);
        Some((generation, expires, &record[16..]))
    }

    fn save_now(
        db: &redb::Database,
        session_id: &str,
        generation: u64,
        snapshot: &[u8],
        ttl: Duration,
    ) -> anyhow::Result<bool> {
        let now = now_unix_ms();
        let tx = db.begin_write()?;
        let saved = {
            let mut table = tx.open_table(SESSIONS)?;
            let current = table
                .get(session_id)?
                .and_then(|v| Self::parse(v.value()).map(|(g, e, _)| (g, e)));
            match current {
                Some((g, expires)) if g != generation && expires > now => false,
                _ => {
                    let record = Self::record(generation, now + ttl.as_millis() as u64, snapshot);
                    table.insert(session_id, record.as_slice())?;
                    true
                }
            }
        };
        tx.commit()?;
        Ok(saved)
    }

    fn claim_now(
        db: &redb::Database,
        session_id: &str,
        generation: u64,
    ) -> anyhow::Result<Option<Vec<u8>>> {
        let now = now_unix_ms();
        let tx = db.begin_write()?;
        let taken = {
            let mut table = tx.open_table(SESSIONS)?;
            let record = table.get(session_id)?.map(|v| v.value().to_vec());
            match record.as_deref().and_then(Self::parse) {
                Some((g, expires, snapshot)) if g == generation && expires > now => {
                    let snapshot = snapshot.to_vec();
                    let record = Self::record(g + 1, expires, &snapshot);
                    table.insert(session_id, record.as_slice())?;
                    Some(snapshot)
                }
                Some((_, expires, _)) if expires <= now => {
                    table.remove(session_id)?;
                    None
                }
                _ => None,
            }
        };
        tx.commit()?;
        Ok(taken)
    }
}

impl SessionStore for FileStore {
    fn save<'a>(
        &'a self,
        session_id: &'a str,
        generation: u64,
        snapshot: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        let db = self.db.clone();
        let (id, bytes) = (session_id.to_string(), snapshot.to_vec());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::save_now(&db, &id, generation, &bytes, ttl))
                .await
                .context("the store's writer task failed")?
        })
    }

    fn claim<'a>(
        &'a self,
        session_id: &'a str,
        generation: u64,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        let db = self.db.clone();
        let id = session_id.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Self::claim_now(&db, &id, generation))
                .await
                .context("the store's writer task failed")?
        })
    }

    fn describe(&self) -> String {
        format!("file:{}", self.path.display())
    }

    fn token_secret(&self) -> Option<[u8; 32]> {
        Some(self.secret)
    }
}

/// Snapshots in Redis, shared by a fleet: a hash per session (`gen`, `snap`) with an expiry;
/// saves and claims are Lua scripts, so each is one atomic step on the Redis server.
pub struct RedisStore {
    addr: String,
    db: u32,
    /// One connection, reopened when it breaks. Redis answers in order, so a lock around a
    /// request and its answer is all the protocol needs.
    conn: tokio::sync::Mutex<Option<tokio::io::BufStream<tokio::net::TcpStream>>>,
}

/// How long one Redis request may take before the store counts as unavailable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

const SAVE_SCRIPT: &str = "local g = redis.call('HGET', KEYS[1], 'gen') \
    if g and tonumber(g) ~= tonumber(ARGV[1]) then return 0 end \
    redis.call('HSET', KEYS[1], 'gen', ARGV[1], 'snap', ARGV[2]) \
    redis.call('PEXPIRE', KEYS[1], ARGV[3]) return 1";

const CLAIM_SCRIPT: &str = "local g = redis.call('HGET', KEYS[1], 'gen') \
    if (not g) or tonumber(g) ~= tonumber(ARGV[1]) then return false end \
    redis.call('HSET', KEYS[1], 'gen', tonumber(ARGV[1]) + 1) \
    return redis.call('HGET', KEYS[1], 'snap')";

/// One RESP reply, as much of it as the store reads.
#[derive(Debug, PartialEq)]
enum Reply {
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Simple(String),
}

impl RedisStore {
    /// A store at `redis://HOST:PORT[/DB]` (connected on first use).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("redis://")
            .context("a Redis store's URL starts with redis://")?;
        let (addr, db) = match rest.split_once('/') {
            Some((a, d)) if !d.is_empty() => (
                a,
                d.parse()
                    .with_context(|| format!("Redis database \"{d}\" is not a number"))?,
            ),
            Some((a, _)) => (a, 0),
            None => (rest, 0),
        };
        anyhow::ensure!(
            addr.contains(':') && !addr.contains('@'),
            "Redis store \"{url}\": expected redis://HOST:PORT[/DB] (no credentials in the URL)"
        );
        Ok(Self {
            addr: addr.into(),
            db,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    async fn request(&self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        tokio::time::timeout(REDIS_TIMEOUT, self.request_inner(args))
            .await
            .with_context(|| {
                format!(
                    "Redis at {} did not answer within {REDIS_TIMEOUT:?}",
                    self.addr
                )
            })?
    }

    async fn request_inner(&self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        use tokio::io::AsyncWriteExt;
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let tcp = tokio::net::TcpStream::connect(&self.addr)
                .await
                .with_context(|| format!("cannot connect to Redis at {}", self.addr))?;
            tcp.set_nodelay(true)?;
            let mut conn = tokio::io::BufStream::new(tcp);
            if self.db != 0 {
                let db = self.db.to_string();
                write_command(&mut conn, &[b"SELECT", db.as_bytes()]).await?;
                conn.flush().await?;
                read_reply(&mut conn).await?;
            }
            *guard = Some(conn);
        }
        let Some(conn) = guard.as_mut() else {
            anyhow::bail!("no Redis connection");
        };
        let result = async {
            write_command(conn, args).await?;
            conn.flush().await?;
            read_reply(conn).await
        }
        .await;
        if result.is_err() {
            // A broken or desynchronised connection is never reused.
            *guard = None;
        }
        result
    }
}

async fn write_command<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    args: &[&[u8]],
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    w.write_all(&out).await?;
    Ok(())
}

async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> anyhow::Result<Reply> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).await?;
    anyhow::ensure!(line.ends_with(b"\r\n"), "Redis closed the connection");
    let text = String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned();
    match line[0] {
        b'+' => Ok(Reply::Simple(text)),
        b'-' => anyhow::bail!("Redis: {text}"),
        b':' => Ok(Reply::Int(text.parse().context("Redis integer")?)),
        b'$' => {
            let len: i64 = text.parse().context("Redis bulk length")?;
            if len < 0 {
                return Ok(Reply::Nil);
            }
            let len = len as usize;
            anyhow::ensure!(
                len <= MAX_SNAPSHOT_BYTES + 1024,
                "Redis value of {len} bytes"
            );
            let mut buf = vec![0; len + 2];
            r.read_exact(&mut buf).await?;
            buf.truncate(len);
            Ok(Reply::Bulk(buf))
        }
        b'_' => Ok(Reply::Nil),
        other => anyhow::bail!("unexpected Redis reply type {:?}", other as char),
    }
}

impl SessionStore for RedisStore {
    fn save<'a>(
        &'a self,
        session_id: &'a str,
        generation: u64,
        snapshot: &'a [u8],
        ttl: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = format!("voq:session:{session_id}");
            let generation = generation.to_string();
            let ttl = ttl.as_millis().max(1).to_string();
            let reply = self
                .request(&[
                    b"EVAL",
                    SAVE_SCRIPT.as_bytes(),
                    b"1",
                    key.as_bytes(),
                    generation.as_bytes(),
                    snapshot,
                    ttl.as_bytes(),
                ])
                .await?;
            Ok(reply == Reply::Int(1))
        })
    }

    fn claim<'a>(
        &'a self,
        session_id: &'a str,
        generation: u64,
    ) -> StoreFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            let key = format!("voq:session:{session_id}");
            let generation = generation.to_string();
            let reply = self
                .request(&[
                    b"EVAL",
                    CLAIM_SCRIPT.as_bytes(),
                    b"1",
                    key.as_bytes(),
                    generation.as_bytes(),
                ])
                .await?;
            match reply {
                Reply::Bulk(bytes) => Ok(Some(bytes)),
                Reply::Nil => Ok(None),
                other => anyhow::bail!("unexpected Redis answer to a claim: {other:?}"),
            }
        })
    }

    fn describe(&self) -> String {
        format!("redis://{}/{}", self.addr, self.db)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_check_and_refuse_forgery_expiry_and_damage() {
        let keys = ResumeKeys::from_secret(b"0123456789abcdef0123456789abcdef");
        let token = keys.mint("sess_7", 3, 1000);
        assert_eq!(
            keys.check(&token, 999),
            Ok(ResumeClaim {
                session_id: "sess_7".into(),
                generation: 3
            })
        );
        assert_eq!(keys.check(&token, 1005), Err(TokenError::Expired(5)));
        let other = ResumeKeys::from_secret(b"another fleet's secret, 32 bytes");
        assert_eq!(other.check(&token, 999), Err(TokenError::BadSignature));
        // Another session id under the same MAC.
        let (_, mac) = token.rsplit_once('.').unwrap();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let forged = format!(
            "v1.{}.{mac}",
            b64.encode(br#"{"sid":"sess_8","gen":3,"exp":1000}"#)
        );
        assert_eq!(keys.check(&forged, 999), Err(TokenError::BadSignature));
        for bad in ["", "v1", "v1..", "v2.a.b", "v1.a.!!", &"x".repeat(2000)] {
            assert!(keys.check(bad, 0).is_err(), "{bad}");
        }
    }

    async fn claims_once_and_saves_only_its_generation(store: &dyn SessionStore) {
        let ttl = Duration::from_secs(60);
        assert!(store.save("s1", 0, b"snap0", ttl).await.unwrap());
        assert!(store.save("s1", 0, b"snap1", ttl).await.unwrap());
        assert_eq!(
            store.claim("s1", 0).await.unwrap().as_deref(),
            Some(&b"snap1"[..])
        );
        // The token was used: a second claim with it (a race, a replay) gets nothing.
        assert_eq!(store.claim("s1", 0).await.unwrap(), None);
        // The server that lost the session cannot overwrite it any more.
        assert!(!store.save("s1", 0, b"stale", ttl).await.unwrap());
        assert!(store.save("s1", 1, b"snap2", ttl).await.unwrap());
        assert_eq!(
            store.claim("s1", 1).await.unwrap().as_deref(),
            Some(&b"snap2"[..])
        );
        assert_eq!(store.claim("nobody", 0).await.unwrap(), None);
        // Expiry: once the record is gone, a save of any generation starts it afresh.
        assert!(
            store
                .save("s2", 0, b"x", Duration::from_millis(1))
                .await
                .unwrap()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !store.save("s2", 5, b"y", ttl).await.unwrap() {
            assert!(
                std::time::Instant::now() < deadline,
                "the record never expired"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn memory_store_claims_once() {
        claims_once_and_saves_only_its_generation(&MemoryStore::default()).await;
    }

    #[tokio::test]
    async fn file_store_claims_once_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sessions.redb");
        {
            let store = FileStore::open(&path).unwrap();
            claims_once_and_saves_only_its_generation(&store).await;
            assert!(
                store
                    .save("kept", 4, b"after", Duration::from_secs(60))
                    .await
                    .unwrap()
            );
            assert!(store.token_secret().is_some());
        }
        let secret = FileStore::open(&path).unwrap().token_secret();
        let store = FileStore::open(&path).unwrap();
        assert_eq!(
            store.claim("kept", 4).await.unwrap().as_deref(),
            Some(&b"after"[..])
        );
        // Tokens made before a restart check after it: the secret lives in the store.
        assert_eq!(store.token_secret(), secret);
    }

    #[test]
    fn store_specs_are_checked() {
        assert!(open_store("memory").is_ok());
        assert!(open_store("redis://127.0.0.1:6379").is_ok());
        assert!(open_store("redis://user:pw@host:1").is_err());
        assert!(open_store("redis://host").is_err());
        assert!(open_store("postgres://x").is_err());
    }
}
