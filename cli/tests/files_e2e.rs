//! End-to-end file transfer: the real binary over 127.0.0.1, real files, both
//! topologies; a killed sender resumes; hostile names and existing files are safe.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::{Proc, WAIT, fresh_data_dir, join, listener, port_in, server};

const MIB: usize = 1024 * 1024;

/// A file of pseudo-random bytes (xorshift, so no two chunks are alike).
/// Removes a test's folder (its files are up to hundreds of MiB) when the test passes;
/// one that fails keeps it, to be looked at.
struct RemovedOnSuccess(PathBuf);

impl Drop for RemovedOnSuccess {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn random_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let mut state = 0x2545_F491_4F6C_DD1Du64 ^ len as u64;
    let mut bytes = Vec::with_capacity(len);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    path
}

fn hash(path: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
}

/// A listener started with `extra` and a connector connected to it, both talking.
fn connected_pair(extra: &[&str]) -> (Proc, Proc) {
    let (l, addr) = listener(extra);
    let mut c = Proc::start(&["connect", &addr, "--no-history"]);
    c.expect_out_line("* connected");
    (l, c)
}

#[test]
fn a_100_mib_file_arrives_intact_in_direct_chat_while_chat_goes_on() {
    let dir = fresh_data_dir();
    let _cleanup = RemovedOnSuccess(dir.clone());
    let downloads = dir.join("downloads");
    let file = random_file(&dir, "big.bin", 100 * MIB);
    let dl = downloads.to_str().unwrap();
    let (mut l, mut c) = connected_pair(&["--auto-accept", "--download-dir", dl]);
    c.send(&format!("/send {}", file.display()));
    c.expect_out("sending", |x| x.contains("accepted big.bin; sending"));
    c.send("a chat line during the transfer");
    l.expect_out_line("peer: a chat line during the transfer");
    l.expect_out("received", |x| {
        x.starts_with("* received big.bin (100.0 MiB, BLAKE3 verified)")
    });
    c.expect_out("delivered", |x| x.starts_with("* big.bin delivered"));
    assert_eq!(hash(&downloads.join("big.bin")), hash(&file));
    assert!(!downloads.join("big.bin.part").exists());
    c.close_stdin();
    l.close_stdin();
    assert_eq!(c.wait_exit(), 0);
    assert_eq!(l.wait_exit(), 0);
}

#[test]
fn a_100_mib_file_arrives_intact_through_the_relay_while_chat_goes_on() {
    let dir = fresh_data_dir();
    let _cleanup = RemovedOnSuccess(dir.clone());
    let downloads = dir.join("downloads");
    let file = random_file(&dir, "relayed.bin", 100 * MIB);
    let (_srv, port) = server(&[]);
    let mut a = join(port, "a", 0);
    let addr = format!("127.0.0.1:{port}");
    let mut b = Proc::start(&[
        "join",
        &addr,
        "--auto-accept",
        "--download-dir",
        downloads.to_str().unwrap(),
    ]);
    b.expect_out("welcome", |x| x.starts_with("* you are client 1"));
    a.send(&format!("/send 1 {}", file.display()));
    a.expect_out("sending", |x| x.contains("accepted relayed.bin; sending"));
    a.send("1 chat while the file moves");
    b.expect_out_line("0 chat while the file moves");
    b.expect_out("received", |x| {
        x.starts_with("* received relayed.bin (100.0 MiB, BLAKE3 verified)")
    });
    a.expect_out("delivered", |x| {
        x.starts_with("* relayed.bin delivered to client 1")
    });
    assert_eq!(hash(&downloads.join("relayed.bin")), hash(&file));
}

#[test]
fn a_transfer_cut_by_killing_the_sender_resumes_on_retry() {
    let dir = fresh_data_dir();
    let _cleanup = RemovedOnSuccess(dir.clone());
    let downloads = dir.join("downloads");
    let file = random_file(&dir, "resume.bin", 100 * MIB);
    let dl = downloads.to_str().unwrap().to_owned();
    let part = downloads.join("resume.bin.part");

    // The conversation waits 1 s for a killed sender to come back (it does not: its
    // session died with it).
    let (mut l, addr) = listener(&[
        "--auto-accept",
        "--download-dir",
        &dl,
        "--resume-grace",
        "1",
    ]);
    let mut c = Proc::start(&["connect", &addr, "--no-history"]);
    c.send(&format!("/send {}", file.display()));
    // Kill -9 the sender once some, not all, of the file has arrived.
    wait_for_part(&part, 4 * MIB as u64);
    c.kill();
    let stopped = l.expect_err("interrupted", |x| x.contains("receiving resume.bin"));
    assert!(stopped.contains("is kept"), "{stopped}");
    assert_eq!(l.wait_exit(), 1, "the peer vanished");
    let held = std::fs::metadata(&part).unwrap().len();
    assert!(
        held > 0 && held < 100 * MIB as u64,
        "a partial file is kept: {held}"
    );

    // Try again: only the rest travels.
    let (mut l, addr) = listener(&["--auto-accept", "--download-dir", &dl]);
    let mut c = Proc::start(&["connect", &addr, "--no-history"]);
    c.send(&format!("/send {}", file.display()));
    l.expect_out("resuming", |x| x.starts_with("* resuming resume.bin:"));
    c.expect_out("resume at sender", |x| {
        x.contains("accepted resume.bin; resuming at")
    });
    l.expect_out("received", |x| {
        x.starts_with("* received resume.bin (100.0 MiB, BLAKE3 verified)")
    });
    assert_eq!(hash(&downloads.join("resume.bin")), hash(&file));
    assert!(!part.exists());
}

