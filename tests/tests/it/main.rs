//! Cross-crate integration tests, in one binary (one link step): each module starts real
//! servers on 127.0.0.1 with ephemeral ports and temporary data directories.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::similar_names,
    clippy::assigning_clones,
    clippy::cast_precision_loss,
    clippy::format_push_string,
    reason = "tests fail loudly, and their helpers are tests too"
)]

mod auth;
mod batch;
mod cache_shard;
mod client_ops;
mod durability;
mod events;
mod help;
mod http;
mod layout;
mod learn;
mod limits;
mod raw_protocol;
mod search;
mod shutdown;
mod text_mode;
