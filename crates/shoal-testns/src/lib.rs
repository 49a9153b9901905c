//! Network namespaces of a test's own and tiny servers inside them, for the kernel tests and
//! benches of shoal-lb and shoal-bpf: one copy instead of one per crate's `tests/common`.
//! Test support only (`publish = false`, a dev-dependency).

#![forbid(unsafe_code)]

pub mod registry;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{CloneFlags, setns};

/// A network namespace that exists for one test and is deleted when dropped, also when the
/// test fails.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Netns {
        // A leftover of a crashed run with the same pid would make `add` fail.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs `f` on a thread inside the namespace and returns its result. Sockets `f` creates
    /// live in the namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns (are we root?)");
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }

    /// Starts `f` on a detached thread inside the namespace (servers).
    pub fn spawn(&self, f: impl FnOnce() + Send + 'static) {
        let file = File::open(format!("/run/netns/{}", self.name)).expect("open netns");
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).expect("setns (are we root?)");
            f()
        });
    }

    /// Runs a command inside the namespace and returns its stdout; fails the test if it fails.
    pub fn cmd(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed in {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs a setup command and fails the test loudly if it cannot.
pub fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TCP server on every address of `ns`, port `port`: for each line received it answers
/// `<name> <peer address>`, so a client learns which backend it reached and which source
/// address that backend saw.
pub fn serve_tcp(ns: &Netns, name: &'static str, port: u16) {
    let listener = ns.run(move || TcpListener::bind(("0.0.0.0", port)).expect("bind tcp"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let peer = stream
                    .peer_addr()
                    .map(|p| p.ip().to_string())
                    .unwrap_or_default();
                let mut writer = stream.try_clone().expect("clone stream");
                for line in BufReader::new(stream).lines() {
                    if line.is_err() || writeln!(writer, "{name} {peer}").is_err() {
                        break;
                    }
                }
            });
        }
    });
}

/// A UDP server that answers every datagram with `<name> <peer address>`.
pub fn serve_udp(ns: &Netns, name: &'static str, port: u16) {
    let socket = ns.run(move || UdpSocket::bind(("0.0.0.0", port)).expect("bind udp"));
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((_, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(format!("{name} {}", peer.ip()).as_bytes(), peer);
        }
    });
}

/// `<kind>-<pid>-<n>`: a name prefix unique to this process and call, so that parallel tests
/// (and a leftover of a crashed run) never share a namespace.
pub fn unique_prefix(kind: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{kind}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bridge `br0` in a namespace of its own, and veths from it into other namespaces.
/// Dropping it deletes the bridge and every veth; drop it after the namespaces it joins.
pub struct Bridge {
    pub ns: Netns,
}

impl Bridge {
    pub fn new(name: String) -> Bridge {
        let ns = Netns::new(name);
        run(
            "ip",
            &["-n", &ns.name, "link", "add", "br0", "type", "bridge"],
        );
        run("ip", &["-n", &ns.name, "link", "set", "br0", "up"]);
        Bridge { ns }
    }

    /// Plugs `ns` into the bridge: `eth0` there with `addr`/24, port `port` on the bridge.
    /// Both ends are made in the bridge's namespace and one is moved: the root namespace
    /// never sees them.
    pub fn attach(&self, ns: &Netns, port: &str, addr: Ipv4Addr) {
        let br = &self.ns.name;
        run(
            "ip",
            &[
                "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns.name,
            ],
        );
        run(
            "ip",
            &["-n", br, "link", "set", port, "master", "br0", "up"],
        );
        let cidr = format!("{addr}/24");
        run("ip", &["-n", &ns.name, "addr", "add", &cidr, "dev", "eth0"]);
        run("ip", &["-n", &ns.name, "link", "set", "eth0", "up"]);
    }
}

/// Gives the calling thread a mount namespace of its own whose mounts do not propagate
/// back, so that a test's mounts (a tmpfs store, an overlayfs rootfs) never reach the host.
pub fn private_mounts() {
    use nix::mount::{MsFlags, mount};
    nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)
        .expect("unshare a mount namespace (are we root?)");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make mounts private");
}
