//! Source-address allow-list: refuse webhooks from outside the sender's
//! published ranges, before anything else is read.
//!
//! [`VerifyWebhookLayer::with_allowed_sources`](crate::VerifyWebhookLayer::with_allowed_sources)
//! takes [`Cidr`] ranges; a request whose client address is outside all of
//! them is answered **403** `source_not_allowed` before its headers are
//! parsed or its body is read, and nothing is written to the store.
//!
//! ```
//! use hookgate_core::{Scheme, Verifier};
//! use hookgate_tower::{source::Cidr, VerifyWebhookLayer};
//!
//! let verifier = Verifier::from_secret_strings(Scheme::GitHub, ["It's a Secret to Everybody"])?;
//! let layer = VerifyWebhookLayer::new(verifier)
//!     // Example ranges: copy the current ones from the provider (see below).
//!     .with_allowed_sources(["192.30.252.0/22".parse::<Cidr>()?, "2a0a:a440::/29".parse()?])
//!     // Behind a load balancer at 10.0.0.0/8: believe its X-Forwarded-For.
//!     .with_trusted_proxies(["10.0.0.0/8".parse::<Cidr>()?]);
//! # let _ = layer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The peer address
//! The connection's peer address comes from the request extensions:
//! axum's `ConnectInfo<SocketAddr>` (serve the router with
//! `into_make_service_with_connect_info::<SocketAddr>()`), or a [`PeerAddr`]
//! that a hyper server inserts itself. **When neither is there, the request
//! is refused** (403, logged at `error`): an allow-list that cannot see the
//! address must not let everything through. IPv4-mapped IPv6 peers
//! (`::ffff:a.b.c.d`, from a dual-stack socket) are compared as IPv4.
//!
//! # Behind a proxy
//! `X-Forwarded-For` is ignored unless the peer itself is in
//! [`with_trusted_proxies`](crate::VerifyWebhookLayer::with_trusted_proxies).
//! Then the header's entries are read from the right, skipping trusted
//! proxies, and the first untrusted address is the client (the "rightmost
//! untrusted hop"): entries a client wrote itself sit further left and are
//! never reached. If every entry is trusted, the leftmost one is the client.
//! A malformed entry on that walk refuses the request. The RFC 7239
//! `Forwarded` header is not read.
//!
//! # Providers' published ranges (examples, not built in)
//! Ranges change; fetch them from the provider, refresh them regularly, and
//! keep signature verification on (an address range is defence in depth,
//! never a substitute for the signature):
//! - **GitHub** publishes its webhook source ranges in the `hooks` list of
//!   its meta API (`GET https://api.github.com/meta`).
//! - **Stripe** lists the addresses its webhooks come from on its "IP
//!   addresses" documentation page (`https://stripe.com/files/ips/ips_webhooks.json`
//!   and `.txt` carry the same list).
//! - **Shopify** publishes no fixed source ranges for webhooks (they come
//!   from its cloud infrastructure); rely on the signature, and do not
//!   configure an allow-list for it.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use http::{HeaderMap, Request};
use ipnet::IpNet;

/// An IP address range (`203.0.113.0/24`, `2001:db8::/32`) or a single
/// address (`203.0.113.7`, `::1`).
///
/// ```
/// use hookgate_tower::source::Cidr;
/// let range: Cidr = "192.30.252.0/22".parse()?;
/// assert!(range.contains("192.30.253.1".parse()?));
/// assert!(!range.contains("140.82.112.1".parse()?));
/// let one: Cidr = "2001:db8::1".parse()?;
/// assert_eq!(one.to_string(), "2001:db8::1/128");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr(IpNet);

impl Cidr {
    /// Whether `ip` is in this range (IPv4-mapped IPv6 addresses compare
    /// as IPv4).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

impl FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            // Host bits set (`10.1.2.3/8`) mean the network (`10.0.0.0/8`).
            return Ok(Self(net.trunc()));
        }
        s.parse::<IpAddr>()
            .map(Self::from)
            .map_err(|_| InvalidCidr {
                input: s.chars().take(64).collect(),
            })
    }
}

impl From<IpAddr> for Cidr {
    fn from(ip: IpAddr) -> Self {
        Self(IpNet::from(ip.to_canonical()))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({})", self.0)
    }
}

