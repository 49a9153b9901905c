//! The runtime config (`config.json`) of a task's container, from its image's config and its
//! settings, with docker's semantics. Pure: no file is read or written here.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount,
    MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::caps;
use crate::error::OciError;
use crate::seccomp::{self, Seccomp};
use crate::settings::{ImageConfig, MountSpec, Paths, TaskSettings, UserDb};
use crate::user;

/// docker's PATH for an image that sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The CFS period docker uses for `--cpus` (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;

/// docker's masked /proc and /sys paths (moby's `oci` defaults): host information a
/// container must not read.
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// docker's read-only /proc paths: kernel knobs a container must not turn.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn oci(e: oci_spec::OciSpecError) -> OciError {
    OciError::Invalid(e.to_string())
}

/// ENTRYPOINT ++ CMD with docker's overrides: COMMAND replaces Cmd; `--entrypoint` replaces
/// Entrypoint and clears Cmd (COMMAND still follows it).
pub fn process_args(image: &ImageConfig, task: &TaskSettings) -> Result<Vec<String>, OciError> {
    let (entrypoint, cmd) = match &task.entrypoint {
        Some(ep) => (ep.clone(), task.command.clone().unwrap_or_default()),
        None => (
            image.entrypoint.clone(),
            task.command.clone().unwrap_or_else(|| image.cmd.clone()),
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() {
        return Err(OciError::Invalid(
            "no command specified (the image has no Entrypoint or Cmd; give a COMMAND)".into(),
        ));
    }
    Ok(args)
}

/// Sets `entry` (`KEY=VALUE`) in `env` in place, or appends it; a bare `KEY` removes the
/// key, as docker's `ReplaceOrAppendEnvValues` does.
fn replace_or_append(env: &mut Vec<String>, entry: &str) -> Result<(), OciError> {
    let key = entry.split_once('=').map_or(entry, |(k, _)| k);
    if key.is_empty() {
        return Err(OciError::Invalid(format!(
            "invalid environment variable {entry:?}: the name is empty"
        )));
    }
    let pos = env
        .iter()
        .position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key);
    match (pos, entry.contains('=')) {
        (Some(i), true) => env[i] = entry.to_string(),
        (Some(i), false) => {
            env.remove(i);
        }
        (None, true) => env.push(entry.to_string()),
        (None, false) => {}
    }
    Ok(())
}

/// The environment: docker's PATH and HOSTNAME, then the image's, then the task's; a later
/// value of a key replaces an earlier one where it stood.
pub fn environment(image: &ImageConfig, task: &TaskSettings) -> Result<Vec<String>, OciError> {
    let mut env = vec![
        DEFAULT_PATH.to_string(),
        format!("HOSTNAME={}", task.hostname),
    ];
    for e in image.env.iter().chain(&task.env) {
        replace_or_append(&mut env, e)?;
    }
    Ok(env)
}

/// An absolute container path without `..`, not `/` itself.
fn check_target(target: &str) -> Result<PathBuf, OciError> {
    let p = Path::new(target);
    let bad = !p.is_absolute()
        || p.components().any(|c| c == Component::ParentDir)
        || p.components().count() < 2;
    if bad {
        return Err(OciError::Invalid(format!(
            "invalid mount target {target:?}: it must be an absolute path inside the container \
             (not / and without ..)"
        )));
    }
    Ok(p.to_path_buf())
}

fn mount(dest: &str, typ: &str, source: &Path, options: &[&str]) -> Result<Mount, OciError> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(oci)
}

