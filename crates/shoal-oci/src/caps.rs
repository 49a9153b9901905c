//! The container's capabilities: docker's default set changed by `--cap-add`/`--cap-drop`.

use std::collections::BTreeSet;

use oci_spec::runtime::Capability;

use crate::error::OciError;

/// Docker's default set (moby's `oci/caps` defaults).
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability of capabilities(7) that oci-spec knows: what `ALL` means.
const ALL: [&str; 41] = [
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETGID",
    "SETFCAP",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// `CAP_NET_ADMIN`, `net_admin` and `NET_ADMIN` all name one capability; `ALL` is kept.
fn normalise(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    upper
        .strip_prefix("CAP_")
        .map(str::to_string)
        .unwrap_or(upper)
}

fn parse(name: &str) -> Result<Capability, OciError> {
    let n = normalise(name);
    if !ALL.contains(&n.as_str()) {
        return Err(OciError::UnknownCapability(name.to_string()));
    }
    serde_json::from_value(serde_json::Value::String(n))
        .map_err(|_| OciError::UnknownCapability(name.to_string()))
}

/// The set as docker computes it: `ALL` in `add` starts from every capability, `ALL` in
/// `drop` from none; then adds, then drops (a name in both is dropped unless added by name
/// over a dropped `ALL`). Sorted by name, so the generated config is stable.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<Vec<Capability>, OciError> {
    for name in add.iter().chain(drop) {
        if normalise(name) != "ALL" {
            parse(name)?;
        }
    }
    let add: Vec<String> = add.iter().map(|n| normalise(n)).collect();
    let drop: Vec<String> = drop.iter().map(|n| normalise(n)).collect();
    let is_all = |v: &[String]| v.iter().any(|n| n == "ALL");
    let mut set: BTreeSet<String> = if is_all(&add) {
        ALL.iter().map(|s| s.to_string()).collect()
    } else if is_all(&drop) {
        BTreeSet::new()
    } else {
        DOCKER_DEFAULT.iter().map(|s| s.to_string()).collect()
    };
    if is_all(&add) {
        set.retain(|c| !drop.contains(c));
    } else if is_all(&drop) {
        set.extend(add.iter().cloned());
    } else {
        set.extend(add.iter().cloned());
        set.retain(|c| !drop.contains(c));
    }
    set.iter().map(|n| parse(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(add: &[&str], drop: &[&str]) -> String {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        match capabilities(&s(add), &s(drop)) {
            Ok(caps) => caps
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn docker_defaults_with_adds_and_drops() {
        assert_eq!(
            names(&[], &[]),
            "AUDIT_WRITE CHOWN DAC_OVERRIDE FOWNER FSETID KILL MKNOD NET_BIND_SERVICE \
             NET_RAW SETFCAP SETGID SETPCAP SETUID SYS_CHROOT"
        );
        assert_eq!(
            names(&["CAP_NET_ADMIN", "sys_ptrace"], &["net_raw", "CAP_MKNOD"]),
            "AUDIT_WRITE CHOWN DAC_OVERRIDE FOWNER FSETID KILL NET_ADMIN NET_BIND_SERVICE \
             SETFCAP SETGID SETPCAP SETUID SYS_CHROOT SYS_PTRACE"
        );
        assert_eq!(names(&["NET_BIND_SERVICE"], &["ALL"]), "NET_BIND_SERVICE");
        assert_eq!(names(&[], &["all"]), "");
        let all_but = names(&["ALL"], &["SYS_ADMIN"]);
        assert_eq!(all_but.split(' ').count(), 40);
        assert!(!all_but.contains("SYS_ADMIN"));
    }

    #[test]
    fn an_unknown_capability_is_named() {
        assert_eq!(
            names(&["CAP_FLY"], &[]),
            "unknown capability: \"CAP_FLY\" (names as in capabilities(7), with or without \
             CAP_, or ALL)"
        );
        assert!(names(&[], &["NET_RAWW"]).contains("\"NET_RAWW\""));
    }
}
