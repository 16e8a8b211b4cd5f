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
//! | `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20` | documentation |
//!
//! IPv6 addresses that carry an IPv4 address are also judged by the IPv4
//! they carry, so every IPv4 range above is refused in each of these forms:
//!
//! | form | where the IPv4 is |
//! |---|---|
//! | IPv4-mapped `::ffff:0:0/96` | last 32 bits |
//! | IPv4-compatible `::/96` (but `::` and `::1`) | last 32 bits |
//! | IPv4-translated `::ffff:0:0:0/96` | last 32 bits |
//! | NAT64 well-known `64:ff9b::/96` | last 32 bits |
//! | NAT64 local-use `64:ff9b:1::/48` | every RFC 6052 layout (/48, /56, /64, /96), as the network's prefix length is unknown; shorter layouts reading `0.0.0.0/8` are ignored |
//! | 6to4 `2002::/16` | bits 16..48 |
//! | Teredo `2001::/32` | server in bits 32..64; client in the last 32 bits, inverted |
//!
//! A refusal by any reading refuses the address. A NAT64 deployment whose
//! local-use prefix bits happen to read as a refused IPv4 under a shorter
//! layout allow-lists its prefix (`allow("64:ff9b:1:a9fe::/96")`).
//!
//! [`SsrfPolicy::allow_private`] opens loopback, RFC 1918, CGNAT and
//! unique-local addresses (in every form); [`SsrfPolicy::allow`] opens a
//! network whatever its range (an IPv4 net in every embedded form too).
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
//! // IPv4 embedded in IPv6 is judged by the IPv4: 6to4 of 127.0.0.1.
//! assert_eq!(strict.check("2002:7f00:1::".parse().unwrap()).unwrap_err().range, "loopback");
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
    plain_http: bool,
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
    /// unspecified, reserved and documentation addresses stay refused unless
    /// allow-listed.
    #[must_use]
    pub fn allow_private(mut self) -> Self {
        self.allow_private = true;
        self
    }

    /// Allow every address in `net`, whatever range it is in. For an IPv4
    /// net, the IPv6 forms embedding its addresses (mapped, compatible,
    /// translated, NAT64, 6to4, Teredo) are allowed too.
    #[must_use]
    pub fn allow(mut self, net: IpNet) -> Self {
        self.allowed.push(net);
        self
    }

    /// Deliver to plain `http://` URLs of every endpoint, not only those
    /// that allow it themselves ([`Endpoint::allow_http`](crate::Endpoint::allow_http)).
    /// Off by default: the worker refuses `http://` deliveries with
    /// [`EndpointError::PlainHttp`](crate::EndpointError::PlainHttp).
    /// For loopback tests and demos.
    #[must_use]
    pub fn allow_plain_http(mut self) -> Self {
        self.plain_http = true;
        self
    }

    /// Whether plain `http://` is allowed for every endpoint.
    #[must_use]
    pub fn plain_http_allowed(&self) -> bool {
        self.plain_http
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
        let allowed = |a: IpAddr| self.allowed.iter().any(|n| n.contains(&a));
        if allowed(ip) {
            return Ok(());
        }
        let refuses = |r: Option<Range>| r.filter(|r| !(self.allow_private && r.private));
        // The address itself, then every IPv4 address it may carry: each is
        // a destination the packet can end up at.
        let own = match ip {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) => classify_v6(v6),
        };
        let mut refused = refuses(own);
        if refused.is_none() {
            if let IpAddr::V6(v6) = ip {
                refused = embedded_v4(v6)
                    .into_iter()
                    .flatten()
                    .filter(|v4| !allowed(IpAddr::V4(*v4)))
                    .find_map(|v4| refuses(classify_v4(v4)));
            }
        }
        match refused {
            None => Ok(()),
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
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => range("documentation", false),
        (198, 18..=19, _) => range("benchmarking", false),
        (224..=239, _, _) => range("multicast", false),
        (240..=255, _, _) => range("reserved", false),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Range> {
    let [seg0, seg1, ..] = ip.segments();
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
    } else if (seg0 == 0x2001 && seg1 == 0x0db8) || (seg0 == 0x3fff && seg1 & 0xf000 == 0) {
        range("documentation", false)
    } else {
        None
    }
}

