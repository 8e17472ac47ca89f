//! BLAKE3 of files: the prefixes that resuming compares, and a whole file as fast as
//! the machine allows (`p2pchat bench --hash-file`: the hashing speed the file
//! figures are compared with; a file being sent is hashed chunk by chunk as it is
//! read, in `super`).
//!
//! A whole file is hashed on every core, with the reading of the next piece
//! overlapped with the hashing of the current one. Memory stays at a few pieces
//! whatever the file's size (hashing a memory map would be as fast, but its pages
//! would count as resident, a gigabyte for a gigabyte).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::mpsc;

use p2pchat_core::Hash;

/// Bytes read and hashed at a time when hashing a whole file.
const PIECE: usize = 4 * 1024 * 1024;

/// Pieces in flight between the reading thread and the hashing one.
const PIECES: usize = 3;

/// Bytes read at a time when hashing a prefix.
const PREFIX_BUF: usize = 256 * 1024;

/// The BLAKE3 hash of the file at `path`.
pub fn hash_whole_file(path: &Path) -> std::io::Result<Hash> {
    let mut file = File::open(path)?;
    let (full_tx, full_rx) = mpsc::sync_channel::<std::io::Result<Vec<u8>>>(PIECES);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    for _ in 0..PIECES {
        let _ = empty_tx.send(Vec::with_capacity(PIECE));
    }
    let reader = std::thread::Builder::new()
        .name("p2pchat-read".into())
        .spawn(move || {
            while let Ok(mut piece) = empty_rx.recv() {
                let read = fill(&mut file, &mut piece);
                let last = !matches!(read, Ok(n) if n == PIECE);
                if full_tx.send(read.map(|_| piece)).is_err() || last {
                    return;
                }
            }
        })?;
    let mut hasher = blake3::Hasher::new();
    let mut result = Ok(());
    while let Ok(piece) = full_rx.recv() {
        match piece {
            Ok(piece) => {
                // BLAKE3 is a tree: the chunks of a piece hash in parallel.
                hasher.update_rayon(&piece);
                let _ = empty_tx.send(piece);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    drop(empty_tx);
    let _ = reader.join();
    result.map(|()| *hasher.finalize().as_bytes())
}

/// Reads up to [`PIECE`] bytes into `piece`; returns how many.
fn fill(file: &mut File, piece: &mut Vec<u8>) -> std::io::Result<usize> {
    // Zeroed once, on first use: a full piece comes back full.
    piece.resize(PIECE, 0);
    let mut filled = 0;
    while filled < PIECE {
        match file.read(&mut piece[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    piece.truncate(filled);
    Ok(filled)
}

/// Adds the first `len` bytes of `file` to `hasher`.
pub(super) fn hash_into(
    file: &mut File,
    len: u64,
    hasher: &mut blake3::Hasher,
) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut left = len;
    let mut buf = vec![0u8; PREFIX_BUF];
    while left > 0 {
        let n = (left as usize).min(PREFIX_BUF);
        file.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// Whether the first `len` bytes of `file` hash to `expected` (a receiver's partial
/// file is the start of ours); `hasher` (new) is left holding them, to go on with.
pub(super) fn prefix_matches(
    file: &mut File,
    len: u64,
    expected: &Hash,
    hasher: &mut blake3::Hasher,
) -> bool {
    hash_into(file, len, hasher).is_ok() && hasher.finalize().as_bytes() == expected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_file_hash_is_plain_blake3_at_every_size() {
        let dir = std::env::temp_dir().join(format!("p2pchat-hash-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for len in [0, 1, PIECE - 1, PIECE, PIECE + 1, 2 * PIECE + 12_345] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.join(format!("f{len}"));
            std::fs::write(&path, &data).unwrap();
            let expected = *blake3::hash(&data).as_bytes();
            assert_eq!(hash_whole_file(&path).unwrap(), expected, "{len} bytes");
            let mut file = File::open(&path).unwrap();
            let half = len as u64 / 2;
            let prefix = *blake3::hash(&data[..half as usize]).as_bytes();
            let mut hasher = blake3::Hasher::new();
            assert!(prefix_matches(&mut file, half, &prefix, &mut hasher));
            // The hasher goes on from there to the whole file's hash.
            hasher.update(&data[half as usize..]);
            assert_eq!(*hasher.finalize().as_bytes(), expected);
            assert!(!prefix_matches(
                &mut file,
                half,
                &[0; 32],
                &mut blake3::Hasher::new()
            ));
        }
        assert!(hash_whole_file(&dir.join("missing")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
