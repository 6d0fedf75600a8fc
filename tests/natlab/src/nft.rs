//! The nftables rulesets: a home/ISP router, and packet loss on an internet-facing interface.
//!
//! Every router namespace has its internet-facing interface named [`WAN`] and its LAN bridge
//! named [`LAN`], so one ruleset text serves every router.

use crate::topology::Nat;

/// The internet-facing interface of every site (router or open host).
pub const WAN: &str = "wan0";
/// The LAN bridge of every router.
pub const LAN: &str = "lan0";

/// A NAT router: masquerade on [`WAN`], no unsolicited inbound traffic.
///
/// - `masquerade` is endpoint-independent and port-preserving (hyperdht: CONSISTENT);
///   `masquerade fully-random` picks a new random port per destination (RANDOM).
/// - `iifname wan0 ct state new drop` on input, and a forward policy of drop except LAN to WAN
///   and established/related: an inbound packet that opens no flow is dropped before its
///   conntrack entry is confirmed. Without that an early probe from the peer confirms an entry
///   for the same tuple the NAT wants for our outbound packet, the NAT remaps the port, and
///   the punch fails (HOLEPUNCH.md). Real home routers behave like these rules.
/// - No hairpinning: a LAN host's packet to the router's own public address is not reflected.
pub fn router(nat: Nat) -> String {
    let masquerade = match nat {
        Nat::Cone => "masquerade",
        Nat::Random => "masquerade fully-random",
    };
    format!(
        r#"table ip natlab {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "{WAN}" {masquerade}
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname "{WAN}" ct state new drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "{LAN}" oifname "{WAN}" accept
  }}
}}
"#
    )
}

/// Drops `percent`% of UDP datagrams in each direction on [`WAN`] (the kernel has no netem;
/// nft's `numgen random` does the job). Runs before conntrack on the way in (priority -300)
/// and after NAT on the way out (priority 300), so a dropped packet leaves no NAT state.
pub fn loss(percent: u8) -> String {
    format!(
        r#"table ip natlab_loss {{
  chain inbound {{
    type filter hook prerouting priority -300; policy accept;
    iifname "{WAN}" meta l4proto udp numgen random mod 100 < {percent} drop
  }}
  chain outbound {{
    type filter hook postrouting priority 300; policy accept;
    oifname "{WAN}" meta l4proto udp numgen random mod 100 < {percent} drop
  }}
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cone_and_random_differ_only_in_masquerade() {
        let cone = router(Nat::Cone);
        let random = router(Nat::Random);
        assert!(cone.contains("oifname \"wan0\" masquerade\n"));
        assert!(random.contains("masquerade fully-random"));
        assert_eq!(
            cone.replace("masquerade\n", "masquerade fully-random\n"),
            random
        );
    }

    #[test]
    fn loss_names_the_percentage_twice() {
        assert_eq!(loss(7).matches("mod 100 < 7 drop").count(), 2);
    }
}
