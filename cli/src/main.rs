//! Placeholder: the `p2pchat` command line arrives with the TCP/CLI issue.
fn main() {
    eprintln!("p2pchat: the command line is not built yet; see README.md");
    std::process::exit(2);
}