/// A string that is neither an address range nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or CIDR range: {input:?}")]
#[non_exhaustive]
pub struct InvalidCidr {
    /// The input (its first 64 characters).
    pub input: String,
}

/// The peer address of the connection, for servers other than axum: insert
/// it into the request extensions before the layer runs (axum's
/// `ConnectInfo<SocketAddr>` is read as well).
///
/// ```
/// use hookgate_tower::source::PeerAddr;
/// # let peer: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
/// let mut req = http::Request::new(());
/// req.extensions_mut().insert(PeerAddr(peer));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The allow-list and trusted proxies of one layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourcePolicy {
    /// `None`: every source is allowed (no check, no address needed).
    pub(crate) allowed: Option<Vec<Cidr>>,
    pub(crate) trusted_proxies: Vec<Cidr>,
}

/// Why a request's source was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No peer address in the request extensions.
    NoPeerAddress,
    /// A trusted proxy sent an `X-Forwarded-For` entry that is not an address.
    BadForwardedFor,
    /// The client address is outside the allow-list.
    NotAllowed(IpAddr),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPeerAddress => f.write_str(
                "no peer address in the request (serve with ConnectInfo<SocketAddr> or insert PeerAddr)",
            ),
            Self::BadForwardedFor => {
                f.write_str("a trusted proxy sent a malformed X-Forwarded-For entry")
            }
            Self::NotAllowed(ip) => write!(f, "source address {ip} is not in the allow-list"),
        }
    }
}

impl SourcePolicy {
    /// Check the request's client address; `Ok` when there is no allow-list.
    pub(crate) fn check<B>(&self, req: &Request<B>) -> Result<(), Refused> {
        let Some(allowed) = &self.allowed else {
            return Ok(());
        };
        let peer = peer_addr(req).ok_or(Refused::NoPeerAddress)?;
        let client = self.client_ip(peer, req.headers())?;
        if allowed.iter().any(|range| range.contains(client)) {
            Ok(())
        } else {
            Err(Refused::NotAllowed(client))
        }
    }

    /// The client address: the peer, or, when the peer is a trusted proxy,
    /// the rightmost untrusted `X-Forwarded-For` hop.
    fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, Refused> {
        let trusted = |ip: IpAddr| self.trusted_proxies.iter().any(|r| r.contains(ip));
        let mut client = peer;
        if !trusted(client) {
            return Ok(client);
        }
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|value| value.as_bytes().rsplit(|&b| b == b','));
        for entry in entries {
            let hop = std::str::from_utf8(entry)
                .ok()
                .and_then(parse_hop)
                .ok_or(Refused::BadForwardedFor)?;
            client = hop;
            if !trusted(hop) {
                break;
            }
        }
        Ok(client)
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`203.0.113.7:4711`, `[2001:db8::1]:4711`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches([' ', '\t']);
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The connection's peer address from the request extensions.
fn peer_addr<B>(req: &Request<B>) -> Option<IpAddr> {
    let ext = req.extensions();
    let addr = ext.get::<PeerAddr>().map(|p| p.0);
    #[cfg(feature = "axum")]
    let addr = addr.or_else(|| {
        ext.get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0)
    });
    addr.map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn policy(allowed: &[&str], trusted: &[&str]) -> SourcePolicy {
        SourcePolicy {
            allowed: Some(cidrs(allowed)),
            trusted_proxies: cidrs(trusted),
        }
    }

