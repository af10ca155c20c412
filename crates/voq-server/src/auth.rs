//! Session tokens: signed JWTs that say who may open a session, with which agent, for how long
//! and how many at once (docs/DEPLOY.md, "Security model").
//!
//! The server verifies against a key set in a JWKS file (`--auth-keys`): `oct` keys for HS256
//! shared secrets, EC P-256 keys for ES256 public keys, each named by its `kid` so that keys can
//! be rotated: add the new key, mint with it, remove the old one once its tokens have expired.
//! The file is re-read when it changes (checked at most every [`RELOAD_CHECK`]); a file that no
//! longer parses leaves the keys as they were, with an error in the log and a metric.
//!
//! [`SigningKey`] and [`mint`] are the other side, for `voq token` and tests; an application's
//! backend would normally mint with its own JWT library (docs/DEPLOY.md shows the claims).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use voq_metrics::{Counter, LabelValue, LabelledCounter};

/// The audience a token must name unless the server is configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "voq";
/// How often the key file's modification time is looked at.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_S: u64 = 30;

/// What a token carries. `sub`, `exp` and `aud` are required; the `voq` object is optional and
/// each of its fields narrows what the token allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who the session is for (an application's user id): concurrency limits count per subject.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch. The session must *start* before it; the call may
    /// run on, up to `voq.max_duration_s`.
    pub exp: u64,
    /// The audience: which service the token is for (default `voq`).
    pub aud: String,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer, checked when the server is configured with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// voq's own limits.
    #[serde(default, skip_serializing_if = "VoqClaims::is_empty")]
    pub voq: VoqClaims,
}

/// The voq-specific claims, under `voq` in the token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoqClaims {
    /// The agent the session may use (the server's `--agent` spec, e.g. `echo`); absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The call is closed (`limit_exceeded`) this many seconds after it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_s: Option<u64>,
    /// At most this many sessions of this subject at once on this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
}

impl VoqClaims {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// What a verified token allows one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's subject.
    pub subject: String,
    /// The key that signed it.
    pub kid: Option<String>,
    /// The longest the call may last.
    pub max_duration: Option<Duration>,
    /// Concurrent sessions of this subject allowed.
    pub max_sessions: Option<u32>,
}

/// Why a session was refused. The `Display` text goes to the client (in the `error` event and
/// the close reason) and to the log: it names what is wrong, never the token or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error(
        "a session token is required (Authorization: Bearer, ?token=, or session.update voq.token)"
    )]
    Missing,
    /// Not a JWT, or its header or claims do not parse.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token names a key the server does not have.
    #[error("token signed with unknown key id {0:?}")]
    UnknownKey(Option<String>),
    /// The signature does not verify, or the algorithm does not match the key.
    #[error("token signature invalid")]
    BadSignature,
    /// Past `exp` (or before `nbf`).
    #[error("token expired or not yet valid")]
    Expired,
    /// `aud` is not this server's audience.
    #[error("token is for another audience")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("token from another issuer")]
    WrongIssuer,
    /// `voq.agent` names another agent.
    #[error("token does not allow agent {0:?}")]
    AgentNotAllowed(String),
    /// The subject already has `voq.max_sessions` sessions.
    #[error("subject already has {0} sessions (the token's max_sessions)")]
    TooManySessions(u32),
}

impl AuthError {
    /// The wire code the session is closed with.
    pub fn code(&self) -> voq_proto::Code {
        match self {
            Self::TooManySessions(_) => voq_proto::Code::LimitExceeded,
            _ => voq_proto::Code::Unauthorized,
        }
    }

    /// The label of `voq_auth_refused_total`.
    pub fn reason(&self) -> RefusalReason {
        match self {
            Self::Missing => RefusalReason::Missing,
            Self::Malformed(_) => RefusalReason::Malformed,
            Self::UnknownKey(_) => RefusalReason::UnknownKey,
            Self::BadSignature => RefusalReason::BadSignature,
            Self::Expired => RefusalReason::Expired,
            Self::WrongAudience | Self::WrongIssuer => RefusalReason::WrongAudience,
            Self::AgentNotAllowed(_) => RefusalReason::AgentNotAllowed,
            Self::TooManySessions(_) => RefusalReason::TooManySessions,
        }
    }
}

