//! The journal catalog: each event an operator must act on carries one of these ids as its
//! `MESSAGE_ID` field, and the package ships `/usr/lib/systemd/catalog/cryptobot.catalog`
//! (packaging/cryptobot.catalog), so that `journalctl -x` (e.g. `journalctl -xu cryptobot`) shows what
//! happened and what to do under the line. The ids never change: they are how log rules and
//! `journalctl MESSAGE_ID=...` find an event across versions. A test checks that the file has exactly
//! one entry for each id here.

/// A second instance was refused: another process holds the bot's instance lock (exit 75).
pub const SECOND_INSTANCE: &str = "0180f4526c5544209e0a283c81f549d2";
/// Telegram answered 409: another poller of this token runs elsewhere.
pub const EXTERNAL_POLLER: &str = "575996ef5bd447a099d134756fd349f7";
/// A webhook is set for the bot, so polling is refused (exit 78).
pub const WEBHOOK_ACTIVE: &str = "c88aee0a254d44fdba0cd3249759a707";
/// The PostgreSQL lease was lost: polling stopped (exit 3, back as a standby).
pub const LEASE_LOST: &str = "821b74dddfc2449a8fea94e0cd951b0c";
/// The lease was released or handed over on request (`cryptobot lease release|takeover`).
pub const LEASE_HANDED_OVER: &str = "29197ff23b1f4b628570ae000c8a039d";
/// The update loop or its handlers made no progress: WATCHDOG=1 withheld, systemd will restart.
pub const WATCHDOG_WITHHELD: &str = "2d7a8c15996f40d3a9a476ed73ac2ae9";
/// A message waited in the outbox past its expiry and was dropped unsent.
pub const MESSAGE_EXPIRED: &str = "cd9e85ca02274d9c96dcf417f3c1c910";

/// Every id, for the test of the catalog file.
pub const ALL: &[&str] = &[
    SECOND_INSTANCE,
    EXTERNAL_POLLER,
    WEBHOOK_ACTIVE,
    LEASE_LOST,
    LEASE_HANDED_OVER,
    WATCHDOG_WITHHELD,
    MESSAGE_EXPIRED,
];

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOG: &str = include_str!("../../packaging/cryptobot.catalog");

    /// The catalog file as journalctl reads it: `-- <id>` opens an entry, header lines up to the
    /// first empty line, then the text.
    fn entries() -> Vec<(String, Vec<String>, String)> {
        let mut entries = Vec::new();
        for block in CATALOG.split("\n-- ").skip(1) {
            let (id, rest) = block.split_once('\n').expect("an id line");
            let (head, body) = rest
                .split_once("\n\n")
                .expect("headers, an empty line, the text");
            entries.push((
                id.trim().to_owned(),
                head.lines().map(str::to_owned).collect(),
                body.trim().to_owned(),
            ));
        }
        entries
    }

    #[test]
    fn the_catalog_file_explains_every_id_once() {
        let entries = entries();
        let mut ids: Vec<&str> = entries.iter().map(|(id, ..)| id.as_str()).collect();
        ids.sort_unstable();
        let mut expected = ALL.to_vec();
        expected.sort_unstable();
        assert_eq!(
            ids, expected,
            "the catalog's ids and systemd::catalog::ALL differ"
        );
        for (id, head, body) in &entries {
            assert!(
                id.len() == 32
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id} is not a 128-bit id in lowercase hex"
            );
            for field in ["Subject: ", "Defined-By: cryptobot", "Support: "] {
                assert!(
                    head.iter().any(|l| l.starts_with(field)),
                    "{id}: no {field:?} line"
                );
            }
            assert!(body.len() > 80, "{id}: the text says too little to act on");
        }
    }
}
