//! The seed's two images, made from this machine's packaged binaries (no internet needed)
//! and pushed to the lab's registry:
//! - `anoy/vote`: the `shoal` binary (stripped) and the libraries it links, running `shoal
//!   demo vote` (the page with "Processed by container ID <hostname>") on port 80;
//! - `anoy/client`: the same layer plus one with busybox, `dig`, `curl` and `ping` and their
//!   libraries, idling in `shoal demo client` so that one can exec into it.
//!
//! Built with umoci into an OCI layout and pushed with skopeo (Debian packages), as an
//! operator without a docker daemon would; the client image reuses the vote image's layer,
//! so a node that pulls both stores it once.

use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::daemon::in_lab_netns;
use crate::error::LabError;
use crate::state::LabInfo;

/// The vote image's repository in the lab registry.
pub const VOTE: &str = "anoy/vote";
/// The client image's repository in the lab registry.
pub const CLIENT: &str = "anoy/client";

/// Where `shoal` lives in both images.
const SHOAL_IN_IMAGE: &str = "/usr/local/bin/shoal";

/// The client's tools, from Debian's bind9-dnsutils, curl and iputils-ping.
const CLIENT_TOOLS: &[&str] = &["/usr/bin/dig", "/usr/bin/curl", "/usr/bin/ping"];

/// busybox-static: a shell and the usual small commands for `exec` (linked into /bin).
const BUSYBOX: &str = "/bin/busybox";

/// The shared libraries `ldd` names in its output: the `=> /path` of each line, or the
/// path the line starts with (the dynamic loader); the vDSO has no file and is skipped.
pub fn ldd_paths(output: &str) -> Vec<PathBuf> {
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => line,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The umoci `config` flags that make `cmd` the image's command, with a PATH.
fn config_args(image: &str, cmd: &[&str], port: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "config".to_string(),
        "--image".to_string(),
        image.to_string(),
        "--clear=config.cmd".to_string(),
        "--config.env".to_string(),
        "PATH=/usr/local/bin:/usr/bin:/bin".to_string(),
    ];
    for c in cmd {
        args.push("--config.cmd".to_string());
        args.push(c.to_string());
    }
    if let Some(port) = port {
        args.push("--config.exposedports".to_string());
        args.push(port.to_string());
    }
    args
}

