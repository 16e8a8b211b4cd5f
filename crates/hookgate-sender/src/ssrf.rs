//! SSRF guard: refuse to send webhooks into private networks.
//!
//! Webhook URLs usually come from users. Without a guard, a user registers
//! `http://169.254.169.254/latest/meta-data/` (a cloud metadata service) or
//! `http://10.0.0.5:6379/` and the sender makes requests inside your network
//! for them. The guard is **on by default** and refuses these destinations:
//!
//! | range | what |
//! |---|---|
//! | `0.0.0.0/8`, `::/128` | "this network", unspecified |
//! | `127.0.0.0/8`, `::1/128` | loopback |
//! | `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` | private (RFC 1918) |
//! | `100.64.0.0/10` | shared address space (CGNAT) |
//! | `169.254.0.0/16`, `fe80::/10` | link-local, cloud metadata included |
//! | `fc00::/7`, `fec0::/10` | unique-local, deprecated site-local |
//! | `192.0.0.0/24`, `198.18.0.0/15`, `240.0.0.0/4`, `255.255.255.255` | protocol assignments, benchmarking, reserved, broadcast |
//! | `224.0.0.0/4`, `ff00::/8` | multicast |
//! | `::ffff:0:0/96`, `64:ff9b::/96` | IPv4-mapped and NAT64 forms of all the above |
//!
//! How it holds:
//! - Host names are resolved by the guard's own resolver, which drops every
//!   refused address; the HTTP client connects only to addresses the resolver
//!   returned, so DNS rebinding between check and connect is impossible.
//! - Literal IP URLs (which skip the resolver) are checked before sending.
//! - The address actually connected to is checked again on the response.
//! - Redirects are never followed (a 3xx is the answer; see
//!   [`outcome`](crate::outcome)), and system proxies are not used (a proxy
//!   would resolve the host itself).
//!
//! A refused destination is a permanent failure whose error names the range;
//! nothing is sent.
//!
//! ```
//! use hookgate_sender::ssrf::SsrfPolicy;
//! let strict = SsrfPolicy::default();
//! assert!(strict.check("169.254.169.254".parse().unwrap()).is_err());
//! assert!(strict.check("93.184.215.14".parse().unwrap()).is_ok());
//! // Tests and local development: open loopback only.
//! let local = SsrfPolicy::default().allow("127.0.0.0/8".parse().unwrap());
//! assert!(local.check("127.0.0.1".parse().unwrap()).is_ok());
//! assert!(local.check("10.0.0.1".parse().unwrap()).is_err());
//! ```

use std::{
    collections::HashMap,
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use ipnet::IpNet;

use crate::queue::BoxFuture;

/// Which destinations are allowed. Strict by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsrfPolicy {
    allow_private: bool,
    allowed: Vec<IpNet>,
    disabled: bool,
}

/// A destination the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination {ip} is refused by the SSRF guard ({range})")]
pub struct Forbidden {
    /// The refused address.
    pub ip: IpAddr,
    /// The range it falls in (`loopback`, `private (RFC 1918)`, `link-local`, ...).
    pub range: &'static str,
}

/// The guard refused a destination, or could not resolve it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SsrfError {
    /// The (literal or connected) address is refused.
    #[error(transparent)]
    Forbidden(#[from] Forbidden),
    /// Every address the host resolves to is refused.
    #[error("{host} resolves only to refused addresses ({first})")]
    AllForbidden {
        /// The host name.
        host: String,
        /// The first refused address and its range.
        first: Forbidden,
    },
    /// The host resolves to nothing.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The host name.
        host: String,
    },
    /// Resolution failed.
    #[error("cannot resolve {host}: {source}")]
    Lookup {
        /// The host name.
        host: String,
        /// The resolver's error.
        #[source]
        source: io::Error,
    },
}

impl SsrfError {
    /// Whether the guard refused the destination (as opposed to a DNS failure,
    /// which is worth retrying).
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Forbidden(_) | Self::AllForbidden { .. })
    }
}

impl SsrfPolicy {
    /// The strict default policy.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Also allow loopback, RFC 1918 private, CGNAT and unique-local
    /// addresses (`--allow-private`). Link-local (cloud metadata), multicast,
    /// unspecified and reserved addresses stay refused unless allow-listed.
    #[must_use]
    pub fn allow_private(mut self) -> Self {
        self.allow_private = true;
        self
    }

