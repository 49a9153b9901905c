//! The DNS servers' metrics (Prometheus, through `prometheus-client`): every query answered by
//! its type and response code, queries forwarded upstream and those upstream failed, and how
//! long an answer took. One [`DnsMetrics`] per node, shared by every sandbox's server through
//! the [`DnsRuntime`](crate::DnsRuntime); shoald registers it on its `/metrics` listener.
//!
//! Why fixed tables of atomics rather than a `Family` of counters and the crate's
//! `Histogram`: a query costs a few relaxed adds here, where a family takes a lock and hashes
//! its labels and a histogram takes a lock, on a path that answers ~100k queries/s over
//! several threads (bench/dns). The tables become the labelled series and the histogram only
//! at scrape time ([`Collector`]). [`classify`] is pure: it reads the type from the query's
//! bytes and the code from the reply's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

/// Query types counted by name; any other is counted as `other`.
const TYPES: [(u16, &str); 11] = [
    (1, "A"),
    (2, "NS"),
    (5, "CNAME"),
    (6, "SOA"),
    (12, "PTR"),
    (15, "MX"),
    (16, "TXT"),
    (28, "AAAA"),
    (33, "SRV"),
    (65, "HTTPS"),
    (255, "ANY"),
];
const OTHER: usize = TYPES.len();
/// The header's RCODE is four bits.
const RCODES: usize = 16;

/// Answer latency buckets (seconds): a cluster name is answered in tens of microseconds, a
/// forwarded one in milliseconds up to the upstream timeout (2 s).
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.5, 2.5,
];

/// DNS threads counted apart (`shoal_dns_thread_answers`); a thread past them counts in the last.
const THREADS_COUNTED: usize = 16;

/// A counter alone on its cache line: each DNS thread adds to its own, and two threads
/// writing the same line would move it between cores at every batch.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

std::thread_local! {
    /// The DNS thread this is (`runtime::Workers`), for the answers counted per thread.
    static THREAD_INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Called once by each DNS thread as it starts.
pub(crate) fn set_thread_index(i: usize) {
    THREAD_INDEX.with(|t| t.set(i.min(THREADS_COUNTED - 1)));
}

/// A node's DNS counters. Cheap to update from every DNS thread.
#[derive(Debug)]
pub struct DnsMetrics {
    queries: [[AtomicU64; RCODES]; OTHER + 1],
    /// UDP answers from the zones, by the DNS thread that sent them: how the kernel spread
    /// the queries.
    by_thread: [Padded; THREADS_COUNTED],
    forwarded: AtomicU64,
    upstream_failures: AtomicU64,
    /// Answers per latency bucket (not cumulative; the last is +Inf), their total in ns.
    latency: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
}

impl Default for DnsMetrics {
    fn default() -> DnsMetrics {
        DnsMetrics {
            queries: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            by_thread: std::array::from_fn(|_| Padded::default()),
            forwarded: AtomicU64::new(0),
            upstream_failures: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_ns: AtomicU64::new(0),
        }
    }
}

/// What a query and its reply count as: (type index, rcode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    qtype: usize,
    rcode: usize,
}

impl Class {
    /// The query type's name (`A`, `SRV`, `other`).
    pub fn qtype(&self) -> &'static str {
        TYPES.get(self.qtype).map_or("other", |(_, n)| n)
    }

    /// The response code's name (`NOERROR`, `NXDOMAIN`...).
    pub fn rcode(&self) -> &'static str {
        rcode_name(self.rcode)
    }
}

fn rcode_name(code: usize) -> &'static str {
    const NAMES: [&str; RCODES] = [
        "NOERROR",
        "FORMERR",
        "SERVFAIL",
        "NXDOMAIN",
        "NOTIMP",
        "REFUSED",
        "YXDOMAIN",
        "YXRRSET",
        "NXRRSET",
        "NOTAUTH",
        "NOTZONE",
        "DSOTYPENI",
        "RCODE12",
        "RCODE13",
        "RCODE14",
        "RCODE15",
    ];
    NAMES[code % RCODES]
}

/// The type of `query`'s first question and the RCODE of `reply` (its low four bits; the
/// extended bits of EDNS are not read). A query whose question cannot be read counts as
/// `other`. Pure.
pub fn classify(query: &[u8], reply: &[u8]) -> Class {
    let rcode = reply.get(3).map_or(0, |b| usize::from(b & 0x0f));
    Class {
        qtype: question_type(query)
            .and_then(|t| TYPES.iter().position(|(code, _)| *code == t))
            .unwrap_or(OTHER),
        rcode,
    }
}

