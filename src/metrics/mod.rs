//! The Prometheus endpoint (`--metrics-listen`): `/metrics` in the text
//! format and `/healthz`, served by one thread off the receive path.
//!
//! A scrape reads the counters the receive loop and the workers already
//! keep ([`crate::stats::Stats`]) and the figures of the latest report the
//! aggregator made while running ([`crate::report::Published`]); nothing on
//! the datagram path changes for it. What the text says is in
//! `exposition.rs`; this file is the HTTP side.
//!
//! The HTTP side is a small mio loop, not a crate's server: tiny_http, the
//! obvious choice, starts a thread for each connection that finds its pool
//! busy, so a thousand idle connections are a thousand threads. Here one
//! thread holds at most [`MAX_CONNECTIONS`], each with at most
//! [`MAX_REQUEST`] bytes of request and [`REQUEST_DEADLINE`] to send it;
//! when all are taken, a new connection evicts the oldest one still
//! sending its request, but only one that was already given a chance to
//! be read (a scraper accepted in the same burst as a flood of idle
//! connections is read before anyone is evicted). A slow or hostile
//! client costs a slot for a few seconds, never a thread, never memory
//! beyond those bounds, and never the collector's time.
//!
//! The listener is edge-triggered: a connection left in the backlog is
//! never announced again. So `accept` runs until the kernel says
//! `WouldBlock`, and when it fails for want of descriptors (EMFILE,
//! ENFILE) the server closes its oldest idle connection or, with none,
//! tries again after [`ACCEPT_RETRY`]: one bad moment never deafens the
//! endpoint for good. [`DESCRIPTORS`] is what the aggregator keeps back
//! for it from the workers' files.

mod exposition;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use prometheus_client::registry::Registry;

pub use exposition::{Source, render};

use crate::report::served::{Page, Pages, Served};

/// Connections held at once.
pub const MAX_CONNECTIONS: usize = 64;

/// Longest request head (request line and headers) read; a longer one gets
/// 431 and the connection is closed.
pub const MAX_REQUEST: usize = 8 << 10;

/// Time a client has to send its request and take the answer.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// How soon `accept` is tried again after the process ran out of
/// descriptors with no idle connection to close.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Descriptors the endpoint may hold: its connections, the listener, the
/// poll and its waker.
pub const DESCRIPTORS: u64 = MAX_CONNECTIONS as u64 + 3;

const LISTENER: Token = Token(0);
const WAKE: Token = Token(1);
const FIRST_CONN: usize = 2;

/// A running endpoint; [`MetricsServer::stop`] ends it.
pub struct MetricsServer {
    pub local: SocketAddr,
    waker: Arc<Waker>,
    handle: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `listen` and serves `source` and the pages in `served` from a
    /// thread of its own.
    pub fn start(listen: SocketAddr, source: Source, served: Served) -> io::Result<MetricsServer> {
        let mut listener = TcpListener::bind(listen)?;
        let local = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let mut registry = Registry::default();
        registry.register_collector(Box::new(source));
        let site = Site { registry, served };
        let handle = std::thread::Builder::new()
            .name("vmstats-metrics".into())
            .spawn(move || Server::new(poll, listener, site).run())?;
        Ok(MetricsServer {
            local,
            waker,
            handle,
        })
    }

    pub fn stop(self) {
        // A failed wake leaves the thread to the process's exit.
        if self.waker.wake().is_ok() {
            let _ = self.handle.join();
        }
    }
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    opened: Instant,
    /// A read was tried: it may be evicted now, it had its chance.
    read_tried: bool,
    request: Vec<u8>,
    /// The answer, once the request is whole, and how much of it was sent.
    answer: Option<(Vec<u8>, usize)>,
}

/// What the endpoint answers from: the metrics and the report's pages.
struct Site {
    registry: Registry,
    served: Served,
}

struct Server {
    poll: Poll,
    listener: TcpListener,
    site: Site,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    /// When to call `accept` again after running out of descriptors.
    accept_retry: Option<Instant>,
}

impl Server {
    fn new(poll: Poll, listener: TcpListener, site: Site) -> Server {
        Server {
            poll,
            listener,
            site,
            conns: HashMap::with_capacity(MAX_CONNECTIONS),
            next_token: FIRST_CONN,
            accept_retry: None,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(128);
        loop {
            let now = Instant::now();
            let deadlines = self.conns.values().map(|c| c.opened + REQUEST_DEADLINE);
            let timeout = deadlines
                .chain(self.accept_retry)
                .min()
                .map(|at| at.saturating_duration_since(now));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                crate::log_line(&format!("error: metrics endpoint stopped: {e}"));
                return;
            }
            let mut accept = self.accept_retry.is_some_and(|at| Instant::now() >= at);
            for event in &events {
                match event.token() {
                    WAKE => return,
                    LISTENER => accept = true,
                    token => self.serve(token),
                }
            }
            if accept {
                self.accept();
            }
            let now = Instant::now();
            let late: Vec<Token> = self
                .conns
                .iter()
                .filter(|(_, c)| now >= c.opened + REQUEST_DEADLINE)
                .map(|(t, _)| *t)
                .collect();
            for token in late {
                self.close(token);
            }
        }
    }