/// Every IPv4 address an IPv6 address may carry to an IPv4 destination
/// (up to four readings; `None` fills the rest):
///
/// - IPv4-mapped `::ffff:a.b.c.d` and IPv4-compatible `::a.b.c.d` (except
///   `::` and `::1`, which are IPv6's own unspecified and loopback);
/// - IPv4-translated `::ffff:0:a.b.c.d` (RFC 2765);
/// - NAT64 well-known `64:ff9b::/96` (RFC 6052): the last 32 bits;
/// - NAT64 local-use `64:ff9b:1::/48` (RFC 8215): the network picks the
///   prefix length (/48, /56, /64 or /96, RFC 6052 section 2.2), so every
///   layout is read; a shorter layout that reads as `0.0.0.0/8` (a NAT64
///   never translates to "this network") is ignored, so that the usual /96
///   deployment is classified by its own IPv4 only;
/// - 6to4 `2002::/16` (RFC 3056): bits 16..48;
/// - Teredo `2001::/32` (RFC 4380): the server in bits 32..64 and the client
///   in the last 32 bits, inverted.
fn embedded_v4(v6: Ipv6Addr) -> [Option<Ipv4Addr>; 4] {
    let s = v6.segments();
    let o = v6.octets();
    let v4 = |a: u8, b: u8, c: u8, d: u8| Ipv4Addr::new(a, b, c, d);
    let last = v4(o[12], o[13], o[14], o[15]);
    let mut found = [None; 4];
    if s[..6] == [0, 0, 0, 0, 0, 0xffff] || s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        found[0] = Some(last);
    } else if s[..6] == [0; 6] {
        if !v6.is_unspecified() && !v6.is_loopback() {
            found[0] = Some(last);
        }
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        found[0] = Some(last);
    } else if s[..3] == [0x64, 0xff9b, 1] {
        found[3] = Some(last);
        let shorter = [
            v4(o[6], o[7], o[9], o[10]),   // /48
            v4(o[7], o[9], o[10], o[11]),  // /56
            v4(o[9], o[10], o[11], o[12]), // /64
        ];
        for (slot, cand) in found.iter_mut().zip(shorter) {
            *slot = (cand.octets()[0] != 0).then_some(cand);
        }
    } else if s[0] == 0x2002 {
        found[0] = Some(v4(o[2], o[3], o[4], o[5]));
    } else if s[..2] == [0x2001, 0] {
        found[0] = Some(v4(o[4], o[5], o[6], o[7]));
        found[1] = Some(v4(!o[12], !o[13], !o[14], !o[15]));
    }
    found
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

    /// IPv4 embedded in IPv6, in every form, and the documentation ranges.
    const EMBEDDED_REFUSED: &[(&str, &str)] = &[
        // IPv4-compatible (deprecated, RFC 4291 2.5.5.1).
        ("::127.0.0.1", "loopback"),
        ("::a9fe:a9fe", "link-local"),
        ("::10.0.0.1", "private (RFC 1918)"),
        ("::0.0.0.2", "this network"),
        // IPv4-mapped.
        ("::ffff:7f00:1", "loopback"),
        // IPv4-translated (RFC 2765).
        ("::ffff:0:7f00:1", "loopback"),
        ("::ffff:0:a9fe:a9fe", "link-local"),
        // NAT64 well-known prefix (RFC 6052).
        ("64:ff9b::127.0.0.1", "loopback"),
        ("64:ff9b::c0a8:101", "private (RFC 1918)"),
        // NAT64 local-use prefix (RFC 8215), every RFC 6052 prefix length.
        ("64:ff9b:1::7f00:1", "loopback"),
        ("64:ff9b:1:0:0:0:a9fe:a9fe", "link-local"),
        ("64:ff9b:1:7f00:0:100::", "loopback"), // /48: bits 48..64 and 72..88
        ("64:ff9b:1:7f:0:1::", "loopback"),     // /56: bits 56..64 and 72..96
        ("64:ff9b:1:0:7f:0:100:0", "loopback"), // /64: bits 72..104
        // 6to4 (RFC 3056): the IPv4 is in bits 16..48.
        ("2002:7f00:1::", "loopback"),
        ("2002:a9fe:a9fe::1", "link-local"),
        ("2002:0a00:0001:1::1", "private (RFC 1918)"),
        // Teredo (RFC 4380): server IPv4 in bits 32..64, client IPv4 inverted in the last 32.
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"), // client 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:5601:5601", "link-local"), // client 169.254.169.254
        ("2001:0:7f00:1:8000:63bf:f7f7:f7f7", "loopback"),    // server 127.0.0.1
        // Documentation.
        ("192.0.2.1", "documentation"),
        ("198.51.100.7", "documentation"),
        ("203.0.113.255", "documentation"),
        ("2001:db8::1", "documentation"),
        ("2001:db8:ffff::1", "documentation"),
        ("3fff::1", "documentation"),
        ("3fff:fff::1", "documentation"),
        ("::ffff:192.0.2.1", "documentation"),
        ("2002:c000:0201::1", "documentation"),
    ];

    /// Public addresses in the same forms stay allowed.
    const EMBEDDED_ALLOWED: &[&str] = &[
        "::8.8.8.8",
        "::ffff:0:808:808",
        "64:ff9b::8.8.8.8",
        "64:ff9b:1::808:808",
        "2002:808:808::1",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7", // client 8.8.8.8, server 65.54.227.120
        "3fff:1000::1",
        "2001:db9::1",
        "192.0.3.1",
        "198.51.101.1",
        "203.0.114.1",
    ];

    #[test]
    fn embedded_ipv4_and_documentation_ranges() {
        let p = SsrfPolicy::default();
        for (a, range) in EMBEDDED_REFUSED {
            match p.check(ip(a)) {
                Err(f) => assert_eq!(f.range, *range, "{a}"),
                Ok(()) => panic!("{a} should be refused ({range})"),
            }
        }
        for a in EMBEDDED_ALLOWED {
            assert!(p.check(ip(a)).is_ok(), "{a} should be allowed");
        }
        // allow_private opens the private ranges in every form, not the others.
        let private = SsrfPolicy::default().allow_private();
        for a in ["::127.0.0.1", "2002:7f00:1::", "64:ff9b:1::a00:1"] {
            assert!(private.check(ip(a)).is_ok(), "{a}");
        }
        for a in [
            "::a9fe:a9fe",
            "2002:a9fe:a9fe::",
            "192.0.2.1",
            "2001:db8::1",
        ] {
            assert!(private.check(ip(a)).is_err(), "{a}");
        }
    }

    #[test]
    fn allow_list_covers_embedded_forms_and_documentation() {
        let p = SsrfPolicy::default()
            .allow("127.0.0.0/8".parse().unwrap())
            .allow("192.0.2.0/24".parse().unwrap())
            .allow("2001:db8::/32".parse().unwrap());
        for a in [
            "127.0.0.1",
            "::127.0.0.1",
            "::ffff:0:7f00:1",
            "2002:7f00:1::",
            "64:ff9b::7f00:1",
            "192.0.2.1",
            "2001:db8::1",
        ] {
            assert!(p.check(ip(a)).is_ok(), "{a}");
        }
        for a in ["198.51.100.1", "3fff::1", "::a9fe:a9fe", "2002:a00:1::"] {
            assert!(p.check(ip(a)).is_err(), "{a}");
        }
        // An allowed IPv6 net opens its addresses whatever they embed.
        let p = SsrfPolicy::default().allow("2002::/16".parse().unwrap());
        assert!(p.check(ip("2002:7f00:1::")).is_ok());
        // A local-use NAT64 /96 whose prefix reads as link-local under the
        // /48 layout: refused until its prefix is allow-listed.
        let nat64 = ip("64:ff9b:1:a9fe::808:808");
        assert_eq!(
            SsrfPolicy::default().check(nat64).unwrap_err().range,
            "link-local"
        );
        let p = SsrfPolicy::default().allow("64:ff9b:1:a9fe::/96".parse().unwrap());
        assert!(p.check(nat64).is_ok());
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