/// Why sessions were refused, as counted (`voq_auth_refused_total{reason=…}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    Missing,
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    WrongAudience,
    AgentNotAllowed,
    TooManySessions,
}

impl LabelValue for RefusalReason {
    const ALL: &'static [Self] = &[
        Self::Missing,
        Self::Malformed,
        Self::UnknownKey,
        Self::BadSignature,
        Self::Expired,
        Self::WrongAudience,
        Self::AgentNotAllowed,
        Self::TooManySessions,
    ];
    fn label_value(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::WrongAudience => "wrong_audience",
            Self::AgentNotAllowed => "agent_not_allowed",
            Self::TooManySessions => "too_many_sessions",
        }
    }
}

/// The counters of authentication.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Sessions admitted with a valid token.
    pub accepted: Counter,
    /// Sessions refused, by reason.
    pub refused: LabelledCounter<RefusalReason>,
    /// Key file reloads that failed (the previous keys stay in force).
    pub key_reload_failures: Counter,
}

/// One verification key and the one algorithm it may be used with (a key never verifies a
/// token of another algorithm: no HS256-with-a-public-key confusion).
struct Key {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// A parsed key set.
struct KeySet {
    by_kid: HashMap<Option<String>, Key>,
}

impl KeySet {
    fn parse(text: &str) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Jwks {
            keys: Vec<serde_json::Value>,
        }
        let jwks: Jwks =
            serde_json::from_str(text).context("not a JWKS document ({\"keys\": [...]})")?;
        let mut by_kid = HashMap::new();
        for (i, jwk) in jwks.keys.iter().enumerate() {
            let kid = jwk.get("kid").and_then(|k| k.as_str()).map(str::to_string);
            let field = |name: &str| {
                jwk.get(name)
                    .and_then(|v| v.as_str())
                    .with_context(|| format!("key {i} ({kid:?}): no \"{name}\""))
            };
            let alg = jwk.get("alg").and_then(|a| a.as_str());
            let key = match field("kty")? {
                "oct" => {
                    if alg.is_some_and(|a| a != "HS256") {
                        anyhow::bail!("key {i} ({kid:?}): oct keys are HS256 only, not {alg:?}");
                    }
                    let secret = B64
                        .decode(field("k")?)
                        .with_context(|| format!("key {i} ({kid:?}): \"k\" is not base64url"))?;
                    if secret.len() < 32 {
                        anyhow::bail!("key {i} ({kid:?}): an HS256 secret needs at least 32 bytes");
                    }
                    Key {
                        algorithm: Algorithm::HS256,
                        key: DecodingKey::from_secret(&secret),
                    }
                }
                "EC" => {
                    if field("crv")? != "P-256" || alg.is_some_and(|a| a != "ES256") {
                        anyhow::bail!("key {i} ({kid:?}): EC keys must be P-256 for ES256");
                    }
                    let key = DecodingKey::from_ec_components(field("x")?, field("y")?)
                        .with_context(|| format!("key {i} ({kid:?}): bad EC point"))?;
                    Key {
                        algorithm: Algorithm::ES256,
                        key,
                    }
                }
                other => {
                    anyhow::bail!("key {i} ({kid:?}): key type {other:?} not supported (oct, EC)")
                }
            };
            if by_kid.insert(kid.clone(), key).is_some() {
                anyhow::bail!("key id {kid:?} appears twice");
            }
        }
        if by_kid.is_empty() {
            anyhow::bail!("the key set has no keys");
        }
        Ok(Self { by_kid })
    }
}