/// docker's default mounts: /proc, /dev, /dev/pts, /sys (read-only), the cgroup tree
/// (read-only), /dev/mqueue and a 64 MiB /dev/shm.
fn default_mounts() -> Result<Vec<Mount>, OciError> {
    let p = Path::new;
    Ok(vec![
        mount("/proc", "proc", p("proc"), &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            p("tmpfs"),
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            p("devpts"),
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            p("sysfs"),
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            p("cgroup"),
            &["ro", "nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            p("mqueue"),
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            p("shm"),
            &["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        )?,
    ])
}

fn valid_volume_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Where a named volume's data is on the host.
pub fn volume_dir(volumes_dir: &Path, name: &str) -> PathBuf {
    volumes_dir.join(name).join("_data")
}

/// The task's `--mount`s, parents before children (docker sorts by depth so that a mount
/// inside another lands on top of it).
fn task_mounts(task: &TaskSettings, paths: &Paths) -> Result<Vec<Mount>, OciError> {
    let mut seen = HashSet::new();
    let mut specs: Vec<&MountSpec> = task.mounts.iter().collect();
    specs.sort_by_key(|m| Path::new(m.target()).components().count());
    let mut out = vec![];
    for m in specs {
        let target = check_target(m.target())?;
        if !seen.insert(target.clone()) {
            return Err(OciError::Invalid(format!(
                "duplicate mount point: {}",
                target.display()
            )));
        }
        let target = m.target();
        out.push(match m {
            MountSpec::Bind {
                source, read_only, ..
            } => {
                if !source.is_absolute() {
                    return Err(OciError::Invalid(format!(
                        "invalid bind source {}: it must be an absolute host path",
                        source.display()
                    )));
                }
                let ro = if *read_only { "ro" } else { "rw" };
                mount(target, "bind", source, &["rbind", "rprivate", ro])?
            }
            MountSpec::Volume {
                name, read_only, ..
            } => {
                if !valid_volume_name(name) {
                    return Err(OciError::Invalid(format!(
                        "invalid volume name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
                    )));
                }
                let ro = if *read_only { "ro" } else { "rw" };
                let source = volume_dir(&paths.volumes_dir, name);
                mount(target, "bind", &source, &["rbind", "rprivate", ro])?
            }
            MountSpec::Tmpfs {
                size_bytes, mode, ..
            } => {
                let mut opts = vec!["noexec", "nosuid", "nodev", "rprivate"]
                    .into_iter()
                    .map(String::from)
                    .collect::<Vec<_>>();
                if let Some(size) = size_bytes {
                    opts.push(format!("size={size}"));
                }
                if let Some(mode) = mode {
                    opts.push(format!("mode={mode:o}"));
                }
                let opts: Vec<&str> = opts.iter().map(String::as_str).collect();
                mount(target, "tmpfs", Path::new("tmpfs"), &opts)?
            }
        });
    }
    Ok(out)
}

/// The container's runtime config. `seccomp` is the filter to apply (see `seccomp`): runc
/// applies none of its own when the config has none.
pub fn generate(
    image: &ImageConfig,
    task: &TaskSettings,
    paths: &Paths,
    users: UserDb<'_>,
    seccomp: Seccomp<'_>,
) -> Result<Spec, OciError> {
    if task.hostname.is_empty() {
        return Err(OciError::Invalid("the container needs a hostname".into()));
    }
    let args = process_args(image, task)?;
    let env = environment(image, task)?;
    let cwd = task
        .workdir
        .clone()
        .or_else(|| image.working_dir.clone())
        .unwrap_or_else(|| "/".into());
    if !Path::new(&cwd).is_absolute() {
        return Err(OciError::Invalid(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }
    let who = task.user.as_deref().or(image.user.as_deref()).unwrap_or("");
    let who = user::resolve(who, users)?;
    let mut user = UserBuilder::default().uid(who.uid).gid(who.gid);
    if !who.additional_gids.is_empty() {
        user = user.additional_gids(who.additional_gids);
    }
    let cap_list = caps::capabilities(&task.cap_add, &task.cap_drop)?;
    let filter = match seccomp {
        Seccomp::Unconfined => None,
        Seccomp::Profile { json, target } => Some(seccomp::from_profile(json, &cap_list, target)?),
    };
    let caps: HashSet<_> = cap_list.into_iter().collect();
    // No inheritable or ambient set: docker dropped them (CVE-2022-24769), so a non-root
    // process gains nothing across exec.
    // (oci-spec's builders start from its defaults, which have both: cleared here.)
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(oci)?;
    capabilities.set_inheritable(None).set_ambient(None);
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build().map_err(oci)?)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()
        .map_err(oci)?;
    // No rlimits of our own: the process inherits the runtime's, as under docker.
    process.set_rlimits(None);

    let mut mounts = default_mounts()?;
    for (dest, source) in [
        ("/etc/resolv.conf", &paths.resolv_conf),
        ("/etc/hostname", &paths.hostname),
        ("/etc/hosts", &paths.hosts),
    ] {
        mounts.push(mount(dest, "bind", source, &["rbind", "rprivate"])?);
    }
    mounts.extend(task_mounts(task, paths)?);

    let namespaces = [
        (LinuxNamespaceType::Pid, None),
        (LinuxNamespaceType::Ipc, None),
        (LinuxNamespaceType::Uts, None),
        (LinuxNamespaceType::Mount, None),
        (LinuxNamespaceType::Network, Some(&task.netns_path)),
    ]
    .into_iter()
    .map(|(typ, path)| {
        let ns = LinuxNamespaceBuilder::default().typ(typ);
        match path {
            Some(p) => ns.path(p.clone()),
            None => ns,
        }
        .build()
        .map_err(oci)
    })
    .collect::<Result<Vec<_>, _>>()?;

    // Deny every device, then runc allows its defaults (null, zero, full, tty, random,
    // urandom, ptmx and pts) on top, as with docker.
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(oci)?;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![deny_all]);
    if let Some(limit) = task.memory_bytes {
        if limit < 6 * 1024 * 1024 {
            return Err(OciError::Invalid(format!(
                "memory limit {limit} bytes is below docker's minimum of 6 MiB"
            )));
        }
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .build()
                .map_err(oci)?,
        );
    }
    if let Some(nano) = task.nano_cpus {
        let quota = (u128::from(nano) * u128::from(CPU_PERIOD_US) / 1_000_000_000) as i64;
        if quota < 1000 {
            return Err(OciError::Invalid(format!(
                "cpu limit {} is below the smallest the kernel takes (0.01)",
                nano as f64 / 1e9
            )));
        }
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(oci)?,
        );
    }
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(oci)?)
        .cgroups_path(PathBuf::from(&paths.cgroups_path))
        .masked_paths(MASKED_PATHS.map(String::from).to_vec())
        .readonly_paths(READONLY_PATHS.map(String::from).to_vec());
    if let Some(filter) = filter {
        linux = linux.seccomp(filter);
    }
    let mut spec = SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(&paths.rootfs)
                .readonly(task.read_only)
                .build()
                .map_err(oci)?,
        )
        .hostname(task.hostname.clone())
        .process(process)
        .mounts(mounts)
        .linux(linux.build().map_err(oci)?)
        .build()
        .map_err(oci)?;
    spec.set_annotations(None);
    Ok(spec)
}