    fn req(peer: Option<&str>, xff: &[&str]) -> Request<()> {
        let mut req = Request::new(());
        if let Some(peer) = peer {
            req.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
        }
        for v in xff {
            req.headers_mut()
                .append("x-forwarded-for", v.parse().unwrap());
        }
        req
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_ranges_and_single_addresses() {
        let r: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(r.to_string(), "10.0.0.0/8");
        assert!(r.contains(ip("10.255.0.1")));
        assert!(!r.contains(ip("11.0.0.1")));
        let one: Cidr = " 203.0.113.7 ".parse().unwrap();
        assert!(one.contains(ip("203.0.113.7")));
        assert!(one.contains(ip("::ffff:203.0.113.7")), "mapped IPv6");
        assert!(!one.contains(ip("203.0.113.8")));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::1")));
        for bad in ["", "10.0.0.0/33", "example.com", "10.0.0", "1.2.3.4/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn no_allow_list_checks_nothing() {
        assert_eq!(SourcePolicy::default().check(&req(None, &[])), Ok(()));
    }

    #[test]
    fn the_peer_decides_unless_it_is_a_trusted_proxy() {
        let p = policy(&["203.0.113.0/24"], &[]);
        assert_eq!(p.check(&req(Some("203.0.113.9:1234"), &[])), Ok(()));
        assert_eq!(
            p.check(&req(Some("198.51.100.1:1234"), &["203.0.113.9"])),
            Err(Refused::NotAllowed(ip("198.51.100.1"))),
            "X-Forwarded-For from an untrusted peer is ignored"
        );
        assert_eq!(
            p.check(&req(Some("[::ffff:203.0.113.9]:1234"), &[])),
            Ok(())
        );
        assert_eq!(p.check(&req(None, &[])), Err(Refused::NoPeerAddress));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let p = policy(&["203.0.113.0/24"], &["10.0.0.0/8", "127.0.0.1"]);
        let peer = Some("127.0.0.1:1");
        assert_eq!(p.check(&req(peer, &["203.0.113.7"])), Ok(()));
        assert_eq!(p.check(&req(peer, &["203.0.113.7, 10.1.2.3"])), Ok(()));
        assert_eq!(p.check(&req(peer, &["203.0.113.7", "10.1.2.3:80"])), Ok(()));
        // A client-written entry on the left is never reached.
        assert_eq!(
            p.check(&req(peer, &["203.0.113.7, 198.51.100.9"])),
            Err(Refused::NotAllowed(ip("198.51.100.9")))
        );
        // All trusted: the leftmost is the client; none: the proxy itself.
        assert_eq!(
            p.check(&req(peer, &["10.0.0.1,10.0.0.2"])),
            Err(Refused::NotAllowed(ip("10.0.0.1")))
        );
        assert_eq!(
            p.check(&req(peer, &[])),
            Err(Refused::NotAllowed(ip("127.0.0.1")))
        );
        assert_eq!(
            p.check(&req(peer, &["203.0.113.7, unknown"])),
            Err(Refused::BadForwardedFor)
        );
        assert_eq!(
            p.check(&req(peer, &["[2001:db8::1]:443"])),
            Err(Refused::NotAllowed(ip("2001:db8::1")))
        );
    }

    proptest::proptest! {
        /// Any `X-Forwarded-For` bytes: no panic, and the client found is
        /// the peer or one of the header's own entries.
        #[test]
        fn forwarded_for_never_panics_and_names_a_real_hop(
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            hops in proptest::collection::vec((0u8..4, 0u8..255), 0..6),
        ) {
            let p = policy(&["0.0.0.0/0", "::/0"], &["127.0.0.0/8", "10.0.0.0/8"]);
            let mut headers = HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_bytes(&value) {
                headers.append("x-forwarded-for", v);
            }
            let list: Vec<String> = hops
                .iter()
                .map(|&(kind, n)| match kind {
                    0 => format!("10.0.0.{n}"),
                    1 => format!("203.0.113.{n}"),
                    2 => format!("[2001:db8::{n:x}]:443"),
                    _ => format!("127.0.0.{n}"),
                })
                .collect();
            if !list.is_empty() {
                headers.append("x-forwarded-for", list.join(", ").parse().unwrap());
            }
            let peer = ip("127.0.0.1");
            if let Ok(client) = p.client_ip(peer, &headers) {
                let text = headers
                    .get_all("x-forwarded-for")
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(",");
                proptest::prop_assert!(
                    client == peer || text.split(',').any(|e| parse_hop(e) == Some(client)),
                    "{client} not in {text:?}"
                );
            }
        }
    }

    #[test]
    fn an_empty_allow_list_refuses_everyone() {
        let p = policy(&[], &[]);
        assert_eq!(
            p.check(&req(Some("127.0.0.1:1"), &[])),
            Err(Refused::NotAllowed(ip("127.0.0.1")))
        );
    }
}
