//! Safety of webhook targets (SSRF): which addresses a webhook may reach, the check of a
//! `webhook_url` at job creation and at each delivery, and URLs as logs show them (the sender's
//! checking DNS resolver is in [`super::http`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::Url;

/// How long the check at job creation waits for the target's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The webhook URL `raw`, parsed (from the per-thread cache of [`crate::mru::parse_url`]:
/// most jobs of a deployment name the same few webhook URLs, each parsed at job creation and
/// again at every delivery).
pub(super) fn parse(raw: &str) -> Result<Url, url::ParseError> {
    crate::mru::parse_url(raw)
}

/// A target the webhook may not reach (the sender's resolver fails with it; see [`super::http`]).
#[derive(Debug)]
pub(super) struct NonPublicTarget(pub(super) String);

impl std::fmt::Display for NonPublicTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NonPublicTarget {}

const NOT_PUBLIC: &str =
    "a loopback, private, link-local, multicast or otherwise non-public address (allowed only with WEBHOOK_ALLOW_PRIVATE=true)";

/// The IP address a URL's host names literally (`None` for a domain name).
fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Refuses a URL whose host is a non-public IP address (odd IPv4 forms such as `2130706433`,
/// `0x7f.1` or `0177.0.0.1` are normalised by the URL parser first).
pub(super) fn check_literal(url: &Url, allow_private: bool) -> Result<(), String> {
    match literal_ip(url) {
        Some(ip) if !allow_private && !is_public(ip) => Err(format!("{ip} is {NOT_PUBLIC}")),
        _ => Ok(()),
    }
}

/// Checks a `webhook_url` when a job is created: an absolute `http://` or `https://` URL with a
/// host; unless `allow_private`, the host must not be, nor resolve to, a non-public address.
/// The error says what is wrong (without the URL's credentials).
pub(in crate::server) async fn check_target(raw: &str, allow_private: bool) -> Result<Url, String> {
    let url = parse(raw).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    let Some(host) = url.host_str().filter(|h| !h.is_empty()).map(str::to_owned) else {
        return Err("the URL has no host".into());
    };
    check_literal(&url, allow_private)?;
    if allow_private || literal_ip(&url).is_some() {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(80);
    let resolved = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host.as_str(), port))).await;
    let addrs: Vec<SocketAddr> = match resolved {
        Ok(Ok(a)) => a.collect(),
        Ok(Err(_)) | Err(_) => return Err(format!("the host `{host}` does not resolve")),
    };
    if addrs.is_empty() {
        return Err(format!("the host `{host}` does not resolve"));
    }
    all_public(&host, &addrs)?;
    Ok(url)
}

/// Refuses a name that resolved to any non-public address (the check at job creation and the
/// sender's resolver at each delivery): the reason, naming the name and the address.
pub(super) fn all_public(host: &str, addrs: &[SocketAddr]) -> Result<(), String> {
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(bad) => Err(format!("`{host}` resolves to {}, {NOT_PUBLIC}", bad.ip())),
        None => Ok(()),
    }
}

/// The URL as logs may show it: user and password replaced by `***`, every query value by `***`,
/// no fragment.
pub(super) fn masked(url: &Url) -> String {
    let mut u = url.clone();
    if !u.username().is_empty() || u.password().is_some() {
        let _ = u.set_password(None);
        let _ = u.set_username("***");
    }
    if u.query().is_some() {
        let keys: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        u.set_query(None);
        if !keys.is_empty() {
            u.query_pairs_mut().extend_pairs(keys.iter().map(|k| (k.as_str(), "***")));
        }
    }
    u.set_fragment(None);
    u.to_string()
}

/// Whether a webhook may reach `ip` without `WEBHOOK_ALLOW_PRIVATE`: not loopback, private,
/// shared (CGNAT), link-local, multicast, broadcast, unspecified, reserved or documentation
/// space, including IPv4 addresses inside IPv6 ones (mapped, compatible, NAT64, 6to4).
pub(in crate::server) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded_v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if s[..6] == [0; 6] {
        // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
        return !ip.is_unspecified() && !ip.is_loopback() && is_public_v4(embedded_v4(s[6], s[7]));
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return is_public_v4(embedded_v4(s[6], s[7])); // NAT64 64:ff9b::/96
    }
    if s[0] == 0x2002 {
        return is_public_v4(embedded_v4(s[1], s[2])); // 6to4
    }
    !((s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] & 0xff00) == 0xff00 // multicast
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0; 3])) // discard-only 100::/64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "0.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[tokio::test]
    async fn odd_ipv4_forms_are_normalised_then_refused() {
        for raw in [
            "http://127.0.0.1/",
            "http://[::1]:8080/",
            "http://0.0.0.0/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://172.16.5.4/",
            "http://192.168.0.10/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[fe80::1]/",
            "http://[fc00::1]/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "https://user:pw@127.0.0.1/",
        ] {
            let e = check_target(raw, false).await.expect_err(raw);
            assert!(e.contains("WEBHOOK_ALLOW_PRIVATE"), "{raw}: {e}");
            assert!(!e.contains("pw"), "{raw}: {e}");
            assert!(check_target(raw, true).await.is_ok(), "{raw} is allowed with WEBHOOK_ALLOW_PRIVATE");
        }
        // A public literal needs no resolution and is accepted.
        assert!(check_target("https://93.184.216.34/hook", false).await.is_ok());
        for raw in ["ftp://example.com/", "http://", "not a url", "file:///etc/passwd"] {
            assert!(check_target(raw, false).await.is_err(), "{raw}");
        }
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        let e = check_target("http://localhost:9/hook", false).await.unwrap_err();
        assert!(e.contains("localhost") && e.contains("WEBHOOK_ALLOW_PRIVATE"), "{e}");
        assert!(check_target("http://localhost:9/hook", true).await.is_ok());
    }

    #[test]
    fn masked_urls_hide_credentials_and_query_values() {
        let u = Url::parse("https://alice:s3cret@hooks.example.com:8443/in/x?token=abc&v=2#frag").unwrap();
        assert_eq!(masked(&u), "https://***@hooks.example.com:8443/in/x?token=***&v=***");
        let u = Url::parse("http://only-user@h.example/p").unwrap();
        assert_eq!(masked(&u), "http://***@h.example/p");
        let u = Url::parse("http://h.example/p").unwrap();
        assert_eq!(masked(&u), "http://h.example/p");
    }
}
