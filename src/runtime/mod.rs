//! What the cores share and how they talk: which CPUs run them ([`cores`]), the messages that cross
//! between the raft core and the serving cores and the state the raft core publishes ([`link`]),
//! the channels they cross on ([`channel`]),
//! the queue-and-wake every core's task uses to hand work to another task of its own executor
//! ([`mailbox`]), a one-shot broadcast any thread may fire ([`signal`]), and the member's shutdown
//! ([`shutdown`]): SIGTERM and SIGINT, a failure on any core, and the bound on how long stopping may
//! take. [`fatal`] makes a panic anywhere end the process; [`faults`] holds the test suite's fault
//! points; [`apart`] runs a long blocking job on a thread of its own; [`turns`] lets a core's I/O in
//! between the steps of long background work.
//!
//! Runs on: every thread (these are the types each side holds).

pub mod apart;
pub mod channel;
pub mod cores;
pub mod fatal;
pub mod faults;
pub mod link;
pub mod mailbox;
pub mod shutdown;
pub mod signal;
pub mod turns;
