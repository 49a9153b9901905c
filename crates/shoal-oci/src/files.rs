//! The files docker writes per container and bind-mounts over the image's: /etc/resolv.conf
//! (the embedded DNS server), /etc/hosts and /etc/hostname. Pure: contents only.

use std::net::IpAddr;

/// The embedded DNS server every task's sandbox has.
pub const EMBEDDED_DNS: &str = "127.0.0.11";

/// resolv.conf as docker writes it on a user-defined network: the embedded server, the
/// search domains given, `ndots:0` (names are looked up as given first).
pub fn resolv_conf(search: &[String]) -> String {
    let mut out = format!("nameserver {EMBEDDED_DNS}\n");
    if !search.is_empty() {
        out += &format!("search {}\n", search.join(" "));
    }
    out + "options ndots:0\n"
}

/// /etc/hosts as docker writes it: loopback and the IPv6 names, then each address of the
/// task with its hostname.
pub fn hosts(hostname: &str, addresses: &[IpAddr]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff00::1\tip6-allnodes\n\
         ff00::2\tip6-allrouters\n",
    );
    for a in addresses {
        out += &format!("{a}\t{hostname}\n");
    }
    out
}

pub fn hostname(hostname: &str) -> String {
    format!("{hostname}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn files_as_docker_writes_them() {
        expect![[r#"
            nameserver 127.0.0.11
            options ndots:0
        "#]]
        .assert_eq(&resolv_conf(&[]));
        expect![[r#"
            nameserver 127.0.0.11
            search corp.example
            options ndots:0
        "#]]
        .assert_eq(&resolv_conf(&["corp.example".into()]));
        expect![[r#"
            127.0.0.1	localhost
            ::1	localhost ip6-localhost ip6-loopback
            fe00::0	ip6-localnet
            ff00::0	ip6-mcastprefix
            ff00::1	ip6-allnodes
            ff00::2	ip6-allrouters
            10.0.1.5	web-1
            10.0.2.7	web-1
        "#]]
        .assert_eq(&hosts(
            "web-1",
            &["10.0.1.5".parse().unwrap(), "10.0.2.7".parse().unwrap()],
        ));
        assert_eq!(hostname("web-1"), "web-1\n");
    }
}
