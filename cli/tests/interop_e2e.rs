//! End-to-end tests of durable history and of plain-text interoperability: the real
//! binary, real TCP on 127.0.0.1, plain `std::net::TcpStream`s standing in for `nc`.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;

use support::{Proc, WAIT, fresh_data_dir, join, listener, port_in, server};

/// A plain-text client: write lines, read lines, like `nc`.
struct Nc {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Nc {
    fn connect(port: u16) -> Nc {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Nc::over(stream)
    }

    fn over(stream: TcpStream) -> Nc {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Nc { stream, reader }
    }

    fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).unwrap();
    }

    /// Reads lines until one satisfies `pred`.
    fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let mut seen = Vec::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => panic!("no line {what:?}; got {seen:?}"),
                Ok(_) => {
                    let line = line.trim_end().to_owned();
                    if pred(&line) {
                        return line;
                    }
                    seen.push(line);
                }
            }
        }
    }
}

fn listen_args<'a>(history: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "listen",
        "--bind",
        "127.0.0.1",
        "--port",
        "0",
        "--name",
        name,
        "--history",
        history,
    ]
}

/// One conversation: the listener says `from_listener`, the connector `from_connector`,
/// both exit. Returns the listener's stdout lines.
fn conversation(
    lis_history: &Path,
    con_history: &Path,
    from_listener: &str,
    from_connector: &str,
) -> Vec<String> {
    let (lh, ch) = (lis_history.to_str().unwrap(), con_history.to_str().unwrap());
    let mut l = Proc::start(&listen_args(lh, "lis"));
    let line = l.expect_out("listening", |x| x.starts_with("* listening on"));
    let addr = format!("127.0.0.1:{}", port_in(&line));
    let mut c = Proc::start(&["connect", &addr, "--name", "con", "--history", ch]);
    l.expect_out_line("* connected to con");
    c.expect_out_line("* connected to lis");
    l.send(from_listener);
    c.expect_out_line(&format!("peer: {from_listener}"));
    c.send(from_connector);
    l.expect_out_line(&format!("peer: {from_connector}"));
    l.close_stdin();
    c.close_stdin();
    assert_eq!(l.wait_exit(), 0);
    assert_eq!(c.wait_exit(), 0);
    l.out_seen.clone()
}

#[test]
fn history_is_shown_when_the_next_conversation_starts() {
    let dir = fresh_data_dir();
    let (lh, ch) = (dir.join("lis.log"), dir.join("con.log"));
    let first = conversation(&lh, &ch, "first hello", "first reply");
    assert!(
        !first.iter().any(|l| l.starts_with("* history")),
        "no history yet: {first:?}"
    );
    let second = conversation(&lh, &ch, "second hello", "second reply");
    let shown: Vec<&String> = second.iter().filter(|l| l.starts_with("* [")).collect();
    assert_eq!(shown.len(), 2, "{second:?}");
    assert!(shown[0].ends_with("you: first hello"), "{shown:?}");
    assert!(shown[1].ends_with("peer: first reply"), "{shown:?}");
    let marker = second
        .iter()
        .position(|l| l.starts_with("* history (2 earlier lines"))
        .unwrap();
    let live = second
        .iter()
        .position(|l| l == "peer: second reply")
        .unwrap();
    assert!(marker < live, "history comes before the new conversation");
    // The file is plain text, one record per line.
    let text = std::fs::read_to_string(&lh).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(
        text.lines().all(|l| l.contains(" > ") || l.contains(" < ")),
        "{text}"
    );
}

#[test]
fn a_history_file_cut_mid_record_loads_with_the_torn_record_skipped() {
    let dir = fresh_data_dir();
    let (lh, ch) = (dir.join("lis.log"), dir.join("con.log"));
    conversation(&lh, &ch, "kept message", "torn message that is cut");
    // Simulate a crash in the middle of writing the last record.
    let bytes = std::fs::read(&lh).unwrap();
    std::fs::write(&lh, &bytes[..bytes.len() - 10]).unwrap();
    let (l_path, c_path) = (
        lh.to_str().unwrap().to_owned(),
        ch.to_str().unwrap().to_owned(),
    );
    let mut l = Proc::start(&listen_args(&l_path, "lis"));
    let line = l.expect_out("listening", |x| x.starts_with("* listening on"));
    let mut c = Proc::start(&[
        "connect",
        &format!("127.0.0.1:{}", port_in(&line)),
        "--history",
        &c_path,
    ]);
    l.expect_out("the intact record", |x| {
        x.starts_with("* [") && x.ends_with("you: kept message")
    });
    let warning = l.expect_err("torn record warning", |x| x.contains("skipped"));
    assert!(
        warning.contains("1 damaged or incomplete record"),
        "{warning}"
    );
    l.expect_out_line("* end of history");
    assert!(
        !l.out_seen.iter().any(|x| x.contains("torn")),
        "the torn record is never shown: {:?}",
        l.out_seen
    );
    c.close_stdin();
    l.close_stdin();
    assert_eq!(l.wait_exit(), 0);
}