/// QTYPE of the first question: after the 12-byte header, the name's labels up to the root.
fn question_type(query: &[u8]) -> Option<u16> {
    let qdcount = u16::from_be_bytes([*query.get(4)?, *query.get(5)?]);
    if qdcount == 0 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        // A compression pointer in a question is legal but never sent by resolvers.
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    Some(u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]))
}

impl DnsMetrics {
    /// One query answered with `reply` after `took`.
    pub fn answered(&self, query: &[u8], reply: &[u8], took: Duration) {
        let c = classify(query, reply);
        self.queries[c.qtype][c.rcode].fetch_add(1, Ordering::Relaxed);
        self.took(1, took);
    }

    /// The answers counted in `tally`, all ready after `took`; empties `tally`.
    pub(crate) fn answered_batch(&self, tally: &mut Tally, took: Duration) {
        let mut answers = 0;
        for (c, n) in tally.classes.drain(..) {
            self.queries[c.qtype][c.rcode].fetch_add(n, Ordering::Relaxed);
            answers += n;
        }
        if answers > 0 {
            self.took(answers, took);
            let thread = THREAD_INDEX.with(std::cell::Cell::get);
            self.by_thread[thread]
                .0
                .fetch_add(answers, Ordering::Relaxed);
        }
    }

    /// UDP answers sent by DNS thread `i` so far.
    pub fn thread_answers(&self, i: usize) -> u64 {
        self.by_thread
            .get(i)
            .map_or(0, |n| n.0.load(Ordering::Relaxed))
    }

