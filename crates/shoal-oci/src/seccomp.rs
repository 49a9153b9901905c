//! The container's seccomp filter. runc applies none of its own: a config without
//! `linux.seccomp` runs unfiltered. Docker's default profile is compiled into dockerd and no
//! crate or Debian package ships it; the nearest packaged one is containers-common's
//! (`/usr/share/containers/seccomp.json`, Podman's default, descended from docker's and in
//! its format), which this module turns into the runtime config's filter the way docker
//! does its own: the native architecture and its sub-architectures, and the rules whose
//! `includes`/`excludes` (capabilities, architectures, minimum kernel) fit this container.
//! It is more permissive than docker's where Podman chose so (mount, unshare and a few
//! others are left to capabilities instead of being refused outright). Pure: the caller
//! reads the file.

use oci_spec::runtime::{
    Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompBuilder,
    LinuxSyscallBuilder,
};
use serde::Deserialize;

use crate::error::OciError;

/// Where Debian's golang-github-containers-common puts the profile.
pub const PACKAGED_PROFILE: &str = "/usr/share/containers/seccomp.json";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    #[serde(default)]
    default_errno_ret: Option<u32>,
    #[serde(default)]
    arch_map: Vec<ArchMap>,
    #[serde(default)]
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    names: Vec<String>,
    action: LinuxSeccompAction,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// The machine a filter is made for: its architecture as Go names it in profiles
/// (`amd64`) and as libseccomp does (`SCMP_ARCH_X86_64`), and its kernel release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub arch: &'a str,
    pub scmp_arch: &'a str,
    pub kernel: (u32, u32),
}

impl Target<'static> {
    /// This build's architecture with the given kernel (`uname -r`'s major and minor).
    pub fn native(kernel: (u32, u32)) -> Option<Target<'static>> {
        let (arch, scmp_arch) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
            "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
            "s390x" => ("s390x", "SCMP_ARCH_S390X"),
            "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
            _ => return None,
        };
        Some(Target {
            arch,
            scmp_arch,
            kernel,
        })
    }
}

/// `6.18.0-1-amd64` → (6, 18).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn cap_name(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    upper.strip_prefix("CAP_").unwrap_or(&upper).to_string()
}

/// Whether and how the container's system calls are filtered.
#[derive(Debug, Clone, Copy)]
pub enum Seccomp<'a> {
    /// No filter (docker's `--security-opt seccomp=unconfined`).
    Unconfined,
    /// A profile in docker's format (`PACKAGED_PROFILE`'s text) for `target`.
    Profile { json: &'a str, target: Target<'a> },
}