#[test]
fn a_plain_text_client_and_a_p2pchat_client_chat_both_ways_through_the_relay() {
    let (_srv, port) = server(&[]);
    let mut joined = join(port, "ann", 0);
    let mut nc = Nc::connect(port);
    nc.send("0 hello from nc\n");
    let welcome = nc.expect("welcome", |l| l.starts_with("* you are client"));
    assert!(welcome.starts_with("* you are client 1 "), "{welcome}");
    joined.expect_out_line("1 hello from nc");
    joined.send("1 hello, plain text");
    nc.expect("the reply", |l| l == "0 hello, plain text");
    // ann was told, once, that nothing between them is end-to-end encrypted.
    let told: Vec<_> = joined
        .out_seen
        .iter()
        .filter(|l| l.starts_with("* 1 has no key"))
        .collect();
    assert_eq!(told.len(), 1, "{:?}", joined.out_seen);
    assert!(told[0].contains("not end-to-end encrypted"), "{told:?}");
    // A message to everyone is sealed: nc is told one came, ann that nc cannot read it.
    joined.send("/all sealed for keys");
    nc.expect("a sealed message came", |l| {
        l == "* 0 sent an end-to-end encrypted message, which a plain-text client cannot read"
    });
    joined.expect_out("cannot read", |l| {
        l.starts_with("* 1 has no key and cannot read messages to everyone")
    });
    // The original app's client: no newline ever, one send() per message, a person's
    // pause between them (each is shown before the next is typed).
    let mut app = Nc::connect(port);
    app.send("0 no newline");
    app.expect("welcome", |l| l.starts_with("* you are client 2 "));
    joined.expect_out_line("2 no newline");
    app.send("0 and a second one");
    joined.expect_out_line("2 and a second one");
    app.send("exit");
    joined.expect_out_line("* 2 said exit");
    // One message and at once the end of the stream: the message is not lost.
    let mut brief = Nc::connect(port);
    brief.send("0 hello and goodbye");
    brief.stream.shutdown(std::net::Shutdown::Write).unwrap();
    joined.expect_out_line("3 hello and goodbye");
    // Exit works for the text client too; it is closed when everyone has exited.
    nc.send("exit\n");
    joined.expect_out_line("* 1 said exit");
    joined.send("exit");
    nc.expect("goodbye", |l| l.starts_with("* everyone has said exit"));
    app.expect("goodbye", |l| l.starts_with("* everyone has said exit"));
    assert_eq!(joined.wait_exit(), 0);
}

#[test]
fn the_original_apps_peer_chats_with_listen_without_newlines() {
    let (mut l, addr) = listener(&[]);
    let mut app = Nc::connect(port_in(&addr));
    app.send("hello, no newline");
    l.expect_out_line("peer: hello, no newline");
    app.send("a second message");
    l.expect_out_line("peer: a second message");
    l.send("hi app");
    app.expect("reply", |x| x == "hi app");
    app.send("exit");
    l.expect_out("peer exit", |x| x.starts_with("* peer said exit"));
    l.send("exit");
    app.expect("our exit", |x| x == "exit");
    assert_eq!(l.wait_exit(), 0);
}

#[test]
fn a_plain_text_peer_chats_with_p2pchat_listen() {
    let (mut l, addr) = listener(&[]);
    let mut nc = Nc::connect(port_in(&addr));
    nc.send("hi from a plain socket\n");
    l.expect_out("plain text", |x| {
        x.starts_with("* connected to a plain-text peer")
    });
    l.expect_out_line("peer: hi from a plain socket");
    l.send("hi back");
    nc.expect("reply", |x| x == "hi back");
    nc.send("exit\n");
    l.expect_out("peer exit", |x| x.starts_with("* peer said exit"));
    l.send("exit");
    nc.expect("our exit", |x| x == "exit");
    assert_eq!(l.wait_exit(), 0);
}

#[test]
fn connect_text_talks_to_a_plain_listener_like_nc_l() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut c = Proc::start(&[
        "connect",
        "--text",
        "--no-history",
        &format!("127.0.0.1:{port}"),
    ]);
    let (stream, _) = listener.accept().unwrap();
    let mut nc = Nc::over(stream);
    c.send("hello nc -l");
    nc.expect("line from p2pchat", |x| x == "hello nc -l");
    nc.send("hello p2pchat\n");
    c.expect_out_line("peer: hello p2pchat");
    // nc quitting ends the conversation cleanly.
    nc.stream.shutdown(std::net::Shutdown::Both).unwrap();
    c.expect_out("peer closed", |x| x.contains("closed the connection"));
    assert_eq!(c.wait_exit(), 0);
}

#[test]
fn join_log_keeps_a_transcript_of_what_the_client_saw() {
    let (_srv, port) = server(&[]);
    let dir = fresh_data_dir();
    let log = dir.join("ann.transcript");
    let addr = format!("127.0.0.1:{port}");
    let mut a = Proc::start(&[
        "join",
        &addr,
        "--name",
        "ann",
        "--log",
        log.to_str().unwrap(),
    ]);
    a.expect_out("welcome", |l| l.starts_with("* you are client 0"));
    let mut b = join(port, "bob", 1);
    b.send("0 for the record");
    a.expect_out_line("1 for the record");
    // Each line is written to the transcript before it is shown, so it is there now.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().any(|l| l.ends_with(" 1 for the record")),
        "{text}"
    );
    assert!(
        text.lines()
            .all(|l| l.len() > 21 && l.as_bytes()[4] == b'-'),
        "{text}"
    );
}
