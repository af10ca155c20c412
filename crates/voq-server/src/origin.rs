//! Which web pages may open a voq session from a browser: the `Origin` of a WebSocket upgrade or
//! a WebTransport CONNECT against an allow-list. Pure decisions, no I/O.
//!
//! A browser always sends `Origin` on those requests, so a page on another site cannot drive a
//! voq server (for example the one on the user's own machine) unless the operator allowed that
//! site. Native clients send no `Origin` and are not concerned (access control for them is the
//! session token's job).

/// The allow-list. Same-origin pages are always allowed; so are loopback pages when the server
/// itself listens on loopback (a developer's page on another local port).
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Allowed origins, lower-case `scheme://host[:port]`.
    allowed: Vec<String>,
    /// `*` was given: every origin is allowed.
    any: bool,
    /// The server listens on a loopback address.
    loopback_listener: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "origin {0} is not allowed (same origin, --allow-origin, or loopback pages for a loopback server)"
)]
pub struct OriginRefused(pub String);

impl OriginPolicy {
    /// A policy with these extra allowed origins (`*` allows every origin).
    pub fn new(allowed: &[String], loopback_listener: bool) -> Self {
        Self {
            any: allowed.iter().any(|o| o.trim() == "*"),
            allowed: allowed
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| o != "*")
                .collect(),
            loopback_listener,
        }
    }

    /// Decides a request with this `Origin` header (none: not a browser) that arrived for this
    /// `Host` (the authority the browser connected to).
    pub fn check(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), OriginRefused> {
        let Some(origin) = origin.map(str::trim).filter(|o| !o.is_empty()) else {
            return Ok(());
        };
        let normalized = origin.trim_end_matches('/').to_ascii_lowercase();
        let origin_host = normalized
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or(normalized.as_str());
        let same_origin = host.is_some_and(|h| h.trim().eq_ignore_ascii_case(origin_host));
        let loopback_page = self.loopback_listener && is_loopback(origin_host);
        if self.any || same_origin || loopback_page || self.allowed.contains(&normalized) {
            Ok(())
        } else {
            Err(OriginRefused(origin.to_string()))
        }
    }
}

/// Whether `host[:port]` names this machine: localhost, 127.0.0.0/8 or ::1.
fn is_loopback(authority: &str) -> bool {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_clients_and_same_origin_pages_are_allowed() {
        let p = OriginPolicy::new(&[], false);
        assert_eq!(p.check(None, Some("voice.example:443")), Ok(()));
        assert_eq!(
            p.check(Some("https://voice.example:443"), Some("voice.example:443")),
            Ok(())
        );
        assert_eq!(
            p.check(Some("https://Voice.Example"), Some("voice.example")),
            Ok(())
        );
    }

    #[test]
    fn other_sites_are_refused_unless_allowed() {
        let p = OriginPolicy::new(&[], false);
        assert!(
            p.check(Some("http://evil.example"), Some("voice.example"))
                .is_err()
        );
        let p = OriginPolicy::new(&["https://app.example/".into()], false);
        assert_eq!(
            p.check(Some("https://app.example"), Some("voice.example")),
            Ok(())
        );
        assert!(
            p.check(Some("https://app.example.evil"), Some("voice.example"))
                .is_err()
        );
        let p = OriginPolicy::new(&["*".into()], false);
        assert_eq!(
            p.check(Some("http://evil.example"), Some("voice.example")),
            Ok(())
        );
    }

    #[test]
    fn loopback_pages_only_for_a_loopback_server() {
        let local = OriginPolicy::new(&[], true);
        assert_eq!(
            local.check(Some("http://localhost:5173"), Some("127.0.0.1:4443")),
            Ok(())
        );
        assert_eq!(
            local.check(Some("http://[::1]:8000"), Some("127.0.0.1:4443")),
            Ok(())
        );
        assert!(
            local
                .check(Some("http://evil.example"), Some("127.0.0.1:4443"))
                .is_err()
        );
        let public = OriginPolicy::new(&[], false);
        assert!(
            public
                .check(Some("http://localhost:5173"), Some("voice.example"))
                .is_err()
        );
    }
}
