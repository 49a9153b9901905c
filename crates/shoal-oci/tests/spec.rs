//! Snapshot tests of the generated runtime config (no root needed): docker's semantics for
//! command, entrypoint, env, user, mounts, limits and capabilities.

use std::path::{Path, PathBuf};

use expect_test::{Expect, expect};
use serde_json::Value;
use shoal_oci::seccomp::Seccomp;
use shoal_oci::spec::{environment, generate, process_args};
use shoal_oci::{ImageConfig, MountSpec, Paths, TaskSettings, UserDb};

fn image() -> ImageConfig {
    ImageConfig::from_json(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},
            "config":{"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],
            "Env":["PATH=/usr/local/bin:/usr/bin:/bin","NGINX_VERSION=1.25"],
            "WorkingDir":"/srv","User":"app"}}"#,
    )
    .unwrap()
}

fn task() -> TaskSettings {
    TaskSettings {
        hostname: "web-1".into(),
        netns_path: PathBuf::from("/run/netns/shoal-t1"),
        ..Default::default()
    }
}

fn paths() -> Paths {
    let b = Path::new("/var/lib/shoal/containers/t1");
    Paths {
        rootfs: b.join("rootfs"),
        resolv_conf: b.join("resolv.conf"),
        hosts: b.join("hosts"),
        hostname: b.join("hostname"),
        volumes_dir: PathBuf::from("/var/lib/shoal/volumes"),
        cgroups_path: "/shoal/t1".into(),
    }
}

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1000:\nlog:x:4:app\n";
const USERS: UserDb<'static> = UserDb {
    passwd: Some(PASSWD),
    group: Some(GROUP),
};

/// JSON with sorted keys and sorted capability lists (they are sets), so the snapshot does
/// not depend on hash order or serde_json's map features.
fn canonical(v: &Value, indent: usize, out: &mut String) {
    let pad = "  ".repeat(indent + 1);
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&format!("{pad}{k:?}: "));
                let mut child = m[*k].clone();
                if let (true, Value::Array(a)) = (
                    ["bounding", "effective", "permitted"].contains(&k.as_str()),
                    &mut child,
                ) {
                    a.sort_by_key(|x| x.as_str().unwrap_or_default().to_string());
                }
                canonical(&child, indent + 1, out);
                out.push_str(if i + 1 < keys.len() { ",\n" } else { "\n" });
            }
            out.push_str(&format!("{}}}", "  ".repeat(indent)));
        }
        Value::Array(a) if a.iter().all(|x| !x.is_object()) => {
            out.push_str(&serde_json::to_string(a).unwrap());
        }
        Value::Array(a) => {
            out.push_str("[\n");
            for (i, x) in a.iter().enumerate() {
                out.push_str(&pad);
                canonical(x, indent + 1, out);
                out.push_str(if i + 1 < a.len() { ",\n" } else { "\n" });
            }
            out.push_str(&format!("{}]", "  ".repeat(indent)));
        }
        _ => out.push_str(&v.to_string()),
    }
}

fn check(image: &ImageConfig, task: &TaskSettings, want: Expect) {
    let text = match generate(image, task, &paths(), USERS, Seccomp::Unconfined) {
        Ok(spec) => {
            let mut out = String::new();
            canonical(&serde_json::to_value(&spec).unwrap(), 0, &mut out);
            out
        }
        Err(e) => e.to_string(),
    };
    want.assert_eq(&text);
}

/// Only the part of the config that differs between the cases.
fn check_part(image: &ImageConfig, task: &TaskSettings, pointer: &str, want: Expect) {
    let text = match generate(image, task, &paths(), USERS, Seccomp::Unconfined) {
        Ok(spec) => {
            let v = serde_json::to_value(&spec).unwrap();
            let mut out = String::new();
            canonical(v.pointer(pointer).unwrap_or(&Value::Null), 0, &mut out);
            out
        }
        Err(e) => e.to_string(),
    };
    want.assert_eq(&text);
}