#[test]
fn a_hostile_name_is_sanitised_and_an_existing_file_is_not_overwritten() {
    let dir = fresh_data_dir();
    let _cleanup = RemovedOnSuccess(dir.clone());
    let downloads = dir.join("inside").join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    std::fs::write(downloads.join("evil.txt"), b"already here").unwrap();
    let (mut l, addr) = listener(&[
        "--auto-accept",
        "--download-dir",
        downloads.to_str().unwrap(),
    ]);
    // A hand-driven peer (the library, as another frontend would use it) offers a
    // file under a path-traversal name.
    let content = b"not what you think".to_vec();
    let hash = *blake3::hash(&content).as_bytes();
    smol::block_on(async {
        use p2pchat_core::{FileEvent, Identity, Limits, PeerEvent, PeerSide, Security};
        use p2pchat_tcp::{FileCommand, PeerCommand, SessionEvent};
        let stream = p2pchat_tcp::connect(&addr, 0, "listener").await.unwrap();
        let security = Security::encrypted(Identity::from_secret([66; 32]), [67; 32]);
        let s = p2pchat_tcp::start_peer(
            stream,
            PeerSide::Connector,
            "mallory",
            Limits::default(),
            security,
        )
        .unwrap();
        let offer = FileCommand::Offer {
            to: None,
            name: "../../evil.txt".into(),
            size: content.len() as u64,
        };
        s.commands.send(PeerCommand::File(offer)).await.unwrap();
        while let Ok(event) = s.events.recv().await {
            let SessionEvent::Core(PeerEvent::File(e)) = event else {
                continue;
            };
            let reply = match e {
                FileEvent::Accepted { transfer, .. } => FileCommand::Start {
                    transfer,
                    offset: 0,
                },
                FileEvent::ReadChunk {
                    transfer,
                    offset,
                    len,
                } => {
                    let data = content[offset as usize..offset as usize + len].to_vec();
                    let last = offset as usize + len == content.len();
                    let data = FileCommand::Data {
                        transfer,
                        offset,
                        data,
                    };
                    s.commands.send(PeerCommand::File(data)).await.unwrap();
                    if !last {
                        continue;
                    }
                    // The hash goes after the last chunk, as `Done` carries it.
                    FileCommand::Hashed { transfer, hash }
                }
                FileEvent::Delivered { .. } => break,
                FileEvent::Failed { reason, .. } => panic!("transfer failed: {reason}"),
                _ => continue,
            };
            s.commands.send(PeerCommand::File(reply)).await.unwrap();
        }
        s.commands.send(PeerCommand::Leave).await.unwrap();
    });
    l.expect_out("received", |x| x.starts_with("* received evil.txt"));
    assert_eq!(
        std::fs::read(downloads.join("evil.txt")).unwrap(),
        b"already here"
    );
    assert_eq!(
        std::fs::read(downloads.join("evil (1).txt")).unwrap(),
        content
    );
    assert!(!dir.join("evil.txt").exists() && !dir.join("inside").join("evil.txt").exists());
}

