//! # p2pchat-client
//!
//! What every p2pchat frontend shares above the protocol core. The command line is
//! one frontend; a second one (the local web app) must not copy the first.
//!
//! - [`events`]: the event vocabulary a frontend shows or forwards, as serde types.
//!   `p2pchat join --json` prints one per line; the same types go to a web page as
//!   JSON. Adding an event is adding a variant here, nowhere else.

pub mod events;

pub use events::{DirectEvent, HistoryLine, Recipient, RelayEvent, RosterClient};
