//! Which target URLs rollgate will call (server-side request forgery defence).
//!
//! - Only `http://` and `https://`, with a host and without credentials.
//! - Always refused: link-local addresses (169.254.0.0/16 — where cloud metadata services
//!   live — and fe80::/10), the AWS IPv6 metadata address fd00:ec2::254, unspecified,
//!   multicast and broadcast addresses.
//! - Refused unless `allow_private`: private ranges (10/8, 172.16/12, 192.168/16, 100.64/10,
//!   fc00::/7).
//! - Refused unless `allow_loopback`: 127.0.0.0/8 and ::1 (tests turn this on; production
//!   leaves it off).
//!
//! The same rules apply when the URL names an address and when a host name resolves: the
//! [`PolicyResolver`] resolves names for the HTTP client and drops forbidden addresses, so
//! the connection goes only to an address that was checked (no DNS rebinding in between).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// The address policy for outbound calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_private: bool,
    pub allow_loopback: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefusal {
    #[error("not a valid URL: {0}")]
    Invalid(String),
    #[error("only http and https URLs are allowed")]
    Scheme,
    #[error("the URL must name a host")]
    NoHost,
    #[error("the URL must not carry credentials")]
    Credentials,
    #[error("{0} is a link-local or metadata address")]
    LinkLocal(IpAddr),
    #[error("{0} is not a routable unicast address")]
    NotUnicast(IpAddr),
    #[error("{0} is in a private range (allowed only with the private-networks switch)")]
    Private(IpAddr),
    #[error("{0} is a loopback address (allowed only with the loopback switch)")]
    Loopback(IpAddr),
}

/// fd00:ec2::254, the AWS instance metadata service over IPv6.
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);

impl UrlPolicy {
    /// Checks one address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), UrlRefusal> {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            },
            v4 => v4,
        };
        match ip {
            IpAddr::V4(v4) => self.check_v4(v4, ip),
            IpAddr::V6(v6) => self.check_v6(v6, ip),
        }
    }

    fn check_v4(&self, v4: Ipv4Addr, ip: IpAddr) -> Result<(), UrlRefusal> {
        let o = v4.octets();
        if v4.is_link_local() {
            return Err(UrlRefusal::LinkLocal(ip));
        }
        if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || o[0] == 0 {
            return Err(UrlRefusal::NotUnicast(ip));
        }
        if v4.is_loopback() {
            return if self.allow_loopback {
                Ok(())
            } else {
                Err(UrlRefusal::Loopback(ip))
            };
        }
        let shared = o[0] == 100 && (o[1] & 0xc0) == 64;
        if v4.is_private() || shared {
            return if self.allow_private {
                Ok(())
            } else {
                Err(UrlRefusal::Private(ip))
            };
        }
        Ok(())
    }

    fn check_v6(&self, v6: Ipv6Addr, ip: IpAddr) -> Result<(), UrlRefusal> {
        let seg = v6.segments();
        if v6 == AWS_METADATA_V6 || (seg[0] & 0xffc0) == 0xfe80 {
            return Err(UrlRefusal::LinkLocal(ip));
        }
        if v6.is_unspecified() || v6.is_multicast() {
            return Err(UrlRefusal::NotUnicast(ip));
        }
        if v6.is_loopback() {
            return if self.allow_loopback {
                Ok(())
            } else {
                Err(UrlRefusal::Loopback(ip))
            };
        }
        if (seg[0] & 0xfe00) == 0xfc00 {
            return if self.allow_private {
                Ok(())
            } else {
                Err(UrlRefusal::Private(ip))
            };
        }
        Ok(())
    }

    /// Parses and checks a target URL; a host name is checked when it resolves
    /// ([`PolicyResolver`]), except `localhost`, which is loopback by definition.
    pub fn check_url(&self, raw: &str) -> Result<Url, UrlRefusal> {
        let url = Url::parse(raw).map_err(|e| UrlRefusal::Invalid(e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(UrlRefusal::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefusal::Credentials);
        }
        match url.host() {
            None => return Err(UrlRefusal::NoHost),
            Some(Host::Ipv4(v4)) => self.check_ip(IpAddr::V4(v4))?,
            Some(Host::Ipv6(v6)) => self.check_ip(IpAddr::V6(v6))?,
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    self.check_ip(IpAddr::V4(Ipv4Addr::LOCALHOST))?;
                }
                if d.is_empty() {
                    return Err(UrlRefusal::NoHost);
                }
            }
        }
        Ok(url)
    }
}

/// Resolves host names for the HTTP client and keeps only addresses the policy allows.
#[derive(Clone, Debug)]
pub struct PolicyResolver {
    pub policy: UrlPolicy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        refusal = Some(e);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refusal.map_or_else(
                    || format!("{host} does not resolve"),
                    |e| format!("{host} resolves to a refused address: {e}"),
                );
                return Err(why.into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_refuse_metadata_link_local_private_and_loopback() {
        let p = UrlPolicy::default();
        for (url, want) in [
            ("http://169.254.169.254/latest/meta-data", "link"),
            ("http://[fd00:ec2::254]/", "link"),
            ("http://[fe80::1]/", "link"),
            ("http://10.0.0.8/hook", "private"),
            ("http://172.20.1.1/hook", "private"),
            ("http://192.168.1.1/hook", "private"),
            ("http://100.64.0.1/hook", "private"),
            ("http://[fd12::1]/hook", "private"),
            ("http://127.0.0.1:9000/hook", "loopback"),
            ("http://[::1]/hook", "loopback"),
            ("http://[::ffff:127.0.0.1]/hook", "loopback"),
            ("http://localhost:8080/hook", "loopback"),
            ("http://0.0.0.0/hook", "unicast"),
            ("ftp://example.com/x", "scheme"),
            ("https://user:pw@example.com/", "cred"),
            ("not a url", "invalid"),
        ] {
            let err = p.check_url(url).unwrap_err();
            let ok = matches!(
                (&err, want),
                (UrlRefusal::LinkLocal(_), "link")
                    | (UrlRefusal::Private(_), "private")
                    | (UrlRefusal::Loopback(_), "loopback")
                    | (UrlRefusal::NotUnicast(_), "unicast")
                    | (UrlRefusal::Scheme, "scheme")
                    | (UrlRefusal::Credentials, "cred")
                    | (UrlRefusal::Invalid(_), "invalid")
            );
            assert!(ok, "{url}: {err:?}");
        }
        assert!(p.check_url("https://hooks.example.com/rollgate").is_ok());
        assert!(p.check_url("http://93.184.216.34/x").is_ok());
    }

    #[test]
    fn switches_allow_private_and_loopback_but_never_metadata() {
        let p = UrlPolicy {
            allow_private: true,
            allow_loopback: true,
        };
        assert!(p.check_url("http://10.0.0.8/hook").is_ok());
        assert!(p.check_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(p.check_url("http://localhost:9000/hook").is_ok());
        assert!(p.check_url("http://169.254.169.254/").is_err());
        assert!(p.check_url("http://[fd00:ec2::254]/").is_err());
        let loopback_only = UrlPolicy {
            allow_private: false,
            allow_loopback: true,
        };
        assert!(loopback_only.check_url("http://127.0.0.1:1/").is_ok());
        assert!(loopback_only.check_url("http://10.1.1.1/").is_err());
    }
}