/// Verifies tokens and keeps the per-subject session counts of one server.
pub struct Authenticator {
    path: PathBuf,
    audience: String,
    issuer: Option<String>,
    keys: Mutex<(KeySet, Option<SystemTime>)>,
    next_check: Mutex<Instant>,
    subjects: Arc<Mutex<HashMap<String, u32>>>,
    /// Counters, exported with the server's.
    pub stats: Arc<AuthStats>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("path", &self.path)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads the key set at `path` (a JWKS file). Tokens must name `audience` (and `issuer`, if
    /// given).
    pub fn load(path: &Path, audience: &str, issuer: Option<&str>) -> anyhow::Result<Self> {
        let (keys, mtime) = read_keys(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            audience: audience.to_string(),
            issuer: issuer.map(str::to_string),
            keys: Mutex::new((keys, mtime)),
            next_check: Mutex::new(Instant::now() + RELOAD_CHECK),
            subjects: Arc::default(),
            stats: Arc::default(),
        })
    }

    /// Checks a token at `now` and what it allows against this server's `agent`, and admits one
    /// session of its subject. Counted in [`AuthStats`] either way.
    pub fn admit(
        &self,
        token: Option<&str>,
        agent: &str,
        now: SystemTime,
    ) -> Result<(Grant, Admission), AuthError> {
        let result = token
            .ok_or(AuthError::Missing)
            .and_then(|t| self.verify(t, agent, now))
            .and_then(|grant| {
                let admission = self.take_slot(&grant)?;
                Ok((grant, admission))
            });
        match &result {
            Ok(_) => self.stats.accepted.inc(),
            Err(e) => self.stats.refused.get(e.reason()).inc(),
        }
        result
    }

    /// Checks a token at `now` and what it allows against this server's `agent`.
    pub fn verify(&self, token: &str, agent: &str, now: SystemTime) -> Result<Grant, AuthError> {
        self.reload_if_changed();
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let key = match &header.kid {
            Some(kid) => keys.0.by_kid.get(&Some(kid.clone())),
            // A token without a kid is accepted only when the choice is unambiguous.
            None if keys.0.by_kid.len() == 1 => keys.0.by_kid.values().next(),
            None => None,
        }
        .ok_or_else(|| AuthError::UnknownKey(header.kid.clone()))?;
        if header.alg != key.algorithm {
            return Err(AuthError::BadSignature);
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        // Expiry is checked below against the caller's clock (the library reads the system
        // clock itself, which tests cannot move).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature | K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                    AuthError::BadSignature
                }
                K::InvalidAudience => AuthError::WrongAudience,
                K::InvalidIssuer => AuthError::WrongIssuer,
                K::ExpiredSignature | K::ImmatureSignature => AuthError::Expired,
                _ => AuthError::Malformed(e.to_string()),
            }
        })?;
        drop(keys);
        let claims = data.claims;
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if claims.exp + LEEWAY_S <= now_s || claims.nbf.is_some_and(|nbf| nbf > now_s + LEEWAY_S) {
            return Err(AuthError::Expired);
        }
        if let Some(allowed) = &claims.voq.agent
            && allowed != agent
        {
            return Err(AuthError::AgentNotAllowed(agent.to_string()));
        }
        Ok(Grant {
            subject: claims.sub,
            kid: header.kid,
            max_duration: claims.voq.max_duration_s.map(Duration::from_secs),
            max_sessions: claims.voq.max_sessions,
        })
    }

    fn take_slot(&self, grant: &Grant) -> Result<Admission, AuthError> {
        let mut subjects = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        let count = subjects.entry(grant.subject.clone()).or_insert(0);
        if let Some(max) = grant.max_sessions
            && *count >= max
        {
            return Err(AuthError::TooManySessions(max));
        }
        *count += 1;
        Ok(Admission {
            subjects: self.subjects.clone(),
            subject: grant.subject.clone(),
        })
    }

    /// Sessions of `subject` admitted and not yet ended.
    pub fn sessions_of(&self, subject: &str) -> u32 {
        let subjects = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        subjects.get(subject).copied().unwrap_or(0)
    }

    fn reload_if_changed(&self) {
        {
            let mut next = self.next_check.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if now < *next {
                return;
            }
            *next = now + RELOAD_CHECK;
        }
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if mtime.is_some() && mtime == keys.1 {
            return;
        }
        match read_keys(&self.path) {
            Ok(fresh) => {
                tracing::info!(path = %self.path.display(), keys = fresh.0.by_kid.len(), "token keys reloaded");
                *keys = fresh;
            }
            Err(e) => {
                self.stats.key_reload_failures.inc();
                // Keep the keys in force, and do not re-read a broken file until it changes.
                keys.1 = mtime;
                tracing::error!(path = %self.path.display(), "token keys not reloaded, the previous keys stay in force: {e:#}");
            }
        }
    }
}

