//! `p2pchat id`, and the client library's keys (`p2pchat_client::keys`: identity,
//! known peers, a session's security) under the name the command's modules use.

pub use p2pchat_client::keys::*;

/// `p2pchat id`: prints this installation's key fingerprint; returns the exit status.
pub fn show_id() -> i32 {
    match identity().and_then(|id| Ok((id, identity_path()?))) {
        Ok((id, path)) => {
            println!("{}", id.public().fingerprint());
            eprintln!(
                "p2pchat: this is your key's fingerprint (the key is in {}); others compare it, or pin it with --expect",
                path.display()
            );
            0
        }
        Err(e) => {
            eprintln!("p2pchat: {e}");
            1
        }
    }
}
