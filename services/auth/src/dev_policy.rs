//! When the server may fall back to the development key pair.
//!
//! Development keys are a convenience for the zero-configuration quick start: anyone who
//! can read the key file can mint `teams: *` tokens. So they are used without being asked
//! only when the server listens on a loopback address *and* keeps its log in embedded
//! SQLite; anywhere else the operator must say so (`--dev-keys`) or configure a real key
//! source. [`dev_keys_permitted`] is the whole decision, kept free of I/O so the table of
//! cases is tested here and the server only calls it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Why development keys were allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKeysAllowed {
    /// The zero-configuration case: a loopback listen address and embedded SQLite.
    ZeroConfiguration,
    /// The operator asked for them (`--dev-keys`).
    ExplicitFlag,
}

/// Development keys would be used outside the zero-configuration case without the
/// explicit flag. Its `Display` is one line naming the key options, meant to be the
/// server's last words at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevKeysRefused {
    /// The listen address as configured.
    pub listen: String,
    /// Whether that address is a loopback address.
    pub listen_is_loopback: bool,
    /// Whether the database is embedded SQLite.
    pub database_is_embedded_sqlite: bool,
}

impl fmt::Display for DevKeysRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut reasons = Vec::with_capacity(2);
        if !self.listen_is_loopback {
            reasons.push(format!(
                "the listen address {} is not a loopback address",
                self.listen
            ));
        }
        if !self.database_is_embedded_sqlite {
            reasons.push("the database is not embedded SQLite".to_owned());
        }
        write!(
            f,
            "no token key is configured and development keys are refused because {}: \
             configure --jwt-public-key, --jwt-jwks or --oidc-issuer, \
             or pass --dev-keys to use development keys anyway",
            reasons.join(" and ")
        )
    }
}

impl std::error::Error for DevKeysRefused {}

/// Decides whether the development key pair may be used when no key source is configured.
///
/// - loopback listen address and embedded SQLite → allowed without asking;
/// - anything else → allowed only with `explicit_flag` (`--dev-keys`), refused otherwise.
///
/// `listen` is the configured address (`127.0.0.1:8080`, `[::1]:8080`, `localhost:8080`);
/// an address that cannot be read counts as not loopback.
pub fn dev_keys_permitted(
    listen: &str,
    database_is_embedded_sqlite: bool,
    explicit_flag: bool,
) -> Result<DevKeysAllowed, DevKeysRefused> {
    let listen_is_loopback = is_loopback_listen_address(listen);
    if explicit_flag {
        Ok(DevKeysAllowed::ExplicitFlag)
    } else if listen_is_loopback && database_is_embedded_sqlite {
        Ok(DevKeysAllowed::ZeroConfiguration)
    } else {
        Err(DevKeysRefused {
            listen: listen.to_owned(),
            listen_is_loopback,
            database_is_embedded_sqlite,
        })
    }
}

/// True for a listen address on the loopback interface only: `127.0.0.0/8`, `::1`
/// (also as an IPv4-mapped address) or the name `localhost`. The unspecified addresses
/// (`0.0.0.0`, `::`) listen on every interface and are not loopback.
pub fn is_loopback_listen_address(listen: &str) -> bool {
    let listen = listen.trim();
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return is_loopback_ip(addr.ip());
    }
    if let Ok(ip) = listen.parse::<IpAddr>() {
        return is_loopback_ip(ip);
    }
    let host = match listen.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => listen,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return is_loopback_ip(ip);
    }
    host.eq_ignore_ascii_case("localhost")
}

pub(crate) fn is_loopback_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// True for a database URL that names embedded SQLite (`sqlite:` / `sqlite://`).
pub fn is_embedded_sqlite_url(database_url: &str) -> bool {
    database_url
        .trim()
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("sqlite:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_table() {
        use DevKeysAllowed::*;
        // (listen, embedded SQLite, --dev-keys) → allowed?
        let cases: [(&str, bool, bool, Option<DevKeysAllowed>); 14] = [
            ("127.0.0.1:8080", true, false, Some(ZeroConfiguration)),
            ("127.0.0.1:0", true, false, Some(ZeroConfiguration)),
            ("127.1.2.3:8080", true, false, Some(ZeroConfiguration)),
            ("[::1]:8080", true, false, Some(ZeroConfiguration)),
            ("localhost:8080", true, false, Some(ZeroConfiguration)),
            (
                "[::ffff:127.0.0.1]:8080",
                true,
                false,
                Some(ZeroConfiguration),
            ),
            ("127.0.0.1:8080", false, false, None),
            ("0.0.0.0:8080", true, false, None),
            ("[::]:8080", true, false, None),
            ("10.0.0.5:8080", true, false, None),
            ("rollgate.internal:8080", true, false, None),
            ("0.0.0.0:8080", false, false, None),
            ("0.0.0.0:8080", false, true, Some(ExplicitFlag)),
            ("127.0.0.1:8080", false, true, Some(ExplicitFlag)),
        ];
        for (listen, sqlite, flag, expected) in cases {
            assert_eq!(
                dev_keys_permitted(listen, sqlite, flag).ok(),
                expected,
                "{listen} sqlite={sqlite} --dev-keys={flag}"
            );
        }
    }

    #[test]
    fn the_refusal_is_one_line_naming_the_key_options() {
        let refusal = dev_keys_permitted("0.0.0.0:8080", false, false).unwrap_err();
        let line = refusal.to_string();
        assert!(!line.contains('\n'), "{line}");
        for option in [
            "--jwt-public-key",
            "--jwt-jwks",
            "--oidc-issuer",
            "--dev-keys",
        ] {
            assert!(line.contains(option), "{option} missing from: {line}");
        }
        assert!(
            line.contains("0.0.0.0:8080 is not a loopback address"),
            "{line}"
        );
        assert!(line.contains("not embedded SQLite"), "{line}");

        let only_database = dev_keys_permitted("127.0.0.1:8080", false, false).unwrap_err();
        assert!(!only_database.to_string().contains("loopback address"));
    }

    #[test]
    fn sqlite_urls() {
        assert!(is_embedded_sqlite_url("sqlite://rollgate.db"));
        assert!(is_embedded_sqlite_url("sqlite:rollgate.db"));
        assert!(is_embedded_sqlite_url("SQLITE::memory:"));
        assert!(!is_embedded_sqlite_url(
            "postgres://postgres@127.0.0.1/test"
        ));
        assert!(!is_embedded_sqlite_url("sqlit"));
        assert!(!is_embedded_sqlite_url(""));
    }
}