/// Parses a JWKS text as `--auth-keys` would: the number of keys, or why it is refused.
pub fn parse_key_set(text: &str) -> anyhow::Result<usize> {
    Ok(KeySet::parse(text)?.by_kid.len())
}

fn read_keys(path: &Path) -> anyhow::Result<(KeySet, Option<SystemTime>)> {
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read token keys {}", path.display()))?;
    let keys = KeySet::parse(&text).with_context(|| format!("token keys {}", path.display()))?;
    Ok((keys, mtime))
}

/// One admitted session of a subject; dropping it ends the session's count.
#[derive(Debug)]
pub struct Admission {
    subjects: Arc<Mutex<HashMap<String, u32>>>,
    subject: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut subjects = self.subjects.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = subjects.get_mut(&self.subject) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                subjects.remove(&self.subject);
            }
        }
    }
}

// ---- minting: `voq token` and tests ----

/// A private key that signs tokens, in voq's signing-key file format:
/// `{"kid": "...", "alg": "HS256", "k": "<base64url secret>"}` or
/// `{"kid": "...", "alg": "ES256", "pkcs8": "<base64url PKCS#8 DER>"}`.
#[derive(Clone, Serialize, Deserialize)]
pub struct SigningKey {
    /// The key id, copied into each token's header.
    pub kid: String,
    /// `HS256` or `ES256`.
    pub alg: String,
    /// HS256: the shared secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<String>,
    /// ES256: the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs8: Option<String>,
    /// The public half as a JWK (ES256) or the secret as an `oct` JWK (HS256): what goes into
    /// the server's key set.
    pub jwk: serde_json::Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key: `HS256` (a 32-byte secret) or `ES256` (a P-256 key pair).
    pub fn generate(alg: &str, kid: &str) -> anyhow::Result<Self> {
        match alg.to_ascii_uppercase().as_str() {
            "HS256" => {
                let secret = B64.encode(crate::random_seed()?);
                Ok(Self {
                    kid: kid.into(),
                    alg: "HS256".into(),
                    k: Some(secret.clone()),
                    pkcs8: None,
                    jwk: serde_json::json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": secret}),
                })
            }
            "ES256" => {
                let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                // Uncompressed point: 0x04 ‖ x (32 bytes) ‖ y (32 bytes).
                let point = pair.public_key_raw();
                anyhow::ensure!(point.len() == 65 && point[0] == 4, "unexpected P-256 point");
                Ok(Self {
                    kid: kid.into(),
                    alg: "ES256".into(),
                    k: None,
                    pkcs8: Some(B64.encode(pair.serialize_der())),
                    jwk: serde_json::json!({
                        "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                        "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..]),
                    }),
                })
            }
            other => anyhow::bail!("unsupported algorithm {other:?} (HS256 or ES256)"),
        }
    }

    /// Reads a signing-key file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read signing key {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("signing key {}: not voq's signing-key JSON", path.display()))
    }

    fn encoding_key(&self) -> anyhow::Result<(Algorithm, EncodingKey)> {
        match (self.alg.as_str(), &self.k, &self.pkcs8) {
            ("HS256", Some(k), _) => Ok((
                Algorithm::HS256,
                EncodingKey::from_secret(&B64.decode(k).context("k is not base64url")?),
            )),
            ("ES256", _, Some(der)) => Ok((
                Algorithm::ES256,
                EncodingKey::from_ec_der(&B64.decode(der).context("pkcs8 is not base64url")?),
            )),
            (alg, ..) => {
                anyhow::bail!("signing key {:?}: {alg} without its key material", self.kid)
            }
        }
    }

    /// Signs `claims`.
    pub fn mint(&self, claims: &Claims) -> anyhow::Result<String> {
        let (algorithm, key) = self.encoding_key()?;
        let mut header = Header::new(algorithm);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &key)?)
    }
}

