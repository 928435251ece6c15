//! A fault proxy for peer traffic: one [`Proxy`] listens where a member's peers dial it (its
//! advertised peer URL) and forwards to where the member listens. The test cuts directions between
//! members ([`Faults::cut`], [`Faults::isolate`], [`Faults::heal`]): a cut direction's connections
//! are closed and new ones refused, as a partition that resets connections does.
//!
//! To know which member dials, a proxy reads the first 32 bytes of each connection — keelson's peer
//! hello (magic, cluster id, sender, receiver; `src/peer/frame.rs`) — and passes them on unchanged;
//! it reads nothing else. Delays are per chunk forwarded.
//!
//! Runs on: test threads (blocking sockets, a thread per direction of each connection).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The length of keelson's peer hello.
const HELLO_LEN: usize = 32;

/// The faults every proxy of a cluster applies, by member id.
#[derive(Debug, Default)]
pub struct Faults {
    /// Directions (from, to) whose traffic is cut.
    cut: Mutex<BTreeSet<(u64, u64)>>,
    /// Added to every chunk forwarded, in microseconds.
    delay_micros: Mutex<u64>,
}

impl Faults {
    /// Cuts traffic from `from` to `to`.
    pub fn cut(&self, from: u64, to: u64) {
        self.cut.lock().unwrap().insert((from, to));
    }

    /// Cuts `member` off from every member in `others`, both ways.
    pub fn isolate(&self, member: u64, others: &[u64]) {
        for &other in others.iter().filter(|&&o| o != member) {
            self.cut(member, other);
            self.cut(other, member);
        }
    }

    /// Restores all traffic.
    pub fn heal(&self) {
        self.cut.lock().unwrap().clear();
    }

    /// Delays every chunk of peer traffic by `delay`.
    pub fn delay(&self, delay: Duration) {
        *self.delay_micros.lock().unwrap() = delay.as_micros() as u64;
    }

    /// Whether traffic from `from` to `to` is cut.
    pub fn is_cut(&self, from: u64, to: u64) -> bool {
        self.cut.lock().unwrap().contains(&(from, to))
    }

    fn pause(&self) {
        let micros = *self.delay_micros.lock().unwrap();
        if micros > 0 {
            std::thread::sleep(Duration::from_micros(micros));
        }
    }
}

/// A proxy in front of one member's peer listener; stops accepting when dropped.
pub struct Proxy {
    port: u16,
    stopped: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target`, where a member
    /// listens for its peers, applying `faults`.
    pub fn start(target: u16, faults: Arc<Faults>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        std::thread::spawn(move || {
            for dialled in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(dialled) = dialled else { continue };
                let faults = faults.clone();
                std::thread::spawn(move || forward(dialled, target, &faults));
            }
        });
        Proxy { port, stopped }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Serves one connection: reads the hello to learn who dials whom, then pumps both ways until
/// either side closes or the direction is cut.
fn forward(mut dialled: TcpStream, target: u16, faults: &Arc<Faults>) {
    let mut hello = [0u8; HELLO_LEN];
    if dialled.read_exact(&mut hello).is_err() {
        return;
    }
    let from = u64::from_be_bytes(hello[16..24].try_into().unwrap());
    let to = u64::from_be_bytes(hello[24..32].try_into().unwrap());
    if faults.is_cut(from, to) {
        return;
    }
    let Ok(mut member) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let _ = member.set_nodelay(true);
    let _ = dialled.set_nodelay(true);
    if member.write_all(&hello).is_err() {
        return;
    }
    let (up_in, up_out) = (dialled.try_clone().unwrap(), member.try_clone().unwrap());
    let faults_up = faults.clone();
    let up = std::thread::spawn(move || pump(up_in, up_out, &faults_up, (from, to)));
    // The member's answers (its verdict on the hello) go back to the dialler.
    pump(member, dialled, faults, (from, to));
    let _ = up.join();
}

/// Copies `source` to `sink` until either ends or `direction` is cut, then closes both.
fn pump(mut source: TcpStream, mut sink: TcpStream, faults: &Faults, direction: (u64, u64)) {
    let _ = source.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buffer = vec![0u8; 64 << 10];
    loop {
        if faults.is_cut(direction.0, direction.1) {
            break;
        }
        match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                faults.pause();
                if sink.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = source.shutdown(Shutdown::Both);
    let _ = sink.shutdown(Shutdown::Both);
}
