//! Who may choose their cohort with the header: the router believes the header only from
//! these peers, so an outside caller cannot pick the internal build by setting it.

use std::net::IpAddr;

use ipnet::IpNet;

/// The peers whose cohort header is believed.
///
/// The default trusts nobody: a router whose config says nothing about it drops the header
/// from every caller. Trusting everybody has to be written out (`trusted_peers: any`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustedPeers {
    /// Peers in these address ranges; none at all means nobody.
    Only(Vec<IpNet>),
    /// Every peer that can reach the router.
    Any,
}

impl Default for TrustedPeers {
    fn default() -> TrustedPeers {
        TrustedPeers::Only(vec![])
    }
}

impl TrustedPeers {
    /// The word that trusts every peer in cohort's files.
    pub const ANY: &'static str = "any";

    /// Whether `peer` may choose its cohort with the header.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        // A v4 client seen through a dual-stack socket is still that v4 client.
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match self {
            TrustedPeers::Any => true,
            TrustedPeers::Only(nets) => nets.iter().any(|net| net.contains(&peer)),
        }
    }

    /// Whether nobody is trusted: the header never chooses a cohort.
    pub fn is_nobody(&self) -> bool {
        matches!(self, TrustedPeers::Only(nets) if nets.is_empty())
    }

    /// The ranges that take in every address of their family (`0.0.0.0/0`, `::/0`): as open
    /// as [`TrustedPeers::Any`] for that family, but without saying so.
    pub fn everyone_ranges(&self) -> Vec<IpNet> {
        match self {
            TrustedPeers::Any => vec![],
            TrustedPeers::Only(nets) => nets.iter().filter(|n| n.prefix_len() == 0).copied().collect(),
        }
    }
}

/// `any`, or the list of ranges (as the router's config file writes them).
impl serde::Serialize for TrustedPeers {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TrustedPeers::Any => s.serialize_str(TrustedPeers::ANY),
            TrustedPeers::Only(nets) => nets.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(nets: &[&str]) -> TrustedPeers {
        TrustedPeers::Only(nets.iter().map(|n| n.parse().expect("cidr")).collect())
    }

    #[test]
    fn nobody_is_trusted_by_default_and_everybody_only_when_written_out() {
        let peer: IpAddr = "203.0.113.9".parse().expect("ip");
        assert!(!TrustedPeers::default().trusts(peer));
        assert!(TrustedPeers::default().is_nobody());
        assert!(TrustedPeers::Any.trusts(peer));
        assert!(!TrustedPeers::Any.is_nobody());
    }

    #[test]
    fn ranges_trust_their_members_and_v4_mapped_v6_peers() {
        let nets = only(&["10.0.0.0/8", "fd00::/8"]);
        assert!(nets.trusts("10.1.2.3".parse().expect("ip")));
        assert!(nets.trusts("::ffff:10.0.0.1".parse().expect("ip")));
        assert!(nets.trusts("fd00::1".parse().expect("ip")));
        assert!(!nets.trusts("192.168.1.1".parse().expect("ip")));
        assert!(!nets.trusts("::ffff:192.168.1.1".parse().expect("ip")));
    }

    #[test]
    fn ranges_of_every_address_are_found() {
        let nets = only(&["10.0.0.0/8", "0.0.0.0/0", "::/0"]);
        assert_eq!(nets.everyone_ranges().len(), 2);
        assert!(only(&["10.0.0.0/8"]).everyone_ranges().is_empty());
    }

    #[test]
    fn written_as_any_or_as_the_list() {
        assert_eq!(
            serde_json::to_string(&TrustedPeers::Any).expect("json"),
            "\"any\""
        );
        assert_eq!(
            serde_json::to_string(&only(&["10.0.0.0/8"])).expect("json"),
            "[\"10.0.0.0/8\"]"
        );
    }
}
