//! A server speaking etcd's API, started with etcd's flags on free loopback ports: real etcd 3.4, or
//! the `keelson` binary under test — the same command line for both, so tests can run the same
//! steps against each and compare. It logs to `<dir>/log`, can be stopped with SIGTERM or killed
//! with SIGKILL and started again on the same data, and is killed (by its own pid) on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proxy::{Faults, Proxy};

/// A server process we started.
pub struct Server {
    binary: PathBuf,
    child: Option<Child>,
    /// The client port (127.0.0.1).
    pub client_port: u16,
    /// The peer URL it was started with (and its id derives from).
    pub peer_url: String,
    /// Where it listens for peers (its peer URL, unless a proxy stands there).
    listen_peer_url: String,
    /// Holds `data/` and `log`.
    pub dir: tempfile::TempDir,
    /// Its member name.
    pub name: String,
    /// `--initial-cluster`.
    initial_cluster: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
}

/// Where [`free_port`] looks: below Linux's ephemeral range (32768 and up), so no outgoing
/// connection of any test takes a port between its handing out and its server binding it.
const PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A free loopback port, not handed out before by this process (free when asked; the server binds
/// it right after).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let span = PORTS.end - PORTS.start;
    // Test binaries start at different places, so two that overlap rarely meet.
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let port = (PORTS.start + (start + n) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}");
}

/// The loopback ports of a server (the same ports give the same member id and client URLs).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Client port.
    pub client: u16,
    /// Peer port (etcd binds it; keelson's id derives from it).
    pub peer: u16,
}

impl Ports {
    /// Two free ports.
    pub fn free() -> Ports {
        Ports {
            client: free_port(),
            peer: free_port(),
        }
    }
}

impl Server {
    /// Starts `binary` with etcd's flags for a one-member cluster named `node` on `ports`, plus
    /// `extra` flags, and waits until it answers.
    pub fn start(binary: &Path, ports: Ports, extra: &[&str]) -> Server {
        Server::start_with_env(binary, ports, extra, &[])
    }

    /// [`Server::start`], with these environment variables set for the process.
    pub fn start_with_env(
        binary: &Path,
        ports: Ports,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut server = Server::new(binary, ports, extra, env);
        server.launch();
        server
    }

    /// [`Server::start`] on a data directory that `prepare` sets up first, given its path (not
    /// there yet) and the peer URL of the member (named `node`) it will run.
    pub fn start_on(
        binary: &Path,
        ports: Ports,
        extra: &[&str],
        prepare: impl FnOnce(&Path, &str),
    ) -> Server {
        let mut server = Server::new(binary, ports, extra, &[]);
        prepare(&server.data_dir(), &server.peer_url);
        server.launch();
        server
    }

    /// The members of a new cluster of `size` (named `m0`, `m1`, …), each started with `extra`:
    /// started together, then waited for until each answers.
    pub fn cluster(binary: &Path, size: usize, extra: &[&str]) -> Vec<Server> {
        let mut members = Server::cluster_spawned(binary, &vec![extra; size]);
        Server::wait_for_all(&mut members);
        members
    }

    /// A new cluster of three on `ports`, started with no extra flags and waited for.
    pub fn cluster_of_three_on(binary: &Path, ports: &[Ports]) -> Vec<Server> {
        let mut members = Server::cluster_spawned_on(binary, ports, &[&[], &[], &[]]);
        Server::wait_for_all(&mut members);
        members
    }

    /// Waits until every one of `members` answers.
    fn wait_for_all(members: &mut [Server]) {
        for member in members {
            member.wait_until_serving();
        }
    }

    /// The members of a new cluster, member `i` started with `extra[i]`, not waited for.
    pub fn cluster_spawned(binary: &Path, extra: &[&[&str]]) -> Vec<Server> {
        let ports: Vec<Ports> = extra.iter().map(|_| Ports::free()).collect();
        Server::cluster_spawned_on(binary, &ports, extra)
    }

    /// The members of a new cluster of `size`, each started with `extra`, whose peer traffic goes
    /// through a [`Proxy`] each (where its peers dial it) that applies `faults`; waited for.
    pub fn cluster_behind_proxies(
        binary: &Path,
        size: usize,
        extra: &[&str],
        faults: &Arc<Faults>,
    ) -> (Vec<Server>, Vec<Proxy>) {
        let listen: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let proxies: Vec<Proxy> = listen
            .iter()
            .map(|&port| Proxy::start(port, faults.clone()))
            .collect();
        let ports: Vec<Ports> = proxies
            .iter()
            .map(|p| Ports {
                client: free_port(),
                peer: p.port(),
            })
            .collect();
        let mut members = Server::cluster_members(binary, &ports, &vec![extra; size]);
        for (member, port) in members.iter_mut().zip(&listen) {
            member.listen_peer_url = format!("http://127.0.0.1:{port}");
            member.spawn();
        }
        Server::wait_for_all(&mut members);
        (members, proxies)
    }

