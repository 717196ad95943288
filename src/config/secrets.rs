//! Reading a secret from a file: the bot token, the price API key, the webhook secret and the database
//! URL all go through [`read_secret_file`], so they are all refused and reported the same way (G7).
//!
//! What it guarantees:
//! - a file the operator named ([`SecretPath::File`]) that other users can read, write or execute
//!   (any of the mode bits `0o007`) is refused before it is read, with the `chmod 600` to run; a systemd
//!   credential ([`SecretPath::Credential`], `$CREDENTIALS_DIRECTORY/<name>`) is not checked: systemd
//!   made it for this service alone;
//! - a missing, unreadable or not-UTF-8 file, one larger than 64 KiB (read no further: `/dev/zero`
//!   named by mistake), and one holding only blanks, is refused;
//! - every refusal is one line naming the file (never its content) and what to do, with exit code 78;
//! - what is returned has its surrounding whitespace (the trailing newline) trimmed and is not empty.
//!
//! The caller still checks the shape of what it reads (a token, a URL, ...); such errors must not
//! echo the text either.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::exit::{Failure, Result};

/// The most a secret file may hold (a token is ~46 bytes, a database URL rarely 1 KiB).
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Where a secret file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretPath {
    /// `$CREDENTIALS_DIRECTORY/<name>` (systemd `LoadCredential=`): its mode is systemd's business.
    Credential(PathBuf),
    /// A file the operator named (or the documented default): refused when other users can read it.
    File(PathBuf),
}

impl SecretPath {
    pub fn path(&self) -> &Path {
        match self {
            Self::Credential(p) | Self::File(p) => p,
        }
    }
}

/// The systemd credential `name` if `$CREDENTIALS_DIRECTORY` has it, else the configured `file`.
pub fn credential_or_file(
    credentials_dir: Option<&str>,
    name: &str,
    file: Option<&Path>,
) -> Option<SecretPath> {
    credentials_dir
        .map(|d| Path::new(d).join(name))
        .filter(|p| p.exists())
        .map(SecretPath::Credential)
        .or_else(|| file.map(|p| SecretPath::File(p.to_owned())))
}

/// What a secret file holds, for its error messages.
#[derive(Clone, Copy, Debug)]
pub struct SecretKind {
    /// The file as messages name it: "token file", "webhook secret file".
    pub name: &'static str,
    /// What to do when the file cannot be read: "check webhook_secret_file".
    pub fix_unreadable: &'static str,
    /// What to write into an empty file.
    pub fix_empty: &'static str,
}

