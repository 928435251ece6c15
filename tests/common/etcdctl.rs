//! etcdctl (Debian's, 3.4) run as a test runs it: one invocation's status, output and error line,
//! with what differs by implementation (the raft term) blanked.

use std::io::Write;
use std::process::{Command, Stdio};

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
