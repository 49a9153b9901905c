//! The only unsafe code of the crate: what a lab process does between fork and exec.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;

use nix::sched::{CloneFlags, setns};
use nix::unistd::{setsid, write};

/// Where a child of the lab goes before exec. The fds are opened (close-on-exec) before fork.
pub(crate) struct NodeEntry {
    /// The node's network namespace.
    pub netns: OwnedFd,
    /// The lab cgroup's `cgroup.procs`, if the lab has a cgroup.
    pub cgroup_procs: Option<OwnedFd>,
    /// Start a new session (daemons), so a terminal's signals do not reach it.
    pub new_session: bool,
    /// A hosts file to bind over /etc/hosts in a private mount namespace (`lab exec`, so
    /// that node names resolve on the nodes as in the seed).
    pub hosts: Option<std::ffi::CString>,
}

impl NodeEntry {
    fn enter(&self) -> io::Result<()> {
        // Into the cgroup first, so nothing this process ever forks escapes `cgroup.kill`.
        if let Some(procs) = &self.cgroup_procs {
            write(procs, b"0")?;
        }
        setns(&self.netns, CloneFlags::CLONE_NEWNET)?;
        if self.new_session {
            setsid()?;
        }
        if let Some(hosts) = &self.hosts {
            use nix::mount::{MsFlags, mount};
            nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
            // Private first, so the bind below stays in this process's mount namespace.
            mount(
                None::<&str>,
                c"/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            mount(
                Some(hosts.as_c_str()),
                c"/etc/hosts",
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
        }
        Ok(())
    }
}

/// Makes `cmd`'s child enter `entry` before exec.
pub(crate) fn enter_node_on_spawn(cmd: &mut std::process::Command, entry: NodeEntry) {
    // SAFETY: `enter` runs in the single-threaded child between fork and exec and only makes
    // the system calls write(2), setns(2) and setsid(2) on fds opened before fork: no
    // allocation, no locks.
    unsafe {
        cmd.pre_exec(move || entry.enter());
    }
}
