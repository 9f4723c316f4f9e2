//! Which address a request comes from, for per-client rate limits.
//!
//! Forwarding headers are believed only when the direct peer is a configured trusted proxy (an
//! ingress), and then the right-most address that is not itself a trusted proxy is the client:
//! everything left of it was written by the client and could be anything.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer_ip = canonical(peer.ip());
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer_ip) {
        return peer_ip;
    }
    let hops = forwarded_hops(headers);
    hops.iter()
        .rev()
        .find(|ip| !trusted(ip))
        .or_else(|| hops.first())
        .copied()
        .unwrap_or(peer_ip)
}

/// Addresses from `Forwarded: for=…` and `X-Forwarded-For`, in the order the proxies appended
/// them. An entry that does not parse ends the list there: nothing left of garbage is trusted.
fn forwarded_hops(headers: &HeaderMap) -> Vec<IpAddr> {
    let mut hops = Vec::new();
    let forwarded = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok());
    for value in forwarded {
        for element in value.split(',') {
            for pair in element.split(';') {
                if let Some((name, value)) = pair.trim().split_once('=')
                    && name.trim().eq_ignore_ascii_case("for")
                {
                    hops.push(parse_node(value));
                }
            }
        }
    }
    if hops.is_empty() {
        for value in headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            hops.extend(value.split(',').map(parse_node));
        }
    }
    // Keep only the well-formed suffix.
    let start = hops.iter().rposition(Option::is_none).map_or(0, |i| i + 1);
    hops[start..].iter().flatten().copied().collect()
}

/// `203.0.113.9`, `203.0.113.9:4711`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(value: &str) -> Option<IpAddr> {
    let value = value.trim().trim_matches('"');
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    value
        .strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|ip| ip.parse().ok())
        .map(canonical)
}

/// IPv4 clients seen through an IPv6 socket count as the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn proxies() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().expect("cidr")]
    }

    const INGRESS: &str = "10.1.2.3:5000";
    const STRANGER: &str = "198.51.100.7:5000";

    #[test]
    fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
        let ip = client_ip(
            STRANGER.parse().expect("addr"),
            &headers(&[("x-forwarded-for", "1.2.3.4")]),
            &proxies(),
        );
        assert_eq!(ip.to_string(), "198.51.100.7");
    }

    #[test]
    fn behind_the_ingress_the_rightmost_untrusted_hop_is_the_client() {
        let cases: &[(&[(&'static str, &'static str)], &str)] = &[
            (&[("x-forwarded-for", "203.0.113.9")], "203.0.113.9"),
            (
                &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.0.0.5")],
                "203.0.113.9",
            ),
            (
                &[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "203.0.113.9")],
                "203.0.113.9",
            ),
            (
                &[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")],
                "2001:db8::1",
            ),
            (
                &[("forwarded", "for=192.0.2.60;proto=http, for=10.0.0.9")],
                "192.0.2.60",
            ),
            (&[("x-forwarded-for", "10.0.0.7")], "10.0.0.7"),
            (&[("x-forwarded-for", "garbage")], "10.1.2.3"),
            (&[("x-forwarded-for", "203.0.113.9, garbage")], "10.1.2.3"),
            (&[], "10.1.2.3"),
        ];
        for (pairs, expected) in cases {
            let ip = client_ip(INGRESS.parse().expect("addr"), &headers(pairs), &proxies());
            assert_eq!(ip.to_string(), *expected, "{pairs:?}");
        }
    }

    #[test]
    fn ipv4_mapped_peers_are_plain_ipv4() {
        let ip = client_ip(
            "[::ffff:198.51.100.7]:80".parse().expect("addr"),
            &HeaderMap::new(),
            &[],
        );
        assert_eq!(ip.to_string(), "198.51.100.7");
    }
}