/// Runs a tool to completion; its stderr is the error.
fn run(cmd: &mut Command, what: &str) -> Result<String, LabError> {
    let out = cmd.output().map_err(|e| {
        LabError::registry(
            what,
            format!("cannot run it: {e} (scripts/setup.sh installs umoci, skopeo and binutils)"),
        )
    })?;
    if !out.status.success() {
        return Err(LabError::registry(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn umoci(args: &[&str]) -> Result<String, LabError> {
    run(
        Command::new("umoci").args(args),
        &format!("umoci {}", args.first().copied().unwrap_or_default()),
    )
}

/// Copies `binary` to `to` inside `rootfs` and every library it links to its own path there.
fn install(rootfs: &Path, binary: &Path, to: &Path, strip: bool) -> Result<(), LabError> {
    let ldd = run(
        Command::new("ldd").arg(binary),
        &format!("ldd {}", binary.display()),
    )?;
    let mut files = vec![(binary.to_path_buf(), to.to_path_buf())];
    files.extend(ldd_paths(&ldd).into_iter().map(|p| (p.clone(), p)));
    for (from, at) in files {
        let dest = rootfs.join(at.strip_prefix("/").unwrap_or(&at));
        if dest.exists() {
            continue;
        }
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
        }
        // `copy` follows symlinks (the loader is one): the image gets the file itself.
        std::fs::copy(&from, &dest).map_err(|e| {
            LabError::io(format!("copy {} to {}", from.display(), dest.display()), e)
        })?;
    }
    if strip {
        let dest = rootfs.join(to.strip_prefix("/").unwrap_or(to));
        run(
            Command::new("strip").arg(&dest),
            &format!("strip {}", dest.display()),
        )?;
    }
    Ok(())
}

/// The base files every image here has: /etc/passwd and /etc/group naming root, and /tmp.
fn base_files(rootfs: &Path) -> Result<(), LabError> {
    use std::os::unix::fs::PermissionsExt;
    let write = |rel: &str, text: &str| -> Result<(), LabError> {
        let path = rootfs.join(rel);
        std::fs::create_dir_all(path.parent().unwrap_or(rootfs))
            .map_err(|e| LabError::io(format!("create the parent of {}", path.display()), e))?;
        std::fs::write(&path, text)
            .map_err(|e| LabError::io(format!("write {}", path.display()), e))
    };
    write(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    write("etc/group", "root:x:0:\nnogroup:x:65534:\n")?;
    let tmp = rootfs.join("tmp");
    std::fs::create_dir_all(&tmp)
        .map_err(|e| LabError::io(format!("create {}", tmp.display()), e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| LabError::io(format!("chmod {}", tmp.display()), e))
}

/// busybox as /bin/busybox with a link in /bin for each of its applets.
fn install_busybox(rootfs: &Path) -> Result<(), LabError> {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin)
        .map_err(|e| LabError::io(format!("create {}", bin.display()), e))?;
    std::fs::copy(BUSYBOX, bin.join("busybox"))
        .map_err(|e| LabError::io(format!("copy {BUSYBOX} (install busybox-static)"), e))?;
    let applets = run(Command::new(BUSYBOX).arg("--list"), "busybox --list")?;
    for applet in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)
                .map_err(|e| LabError::io(format!("link {}", link.display()), e))?;
        }
    }
    Ok(())
}

/// Builds both images into `<lab dir>/images` and pushes them to the registry at `addr`;
/// returns their references (`172.29.k.254:5000/anoy/vote:latest`, ...).
pub(crate) fn build_and_push(
    lab: &LabInfo,
    shoal_bin: &Path,
    addr: SocketAddrV4,
) -> Result<Vec<String>, LabError> {
    let build = lab.dir.join("images");
    let layout = build.join("oci");
    let layout_s = layout.display().to_string();
    let (vote, client) = (format!("{layout_s}:vote"), format!("{layout_s}:client"));
    umoci(&["init", "--layout", &layout_s])?;
    umoci(&["new", "--image", &vote])?;

    let bundle = build.join("vote");
    let bundle_s = bundle.display().to_string();
    umoci(&["unpack", "--image", &vote, &bundle_s])?;
    let rootfs = bundle.join("rootfs");
    base_files(&rootfs)?;
    install(&rootfs, shoal_bin, Path::new(SHOAL_IN_IMAGE), true)?;
    umoci(&["repack", "--image", &vote, &bundle_s])?;
    let args = config_args(&vote, &[SHOAL_IN_IMAGE, "demo", "vote"], Some("80/tcp"));
    umoci(&args.iter().map(String::as_str).collect::<Vec<_>>())?;

    let bundle = build.join("client");
    let bundle_s = bundle.display().to_string();
    umoci(&["unpack", "--image", &vote, &bundle_s])?;
    let rootfs = bundle.join("rootfs");
    install_busybox(&rootfs)?;
    for tool in CLIENT_TOOLS {
        install(&rootfs, Path::new(tool), Path::new(tool), false)?;
    }
    umoci(&["repack", "--image", &client, &bundle_s])?;
    let mut args = config_args(&client, &[SHOAL_IN_IMAGE, "demo", "client"], None);
    args.push("--clear=config.exposedports".to_string());
    umoci(&args.iter().map(String::as_str).collect::<Vec<_>>())?;

    let mut pushed = Vec::new();
    for (tag, repo) in [("vote", VOTE), ("client", CLIENT)] {
        let dest = format!("{addr}/{repo}:latest");
        let mut cmd = in_lab_netns(lab, &lab.bridge_netns, Path::new("skopeo"), false, None)?;
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"])
            .arg(format!("oci:{layout_s}:{tag}"))
            .arg(format!("docker://{dest}"));
        run(&mut cmd, &format!("push {dest} with skopeo"))?;
        pushed.push(dest);
    }
    // The unpacked bundles were only the build's scratch space.
    for dir in ["vote", "client"] {
        let _ = std::fs::remove_dir_all(build.join(dir));
    }
    Ok(pushed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_paths_takes_libraries_and_the_loader_not_the_vdso() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibcap.so.2 => /lib/x86_64-linux-gnu/libcap.so.2 (0x00007f13)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f13)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f13)\n";
        assert_eq!(
            ldd_paths(out),
            [
                "/lib/x86_64-linux-gnu/libcap.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(ldd_paths("\tstatically linked\n").is_empty());
    }

    #[test]
    fn config_args_replace_the_command_and_set_a_path() {
        let args = config_args(
            "l:vote",
            &["/usr/local/bin/shoal", "demo", "vote"],
            Some("80/tcp"),
        );
        assert_eq!(
            args.join(" "),
            "config --image l:vote --clear=config.cmd --config.env PATH=/usr/local/bin:/usr/bin:/bin \
             --config.cmd /usr/local/bin/shoal --config.cmd demo --config.cmd vote \
             --config.exposedports 80/tcp"
        );
    }
}