/// Reads the secret at `at`: trimmed, not empty, refused when other users can read a configured file.
/// Every error is one line with exit code 78 (see the module comment).
pub fn read_secret_file(at: &SecretPath, what: &SecretKind) -> Result<String> {
    let path = at.path();
    let unreadable = |e: std::io::Error| {
        Failure::config(format!(
            "cannot read the {} {}: {e}; {}",
            what.name,
            path.display(),
            what.fix_unreadable
        ))
    };
    let meta = std::fs::metadata(path).map_err(unreadable)?;
    let mode = meta.permissions().mode();
    if matches!(at, SecretPath::File(_)) && mode & 0o007 != 0 {
        return Err(Failure::config(format!(
            "{} {} is accessible by other users (mode {:o}); run: chmod 600 {}",
            what.name,
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    // Bounded: a secret is one short line; `/dev/zero` or a log file named by mistake must not hang
    // the start or fill the memory.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_BYTES + 1).read_to_end(&mut bytes))
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(Failure::config(format!(
            "{} {} is larger than {} KiB: not a secret; {}",
            what.name,
            path.display(),
            MAX_SECRET_BYTES / 1024,
            what.fix_unreadable
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        Failure::config(format!(
            "{} {} is not UTF-8 text; {}",
            what.name,
            path.display(),
            what.fix_empty
        ))
    })?;
    let text = text.trim();
    if text.is_empty() {
        return Err(Failure::config(format!(
            "{} {} is empty; {}",
            what.name,
            path.display(),
            what.fix_empty
        )));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Code;

    const KIND: SecretKind = SecretKind {
        name: "test secret file",
        fix_unreadable: "check test_secret_file",
        fix_empty: "write the secret in it",
    };

    fn secret_file(dir: &Path, text: &[u8], mode: u32) -> PathBuf {
        let file = dir.join("secret");
        std::fs::write(&file, text).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    fn one_config_line(err: &Failure) {
        assert_eq!(err.code, Code::Config, "{}", err.message);
        assert_eq!(err.message.lines().count(), 1, "{}", err.message);
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o604, 0o666, 0o601] {
            let file = secret_file(dir.path(), b"s3cret\n", mode);
            let err = read_secret_file(&SecretPath::File(file.clone()), &KIND).unwrap_err();
            one_config_line(&err);
            assert!(
                err.message
                    .contains(&format!("chmod 600 {}", file.display())),
                "{}",
                err.message
            );
            assert!(
                err.message.contains(&format!("mode {mode:o}")),
                "{}",
                err.message
            );
            assert!(!err.message.contains("s3cret"), "{}", err.message);
        }
    }

    #[test]
    fn a_mode_600_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400, 0o640] {
            let file = secret_file(dir.path(), b"  s3cret \n\n", mode);
            let text = read_secret_file(&SecretPath::File(file), &KIND).unwrap();
            assert_eq!(text, "s3cret", "mode {mode:o}");
        }
    }

    #[test]
    fn a_credential_is_read_whatever_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let file = secret_file(dir.path(), b"s3cret\n", 0o644);
        let text = read_secret_file(&SecretPath::Credential(file), &KIND).unwrap();
        assert_eq!(text, "s3cret");
    }

    #[test]
    fn an_empty_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["", "\n", " \t \n\n"] {
            let file = secret_file(dir.path(), text.as_bytes(), 0o600);
            let err = read_secret_file(&SecretPath::File(file.clone()), &KIND).unwrap_err();
            one_config_line(&err);
            assert_eq!(
                err.message,
                format!(
                    "test secret file {} is empty; write the secret in it",
                    file.display()
                )
            );
        }
    }

    #[test]
    fn a_missing_file_is_refused_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-secret");
        for at in [
            SecretPath::File(missing.clone()),
            SecretPath::Credential(missing.clone()),
        ] {
            let err = read_secret_file(&at, &KIND).unwrap_err();
            one_config_line(&err);
            let start = format!("cannot read the test secret file {}: ", missing.display());
            assert!(err.message.starts_with(&start), "{}", err.message);
            assert!(
                err.message.ends_with("; check test_secret_file"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn a_file_that_is_not_utf8_or_not_a_file_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = secret_file(dir.path(), b"s3cret\xff\xfe\n", 0o600);
        let err = read_secret_file(&SecretPath::File(file.clone()), &KIND).unwrap_err();
        one_config_line(&err);
        assert!(err.message.contains("UTF-8"), "{}", err.message);
        assert!(!err.message.contains("s3cret"), "{}", err.message);
        let sub = dir.path().join("a-directory");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = read_secret_file(&SecretPath::File(sub), &KIND).unwrap_err();
        one_config_line(&err);
    }

    #[test]
    fn an_endless_or_huge_file_is_refused_after_64_kib() {
        let err = read_secret_file(&SecretPath::Credential("/dev/zero".into()), &KIND).unwrap_err();
        one_config_line(&err);
        assert!(
            err.message.contains("larger than 64 KiB"),
            "{}",
            err.message
        );
        let dir = tempfile::tempdir().unwrap();
        let file = secret_file(dir.path(), &vec![b'a'; 64 * 1024 + 1], 0o600);
        let err = read_secret_file(&SecretPath::File(file), &KIND).unwrap_err();
        assert!(
            err.message.contains("larger than 64 KiB"),
            "{}",
            err.message
        );
        let file = secret_file(dir.path(), &vec![b'a'; 64 * 1024], 0o600);
        assert_eq!(
            read_secret_file(&SecretPath::File(file), &KIND)
                .unwrap()
                .len(),
            64 * 1024
        );
    }

    #[test]
    fn the_credential_wins_over_the_file_when_it_exists() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        let file = dir.path().join("configured");
        let creds_str = creds.to_str().unwrap();
        assert_eq!(
            credential_or_file(Some(creds_str), "thing", Some(&file)),
            Some(SecretPath::File(file.clone()))
        );
        assert_eq!(credential_or_file(Some(creds_str), "thing", None), None);
        assert_eq!(credential_or_file(None, "thing", None), None);
        std::fs::write(creds.join("thing"), "x").unwrap();
        assert_eq!(
            credential_or_file(Some(creds_str), "thing", Some(&file)),
            Some(SecretPath::Credential(creds.join("thing")))
        );
        assert_eq!(
            credential_or_file(None, "thing", Some(&file)),
            Some(SecretPath::File(file))
        );
    }
}