    /// `answers` answers that each took `took`.
    fn took(&self, answers: u64, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency[bucket].fetch_add(answers, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_ns
            .fetch_add(ns.saturating_mul(answers), Ordering::Relaxed);
    }

    /// A query sent upstream (counted again by [`DnsMetrics::answered`] with the reply).
    pub fn forwarded(&self) {
        self.forwarded.fetch_add(1, Ordering::Relaxed);
    }

    /// A forwarded query no upstream answered (the client gets SERVFAIL).
    pub fn upstream_failed(&self) {
        self.upstream_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Queries answered with type `qtype` and code `rcode` (by name) so far.
    pub fn queries(&self, qtype: &str, rcode: &str) -> u64 {
        let t = TYPES.iter().position(|(_, n)| *n == qtype).unwrap_or(OTHER);
        (0..RCODES)
            .filter(|c| rcode_name(*c) == rcode)
            .map(|c| self.queries[t][c].load(Ordering::Relaxed))
            .sum()
    }

    /// Adds these metrics to `registry` (shoald's `/metrics`).
    pub fn register(self: &std::sync::Arc<Self>, registry: &mut Registry) {
        registry.register_collector(Box::new(Counters(std::sync::Arc::clone(self))));
    }
}

/// The answers of one batch of UDP queries, counted on the serving thread and added to the
/// shared counters once per batch ([`DnsMetrics::answered_batch`]).
///
/// Why: every DNS thread adds to the same counters, so each shared add moves a cache line
/// between cores; per query that was three such adds, per batch it is one per class of
/// answer (a handful) and two for the latency.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Answers by class, in the order first seen; a batch has few distinct classes.
    classes: Vec<(Class, u64)>,
}

impl Tally {
    /// One query answered with `reply`.
    pub(crate) fn count(&mut self, query: &[u8], reply: &[u8]) {
        let class = classify(query, reply);
        match self.classes.iter_mut().find(|(c, _)| *c == class) {
            Some((_, n)) => *n += 1,
            None => self.classes.push((class, 1)),
        }
    }
}

/// The counters as labelled series, read at scrape time.
#[derive(Debug)]
struct Counters(std::sync::Arc<DnsMetrics>);

impl Collector for Counters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        {
            let mut family = encoder.encode_descriptor(
                "shoal_dns_queries",
                "DNS queries answered by this node's embedded servers, by query type and response code",
                None,
                MetricType::Counter,
            )?;
            for (t, row) in m.queries.iter().enumerate() {
                for (code, n) in row.iter().enumerate() {
                    let n = n.load(Ordering::Relaxed);
                    if n == 0 {
                        continue;
                    }
                    let class = Class {
                        qtype: t,
                        rcode: code,
                    };
                    let labels = [("type", class.qtype()), ("rcode", class.rcode())];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "shoal_dns_thread_answers",
                "UDP answers from the node's zones (not forwarded), by the DNS thread that sent them: how the queries were spread over the threads",
                None,
                MetricType::Counter,
            )?;
            for (i, n) in m.by_thread.iter().enumerate() {
                let n = n.0.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let thread = i.to_string();
                let labels = [("thread", thread.as_str())];
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in [
            (
                "shoal_dns_forwarded_queries",
                "DNS queries for names outside the cluster, forwarded to the upstream servers",
                &m.forwarded,
            ),
            (
                "shoal_dns_upstream_failures",
                "Forwarded DNS queries no upstream server answered (answered SERVFAIL)",
                &m.upstream_failures,
            ),
        ] {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        // The crate's text encoders spell the +Inf bucket f64::INFINITY.
        let buckets: Vec<(f64, u64)> = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(m.latency.iter().map(|n| n.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = m.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        encoder
            .encode_descriptor(
                "shoal_dns_answer_duration_seconds",
                "Time from reading a query to having its reply ready to send (forwarded queries: until the upstream answered or failed)",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type `qtype` (no EDNS).
    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    fn reply(rcode: u8) -> Vec<u8> {
        vec![0x12, 0x34, 0x81, 0x80 | rcode, 0, 1, 0, 0, 0, 0, 0, 0]
    }

    #[test]
    fn classifies_by_type_and_rcode() {
        let c = classify(&query("web.", 1), &reply(0));
        assert_eq!((c.qtype(), c.rcode()), ("A", "NOERROR"));
        let c = classify(&query("_http._tcp.web.", 33), &reply(3));
        assert_eq!((c.qtype(), c.rcode()), ("SRV", "NXDOMAIN"));
        let c = classify(&query("x.", 99), &reply(2));
        assert_eq!((c.qtype(), c.rcode()), ("other", "SERVFAIL"));
        // A truncated question and a pointer in it count as `other`, never panic.
        assert_eq!(
            classify(&query("web.", 1)[..14], &reply(1)).qtype(),
            "other"
        );
        assert_eq!(classify(&[0; 3], &[]).rcode(), "NOERROR");
    }

    #[test]
    fn counts_show_up_as_labelled_series() {
        let m = std::sync::Arc::new(DnsMetrics::default());
        m.answered(&query("web.", 28), &reply(0), Duration::from_micros(30));
        m.answered(&query("web.", 28), &reply(0), Duration::from_micros(30));
        m.answered(&query("nope.", 1), &reply(3), Duration::from_micros(30));
        m.forwarded();
        m.upstream_failed();
        assert_eq!(m.queries("AAAA", "NOERROR"), 2);
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "shoal_dns_queries_total{type=\"AAAA\",rcode=\"NOERROR\"} 2",
            "shoal_dns_queries_total{type=\"A\",rcode=\"NXDOMAIN\"} 1",
            "shoal_dns_forwarded_queries_total 1",
            "shoal_dns_upstream_failures_total 1",
            "shoal_dns_answer_duration_seconds_count 3",
            "shoal_dns_answer_duration_seconds_bucket{le=\"0.000025\"} 0",
            "shoal_dns_answer_duration_seconds_bucket{le=\"0.00005\"} 3",
            "shoal_dns_answer_duration_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn a_batch_counts_each_answer_once() {
        let m = DnsMetrics::default();
        let mut tally = Tally::default();
        tally.count(&query("web.", 1), &reply(0));
        tally.count(&query("nope.", 28), &reply(3));
        tally.count(&query("web.", 1), &reply(0));
        m.answered_batch(&mut tally, Duration::from_micros(200));
        // Emptied: counting it again adds nothing.
        m.answered_batch(&mut tally, Duration::from_micros(200));
        assert_eq!(m.queries("A", "NOERROR"), 2);
        assert_eq!(m.queries("AAAA", "NXDOMAIN"), 1);
        let latency: Vec<u64> = m
            .latency
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        // 200 us: the 0.00025 s bucket, three answers.
        assert_eq!(latency[3], 3);
        assert_eq!(latency.iter().sum::<u64>(), 3);
        assert_eq!(m.latency_sum_ns.load(Ordering::Relaxed), 600_000);
    }

    #[test]
    fn answers_are_counted_by_the_thread_that_sent_them() {
        let m = std::sync::Arc::new(DnsMetrics::default());
        let batch = |m: &DnsMetrics, n: usize| {
            let mut tally = Tally::default();
            for _ in 0..n {
                tally.count(&query("web.", 1), &reply(0));
            }
            m.answered_batch(&mut tally, Duration::from_micros(20));
        };
        for (thread, answers) in [(1, 3), (2, 5), (40, 2)] {
            let m = m.clone();
            std::thread::spawn(move || {
                set_thread_index(thread);
                batch(&m, answers);
            })
            .join()
            .unwrap();
        }
        assert_eq!(m.thread_answers(0), 0);
        assert_eq!(m.thread_answers(1), 3);
        assert_eq!(m.thread_answers(2), 5);
        // Past the counted threads: the last counter.
        assert_eq!(m.thread_answers(THREADS_COUNTED - 1), 2);
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("shoal_dns_thread_answers_total{thread=\"2\"} 5"),
            "{text}"
        );
        assert!(!text.contains("thread=\"0\""), "{text}");
    }
}