#[test]
fn the_whole_config_of_a_plain_task() {
    check(
        &image(),
        &task(),
        expect![[r#"
        {
          "hostname": "web-1",
          "linux": {
            "cgroupsPath": "/shoal/t1",
            "maskedPaths": ["/proc/asound","/proc/acpi","/proc/kcore","/proc/keys","/proc/latency_stats","/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/proc/scsi","/sys/firmware","/sys/devices/virtual/powercap"],
            "namespaces": [
              {
                "type": "pid"
              },
              {
                "type": "ipc"
              },
              {
                "type": "uts"
              },
              {
                "type": "mount"
              },
              {
                "path": "/run/netns/shoal-t1",
                "type": "network"
              }
            ],
            "readonlyPaths": ["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"],
            "resources": {
              "devices": [
                {
                  "access": "rwm",
                  "allow": false
                }
              ]
            }
          },
          "mounts": [
            {
              "destination": "/proc",
              "options": ["nosuid","noexec","nodev"],
              "source": "proc",
              "type": "proc"
            },
            {
              "destination": "/dev",
              "options": ["nosuid","strictatime","mode=755","size=65536k"],
              "source": "tmpfs",
              "type": "tmpfs"
            },
            {
              "destination": "/dev/pts",
              "options": ["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"],
              "source": "devpts",
              "type": "devpts"
            },
            {
              "destination": "/sys",
              "options": ["nosuid","noexec","nodev","ro"],
              "source": "sysfs",
              "type": "sysfs"
            },
            {
              "destination": "/sys/fs/cgroup",
              "options": ["ro","nosuid","noexec","nodev"],
              "source": "cgroup",
              "type": "cgroup"
            },
            {
              "destination": "/dev/mqueue",
              "options": ["nosuid","noexec","nodev"],
              "source": "mqueue",
              "type": "mqueue"
            },
            {
              "destination": "/dev/shm",
              "options": ["nosuid","noexec","nodev","mode=1777","size=67108864"],
              "source": "shm",
              "type": "tmpfs"
            },
            {
              "destination": "/etc/resolv.conf",
              "options": ["rbind","rprivate"],
              "source": "/var/lib/shoal/containers/t1/resolv.conf",
              "type": "bind"
            },
            {
              "destination": "/etc/hostname",
              "options": ["rbind","rprivate"],
              "source": "/var/lib/shoal/containers/t1/hostname",
              "type": "bind"
            },
            {
              "destination": "/etc/hosts",
              "options": ["rbind","rprivate"],
              "source": "/var/lib/shoal/containers/t1/hosts",
              "type": "bind"
            }
          ],
          "ociVersion": "1.0.2",
          "process": {
            "args": ["/docker-entrypoint.sh","nginx","-g","daemon off;"],
            "capabilities": {
              "bounding": ["CAP_AUDIT_WRITE","CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_MKNOD","CAP_NET_BIND_SERVICE","CAP_NET_RAW","CAP_SETFCAP","CAP_SETGID","CAP_SETPCAP","CAP_SETUID","CAP_SYS_CHROOT"],
              "effective": ["CAP_AUDIT_WRITE","CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_MKNOD","CAP_NET_BIND_SERVICE","CAP_NET_RAW","CAP_SETFCAP","CAP_SETGID","CAP_SETPCAP","CAP_SETUID","CAP_SYS_CHROOT"],
              "permitted": ["CAP_AUDIT_WRITE","CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_MKNOD","CAP_NET_BIND_SERVICE","CAP_NET_RAW","CAP_SETFCAP","CAP_SETGID","CAP_SETPCAP","CAP_SETUID","CAP_SYS_CHROOT"]
            },
            "cwd": "/srv",
            "env": ["PATH=/usr/local/bin:/usr/bin:/bin","HOSTNAME=web-1","NGINX_VERSION=1.25"],
            "noNewPrivileges": true,
            "terminal": false,
            "user": {
              "additionalGids": [4],
              "gid": 1000,
              "uid": 1000
            }
          },
          "root": {
            "path": "/var/lib/shoal/containers/t1/rootfs",
            "readonly": false
          }
        }"#]],
    );
}

#[test]
fn command_and_entrypoint_as_docker_overrides_them() {
    let args = |command: Option<&[&str]>, entrypoint: Option<&[&str]>| {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let t = TaskSettings {
            command: command.map(v),
            entrypoint: entrypoint.map(v),
            ..task()
        };
        match process_args(&image(), &t) {
            Ok(a) => a.join(" "),
            Err(e) => e.to_string(),
        }
    };
    assert_eq!(
        args(None, None),
        "/docker-entrypoint.sh nginx -g daemon off;"
    );
    assert_eq!(args(Some(&["sh"]), None), "/docker-entrypoint.sh sh");
    assert_eq!(
        args(None, Some(&["/bin/app"])),
        "/bin/app",
        "--entrypoint clears Cmd"
    );
    assert_eq!(args(Some(&["-v"]), Some(&["/bin/app"])), "/bin/app -v");
    assert_eq!(
        args(None, Some(&[])),
        "invalid container setting: no command specified (the image has no Entrypoint or \
         Cmd; give a COMMAND)"
    );
}

#[test]
fn env_is_image_then_task_and_a_later_key_wins_in_place() {
    let t = TaskSettings {
        env: vec![
            "NGINX_VERSION=1.27".into(),
            "MODE=prod".into(),
            "PATH".into(),
        ],
        ..task()
    };
    assert_eq!(
        environment(&image(), &t).unwrap(),
        ["HOSTNAME=web-1", "NGINX_VERSION=1.27", "MODE=prod"],
        "a bare name removes the variable, as docker's ReplaceOrAppendEnvValues"
    );
    let plain = ImageConfig::default();
    assert_eq!(
        environment(&plain, &task()).unwrap(),
        [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME=web-1"
        ]
    );
    let bad = TaskSettings {
        env: vec!["=x".into()],
        ..task()
    };
    assert_eq!(
        environment(&plain, &bad).unwrap_err().to_string(),
        "invalid container setting: invalid environment variable \"=x\": the name is empty"
    );
}

#[test]
fn every_setting_of_a_task() {
    let t = TaskSettings {
        command: Some(vec!["serve".into()]),
        workdir: Some("/data".into()),
        user: Some("1000:log".into()),
        read_only: true,
        mounts: vec![
            MountSpec::Tmpfs {
                target: "/data/tmp".into(),
                size_bytes: Some(1 << 20),
                mode: Some(0o1777),
            },
            MountSpec::Volume {
                name: "pgdata".into(),
                target: "/data".into(),
                read_only: false,
            },
            MountSpec::Bind {
                source: "/srv/config".into(),
                target: "/etc/app".into(),
                read_only: true,
            },
        ],
        nano_cpus: Some(1_500_000_000),
        memory_bytes: Some(64 << 20),
        cap_add: vec!["net_admin".into()],
        cap_drop: vec!["CAP_MKNOD".into(), "NET_RAW".into()],
        ..task()
    };
    check_part(
        &image(),
        &t,
        "/process",
        expect![[r#"
        {
          "args": ["/docker-entrypoint.sh","serve"],
          "capabilities": {
            "bounding": ["CAP_AUDIT_WRITE","CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_NET_ADMIN","CAP_NET_BIND_SERVICE","CAP_SETFCAP","CAP_SETGID","CAP_SETPCAP","CAP_SETUID","CAP_SYS_CHROOT"],
            "effective": ["CAP_AUDIT_WRITE","CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_NET_ADMIN","CAP_NET_BIND_SERVICE","CAP_SETFCAP","CAP_SETGID","CAP_SETPCAP","CAP_SETUID","CAP_SYS_CHROOT"],
            "permitted": ["CAP_AUDIT_WRITE","CAP_CHOWN","CAP_DAC_OVERRIDE","CAP_FOWNER","CAP_FSETID","CAP_KILL","CAP_NET_ADMIN","CAP_NET_BIND_SERVICE","CAP_SETFCAP","CAP_SETGID","CAP_SETPCAP","CAP_SETUID","CAP_SYS_CHROOT"]
          },
          "cwd": "/data",
          "env": ["PATH=/usr/local/bin:/usr/bin:/bin","HOSTNAME=web-1","NGINX_VERSION=1.25"],
          "noNewPrivileges": true,
          "terminal": false,
          "user": {
            "gid": 4,
            "uid": 1000
          }
        }"#]],
    );
    check_part(
        &image(),
        &t,
        "/root",
        expect![[r#"
        {
          "path": "/var/lib/shoal/containers/t1/rootfs",
          "readonly": true
        }"#]],
    );
    check_part(
        &image(),
        &t,
        "/linux/resources",
        expect![[r#"
        {
          "cpu": {
            "period": 100000,
            "quota": 150000
          },
          "devices": [
            {
              "access": "rwm",
              "allow": false
            }
          ],
          "memory": {
            "limit": 67108864
          }
        }"#]],
    );
    let spec = generate(&image(), &t, &paths(), USERS, Seccomp::Unconfined).unwrap();
    let mounts: Vec<String> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .skip(7 + 3)
        .map(|m| {
            format!(
                "{} {} {} {}",
                m.destination().display(),
                m.typ().as_deref().unwrap_or(""),
                m.source().as_ref().unwrap().display(),
                m.options().as_ref().unwrap().join(",")
            )
        })
        .collect();
    expect![[r#"
        [
            "/data bind /var/lib/shoal/volumes/pgdata/_data rbind,rprivate,rw",
            "/data/tmp tmpfs tmpfs noexec,nosuid,nodev,rprivate,size=1048576,mode=1777",
            "/etc/app bind /srv/config rbind,rprivate,ro",
        ]
    "#]]
    .assert_debug_eq(&mounts);
}

#[test]
fn settings_that_cannot_make_a_container_are_named() {
    let err = |t: TaskSettings| match generate(&image(), &t, &paths(), USERS, Seccomp::Unconfined) {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let with = |f: &dyn Fn(&mut TaskSettings)| {
        let mut t = task();
        f(&mut t);
        err(t)
    };
    expect!["unable to find user postgres: no matching entries in passwd file"]
        .assert_eq(&with(&|t| t.user = Some("postgres".into())));
    expect![[r#"unknown capability: "CAP_TELEPORT" (names as in capabilities(7), with or without CAP_, or ALL)"#]].assert_eq(&with(&|t| t.cap_add = vec!["CAP_TELEPORT".into()]));
    expect!["invalid container setting: the working directory 'data' is invalid, it needs to be an absolute path"].assert_eq(&with(&|t| t.workdir = Some("data".into())));
    expect![
        "invalid container setting: memory limit 1048576 bytes is below docker's minimum of 6 MiB"
    ]
    .assert_eq(&with(&|t| t.memory_bytes = Some(1 << 20)));
    expect!["invalid container setting: duplicate mount point: /x/"].assert_eq(&with(&|t| {
        t.mounts = vec![
            MountSpec::Tmpfs {
                target: "/x".into(),
                size_bytes: None,
                mode: None,
            },
            MountSpec::Volume {
                name: "v".into(),
                target: "/x/".into(),
                read_only: false,
            },
        ]
    }));
    expect![[r#"invalid container setting: invalid mount target "/a/../etc": it must be an absolute path inside the container (not / and without ..)"#]].assert_eq(&with(&|t| {
        t.mounts = vec![MountSpec::Bind {
            source: "/srv".into(),
            target: "/a/../etc".into(),
            read_only: false,
        }]
    }));
    expect![[r#"invalid container setting: invalid volume name "../etc": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"#]].assert_eq(&with(&|t| {
        t.mounts = vec![MountSpec::Volume {
            name: "../etc".into(),
            target: "/v".into(),
            read_only: false,
        }]
    }));
}

#[test]
fn a_seccomp_profile_becomes_the_configs_filter_for_the_tasks_capabilities() {
    let profile = r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["bpf"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
        ]}"#;
    let target = shoal_oci::seccomp::Target {
        arch: "amd64",
        scmp_arch: "SCMP_ARCH_X86_64",
        kernel: (6, 1),
    };
    let seccomp = Seccomp::Profile {
        json: profile,
        target,
    };
    let mut admin = task();
    admin.cap_add = vec!["SYS_ADMIN".into()];
    let render = |t: &TaskSettings| {
        let spec = generate(&image(), t, &paths(), USERS, seccomp).unwrap();
        let mut out = String::new();
        canonical(
            &serde_json::to_value(&spec).unwrap()["linux"]["seccomp"],
            0,
            &mut out,
        );
        out
    };
    expect![[r#"
        {
          "architectures": ["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
          "defaultAction": "SCMP_ACT_ERRNO",
          "defaultErrnoRet": 38,
          "syscalls": [
            {
              "action": "SCMP_ACT_ERRNO",
              "errnoRet": 1,
              "names": ["bpf"]
            }
          ]
        }"#]]
    .assert_eq(&render(&task()));
    expect![[r#"
        {
          "architectures": ["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
          "defaultAction": "SCMP_ACT_ERRNO",
          "defaultErrnoRet": 38,
          "syscalls": [
            {
              "action": "SCMP_ACT_ALLOW",
              "names": ["bpf"]
            }
          ]
        }"#]]
    .assert_eq(&render(&admin));
}
