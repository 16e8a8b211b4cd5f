//! The SSRF guard end to end: literal IPs and host names resolving (through
//! an injected resolver) into every refused range, IPv4 embedded in IPv6 in
//! every form included, are refused before any connection; redirects are not followed; the allow-list opens loopback.
//!
//! Only 127.0.0.1 is ever connected to. Every refused address is first
//! checked against the policy, so a broken policy fails the test before any
//! traffic could leave.

mod sender_support;

use std::{net::IpAddr, sync::Arc, time::Duration};

use hookgate_core::Scheme;
use hookgate_sender::{
    delivery::DeliveryClient,
    outcome::{Class, Classifier},
    ssrf::{SsrfPolicy, StaticResolver},
    Endpoint, Message,
};
use sender_support::{loopback, Receiver, Reply};

/// One address from every refused range.
const REFUSED: &[&str] = &[
    "0.0.0.0",
    "0.1.2.3",
    "127.0.0.1",
    "127.1.2.3",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "192.0.0.8",
    "198.18.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fe80::1",
    "fec0::1",
    "fc00::1",
    "fd00:ec2::254",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:192.168.0.1",
    "::ffff:100.64.0.1",
    "64:ff9b::a9fe:a9fe",
    // IPv4 embedded in IPv6: compatible, mapped (hex), translated, NAT64
    // well-known and local-use, 6to4, Teredo (client and server).
    "::127.0.0.1",
    "::a9fe:a9fe",
    "::ffff:7f00:1",
    "::ffff:0:7f00:1",
    "64:ff9b::7f00:1",
    "64:ff9b:1::7f00:1",
    "64:ff9b:1:7f00:0:100::",
    "2002:7f00:1::1",
    "2002:a9fe:a9fe::1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "2001:0:a9fe:a9fe:8000:63bf:f7f7:f7f7",
    // Documentation.
    "192.0.2.1",
    "198.51.100.1",
    "203.0.113.1",
    "2001:db8::1",
    "3fff::1",
];

fn endpoint(url: &str) -> Endpoint {
    Endpoint::new("ep", url, Scheme::GitHub, "secret")
        .unwrap()
        .with_connect_timeout(Duration::from_millis(300))
        .unwrap()
        .with_timeout(Duration::from_millis(500))
        .unwrap()
        // These tests are about the address guard; the receivers are plain HTTP.
        .allowing_http(true)
}

fn url_for(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("http://{v4}:{port}/hook"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}/hook"),
    }
}

