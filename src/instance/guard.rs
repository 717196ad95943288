//! G1: one poller per bot token on this host, by an exclusive `flock(2)` on
//! `<runtime dir>/bot-<bot id>.lock`.
//!
//! Why `flock` and nothing else: the kernel drops the lock when the holder dies however it dies (SIGKILL,
//! OOM), so a stale lock cannot exist and nobody has to guess whether a PID in a file is still alive. The
//! file is never unlinked: unlinking a lock file lets a newcomer lock a fresh inode while the old holder
//! still holds the old one, and then two instances run. Diagnostics are written into the file only after
//! the lock is held.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::holder::{self, HolderInfo};
use crate::exit::{Code, Failure, Result};

/// The held lock. Dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct InstanceGuard {
    lock: Flock<File>,
    path: PathBuf,
    runtime_dir: PathBuf,
    bot_id: u64,
}

/// Makes sure the runtime directory exists and is writable, with a message that says what to do.
pub fn prepare_runtime_dir(dir: &Path) -> Result<()> {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Err(Failure::config(format!(
            "runtime directory {}: cannot create it ({e}); create it writable for this user or set CRYPTOBOT_RUNTIME_DIR",
            dir.display()
        )));
    }
    if nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_err()
    {
        return Err(Failure::config(format!(
            "runtime directory {} is not writable by this user; fix its owner/mode or set CRYPTOBOT_RUNTIME_DIR",
            dir.display()
        )));
    }
    Ok(())
}

/// Root must not create files in a directory that belongs to another user (the service user's
/// `/run/cryptobot` or `/var/lib/cryptobot`): the lock, status and state files it would leave are
/// root's, and the service, started next as that user, could not open them (exit 78, no restart).
pub fn refuse_root_in_a_users_dir(dir: &Path, what: &str, variable: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    if meta.uid() == 0 {
        return Ok(());
    }
    let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid {}", meta.uid()), |u| u.name);
    Err(Failure::config(format!(
        "{what} {} belongs to {owner}: running as root would leave files there that {owner} cannot use; run as that user (sudo -u {owner} cryptobot run, or systemctl start cryptobot) or set {variable} to a directory of root's",
        dir.display()
    )))
}

