//! Where samples go: one connected UDP socket per `--server`, so a refusal
//! (nothing listening there) comes back as an error on the next send and
//! can be counted. A failed send drops that server's socket; the next send
//! resolves the name again and reconnects, so a moved or restarted
//! aggregator is found without restarting the agent. Nothing a server does
//! stops the agent: errors are counted and logged at most once a minute.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

/// At most one send-error line per this long.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

struct Server {
    /// As given: `HOST:PORT`.
    name: String,
    socket: Option<UdpSocket>,
}

impl Server {
    /// Resolves the name (first address) and connects a fresh socket.
    fn connect(&mut self) -> io::Result<&UdpSocket> {
        let addr =
            self.name.to_socket_addrs()?.next().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "the name has no address")
            })?;
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(addr)?;
        Ok(self.socket.insert(socket))
    }

    fn send(&mut self, datagram: &[u8]) -> io::Result<()> {
        let socket = match &self.socket {
            Some(s) => s,
            None => self.connect()?,
        };
        match socket.send(datagram) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.socket = None;
                Err(e)
            }
        }
    }
}

/// Every `--server`, with the send errors so far.
pub struct Servers {
    servers: Vec<Server>,
    errors: u64,
    /// At most one line a minute.
    log: crate::RateLimited,
}

impl Servers {
    /// Resolves and connects each server now; one that fails is logged and
    /// tried again at each send.
    pub fn new(names: &[String]) -> Servers {
        let mut servers = Servers {
            servers: names
                .iter()
                .map(|name| Server {
                    name: name.clone(),
                    socket: None,
                })
                .collect(),
            errors: 0,
            log: crate::RateLimited::new(ERROR_LOG_EVERY),
        };
        for i in 0..servers.servers.len() {
            if let Err(e) = servers.servers[i].connect() {
                let name = servers.servers[i].name.clone();
                servers.failed(&name, &e);
            }
        }
        servers
    }

    /// Sends `datagram` to every server; returns how many took it.
    pub fn send(&mut self, datagram: &[u8]) -> usize {
        let mut sent = 0;
        for i in 0..self.servers.len() {
            match self.servers[i].send(datagram) {
                Ok(()) => sent += 1,
                Err(e) => {
                    let name = self.servers[i].name.clone();
                    self.failed(&name, &e);
                }
            }
        }
        sent
    }

    pub fn errors(&self) -> u64 {
        self.errors
    }

    fn failed(&mut self, name: &str, e: &io::Error) {
        self.errors += 1;
        let errors = self.errors;
        self.log.log(|held| {
            format!(
                "udp-vmagent: warning: cannot send to {name} (--server): {e} ({errors} send errors in all, {} since the last such line; at most one a minute)",
                held + 1
            )
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusing_server_is_counted_and_the_others_still_get_it() {
        let good = UdpSocket::bind("127.0.0.1:0").unwrap();
        good.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A port with nothing behind it: the kernel answers "refused".
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let names = vec![
            closed_addr.to_string(),
            good.local_addr().unwrap().to_string(),
            "no-such-host.invalid:9999".to_string(),
        ];
        let mut servers = Servers::new(&names);
        let mut buf = [0u8; 8];
        for round in 0..3u8 {
            servers.send(&[round]);
            assert_eq!(good.recv(&mut buf).unwrap(), 1);
            assert_eq!(buf[0], round);
            std::thread::sleep(Duration::from_millis(20));
        }
        // The unresolvable name fails at start and at every send; the
        // refusal shows on the send after the first.
        assert!(servers.errors() >= 4, "{}", servers.errors());
    }
}
