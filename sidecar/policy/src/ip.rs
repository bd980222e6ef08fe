//! Client addresses: trusted IP ranges matched in O(log n), and the client address behind
//! trusted proxies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;
use ipnet::IpNet;
use portcullis_config::IpRange;

/// A set of inclusive address ranges, sorted and merged per family, searched by bisection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpSet {
    /// The set of `ranges`. Ranges whose ends are of different families, or reversed, are
    /// skipped (the compiler refuses them before they get here).
    pub fn new(ranges: &[IpRange]) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for r in ranges {
            match (canonical(r.from), canonical(r.to)) {
                (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => v4.push((u32::from(a), u32::from(b))),
                (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => v6.push((u128::from(a), u128::from(b))),
                _ => {}
            }
        }
        Self {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// The set of `nets`.
    pub fn from_nets(nets: &[IpNet]) -> Self {
        let ranges: Vec<IpRange> = nets
            .iter()
            .map(|n| IpRange {
                from: n.network(),
                to: n.broadcast(),
            })
            .collect();
        Self::new(&ranges)
    }

    /// No range at all.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` lies in one of the ranges.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports) as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// The address a client is counted by in its budgets (failed sign-ins, introspection calls,
/// open connections): an IPv4 address as itself (IPv4-mapped IPv6 too), an IPv6 address by
/// its /64, which one host usually owns whole: a client cannot get a fresh budget by moving
/// to another address of its own network.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

fn merge<T: Ord + Copy + Successor>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (from, to) in ranges {
        match out.last_mut() {
            Some(last) if last.1.successor().is_none_or(|next| from <= next) => {
                if to > last.1 {
                    last.1 = to;
                }
            }
            _ => out.push((from, to)),
        }
    }
    out.shrink_to_fit();
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    // The last range starting at or before `x`.
    let i = ranges.partition_point(|&(from, _)| from <= x);
    i > 0 && x <= ranges[i - 1].1
}

trait Successor: Sized {
    fn successor(self) -> Option<Self>;
}
impl Successor for u32 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}
impl Successor for u128 {
    fn successor(self) -> Option<Self> {
        self.checked_add(1)
    }
}

const X_FORWARDED_FOR: &str = "x-forwarded-for";

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// nearest address in `X-Forwarded-For` (read right to left) that is not itself a trusted
/// proxy. A malformed entry stops the walk at the last address believed.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted_proxies: &IpSet) -> IpAddr {
    let mut client = canonical(peer);
    if trusted_proxies.is_empty() || !trusted_proxies.contains(client) {
        return client;
    }
    // Header lines in reverse order, each line's entries in reverse order.
    for line in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        for entry in line.as_bytes().rsplit(|&b| b == b',') {
            let Some(ip) = parse_hop(entry) else {
                return client;
            };
            client = canonical(ip);
            if !trusted_proxies.contains(client) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, possibly bracketed or with a port.
fn parse_hop(entry: &[u8]) -> Option<IpAddr> {
    let s = std::str::from_utf8(entry).ok()?.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    #[test]
    fn clients_are_counted_by_address_ipv6_by_its_64() {
        let net = |s: &str| client_network(s.parse().unwrap());
        assert_eq!(net("2001:db8:1:2:aaaa::1"), net("2001:db8:1:2:bbbb::9"));
        assert_eq!(net("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::");
        assert_ne!(net("2001:db8:1:2::1"), net("2001:db8:1:3::1"));
        assert_eq!(net("::ffff:10.0.0.1").to_string(), "10.0.0.1");
        assert_eq!(net("10.0.0.1").to_string(), "10.0.0.1");
        assert_ne!(net("10.0.0.1"), net("10.0.0.2"));
    }

    use super::*;

    fn range(from: &str, to: &str) -> IpRange {
        IpRange {
            from: from.parse().unwrap(),
            to: to.parse().unwrap(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_are_inclusive_at_both_ends() {
        let set = IpSet::new(&[range("192.168.1.10", "192.168.1.50")]);
        assert!(!set.contains(ip("192.168.1.9")));
        assert!(set.contains(ip("192.168.1.10")));
        assert!(set.contains(ip("192.168.1.50")));
        assert!(!set.contains(ip("192.168.1.51")));
        assert!(!set.contains(ip("::1")), "families never mix");
    }

    #[test]
    fn overlapping_and_adjacent_ranges_merge() {
        let set = IpSet::new(&[
            range("10.0.0.10", "10.0.0.20"),
            range("10.0.0.0", "10.0.0.9"),
            range("10.0.0.15", "10.0.0.30"),
            range("10.0.1.0", "10.0.1.0"),
        ]);
        assert_eq!(set.v4, vec![(0x0a00_0000, 0x0a00_001e), (0x0a00_0100, 0x0a00_0100)]);
        assert!(set.contains(ip("10.0.0.25")));
        assert!(!set.contains(ip("10.0.0.31")));
    }

    #[test]
    fn ipv6_and_mapped_ipv4() {
        let set = IpSet::new(&[
            range("2001:db8::", "2001:db8::ffff"),
            range("127.0.0.0", "127.255.255.255"),
        ]);
        assert!(!set.contains(ip("2001:db8::1:0")));
        assert!(set.contains(ip("2001:db8::abcd")));
        assert!(
            set.contains(ip("::ffff:127.0.0.1")),
            "a dual-stack socket's view of IPv4"
        );
        let full = IpSet::new(&[range("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]);
        assert!(full.contains(ip("fe80::1")));
    }

    #[test]
    fn thousands_of_ranges_bisect() {
        let ranges: Vec<IpRange> = (0..5000u32)
            .map(|i| {
                let base = Ipv4Addr::from(0x0b00_0000 + i * 16);
                let end = Ipv4Addr::from(0x0b00_0000 + i * 16 + 7);
                IpRange {
                    from: IpAddr::V4(base),
                    to: IpAddr::V4(end),
                }
            })
            .collect();
        let set = IpSet::new(&ranges);
        assert_eq!(set.v4.len(), 5000);
        assert!(set.contains(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + 4999 * 16 + 7))));
        assert!(!set.contains(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + 4999 * 16 + 8))));
        assert!(!set.contains(IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + 17 * 16 + 12))));
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_FORWARDED_FOR, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxies = IpSet::from_nets(&["10.0.0.0/8".parse().unwrap()]);
        let h = xff(&["203.0.113.7, 10.1.1.1"]);
        assert_eq!(
            client_ip(ip("192.0.2.1"), &h, &proxies),
            ip("192.0.2.1"),
            "untrusted peer"
        );
        assert_eq!(client_ip(ip("10.2.2.2"), &h, &proxies), ip("203.0.113.7"));
        assert_eq!(client_ip(ip("10.2.2.2"), &h, &IpSet::default()), ip("10.2.2.2"));
        // A spoofed leftmost entry is never reached: the nearest untrusted hop wins.
        let h = xff(&["1.2.3.4", "198.51.100.9, 10.9.9.9"]);
        assert_eq!(client_ip(ip("10.2.2.2"), &h, &proxies), ip("198.51.100.9"));
        // Garbage stops the walk at the last believed hop.
        let h = xff(&["not-an-ip, 10.9.9.9"]);
        assert_eq!(client_ip(ip("10.2.2.2"), &h, &proxies), ip("10.9.9.9"));
        let h = xff(&["[2001:db8::5]:443", "192.0.2.44:8080"]);
        assert_eq!(client_ip(ip("10.2.2.2"), &h, &proxies), ip("192.0.2.44"));
        assert_eq!(client_ip(ip("10.2.2.2"), &HeaderMap::new(), &proxies), ip("10.2.2.2"));
    }
}
