//! How long each kind of call may take. Every call carries its deadline in `grpc-timeout`:
//! tonic's client gives up at it (the channel's layer reads the header) and the server drops
//! the handler, so neither side waits on a peer that lost power or a network that dropped
//! the packets (TCP would retransmit for about 15 minutes). A channel also has a backstop
//! ([`BACKSTOP`]) for a call made without one.

use std::time::Duration;

/// A call the peer answers from memory: an endpoint ack.
pub const QUICK: Duration = Duration::from_secs(10);

/// A call the peer answers once a write commits through Raft (a status report, a forwarded
/// proposal): the leader's own limit on a commit (15 s) and some room.
pub const WRITE: Duration = Duration::from_secs(20);

/// The longest any call on a channel may wait for the peer's answer to begin (for a
/// stream, its headers: a session or a followed log lasts as long as it must).
pub const BACKSTOP: Duration = Duration::from_secs(60);

/// `msg` as a request that gives up after `timeout`.
pub fn request<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(timeout);
    req
}

/// Whether a status says the call ran out of time (tonic's client timeout, or the server's
/// `DEADLINE_EXCEEDED`).
pub fn timed_out(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    ) && status.message().to_ascii_lowercase().contains("time")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_its_deadline_in_grpc_timeout() {
        let req = request((), Duration::from_millis(1500));
        let header = req
            .metadata()
            .get("grpc-timeout")
            .expect("a grpc-timeout header");
        // tonic writes it in the finest unit that fits in the 8 digits gRPC allows.
        assert_eq!(header.to_str().unwrap(), "1500000u");
    }

    #[test]
    fn timeouts_are_told_apart_from_other_failures() {
        assert!(timed_out(&tonic::Status::cancelled("Timeout expired")));
        assert!(timed_out(&tonic::Status::deadline_exceeded(
            "Timeout expired"
        )));
        assert!(!timed_out(&tonic::Status::unavailable(
            "connection refused"
        )));
        assert!(!timed_out(&tonic::Status::cancelled(
            "operation was canceled"
        )));
    }
}
