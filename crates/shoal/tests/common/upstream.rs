//! A DNS server of the test's own, standing in for the host's resolver: it runs on a
//! thread inside a lab node's namespace (bound to that namespace's loopback) and answers
//! `example.test` with 198.51.100.7 (a documentation address: data only, never contacted)
//! and NXDOMAIN for everything else.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, rdata::A};

pub const ANSWER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

pub struct Upstream {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    /// Serves UDP on `addr` inside network namespace `netns`.
    pub fn start(netns: &str, addr: &str) -> Upstream {
        let ns = std::fs::File::open(format!("/run/netns/{netns}")).expect("open the node's netns");
        let addr = addr.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            // This thread only: the socket keeps the namespace it was made in.
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let sock = UdpSocket::bind(&addr).expect("bind the test upstream");
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 4096];
            while !flag.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut reply =
                    Message::new(req.metadata.id, MessageType::Response, req.metadata.op_code);
                reply.metadata.recursion_desired = req.metadata.recursion_desired;
                reply.metadata.recursion_available = true;
                for q in req.queries.iter() {
                    reply.add_query(q.clone());
                    if q.name().to_ascii().trim_end_matches('.') == "example.test" {
                        reply.add_answer(Record::from_rdata(
                            q.name().clone(),
                            30,
                            RData::A(A(ANSWER)),
                        ));
                    } else {
                        reply.metadata.response_code = ResponseCode::NXDomain;
                    }
                }
                if let Ok(bytes) = reply.to_vec() {
                    let _ = sock.send_to(&bytes, from);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("test upstream started");
        Upstream {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