/// The filter for a container with capabilities `caps` (its bounding set) on `target`.
pub fn from_profile(
    profile: &str,
    caps: &[Capability],
    target: Target<'_>,
) -> Result<LinuxSeccomp, OciError> {
    let bad = |e: String| OciError::Invalid(format!("seccomp profile: {e}"));
    let profile: Profile = serde_json::from_str(profile).map_err(|e| bad(e.to_string()))?;
    let has: Vec<String> = caps.iter().map(|c| cap_name(&c.to_string())).collect();
    let has_cap = |c: &String| has.contains(&cap_name(c));
    let mut arches = vec![];
    for m in profile
        .arch_map
        .iter()
        .filter(|m| m.architecture == target.scmp_arch)
    {
        for a in std::iter::once(&m.architecture).chain(&m.sub_architectures) {
            let arch: Arch = serde_json::from_value(serde_json::Value::String(a.clone()))
                .map_err(|e| bad(format!("architecture {a}: {e}")))?;
            arches.push(arch);
        }
    }
    let mut syscalls = vec![];
    for rule in &profile.syscalls {
        let (inc, exc) = (&rule.includes, &rule.excludes);
        let skip = exc.arches.iter().any(|a| a == target.arch)
            || exc.caps.iter().any(has_cap)
            || (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == target.arch))
            || !inc.caps.iter().all(has_cap)
            || inc
                .min_kernel
                .as_deref()
                .and_then(kernel_version)
                .is_some_and(|min| target.kernel < min);
        if skip {
            continue;
        }
        let mut call = LinuxSyscallBuilder::default()
            .names(rule.names.clone())
            .action(rule.action);
        if let Some(errno) = rule.errno_ret {
            call = call.errno_ret(errno);
        }
        if let Some(args) = rule.args.clone().filter(|a| !a.is_empty()) {
            call = call.args(args);
        }
        syscalls.push(call.build().map_err(|e| bad(e.to_string()))?);
    }
    let mut seccomp = LinuxSeccompBuilder::default()
        .default_action(profile.default_action)
        .architectures(arches)
        .syscalls(syscalls);
    if let Some(errno) = profile.default_errno_ret {
        seccomp = seccomp.default_errno_ret(errno);
    }
    seccomp.build().map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    const PROFILE: &str = r#"{
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
        ],
        "syscalls": [
            {"names": ["swapon", "swapoff"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": []},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
            {"names": ["arm_fadvise64_64"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
            {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}}
        ]
    }"#;

    fn render(caps: &[Capability], kernel: (u32, u32)) -> String {
        let target = Target {
            arch: "amd64",
            scmp_arch: "SCMP_ARCH_X86_64",
            kernel,
        };
        serde_json::to_string_pretty(&from_profile(PROFILE, caps, target).unwrap()).unwrap()
    }

    #[test]
    fn rules_are_chosen_by_architecture_capability_and_kernel() {
        expect![[r#"
            {
              "defaultAction": "SCMP_ACT_ERRNO",
              "defaultErrnoRet": 38,
              "architectures": [
                "SCMP_ARCH_X86_64",
                "SCMP_ARCH_X86",
                "SCMP_ARCH_X32"
              ],
              "syscalls": [
                {
                  "names": [
                    "swapon",
                    "swapoff"
                  ],
                  "action": "SCMP_ACT_ERRNO",
                  "errnoRet": 1
                },
                {
                  "names": [
                    "read",
                    "write"
                  ],
                  "action": "SCMP_ACT_ALLOW"
                },
                {
                  "names": [
                    "personality"
                  ],
                  "action": "SCMP_ACT_ALLOW",
                  "args": [
                    {
                      "index": 0,
                      "value": 8,
                      "valueTwo": 0,
                      "op": "SCMP_CMP_EQ"
                    }
                  ]
                },
                {
                  "names": [
                    "arch_prctl"
                  ],
                  "action": "SCMP_ACT_ALLOW"
                },
                {
                  "names": [
                    "bpf"
                  ],
                  "action": "SCMP_ACT_ERRNO",
                  "errnoRet": 1
                },
                {
                  "names": [
                    "ptrace"
                  ],
                  "action": "SCMP_ACT_ALLOW"
                }
              ]
            }"#]]
        .assert_eq(&render(&[Capability::Chown], (6, 1)));
        let target = Target {
            arch: "amd64",
            scmp_arch: "SCMP_ARCH_X86_64",
            kernel: (4, 4),
        };
        let admin = from_profile(PROFILE, &[Capability::SysAdmin], target).unwrap();
        let rules = |name: &str| -> Vec<LinuxSeccompAction> {
            let calls = admin.syscalls().clone().unwrap_or_default();
            calls
                .iter()
                .filter(|c| c.names().iter().any(|n| n == name))
                .map(|c| c.action())
                .collect()
        };
        assert_eq!(
            rules("bpf"),
            [LinuxSeccompAction::ScmpActAllow],
            "with CAP_SYS_ADMIN bpf is allowed, not refused"
        );
        assert_eq!(rules("ptrace"), [], "4.4 is older than the rule's 4.8");
    }

    #[test]
    fn kernel_releases_parse() {
        assert_eq!(kernel_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(kernel_version("4.8"), Some((4, 8)));
        assert_eq!(kernel_version("x"), None);
    }

    #[test]
    fn a_broken_profile_is_an_error() {
        let target = Target::native((6, 1)).unwrap();
        let err = from_profile("{}", &[], target).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "invalid container setting: seccomp profile: missing field `defaultAction`"
            ),
            "{err}"
        );
    }
}