/// Adds `key`'s JWK to the key set at `path` (created if absent), replacing a key of the same
/// kid: how keys are rotated in.
pub fn add_to_key_set(path: &Path, key: &SigningKey) -> anyhow::Result<()> {
    let mut set: serde_json::Value = match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JWKS document", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => serde_json::json!({"keys": []}),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let keys = set
        .get_mut("keys")
        .and_then(|k| k.as_array_mut())
        .with_context(|| format!("{} has no \"keys\" array", path.display()))?;
    keys.retain(|k| k.get("kid").and_then(|v| v.as_str()) != Some(key.kid.as_str()));
    keys.push(key.jwk.clone());
    // Validate what we are about to write.
    KeySet::parse(&set.to_string())?;
    write_private(path, &serde_json::to_string_pretty(&set)?)
}

/// Writes a file readable by its owner only (keys and secrets).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    Ok(())
}

/// Claims for a token of `subject` valid for `ttl` from `now`.
pub fn claims(subject: &str, audience: &str, now: SystemTime, ttl: Duration) -> Claims {
    let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    Claims {
        sub: subject.into(),
        exp: iat + ttl.as_secs(),
        aud: audience.into(),
        iat: Some(iat),
        nbf: None,
        iss: None,
        voq: VoqClaims::default(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn setup(alg: &str) -> (tempfile::TempDir, SigningKey, Authenticator) {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate(alg, "k1").unwrap();
        let jwks = dir.path().join("jwks.json");
        add_to_key_set(&jwks, &key).unwrap();
        let auth = Authenticator::load(&jwks, DEFAULT_AUDIENCE, None).unwrap();
        (dir, key, auth)
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn both_algorithms_verify_their_own_tokens() {
        for alg in ["HS256", "ES256"] {
            let (_dir, key, auth) = setup(alg);
            let mut claims = claims("alice", "voq", now(), Duration::from_secs(60));
            claims.voq.max_duration_s = Some(90);
            let token = key.mint(&claims).unwrap();
            let grant = auth.verify(&token, "echo", now()).unwrap();
            assert_eq!(grant.subject, "alice", "{alg}");
            assert_eq!(grant.kid.as_deref(), Some("k1"));
            assert_eq!(grant.max_duration, Some(Duration::from_secs(90)));
        }
    }

    #[test]
    fn every_refusal_names_its_reason() {
        let (_dir, key, auth) = setup("ES256");
        let base = claims("alice", "voq", now(), Duration::from_secs(60));
        let mint = |c: &Claims| key.mint(c).unwrap();
        let later = now() + Duration::from_secs(60 + LEEWAY_S + 1);
        assert_eq!(
            auth.verify(&mint(&base), "echo", later),
            Err(AuthError::Expired)
        );
        let mut other = base.clone();
        other.aud = "billing".into();
        assert_eq!(
            auth.verify(&mint(&other), "echo", now()),
            Err(AuthError::WrongAudience)
        );
        let mut agent = base.clone();
        agent.voq.agent = Some("tone".into());
        assert_eq!(
            auth.verify(&mint(&agent), "echo", now()),
            Err(AuthError::AgentNotAllowed("echo".into()))
        );
        assert!(auth.verify(&mint(&agent), "tone", now()).is_ok());
        assert!(matches!(
            auth.verify("not a jwt", "echo", now()),
            Err(AuthError::Malformed(_))
        ));
        // A token from a key the server does not have.
        let stranger = SigningKey::generate("ES256", "k1").unwrap();
        assert_eq!(
            auth.verify(&stranger.mint(&base).unwrap(), "echo", now()),
            Err(AuthError::BadSignature)
        );
        let unknown = SigningKey::generate("ES256", "k9").unwrap();
        assert_eq!(
            auth.verify(&unknown.mint(&base).unwrap(), "echo", now()),
            Err(AuthError::UnknownKey(Some("k9".into())))
        );
        // A tampered payload.
        let token = mint(&base);
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut claims: Claims = serde_json::from_slice(&B64.decode(&parts[1]).unwrap()).unwrap();
        claims.sub = "mallory".into();
        parts[1] = B64.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            auth.verify(&parts.join("."), "echo", now()),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn an_hs256_token_never_verifies_against_a_public_key() {
        // The classic confusion: sign HS256 with the ES256 public key's bytes as the secret.
        let (_dir, key, auth) = setup("ES256");
        let forged = SigningKey {
            kid: "k1".into(),
            alg: "HS256".into(),
            k: Some(B64.encode(key.jwk.to_string())),
            pkcs8: None,
            jwk: serde_json::Value::Null,
        };
        let token = forged
            .mint(&claims("alice", "voq", now(), Duration::from_secs(60)))
            .unwrap();
        assert_eq!(
            auth.verify(&token, "echo", now()),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn sessions_per_subject_are_capped_and_released() {
        let (_dir, key, auth) = setup("HS256");
        let mut c = claims("bob", "voq", SystemTime::now(), Duration::from_secs(60));
        c.voq.max_sessions = Some(2);
        let token = key.mint(&c).unwrap();
        let first = auth.admit(Some(&token), "echo", SystemTime::now()).unwrap();
        let second = auth.admit(Some(&token), "echo", SystemTime::now()).unwrap();
        assert_eq!(
            auth.admit(Some(&token), "echo", SystemTime::now())
                .unwrap_err(),
            AuthError::TooManySessions(2)
        );
        assert_eq!(auth.sessions_of("bob"), 2);
        drop(first);
        assert_eq!(auth.sessions_of("bob"), 1);
        assert!(auth.admit(Some(&token), "echo", SystemTime::now()).is_ok());
        drop(second);
        assert_eq!(
            auth.admit(None, "echo", SystemTime::now()).unwrap_err(),
            AuthError::Missing
        );
        assert_eq!(
            auth.stats.refused.get(RefusalReason::TooManySessions).get(),
            1
        );
        assert_eq!(auth.stats.refused.get(RefusalReason::Missing).get(), 1);
        assert_eq!(auth.stats.accepted.get(), 3);
    }

    #[test]
    fn a_rotated_key_set_is_picked_up_and_a_broken_one_is_not() {
        let (dir, old, auth) = setup("ES256");
        let jwks = dir.path().join("jwks.json");
        let c = claims("carol", "voq", now(), Duration::from_secs(60));
        let new = SigningKey::generate("HS256", "k2").unwrap();
        add_to_key_set(&jwks, &new).unwrap();
        // Force the next verify to look at the file.
        *auth.next_check.lock().unwrap() = Instant::now();
        auth.keys.lock().unwrap().1 = None;
        assert!(auth.verify(&new.mint(&c).unwrap(), "echo", now()).is_ok());
        assert!(auth.verify(&old.mint(&c).unwrap(), "echo", now()).is_ok());
        std::fs::write(&jwks, "{not json").unwrap();
        *auth.next_check.lock().unwrap() = Instant::now();
        auth.keys.lock().unwrap().1 = None;
        assert!(auth.verify(&new.mint(&c).unwrap(), "echo", now()).is_ok());
        assert_eq!(auth.stats.key_reload_failures.get(), 1);
    }

    #[test]
    fn bad_key_sets_are_refused_with_a_reason() {
        for (text, says) in [
            ("{}", "JWKS"),
            (r#"{"keys": []}"#, "no keys"),
            (r#"{"keys": [{"kty": "RSA", "kid": "r"}]}"#, "not supported"),
            (
                r#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2hvcnQ"}]}"#,
                "32 bytes",
            ),
            (
                r#"{"keys": [{"kty": "EC", "crv": "P-384", "x": "", "y": ""}]}"#,
                "P-256",
            ),
        ] {
            let err = KeySet::parse(text).err().expect(text);
            assert!(format!("{err:#}").contains(says), "{text}: {err:#}");
        }
    }
}