#[tokio::test]
async fn literal_ips_in_every_refused_range_are_refused() {
    // A live receiver on loopback: it must see nothing.
    let receiver = Receiver::start([]).await;
    let port = receiver.addr.port();
    let policy = SsrfPolicy::default();
    let client = DeliveryClient::new(policy.clone(), Classifier::default());
    let msg = Message::new("t", "{}");
    for ip in REFUSED {
        let ip: IpAddr = ip.parse().unwrap();
        let forbidden = policy.check(ip).expect_err("policy must refuse");
        let r = client.attempt(&endpoint(&url_for(ip, port)), &msg).await;
        assert_eq!(r.class, Class::Permanent, "{ip}");
        assert_eq!(r.attempt.status, None, "{ip}");
        let err = r.attempt.error.unwrap();
        assert_eq!(err, format!("refused: {forbidden}"), "{ip}");
        assert!(err.contains(forbidden.range));
        assert!(r.reason.unwrap().starts_with("refused: "));
    }
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn host_names_resolving_into_refused_ranges_are_refused() {
    let receiver = Receiver::start([]).await;
    let port = receiver.addr.port();
    let policy = SsrfPolicy::default();
    let mut resolver = StaticResolver::new();
    for (i, ip) in REFUSED.iter().enumerate() {
        let ip: IpAddr = ip.parse().unwrap();
        policy.check(ip).expect_err("policy must refuse");
        resolver = resolver.with_host(&format!("evil{i}.test"), [ip]);
    }
    // Several addresses, all refused.
    resolver = resolver.with_host(
        "rebind.test",
        [
            "10.0.0.1".parse().unwrap(),
            "169.254.169.254".parse().unwrap(),
        ],
    );
    let client = DeliveryClient::with_resolver(policy, Classifier::default(), Arc::new(resolver));
    let msg = Message::new("t", "{}");
    for (i, ip) in REFUSED.iter().enumerate() {
        let host = format!("evil{i}.test");
        let r = client
            .attempt(&endpoint(&format!("http://{host}:{port}/hook")), &msg)
            .await;
        assert_eq!(r.class, Class::Permanent, "{host} -> {ip}");
        let err = r.attempt.error.unwrap();
        assert!(
            err.starts_with(&format!(
                "refused: {host} resolves only to refused addresses"
            )),
            "{err}"
        );
    }
    let r = client
        .attempt(&endpoint(&format!("http://rebind.test:{port}/")), &msg)
        .await;
    assert_eq!(r.class, Class::Permanent);
    assert!(r.attempt.error.unwrap().contains("10.0.0.1"));
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn allow_list_lets_loopback_through_by_ip_and_by_name() {
    let receiver = Receiver::start([]).await;
    let port = receiver.addr.port();
    let resolver = StaticResolver::new()
        .with_host("local.test", ["127.0.0.1".parse().unwrap()])
        // Mixed answers: only the allowed address is connected to.
        .with_host(
            "mixed.test",
            ["10.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()],
        );
    let client =
        DeliveryClient::with_resolver(loopback(), Classifier::default(), Arc::new(resolver));
    let msg = Message::new("t", "{}");
    for url in [
        receiver.url(),
        format!("http://local.test:{port}/hook"),
        format!("http://mixed.test:{port}/hook"),
    ] {
        let r = client.attempt(&endpoint(&url), &msg).await;
        assert_eq!(r.class, Class::Delivered, "{url}: {:?}", r.attempt.error);
        assert_eq!(r.remote_addr.unwrap().ip().to_string(), "127.0.0.1");
    }
    assert_eq!(receiver.count(), 3);

    // The same names without the allow-list: refused, nothing sent.
    let strict = DeliveryClient::with_resolver(
        SsrfPolicy::default(),
        Classifier::default(),
        Arc::new(StaticResolver::new().with_host("local.test", ["127.0.0.1".parse().unwrap()])),
    );
    let r = strict
        .attempt(&endpoint(&format!("http://local.test:{port}/hook")), &msg)
        .await;
    assert_eq!(r.class, Class::Permanent);
    assert_eq!(receiver.count(), 3);

    // allow_private opens loopback too.
    let private = DeliveryClient::new(SsrfPolicy::default().allow_private(), Classifier::default());
    let r = private.attempt(&endpoint(&receiver.url()), &msg).await;
    assert_eq!(r.class, Class::Delivered);
    assert_eq!(receiver.count(), 4);
}

#[tokio::test]
async fn localhost_through_the_system_resolver_is_refused() {
    let receiver = Receiver::start([]).await;
    let client = DeliveryClient::new(SsrfPolicy::default(), Classifier::default());
    let url = format!("http://localhost:{}/hook", receiver.addr.port());
    let r = client
        .attempt(&endpoint(&url), &Message::new("t", "{}"))
        .await;
    assert_eq!(r.class, Class::Permanent);
    let err = r.attempt.error.unwrap();
    assert!(
        err.starts_with("refused: localhost resolves only to refused addresses"),
        "{err}"
    );
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    // A second loopback receiver the redirect points at: it must see nothing.
    let target = Receiver::start([]).await;
    let redirector = Receiver::start([
        Reply::status(302).header("Location", "http://10.0.0.1/internal"),
        Reply::status(307).header("Location", &target.url()),
        Reply::status(301).header("Location", "http://169.254.169.254/latest/meta-data/"),
    ])
    .await;
    let client = DeliveryClient::new(loopback(), Classifier::default());
    let msg = Message::new("t", "{}");
    for want in [302, 307, 301] {
        let r = client.attempt(&endpoint(&redirector.url()), &msg).await;
        assert_eq!(r.attempt.status, Some(want));
        assert_eq!(r.class, Class::Permanent);
        assert_eq!(
            r.reason
                .as_deref()
                .map(|s| s.split(' ').take(2).collect::<Vec<_>>().join(" ")),
            Some(format!("HTTP {want}"))
        );
    }
    assert_eq!(redirector.count(), 3);
    assert_eq!(target.count(), 0);
}

#[tokio::test]
async fn worker_dead_letters_refused_destinations_without_sending() {
    let receiver = Receiver::start([]).await;
    let queue: Arc<dyn hookgate_sender::Queue> = Arc::new(hookgate_sender::MemoryQueue::new());
    let sender = hookgate_sender::Sender::new(queue.clone());
    sender
        .add_endpoint(endpoint(&receiver.url()))
        .await
        .unwrap();
    let (builder, mut reports) =
        sender_support::test_worker(queue.clone(), sender_support::fast_policy(5));
    // Strict policy: loopback refused.
    let w = builder
        .with_ssrf_policy(SsrfPolicy::default())
        .build()
        .unwrap()
        .spawn();
    let key = sender.enqueue("ep", Message::new("t", "{}")).await.unwrap();
    let r = sender_support::until_final(&mut reports, &key).await;
    w.shutdown(Duration::from_secs(5)).await;
    assert_eq!(r.len(), 1);
    let dead = queue.get_dead(&key).await.unwrap().unwrap();
    assert_eq!(
        dead.reason.to_string(),
        "permanent: refused: destination 127.0.0.1 is refused by the SSRF guard (loopback)"
    );
    assert_eq!(receiver.count(), 0);
}

#[tokio::test]
async fn plain_http_is_refused_unless_the_endpoint_or_the_policy_allows_it() {
    let receiver = Receiver::start([]).await;
    let msg = Message::new("t", "{}");
    let loopback = SsrfPolicy::default().allow("127.0.0.0/8".parse().unwrap());
    let strict_http = DeliveryClient::new(loopback.clone(), Classifier::default());
    let refused = endpoint(&receiver.url()).allowing_http(false);
    let r = strict_http.attempt(&refused, &msg).await;
    assert_eq!(r.class, Class::Permanent);
    let err = r.attempt.error.unwrap();
    assert!(err.starts_with("refused: URL 1 is plain http://"), "{err}");
    assert!(err.contains("allow plain HTTP explicitly"), "{err}");
    assert_eq!(receiver.count(), 0);
    // Allowed by the endpoint.
    let r = strict_http.attempt(&endpoint(&receiver.url()), &msg).await;
    assert_eq!(r.class, Class::Delivered, "{:?}", r.attempt.error);
    // Allowed by the client's policy, for every endpoint.
    let open = DeliveryClient::new(loopback.allow_plain_http(), Classifier::default());
    let r = open.attempt(&refused, &msg).await;
    assert_eq!(r.class, Class::Delivered, "{:?}", r.attempt.error);
    assert_eq!(receiver.count(), 2);
}