    /// Takes every connection waiting (the listener is edge-triggered).
    fn accept(&mut self) {
        self.accept_retry = None;
        loop {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    // Free a descriptor by closing the oldest idle client;
                    // with none, come back shortly.
                    match self.evictable() {
                        Some(token) => self.close(token),
                        None => {
                            self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                            return;
                        }
                    }
                    continue;
                }
                // The client gave up before we took it (ECONNABORTED and the
                // like): the next one may be fine.
                Err(_) => continue,
            };
            if self.conns.len() >= MAX_CONNECTIONS && !self.make_room() {
                continue; // every slot is busy answering: drop this one
            }
            let token = Token(self.next_token);
            self.next_token = self.next_token.wrapping_add(1).max(FIRST_CONN);
            if self
                .poll
                .registry()
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            self.conns.insert(
                token,
                Conn {
                    stream,
                    opened: Instant::now(),
                    read_tried: false,
                    request: Vec::new(),
                    answer: None,
                },
            );
        }
    }

    /// Frees a slot: first every connection not yet read is read (one
    /// whose request is already there is answered, not evicted), then the
    /// oldest still sending its request goes. False when all are answering.
    fn make_room(&mut self) -> bool {
        let untried: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.read_tried)
            .map(|(t, _)| *t)
            .collect();
        for token in untried {
            self.serve(token);
        }
        if self.conns.len() < MAX_CONNECTIONS {
            return true;
        }
        match self.evictable() {
            Some(token) => {
                self.close(token);
                true
            }
            None => false,
        }
    }

    /// The oldest connection that was read and is still sending its request.
    fn evictable(&self) -> Option<Token> {
        self.conns
            .iter()
            .filter(|(_, c)| c.read_tried && c.answer.is_none())
            .min_by_key(|(_, c)| c.opened)
            .map(|(t, _)| *t)
    }

    fn close(&mut self, token: Token) {
        if let Some(mut c) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }

    /// Reads what the client sent, answers once its request is whole,
    /// and closes when the answer is out or the client went away.
    fn serve(&mut self, token: Token) {
        let site = &self.site;
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let done = match c.answer {
            None => read_request(c, site),
            Some(_) => write_answer(c),
        };
        if done {
            self.close(token);
        }
    }
}

