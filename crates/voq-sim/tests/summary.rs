//! The summary table of every pinned scenario, checked against `tests/summary.txt` (smoltcp's
//! netsim style): any change in what a run does shows up as a diff of that file in review.
//! After a deliberate change, regenerate it with `VOQ_BLESS=1 cargo test -p voq-sim --test
//! summary` and commit the new table with the change that explains it.

use voq_sim::{run, table};

mod scenarios;

#[test]
fn the_summary_table_is_the_pinned_one() {
    let runs: Vec<_> = scenarios::all().into_iter().map(run).collect();
    let text = table(&runs);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/summary.txt");
    if std::env::var_os("VOQ_BLESS").is_some() {
        std::fs::write(path, &text).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        return;
    }
    let pinned = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        pinned == text,
        "the simulation changed; if that is intended, run VOQ_BLESS=1 cargo test -p voq-sim --test summary\n\
         --- pinned\n{pinned}\n--- now\n{text}"
    );
}

#[test]
fn the_same_seeds_give_the_same_runs() {
    let first: Vec<_> = scenarios::all().into_iter().map(run).collect();
    let second: Vec<_> = scenarios::all().into_iter().map(run).collect();
    assert_eq!(first, second);
}
