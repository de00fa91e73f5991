//! `sutra-storage --help` describes what the server does today: no promises of later work.

use clap::CommandFactory;
use sutra_server::Cli;
use sutra_tests::stale_help;

#[test]
fn storage_help_speaks_of_no_future_work() {
    let help = Cli::command().render_long_help().to_string();
    assert!(help.contains("STORAGE_PORT"), "{help}");
    let stale = stale_help(&help);
    assert!(stale.is_empty(), "stale --help lines: {stale:#?}");
}

#[test]
fn the_check_catches_what_it_is_for() {
    let stale = stale_help(
        "ok line\n  the port: there is no authentication yet.\n(Eviction arrives with the cache-shard issue.)\nat most 1 s later",
    );
    assert_eq!(stale.len(), 2, "{stale:?}");
}