/// Reads into the request; on its end, prepares the answer and starts
/// sending it. True when the connection is finished.
fn read_request(c: &mut Conn, site: &Site) -> bool {
    c.read_tried = true;
    let mut buf = [0u8; 2048];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => {
                let room = MAX_REQUEST - c.request.len();
                c.request.extend_from_slice(&buf[..n.min(room)]);
                if let Some(answer) = answer_to(&c.request, n > room, site) {
                    c.request = Vec::new();
                    c.answer = Some((answer, 0));
                    return write_answer(c);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Sends what is left of the answer; true when it is all out (or the
/// client went away).
fn write_answer(c: &mut Conn) -> bool {
    let Some((answer, sent)) = c.answer.as_mut() else {
        return false;
    };
    while *sent < answer.len() {
        match c.stream.write(&answer[*sent..]) {
            Ok(0) => return true,
            Ok(n) => *sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    true
}

/// The whole answer to `request` once its head is complete (`None` while
/// more is to come); `overflow` says it was cut at [`MAX_REQUEST`].
fn answer_to(request: &[u8], overflow: bool, site: &Site) -> Option<Vec<u8>> {
    let complete =
        request.windows(4).any(|w| w == b"\r\n\r\n") || request.windows(2).any(|w| w == b"\n\n");
    if !complete {
        return (overflow || request.len() >= MAX_REQUEST)
            .then(|| response(431, "text/plain", "request header too large\n"));
    }
    let mut lines = request.split(|b| *b == b'\n');
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    let head = Head::of(lines);
    Some(match (method, path) {
        (b"GET", b"/metrics") => response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &render(&site.registry),
        ),
        (b"GET", b"/healthz") => response(200, "text/plain", "ok\n"),
        (b"GET", b"/" | b"/report.json") => {
            let Some(pages) = latest(site) else {
                return Some(not_yet());
            };
            let page = if path == b"/" {
                pages.html()
            } else {
                pages.json()
            };
            page_response(page, &pages.etag(), &head)
        }
        (b"GET", _) if path.starts_with(b"/vm/") && path.ends_with(b".json") => {
            let Some(pages) = latest(site) else {
                return Some(not_yet());
            };
            let ip = std::str::from_utf8(&path[4..path.len() - 5])
                .ok()
                .and_then(|a| a.parse().ok());
            match ip.and_then(|ip| pages.vm(ip)) {
                Some(page) => page_response(&page, &pages.etag(), &head),
                None => response(404, "text/plain", "no such VM in the latest report\n"),
            }
        }
        (b"GET", _) => response(
            404,
            "text/plain",
            "not found: try /, /report.json, /vm/<address>.json, /metrics or /healthz\n",
        ),
        _ => response(405, "text/plain", "only GET\n"),
    })
}

/// The request headers the pages heed.
struct Head {
    gzip: bool,
    if_none_match: Option<String>,
}

impl Head {
    fn of<'a>(lines: impl Iterator<Item = &'a [u8]>) -> Head {
        let mut head = Head {
            gzip: false,
            if_none_match: None,
        };
        for line in lines {
            let line = String::from_utf8_lossy(line);
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("accept-encoding") {
                head.gzip = value
                    .split(',')
                    .any(|e| e.split(';').next().is_some_and(|e| e.trim() == "gzip"));
            } else if name.eq_ignore_ascii_case("if-none-match") {
                head.if_none_match = Some(value.to_string());
            }
        }
        head
    }
}

fn latest(site: &Site) -> Option<Arc<Pages>> {
    site.served.lock().expect("no panic holds it").clone()
}

fn not_yet() -> Vec<u8> {
    response(
        503,
        "text/plain",
        "no report yet: it is built every --cache-refresh (its first pass is under way, or it is 0)\n",
    )
}

/// A page, gzipped when the client takes it, or 304 when it has it.
fn page_response(page: &Page, etag: &str, head: &Head) -> Vec<u8> {
    let mut extra = format!("ETag: {etag}\r\nCache-Control: no-cache\r\nVary: Accept-Encoding\r\n");
    if head
        .if_none_match
        .as_deref()
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return head_and_body(304, page.content_type, &extra, &[]);
    }
    let body = if head.gzip {
        extra.push_str("Content-Encoding: gzip\r\n");
        &page.gzip
    } else {
        &page.body
    };
    head_and_body(200, page.content_type, &extra, body)
}

fn response(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    head_and_body(status, content_type, "", body.as_bytes())
}

fn head_and_body(status: u16, content_type: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        304 => "Not Modified",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Request Header Fields Too Large",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use exposition::tests::registry;

    #[test]
    fn requests_are_answered_by_path_and_bounded() {
        let (registry, _) = registry();
        let site = Site {
            registry,
            served: Served::default(),
        };
        let ok = |req: &[u8]| answer_to(req, false, &site).map(|a| String::from_utf8(a).unwrap());
        assert!(
            ok(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap()
                .starts_with("HTTP/1.1 200")
        );
        assert!(
            ok(b"GET /healthz HTTP/1.0\n\n")
                .unwrap()
                .ends_with("\r\n\r\nok\n")
        );
        assert!(
            ok(b"GET /nope HTTP/1.1\r\n\r\n")
                .unwrap()
                .starts_with("HTTP/1.1 404")
        );
        assert!(
            ok(b"POST /metrics HTTP/1.1\r\n\r\n")
                .unwrap()
                .starts_with("HTTP/1.1 405")
        );
        assert_eq!(
            ok(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            None,
            "not whole yet"
        );
        let huge = vec![b'a'; MAX_REQUEST];
        assert!(ok(&huge).unwrap().starts_with("HTTP/1.1 431"));
    }

    /// A scraper accepted in one burst with more idle connections than the
    /// endpoint holds is answered, not evicted before its request is read.
    #[test]
    fn a_burst_of_idle_connections_does_not_evict_a_scraper_among_them() {
        use std::io::{Read, Write};
        let (registry, _) = registry();
        let site = Site {
            registry,
            served: Served::default(),
        };
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let poll = Poll::new().unwrap();
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .unwrap();
        let mut server = Server::new(poll, listener, site);
        // Every slot taken by idle clients, then the scraper and as many
        // idle ones again, waiting in the kernel's backlog (at most 128)
        // until the one accept that takes them all.
        let connect = || std::net::TcpStream::connect(addr).unwrap();
        let idle_before: Vec<_> = (0..MAX_CONNECTIONS).map(|_| connect()).collect();
        std::thread::sleep(Duration::from_millis(20));
        server.accept();
        let mut scraper = connect();
        scraper.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        let idle_after: Vec<_> = (0..MAX_CONNECTIONS).map(|_| connect()).collect();
        std::thread::sleep(Duration::from_millis(50));
        server.accept();
        scraper
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut text = String::new();
        let _ = scraper.read_to_string(&mut text);
        assert!(text.starts_with("HTTP/1.1 200"), "{text:?}");
        assert!(server.conns.len() <= MAX_CONNECTIONS);
        drop((idle_before, idle_after));
    }
}
