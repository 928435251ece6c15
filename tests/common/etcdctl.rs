//! etcdctl (Debian's, 3.4) run as a test runs it: one invocation's status, output and error line,
//! with what differs by implementation (the raft term) blanked; or an invocation left running
//! (a watch, a lock held, a campaign), its output gathered in files.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use keelson_testkit::server::{Ports, Server};

/// One etcdctl invocation: arguments, and what goes to its standard input.
pub struct Step {
    /// Its arguments.
    pub args: Vec<String>,
    /// Its standard input.
    pub stdin: Option<&'static str>,
}

/// A step of space-separated `args`, no input.
pub fn step(args: &str) -> Step {
    Step {
        args: args.split(' ').map(str::to_string).collect(),
        stdin: None,
    }
}

/// What a step printed, with the implementation's own numbers taken out.
pub fn run(endpoint: &str, step: &Step) -> String {
    let mut child = Command::new("/usr/bin/etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", endpoint])
        .args(&step.args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etcdctl runs (apt-get install -y etcd-client)");
    let mut stdin = child.stdin.take().unwrap();
    if let Some(input) = step.stdin {
        stdin.write_all(input.as_bytes()).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    // etcdctl's client logs warnings with timestamps and client ids; the last line is its verdict.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .filter(|l| !l.starts_with('{'))
        .collect::<Vec<_>>()
        .join("\n");
    let stdout = normalize(&String::from_utf8_lossy(&out.stdout));
    format!("status {:?}\n{stdout}\n{error}", out.status.code())
}

/// Blanks `"raft_term":N` (etcd's first term is 2, after its bootstrap entries; keelson's is 1) and
/// the raft term column of `-w fields`.
pub fn normalize(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\"raft_term\":") {
        let (head, tail) = rest.split_at(at + "\"raft_term\":".len());
        out.push_str(head);
        out.push('T');
        rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out.lines()
        .map(|l| {
            if l.starts_with("\"RaftTerm\" : ") {
                "\"RaftTerm\" : T"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `session` (given an endpoint, what each of its steps printed) against a real etcd 3.4 and
/// then against the keelson binary on the same ports (member and cluster ids derive from the
/// URLs, so they must match too), and fails at the first step whose output differs. Returns
/// etcd's outputs, for the test to check they mean something.
pub fn same_output_as_etcd(session: impl Fn(&str) -> Vec<String>) -> Vec<String> {
    let ports = Ports::free();
    let mut etcd = Server::etcd(ports);
    let want = session(&etcd.endpoint());
    etcd.terminate();
    drop(etcd);
    let keelson = Server::start(Path::new(env!("CARGO_BIN_EXE_keelson")), ports, &[]);
    let got = session(&keelson.endpoint());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "step {i} (left: keelson, right: etcd)");
    }
    assert_eq!(got.len(), want.len());
    want
}

/// An etcdctl invocation left running, its output gathered in files.
pub struct Running {
    child: Child,
    stdin: ChildStdin,
    out: PathBuf,
    err: PathBuf,
}

impl Running {
    /// Starts `etcdctl <args>` against `endpoint`, writing into `dir` under `name`.
    pub fn start(endpoint: &str, args: &[&str], dir: &Path, name: usize) -> Running {
        let (out, err) = (
            dir.join(format!("{name}.out")),
            dir.join(format!("{name}.err")),
        );
        let mut child = Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoint])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("etcdctl runs (apt-get install -y etcd-client)");
        let stdin = child.stdin.take().unwrap();
        Running {
            child,
            stdin,
            out,
            err,
        }
    }

    /// Types `line` into it (an interactive watch).
    pub fn type_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// What it has printed so far.
    pub fn printed(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap()
    }

    /// Waits until it has printed something.
    pub fn await_output(&self) {
        self.await_lines(1);
    }

    /// Waits until it has printed `lines` lines.
    pub fn await_lines(&self, lines: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.printed().lines().count() < lines {
            assert!(
                Instant::now() < deadline,
                "{} printed {:?}, not {lines} lines",
                self.out.display(),
                self.printed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ends it with SIGKILL; what it printed.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.said(None)
    }

    /// Ends it with SIGINT, as Ctrl-C does, and waits for it to exit; its exit status and what
    /// it printed.
    pub fn interrupt(self) -> String {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        self.finish()
    }

    /// Waits for it to exit by itself (failing after 20 s); its exit status and what it printed.
    pub fn finish(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return self.said(Some(status));
            }
            assert!(
                Instant::now() < deadline,
                "etcdctl did not exit: {}",
                self.printed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its exit status if known, its output and its error lines (without the client library's
    /// JSON log lines).
    fn said(&self, status: Option<ExitStatus>) -> String {
        let read = |path: &Path| std::fs::read_to_string(path).unwrap();
        let err: Vec<String> = read(&self.err)
            .lines()
            .filter(|l| !l.starts_with('{'))
            .map(str::to_string)
            .collect();
        let out = format!("{}\n{}", normalize(&read(&self.out)), err.join("\n"));
        match status {
            Some(status) => format!("status {:?}\n{out}", status.code()),
            None => out,
        }
    }
}

/// Waits until the output files of `running` have not grown for a second.
pub fn settle(running: &[Running]) {
    let size = || -> u64 {
        running
            .iter()
            .map(|w| std::fs::metadata(&w.out).unwrap().len())
            .sum()
    };
    let mut last = size();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = size();
        if now == last {
            return;
        }
        last = now;
    }
}
