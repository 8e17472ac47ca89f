//! `p2pchat`: chat over TCP, directly between two machines or through a relay.
//!
//! This binary is a thin terminal frontend: argument parsing, typed lines in, event
//! lines out. The protocol is `p2pchat-core`; sockets and timers are `p2pchat-tcp`.

mod args;
mod bench;
mod commands;
mod direct;
mod format;
mod heap;
mod join;
mod keys;
mod progress;
mod server;
mod sim;
mod ui;
mod web;

use args::{Cli, Command};

fn main() {
    heap::keep_freed_memory();
    let cli: Cli = argh::from_env();
    let status = match cli.command {
        Command::Listen(a) => direct::listen(a),
        Command::Connect(a) => direct::connect(a),
        Command::Server(a) => server::run(a),
        Command::Join(a) => join::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Sim(a) => sim::run(a),
        Command::Id(_) => keys::show_id(),
        Command::Web(a) => web::run(a),
    };
    std::process::exit(status);
}