    /// Allow every address in `net`, whatever range it is in. For an IPv4
    /// net, the IPv4-mapped IPv6 forms are allowed too.
    #[must_use]
    pub fn allow(mut self, net: IpNet) -> Self {
        self.allowed.push(net);
        self
    }

    /// Turn the guard off entirely. Only for programs whose URLs never come
    /// from users.
    #[must_use]
    pub fn dangerous_disable(mut self) -> Self {
        self.disabled = true;
        self
    }

    /// Whether `ip` may be connected to.
    ///
    /// # Errors
    /// [`Forbidden`] naming the range `ip` is in.
    pub fn check(&self, ip: IpAddr) -> Result<(), Forbidden> {
        if self.disabled {
            return Ok(());
        }
        let embedded = embedded_v4(ip);
        let allowed = |a: IpAddr| self.allowed.iter().any(|n| n.contains(&a));
        if allowed(ip) || embedded.is_some_and(|v4| allowed(IpAddr::V4(v4))) {
            return Ok(());
        }
        let range = match embedded {
            Some(v4) => classify_v4(v4),
            None => match ip {
                IpAddr::V4(v4) => classify_v4(v4),
                IpAddr::V6(v6) => classify_v6(v6),
            },
        };
        match range {
            None => Ok(()),
            Some(r) if self.allow_private && r.private => Ok(()),
            Some(r) => Err(Forbidden { ip, range: r.name }),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Range {
    name: &'static str,
    /// Opened by `allow_private`.
    private: bool,
}

const fn range(name: &'static str, private: bool) -> Option<Range> {
    Some(Range { name, private })
}

fn classify_v4(ip: Ipv4Addr) -> Option<Range> {
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        _ if ip.is_broadcast() => range("broadcast", false),
        (0, _, _) => range("this network", false),
        (127, _, _) => range("loopback", true),
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => range("private (RFC 1918)", true),
        (100, 64..=127, _) => range("shared address space (CGNAT)", true),
        (169, 254, _) => range("link-local", false),
        (192, 0, 0) => range("IETF protocol assignments", false),
        (198, 18..=19, _) => range("benchmarking", false),
        (224..=239, _, _) => range("multicast", false),
        (240..=255, _, _) => range("reserved", false),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Range> {
    let seg0 = ip.segments()[0];
    if ip.is_unspecified() {
        range("unspecified", false)
    } else if ip.is_loopback() {
        range("loopback", true)
    } else if seg0 & 0xffc0 == 0xfe80 {
        range("link-local", false)
    } else if seg0 & 0xffc0 == 0xfec0 {
        range("site-local", false)
    } else if seg0 & 0xfe00 == 0xfc00 {
        range("unique-local", true)
    } else if seg0 & 0xff00 == 0xff00 {
        range("multicast", false)
    } else {
        None
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`) or NAT64
/// (`64:ff9b::a.b.c.d`) IPv6 address.
fn embedded_v4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., a, b, c, d] = v6.octets();
        return Some(Ipv4Addr::new(a, b, c, d));
    }
    None
}

/// Resolves host names to addresses. Injectable, so tests can make
/// `evil.test` resolve to `10.0.0.1` without any DNS.
pub trait Resolver: Send + Sync + fmt::Debug + 'static {
    /// All addresses of `host`.
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (through tokio).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed table of host names to addresses, for tests. Unknown names fail
/// to resolve.
///
/// ```
/// use hookgate_sender::ssrf::StaticResolver;
/// let r = StaticResolver::new().with_host("evil.test", ["169.254.169.254".parse().unwrap()]);
/// # let _ = r;
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    hosts: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// `host` resolves to `addrs`.
    #[must_use]
    pub fn with_host(mut self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.hosts
            .insert(host.to_ascii_lowercase(), addrs.into_iter().collect());
        self
    }
}

impl Resolver for StaticResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found = self.hosts.get(&host.to_ascii_lowercase()).cloned();
        Box::pin(std::future::ready(found.ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "no such host in the static table")
        })))
    }
}

/// The resolver handed to the HTTP client: resolve, then drop refused addresses.
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) policy: Arc<SsrfPolicy>,
    pub(crate) inner: Arc<dyn Resolver>,
}

