//! The CLI's create with a changed passphrase file: refused (exit 2, naming
//! `--new-passphrase`) until `--new-passphrase` says the change is intended.

use crate::support::cli_fixture;

use std::fs;

use cli_fixture::{Fixture, expect, stderr, stdout};

#[test]
fn create_with_a_changed_passphrase_needs_new_passphrase() {
    let f = Fixture::new();
    let first = f.create();
    fs::write(&f.passphrase_file, "typo horse battery staple\n").unwrap();
    let out = expect(2, &mut f.cmd(), &["create"]);
    let text = stderr(&out);
    assert!(text.contains(&first), "names the backup: {text}");
    assert!(text.contains("--new-passphrase"), "{text}");
    f.assert_no_secrets(&out);
    assert!(!text.contains("typo horse"), "{text}");
    let listed = stdout(&f.ok(&["list"]));
    assert_eq!(
        listed.matches("backup-").count(),
        1,
        "nothing uploaded:\n{listed}"
    );

    let second = stdout(&f.ok(&["create", "--new-passphrase"]))
        .trim()
        .to_string();
    assert_ne!(second, first);
    // Later creates check against the new passphrase.
    f.ok(&["create"]);
}
