//! `shoal demo vote`, the sample application, on loopback (no root, no lab): what it does
//! at SIGTERM. shoal takes a stopping task out of every path before SIGTERM, so a request
//! can be lost only if the application drops a connection begun a moment before.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

fn ask(mut conn: TcpStream) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    conn.read_to_string(&mut page).unwrap();
    page
}

#[test]
fn vote_answers_connections_begun_before_sigterm_then_refuses_and_exits_0() {
    // A free loopback port (a race with another process for it is harmless: the server
    // would fail to start and the test says so).
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(SHOAL)
        .args(["demo", "vote", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let idle = loop {
        match TcpStream::connect(addr) {
            Ok(c) => break c,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "vote did not listen on {addr}: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    // The server has accepted `idle` but read nothing from it yet, as with a client whose
    // request is still on its way when SIGTERM comes.
    std::thread::sleep(Duration::from_millis(100));
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let page = ask(idle);
    assert!(
        page.starts_with("HTTP/1.0 200 OK") && page.contains("Processed by container ID "),
        "a connection begun before SIGTERM is answered: {page:?}"
    );
    // A connection in flight at SIGTERM (here: just after it) is answered too.
    let page = ask(TcpStream::connect(addr).unwrap());
    assert!(page.starts_with("HTTP/1.0 200 OK"), "{page:?}");
    // Then it stops: exit 0, and the port refuses.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("vote: SIGTERM; serving 500ms more"), "{said}");
    assert!(said.ends_with("vote: stopped\n"), "{said}");
    let refused = TcpStream::connect(addr).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused, "{refused}");
}