    /// The members of a new cluster on `ports` (the same ports give the same member ids), member
    /// `i` started with `extra[i]`, not waited for.
    pub fn cluster_spawned_on(binary: &Path, ports: &[Ports], extra: &[&[&str]]) -> Vec<Server> {
        let mut members = Server::cluster_members(binary, ports, extra);
        for member in &mut members {
            member.spawn();
        }
        members
    }

    /// A new member `name` on `ports`, joining the cluster of `members` (it was added with
    /// `member add` first): started with `--initial-cluster-state existing` and an
    /// `--initial-cluster` of theirs and its own; not waited for (a learner serves no
    /// linearizable read).
    pub fn join(
        binary: &Path,
        members: &[Server],
        name: &str,
        ports: Ports,
        extra: &[&str],
    ) -> Server {
        let mut member = Server::new(binary, ports, extra, &[]);
        member.name = name.to_string();
        member.initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .chain([format!("{name}={}", member.peer_url)])
            .collect::<Vec<_>>()
            .join(",");
        member
            .extra
            .extend(["--initial-cluster-state".into(), "existing".into()]);
        member.spawn();
        member
    }

    /// The members of a new cluster on `ports`, named `m0`, `m1`, …, not started.
    fn cluster_members(binary: &Path, ports: &[Ports], extra: &[&[&str]]) -> Vec<Server> {
        let initial_cluster = ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("m{i}=http://127.0.0.1:{}", p.peer))
            .collect::<Vec<_>>()
            .join(",");
        ports
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let mut member = Server::new(binary, p, extra[i], &[]);
                member.name = format!("m{i}");
                member.initial_cluster = initial_cluster.clone();
                member
            })
            .collect()
    }

    fn new(binary: &Path, ports: Ports, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let peer_url = format!("http://127.0.0.1:{}", ports.peer);
        Server {
            binary: binary.to_path_buf(),
            child: None,
            client_port: ports.client,
            initial_cluster: format!("node={peer_url}"),
            name: "node".into(),
            listen_peer_url: peer_url.clone(),
            peer_url,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Real etcd 3.4.
    pub fn etcd(ports: Ports) -> Server {
        Server::start(Path::new("/usr/bin/etcd"), ports, &[])
    }

    /// Runs `binary` from now on, on the same data directory, ports and flags (etcd's members
    /// handed over to keelson, say); takes effect at the next [`Server::spawn`].
    pub fn set_binary(&mut self, binary: &Path) {
        self.binary = binary.to_path_buf();
    }

    /// Its ports.
    pub fn ports(&self) -> Ports {
        let peer = self
            .peer_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok());
        Ports {
            client: self.client_port,
            peer: peer.expect("the peer URL ends in a port"),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `127.0.0.1:<client port>`, for `--endpoints`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Starts the process (again) on the same data directory and ports, and waits until it
    /// answers a read.
    pub fn launch(&mut self) {
        self.spawn();
        self.wait_until_serving();
    }

    /// Starts the process (again) on the same data directory and ports.
    pub fn spawn(&mut self) {
        assert!(
            self.binary.exists(),
            "{} not found (etcd: apt-get install -y etcd-server etcd-client, or run .ci/run)",
            self.binary.display()
        );
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .args(["--name", &self.name, "--data-dir"])
            .arg(self.data_dir())
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &self.listen_peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Waits until the process answers a (linearizable) read: it has joined a leader.
    pub fn wait_until_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before serving:\n{}",
                    self.binary.display(),
                    self.log()
                );
            }
            let probe = Command::new("/usr/bin/etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.endpoint(), "--command-timeout=1s"])
                .args(["get", "readiness-probe"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("etcdctl runs (apt-get install -y etcd-client)");
            if probe.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not serve within 30 s:\n{}",
                self.binary.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        child.wait().unwrap()
    }

    /// Sends SIGTERM and returns at once.
    pub fn send_term(&self) {
        let child = self.child.as_ref().expect("running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits up to `bound` for the process to exit on its own; `None` if it is still running
    /// (it is then left running, and killed on drop).
    pub fn exit_within(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            let child = self.child.as_mut().expect("running");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