impl GuardedResolver {
    /// The allowed addresses of `host`.
    pub(crate) async fn resolve_host(&self, host: &str) -> Result<Vec<IpAddr>, SsrfError> {
        let addrs = self
            .inner
            .lookup(host)
            .await
            .map_err(|source| SsrfError::Lookup {
                host: host.to_owned(),
                source,
            })?;
        let mut first_refused = None;
        let mut ok = Vec::with_capacity(addrs.len());
        for ip in addrs {
            match self.policy.check(ip) {
                Ok(()) => ok.push(ip),
                Err(f) => {
                    first_refused.get_or_insert(f);
                }
            }
        }
        if ok.is_empty() {
            return Err(match first_refused {
                Some(first) => SsrfError::AllForbidden {
                    host: host.to_owned(),
                    first,
                },
                None => SsrfError::NoAddress {
                    host: host.to_owned(),
                },
            });
        }
        Ok(ok)
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let ips = this.resolve_host(name.as_str()).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const REFUSED: &[&str] = &[
        "0.0.0.0",
        "0.1.2.3",
        "127.0.0.1",
        "127.255.255.254",
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "169.254.169.254",
        "169.254.0.1",
        "192.0.0.1",
        "198.18.0.1",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "fe80::1",
        "febf::1",
        "fec0::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:100.64.0.1",
        "::ffff:0.0.0.0",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::7f00:1",
    ];

    const ALLOWED: &[&str] = &[
        "1.1.1.1",
        "8.8.8.8",
        "93.184.215.14",
        "172.15.255.255",
        "172.32.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "192.169.0.1",
        "169.253.255.255",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ];

    #[test]
    fn strict_policy() {
        let p = SsrfPolicy::default();
        for a in REFUSED {
            assert!(p.check(ip(a)).is_err(), "{a} should be refused");
        }
        for a in ALLOWED {
            assert!(p.check(ip(a)).is_ok(), "{a} should be allowed");
        }
        let err = p.check(ip("169.254.169.254")).unwrap_err();
        assert_eq!(err.range, "link-local");
        assert_eq!(
            err.to_string(),
            "destination 169.254.169.254 is refused by the SSRF guard (link-local)"
        );
        assert_eq!(
            p.check(ip("::ffff:10.0.0.1")).unwrap_err().range,
            "private (RFC 1918)"
        );
    }

    #[test]
    fn allow_private_opens_private_not_metadata() {
        let p = SsrfPolicy::default().allow_private();
        for a in [
            "127.0.0.1",
            "::1",
            "10.0.0.1",
            "192.168.0.1",
            "172.16.0.1",
            "100.64.0.1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(p.check(ip(a)).is_ok(), "{a}");
        }
        for a in [
            "169.254.169.254",
            "fe80::1",
            "0.0.0.0",
            "::",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(p.check(ip(a)).is_err(), "{a}");
        }
    }

    #[test]
    fn allow_list() {
        let p = SsrfPolicy::default()
            .allow("127.0.0.0/8".parse().unwrap())
            .allow("169.254.169.254/32".parse().unwrap());
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check(ip("169.254.169.254")).is_ok());
        assert!(p.check(ip("169.254.169.253")).is_err());
        assert!(p.check(ip("10.0.0.1")).is_err());
        assert!(p.check(ip("::1")).is_err());
        assert!(SsrfPolicy::default()
            .dangerous_disable()
            .check(ip("10.0.0.1"))
            .is_ok());
    }

    #[tokio::test]
    async fn guarded_resolver_filters() {
        let resolver = StaticResolver::new()
            .with_host("evil.test", [ip("10.0.0.1"), ip("169.254.169.254")])
            .with_host("mixed.test", [ip("10.0.0.1"), ip("93.184.215.14")])
            .with_host("empty.test", []);
        let g = GuardedResolver {
            policy: Arc::new(SsrfPolicy::default()),
            inner: Arc::new(resolver),
        };
        let err = g.resolve_host("evil.test").await.unwrap_err();
        assert!(err.is_refusal());
        assert_eq!(
            err.to_string(),
            "evil.test resolves only to refused addresses (destination 10.0.0.1 is refused by the SSRF guard (private (RFC 1918)))"
        );
        assert_eq!(
            g.resolve_host("mixed.test").await.unwrap(),
            [ip("93.184.215.14")]
        );
        assert!(matches!(
            g.resolve_host("empty.test").await,
            Err(SsrfError::NoAddress { .. })
        ));
        let err = g.resolve_host("unknown.test").await.unwrap_err();
        assert!(matches!(err, SsrfError::Lookup { .. }));
        assert!(!err.is_refusal());
    }
}