/// Waits until `part` holds at least `at_least` bytes (nothing announces "part of a
/// file is on disk", so its size is watched, briefly and with a deadline).
fn wait_for_part(part: &Path, at_least: u64) {
    let deadline = Instant::now() + WAIT;
    while std::fs::metadata(part).map(|m| m.len()).unwrap_or(0) < at_least {
        assert!(Instant::now() < deadline, "the transfer never got that far");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_file_goes_on_across_a_cut_connection_in_both_topologies() {
    let dir = fresh_data_dir();
    let _cleanup = RemovedOnSuccess(dir.clone());
    let file = random_file(&dir, "cut.bin", 40 * MIB);

    // Direct: the connector sends through a proxy that cuts the connection.
    let downloads = dir.join("direct");
    let (mut l, addr) = listener(&[
        "--auto-accept",
        "--download-dir",
        downloads.to_str().unwrap(),
    ]);
    let proxy = support::CuttableProxy::start(port_in(&addr));
    let mut c = Proc::start(&[
        "connect",
        &format!("127.0.0.1:{}", proxy.port),
        "--no-history",
    ]);
    c.expect_out_line("* connected");
    c.send(&format!("/send {}", file.display()));
    wait_for_part(&downloads.join("cut.bin.part"), 4 * MIB as u64);
    proxy.cut();
    c.expect_out("back", |x| x.starts_with("* back:"));
    l.expect_out("received", |x| {
        x.starts_with("* received cut.bin (40.0 MiB, BLAKE3 verified)")
    });
    c.expect_out("delivered", |x| x.starts_with("* cut.bin delivered"));
    assert_eq!(hash(&downloads.join("cut.bin")), hash(&file));

    // Relay: the sender's connection to the relay is cut mid-file.
    let downloads = dir.join("relayed");
    let (_srv, port) = server(&[]);
    let proxy = support::CuttableProxy::start(port);
    let mut a = join(proxy.port, "a", 0);
    let mut b = Proc::start(&[
        "join",
        &format!("127.0.0.1:{port}"),
        "--auto-accept",
        "--download-dir",
        downloads.to_str().unwrap(),
    ]);
    b.expect_out("welcome", |x| x.starts_with("* you are client 1"));
    a.send(&format!("/send 1 {}", file.display()));
    wait_for_part(&downloads.join("cut.bin.part"), 4 * MIB as u64);
    proxy.cut();
    a.expect_out("back", |x| x.starts_with("* back: you are still client 0"));
    b.expect_out("received", |x| {
        x.starts_with("* received cut.bin (40.0 MiB, BLAKE3 verified)")
    });
    a.expect_out("delivered", |x| {
        x.starts_with("* cut.bin delivered to client 1")
    });
    assert_eq!(hash(&downloads.join("cut.bin")), hash(&file));
}

#[test]
fn a_file_changed_while_it_is_sent_is_not_passed_off_as_intact() {
    // The sender hashes as it reads, so a file that changes under way would be
    // "verified" as a mix of two versions: the sender notices and cancels instead.
    let dir = fresh_data_dir();
    let _cleanup = RemovedOnSuccess(dir.clone());
    let downloads = dir.join("downloads");
    let file = random_file(&dir, "draft.bin", 2 * MIB);
    let dl = downloads.to_str().unwrap();
    let (mut l, mut c) = connected_pair(&["--download-dir", dl]);
    c.send(&format!("/send {}", file.display()));
    l.expect_out("offer", |x| x.contains("offers draft.bin"));
    // Changed after the offer, before a byte was read: same size, new contents.
    let mut newer = std::fs::read(&file).unwrap();
    newer[0] ^= 0xff;
    newer[MIB] ^= 0xff;
    std::fs::write(&file, &newer).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60))
        .unwrap();
    l.send("/accept");
    let err = c.expect_err("changed", |x| x.contains("changed while it was being sent"));
    assert!(err.contains("send it again"), "{err}");
    l.expect_err("stopped", |x| x.contains("changed while it was being sent"));
    assert!(
        !downloads.join("draft.bin").exists(),
        "nothing passed off as received"
    );
    // Sent again, it arrives whole (the kept partial file is not the start of it,
    // so it is fetched from the beginning, or resumed where it is).
    c.send(&format!("/send {}", file.display()));
    l.expect_out("offer", |x| x.contains("offers draft.bin"));
    l.send("/accept");
    l.expect_out("received", |x| x.starts_with("* received draft.bin"));
    assert_eq!(hash(&downloads.join("draft.bin")), blake3::hash(&newer));
}

#[test]
fn an_empty_file_arrives_too() {
    // Nothing to read: its hash (of no bytes) goes with the start.
    let dir = fresh_data_dir();
    let _cleanup = RemovedOnSuccess(dir.clone());
    let downloads = dir.join("downloads");
    let file = random_file(&dir, "empty.txt", 0);
    let dl = downloads.to_str().unwrap();
    let (mut l, mut c) = connected_pair(&["--auto-accept", "--download-dir", dl]);
    c.send(&format!("/send {}", file.display()));
    l.expect_out("received", |x| x.starts_with("* received empty.txt (0 B"));
    c.expect_out("delivered", |x| x.starts_with("* empty.txt delivered"));
    assert_eq!(std::fs::read(downloads.join("empty.txt")).unwrap(), b"");
}
