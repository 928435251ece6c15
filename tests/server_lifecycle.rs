//! A member is either serving or gone — never half-alive. Against the real keelson binary: a
//! core that panics takes the process down with a non-zero exit; closed stdout/stderr pipes
//! leave it serving; SIGTERM at any moment of start-up or under write load stops it within the
//! stop bound, and no acknowledged write is lost across it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keelson_testkit::server::{Ports, Server};

mod common;

/// Longer than keelson's stop bound (10 s), so a member that stops late still fails the test
/// only when it would also hang forever.
const EXIT_BOUND: Duration = Duration::from_secs(20);

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_keelson"))
}

/// Starts keelson on `ports` and `data` with the given stdio, without waiting for it to serve.
fn spawn(ports: Ports, data: &Path, stdout: Stdio, stderr: Stdio) -> Child {
    let client = format!("http://127.0.0.1:{}", ports.client);
    let peer = format!("http://127.0.0.1:{}", ports.peer);
    Command::new(binary())
        .args(["--name", "node", "--data-dir"])
        .arg(data)
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("node={peer}")])
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

fn wait_exit(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn etcdctl(endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint, "--command-timeout=3s"])
        .args(args)
        .output()
        .expect("etcdctl runs (apt-get install -y etcd-client)")
}

/// How many keys start with `prefix`, by a linearizable read.
fn count(endpoint: &str, prefix: &str) -> u64 {
    let got = etcdctl(endpoint, &["get", prefix, "--prefix", "--keys-only"]);
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    String::from_utf8_lossy(&got.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .count() as u64
}

fn serves(endpoint: &str) -> bool {
    etcdctl(endpoint, &["get", "probe"]).status.success()
}

fn wait_serving(endpoint: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serves(endpoint) {
        assert!(child.try_wait().unwrap().is_none(), "exited before serving");
        assert!(Instant::now() < deadline, "did not serve within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn panicking_core_exits_the_process(place: &str) {
    let mut server = Server::start_with_env(
        binary(),
        Ports::free(),
        &[],
        &[("KEELSON_TEST_PANIC", &format!("{place}:boom"))],
    );
    let endpoint = server.endpoint();
    let put = etcdctl(&endpoint, &["put", "boom", "v"]);
    assert!(
        !put.status.success(),
        "the put that panicked a core was acknowledged"
    );
    let status = server
        .exit_within(EXIT_BOUND)
        .unwrap_or_else(|| panic!("a panicked {place} core left the process running"));
    assert!(!status.success(), "exit status {status} after a panic");
    assert!(
        server.log().contains("KEELSON_TEST_PANIC"),
        "{}",
        server.log()
    );
}

#[test]
fn a_panicking_raft_core_exits_non_zero() {
    panicking_core_exits_the_process("raft");
}

#[test]
fn a_panicking_serving_core_exits_non_zero() {
    panicking_core_exits_the_process("serving");
}

#[test]
fn closed_output_pipes_leave_it_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let ports = Ports::free();
    let endpoint = format!("127.0.0.1:{}", ports.client);
    let mut child = spawn(ports, &data, Stdio::piped(), Stdio::piped());
    wait_serving(&endpoint, &mut child);
    // Close the read ends: every later log line meets a broken pipe.
    drop(child.stdout.take());
    drop(child.stderr.take());
    for i in 0..200 {
        let key = format!("k{i}");
        let put = etcdctl(&endpoint, &["put", &key, "v"]);
        assert!(
            put.status.success(),
            "put {i} after the pipes closed failed"
        );
    }
    assert_eq!(count(&endpoint, "k"), 200);
    // Stopping logs too; it must still stop, cleanly.
    sigterm(&child);
    let status = wait_exit(&mut child, EXIT_BOUND).expect("SIGTERM with closed pipes: no exit");
    assert!(status.success(), "{status}");
}

#[test]
fn sigterm_during_start_up_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = Ports::free();
    let endpoint = format!("127.0.0.1:{}", ports.client);
    // Give it some WAL to replay, so later rounds land inside boot.
    let mut child = spawn(ports, &data, Stdio::null(), Stdio::null());
    wait_serving(&endpoint, &mut child);
    for i in 0..50 {
        assert!(
            etcdctl(&endpoint, &["put", &format!("k{i}"), "v"])
                .status
                .success()
        );
    }
    sigterm(&child);
    assert!(wait_exit(&mut child, EXIT_BOUND).is_some_and(|s| s.success()));
    for delay_ms in [0u64, 1, 3, 7, 15, 30, 60, 120] {
        let mut child = spawn(ports, &data, Stdio::null(), Stdio::null());
        std::thread::sleep(Duration::from_millis(delay_ms));
        sigterm(&child);
        let status = wait_exit(&mut child, EXIT_BOUND)
            .unwrap_or_else(|| panic!("SIGTERM {delay_ms} ms into start-up: no exit"));
        // Killed by the signal before the handler was installed is fine; hanging is not.
        assert!(
            status.success() || status.code().is_none(),
            "SIGTERM {delay_ms} ms into start-up: {status}"
        );
    }
    let mut child = spawn(ports, &data, Stdio::null(), Stdio::null());
    wait_serving(&endpoint, &mut child);
    assert_eq!(count(&endpoint, "k"), 50);
    sigterm(&child);
    assert!(wait_exit(&mut child, EXIT_BOUND).is_some_and(|s| s.success()));
}

#[test]
fn sigterm_under_load_loses_no_acknowledged_write() {
    stops_under_load_losing_nothing(&[]);
}

/// The same with the serving core beside the raft core, on one executor (its channels are local).
#[test]
fn sigterm_under_load_on_one_cpu_loses_no_acknowledged_write() {
    stops_under_load_losing_nothing(&["--cores", "1"]);
}

/// SIGTERM four times while 16 writers write, restarting after each stop: every acknowledged write
/// survives, and each stop is clean.
fn stops_under_load_losing_nothing(flags: &[&str]) {
    let mut server = Server::start(binary(), Ports::free(), flags);
    let acknowledged = common::Acknowledged::default();
    for round in 0..4u64 {
        let writers = common::write_until_refused(
            server.endpoint(),
            format!("r{round}"),
            16,
            acknowledged.clone(),
        );
        std::thread::sleep(Duration::from_millis(100 + 90 * round));
        server.send_term();
        let status = server
            .exit_within(EXIT_BOUND)
            .expect("SIGTERM under load: no exit");
        assert!(status.success(), "{status}: {}", server.log());
        writers.join().unwrap();
        server.launch();
    }
    common::assert_none_lost(server.endpoint(), &acknowledged, 50);
    assert!(server.terminate().success(), "{}", server.log());
}

#[test]
fn a_config_file_configures_the_member_and_its_flags_and_variables_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::free();
    let client = format!("http://127.0.0.1:{}", ports.client);
    let peer = format!("http://127.0.0.1:{}", ports.peer);
    let file = dir.path().join("keelson.conf.yml");
    std::fs::write(
        &file,
        format!(
            "# etcd's configuration format\n\
             name: 'node'\n\
             data-dir: {data}\n\
             listen-client-urls: {client}\n\
             advertise-client-urls: {client}\n\
             listen-peer-urls: {peer}\n\
             initial-advertise-peer-urls: {peer}\n\
             initial-cluster: node={peer}\n\
             initial-cluster-state: 'new'\n\
             max-txn-ops: 3\n\
             log-outputs: [stderr]\n\
             client-transport-security:\n  client-cert-auth: false\n",
            data = dir.path().join("data").display()
        ),
    )
    .unwrap();
    let endpoint = format!("127.0.0.1:{}", ports.client);
    let mut child = Command::new(binary())
        .arg("--config-file")
        .arg(&file)
        .args([
            "--max-txn-ops",
            "1",
            "--listen-client-urls",
            "http://127.0.0.1:1",
        ])
        .env("ETCD_MAX_TXN_OPS", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_serving(&endpoint, &mut child);
    // The file's limit of three operations holds, not the flag's one or the variable's two.
    let txn = |ops: usize| {
        let mut body = String::from("\n\n");
        for i in 0..ops {
            body += &format!("put k{i} v\n");
        }
        body += "\n\n";
        let mut c = Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoint, "txn"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    assert!(txn(3).status.success());
    let refused = txn(4);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("too many operations in txn request"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    sigterm(&child);
    assert!(wait_exit(&mut child, EXIT_BOUND).is_some_and(|s| s.success()));
    let mut log = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("loaded server configuration, other configuration command line flags and environment variables will be ignored if provided"),
        "{log}"
    );
}