impl InstanceGuard {
    /// Takes the lock for `bot_id`, or explains who holds it (exit 75).
    pub fn acquire(runtime_dir: &Path, bot_id: u64) -> Result<Self> {
        prepare_runtime_dir(runtime_dir)?;
        let path = super::lock_path(runtime_dir, bot_id);
        if let Err(root_refused) =
            refuse_root_in_a_users_dir(runtime_dir, "runtime directory", "CRYPTOBOT_RUNTIME_DIR")
        {
            // Root in the service user's directory: create nothing there. If the service holds the
            // lock, the usual refusal (75, naming the holder) says more; otherwise this one (78).
            if let Ok(file) = OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW)
                .open(&path)
                && let Err((file, Errno::EWOULDBLOCK)) =
                    Flock::lock(file, FlockArg::LockSharedNonblock)
            {
                return Err(refusal(file, &path, runtime_dir, bot_id));
            }
            return Err(root_refused);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false) // never lose a holder's diagnostics before we hold the lock
            .mode(0o644)
            .custom_flags(nix::libc::O_CLOEXEC | nix::libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| {
                Failure::config(format!(
                    "lock file {}: cannot open it ({e}); make the runtime directory writable for this user or set CRYPTOBOT_RUNTIME_DIR",
                    path.display()
                ))
            })?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((file, Errno::EWOULDBLOCK)) => {
                return Err(refusal(file, &path, runtime_dir, bot_id));
            }
            Err((_, errno)) => {
                return Err(Failure::software(format!(
                    "lock file {}: flock failed ({errno}); the runtime directory must be on a local file system",
                    path.display()
                )));
            }
        };
        let mut guard = Self {
            lock,
            path,
            runtime_dir: runtime_dir.to_owned(),
            bot_id,
        };
        guard.write_diagnostics()?;
        Ok(guard)
    }

    fn write_diagnostics(&mut self) -> Result<()> {
        let info = HolderInfo::current(self.bot_id);
        let mut line =
            serde_json::to_string(&info).map_err(|e| Failure::software(e.to_string()))?;
        line.push('\n');
        let file: &mut File = &mut self.lock;
        let result = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| file.write_all(line.as_bytes()))
            // Readable by `cryptobot status` run by another user; the content holds no secret.
            .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o644)));
        result.map_err(|e| {
            Failure::io(format!(
                "lock file {}: cannot write diagnostics ({e})",
                self.path.display()
            ))
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    pub fn bot_id(&self) -> u64 {
        self.bot_id
    }
}

/// The one-line message for a second instance: who holds the lock and how to stop it.
fn refusal(mut file: File, path: &Path, runtime_dir: &Path, bot_id: u64) -> Failure {
    let mut content = String::new();
    let _ = file.read_to_string(&mut content);
    let info = HolderInfo::parse(&content);
    let kernel_pids = holder::flock_holders(path);
    let message = match (info, kernel_pids.first().copied()) {
        // The content agrees with the kernel (or the kernel record is unavailable): full details.
        (Some(info), pid) if pid.is_none_or(|p| p == info.pid) => format!(
            "another cryptobot instance already polls bot {bot_id}: {}; stop it with: {}",
            info.describe(),
            info.stop_command(runtime_dir)
        ),
        // Empty, garbage or stale content: trust the kernel.
        (_, Some(pid)) => {
            let unit = holder::unit_of_pid(pid);
            let shown = unit
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default();
            format!(
                "another cryptobot instance already polls bot {bot_id}: PID {pid}{shown}; stop it with: {}",
                holder::stop_command(unit.as_deref(), runtime_dir)
            )
        }
        (_, None) => format!(
            "another process holds the lock {} for bot {bot_id} (it has not written its details yet); run: cryptobot status",
            path.display()
        ),
    };
    Failure::new(Code::TempFail, message).with_message_id(crate::systemd::catalog::SECOND_INSTANCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root running the bot by hand in the service user's /run/cryptobot left root-owned lock and
    /// status files there; the service then exited 78 and was not restarted.
    #[test]
    fn root_is_refused_in_a_directory_of_another_user() {
        if !nix::unistd::geteuid().is_root() {
            // As tests/support's `skip` does (this unit test cannot reach it): in CI a failure, else
            // a SKIPPED line, also appended to $CRYPTOBOT_SKIP_LOG for tests/run-all.sh's count.
            let line = "SKIPPED: root_is_refused_in_a_directory_of_another_user: needs root";
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                "{line}; in CI nothing may be skipped"
            );
            println!("{line}");
            if let Some(log) = std::env::var_os("CRYPTOBOT_SKIP_LOG") {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(log)
                    .expect("CRYPTOBOT_SKIP_LOG");
                f.write_all(format!("{line}\n").as_bytes()).unwrap();
            }
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        // A directory of root's is fine.
        drop(InstanceGuard::acquire(&runtime, 7).unwrap());
        std::fs::remove_file(super::super::lock_path(&runtime, 7)).unwrap();
        nix::unistd::chown(&runtime, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let err = InstanceGuard::acquire(&runtime, 7).unwrap_err();
        assert_eq!(err.code, crate::exit::Code::Config);
        assert!(err.message.contains("running as root"), "{}", err.message);
        assert!(err.message.contains("sudo -u"), "{}", err.message);
        assert!(
            std::fs::read_dir(&runtime).unwrap().next().is_none(),
            "nothing was created"
        );
        // While the service holds its lock there, root gets the usual refusal naming the holder.
        nix::unistd::chown(&runtime, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
        let held = InstanceGuard::acquire(&runtime, 7).unwrap();
        nix::unistd::chown(&runtime, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let err = InstanceGuard::acquire(&runtime, 7).unwrap_err();
        assert_eq!(err.code, crate::exit::Code::TempFail, "{}", err.message);
        drop(held);
    }

    #[test]
    fn second_guard_in_the_same_process_is_refused_then_free_after_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceGuard::acquire(dir.path(), 42).unwrap();
        let err = InstanceGuard::acquire(dir.path(), 42).unwrap_err();
        assert_eq!(err.code, Code::TempFail);
        assert!(
            err.message.contains(&format!("PID {}", std::process::id())),
            "{}",
            err.message
        );
        // A different bot on the same host is independent.
        let other = InstanceGuard::acquire(dir.path(), 43).unwrap();
        drop(first);
        drop(other);
        let again = InstanceGuard::acquire(dir.path(), 42).unwrap();
        assert!(again.path().exists());
    }

    #[test]
    fn garbage_lock_file_is_taken_over_and_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = super::super::lock_path(dir.path(), 9);
        std::fs::write(&path, b"\xff\xfe garbage").unwrap();
        let guard = InstanceGuard::acquire(dir.path(), 9).unwrap();
        let info = HolderInfo::parse(&std::fs::read_to_string(guard.path()).unwrap()).unwrap();
        assert_eq!(info.pid, std::process::id());
        assert_eq!(info.bot_id, 9);
    }

    #[test]
    fn missing_runtime_dir_is_created_and_an_unusable_one_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        InstanceGuard::acquire(&nested, 1).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = InstanceGuard::acquire(&file, 1).unwrap_err();
        assert_eq!(err.code, Code::Config);
        assert!(
            err.message.contains("CRYPTOBOT_RUNTIME_DIR"),
            "{}",
            err.message
        );
    }
}
