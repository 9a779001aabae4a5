//! Which entries of a release repo cohort reads, and the one rule that decides whether it may.
//!
//! A release repo is read from two places: the worktree (`validate`, `tracks`, `render`) and
//! git trees (every change command, `apply`, `serve`, the agent). Both readers describe each
//! entry as an [`EntryKind`] and a size and ask [`check`]; whatever it refuses, both refuse
//! with the same located error. Were they to differ (the worktree following a symbolic link
//! that the git reader skipped), a change validated against one would be written over the
//! other, and a state file's tracks would be lost.

use std::io::Read;
use std::path::{Path, PathBuf};

use cohort_yaml::Pos;

use crate::diag::{Diagnostic, Kind, Severity};

/// The largest file cohort reads from a release repo. Specs and state files are a few
/// kilobytes; anything near this is not one, and reading it would only cost memory.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// What an entry is, as the file system or a git tree describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (in git, a blob, executable or not).
    File,
    /// A directory (in git, a tree).
    Directory,
    /// A symbolic link (in git, mode 120000).
    Symlink,
    /// A git submodule (mode 160000, a gitlink).
    Submodule,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A block device.
    BlockDevice,
    /// A character device (`/dev/zero`, a terminal).
    CharDevice,
}

/// What cohort expects to find at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A regular file it reads (`cohort.yaml`, `services/*.yaml`, `releases/*.yaml`).
    File,
    /// A directory it lists (`services`, `releases`).
    Directory,
}

/// A file or directory of the release repo that cohort will not read, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not the kind of entry cohort reads there.
    #[error("{} is {}; {}", path.display(), kind.described(), expected.only())]
    WrongKind {
        /// Relative to the release repo's root.
        path: PathBuf,
        /// What it is.
        kind: EntryKind,
        /// What cohort reads there.
        expected: Expect,
    },
    /// Larger than [`MAX_FILE_BYTES`].
    #[error(
        "{} is {size} bytes; cohort reads files of at most {MAX_FILE_BYTES} bytes (1 MiB, MAX_FILE_BYTES)",
        path.display()
    )]
    TooLarge {
        /// Relative to the release repo's root.
        path: PathBuf,
        /// Its size, or the bytes read before giving up if it grew while being read.
        size: u64,
    },
    /// Its bytes are not UTF-8, so it is not YAML.
    #[error("{} is not UTF-8 text (byte {offset} is not valid UTF-8)", path.display())]
    NotUtf8 {
        /// Relative to the release repo's root.
        path: PathBuf,
        /// Where the first invalid byte is, from 0.
        offset: usize,
    },
    /// The operating system would not let it be read.
    #[error("{} cannot be read: {reason}", path.display())]
    Unreadable {
        /// Relative to the release repo's root.
        path: PathBuf,
        /// What the operating system said.
        reason: String,
    },
}

impl EntryKind {
    /// The entry kind of a file type from `symlink_metadata` or an open file's `metadata`.
    pub fn of(file_type: std::fs::FileType) -> EntryKind {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            if file_type.is_fifo() {
                return EntryKind::Fifo;
            }
            if file_type.is_socket() {
                return EntryKind::Socket;
            }
            if file_type.is_block_device() {
                return EntryKind::BlockDevice;
            }
            if file_type.is_char_device() {
                return EntryKind::CharDevice;
            }
        }
        if file_type.is_symlink() {
            EntryKind::Symlink
        } else if file_type.is_dir() {
            EntryKind::Directory
        } else if file_type.is_file() {
            EntryKind::File
        } else {
            // What no platform cohort runs on has; refused like a device.
            EntryKind::CharDevice
        }
    }

    fn described(self) -> &'static str {
        match self {
            EntryKind::File => "a regular file",
            EntryKind::Directory => "a directory",
            EntryKind::Symlink => "a symbolic link",
            EntryKind::Submodule => "a git submodule (gitlink)",
            EntryKind::Fifo => "a named pipe (FIFO)",
            EntryKind::Socket => "a socket",
            EntryKind::BlockDevice => "a block device",
            EntryKind::CharDevice => "a character device",
        }
    }
}

impl Expect {
    fn only(self) -> &'static str {
        match self {
            Expect::File => "cohort reads only regular files",
            Expect::Directory => "cohort reads its files only from a real directory",
        }
    }
}

impl Refusal {
    /// The file or directory refused, relative to the release repo's root.
    pub fn path(&self) -> &Path {
        match self {
            Refusal::WrongKind { path, .. }
            | Refusal::TooLarge { path, .. }
            | Refusal::NotUtf8 { path, .. }
            | Refusal::Unreadable { path, .. } => path,
        }
    }

    /// How to fix it.
    pub fn help(&self) -> String {
        match self {
            Refusal::WrongKind {
                kind: EntryKind::Symlink,
                expected: Expect::File,
                ..
            } => "replace it with the file itself".into(),
            Refusal::WrongKind {
                kind: EntryKind::Symlink,
                expected: Expect::Directory,
                ..
            } => "replace it with the directory itself".into(),
            Refusal::WrongKind {
                kind: EntryKind::Submodule,
                expected,
                ..
            } => format!(
                "commit the {} itself in this repository instead of a submodule (`git rm --cached PATH`, then add it)",
                match expected {
                    Expect::File => "file",
                    Expect::Directory => "directory",
                }
            ),
            Refusal::WrongKind {
                expected: Expect::File,
                ..
            } => "replace it with a regular file, or remove it".into(),
            Refusal::WrongKind {
                expected: Expect::Directory,
                ..
            } => "make it a directory holding the *.yaml files, or remove it".into(),
            Refusal::TooLarge { .. } => {
                "this is not a spec or state file; remove it, or keep it outside services/ and releases/"
                    .into()
            }
            Refusal::NotUtf8 { .. } => "save it as UTF-8 text".into(),
            Refusal::Unreadable { .. } => "make it readable by the user cohort runs as".into(),
        }
    }

    /// The error `cohort validate` shows, and the problem `cohort serve` serves.
    pub fn diagnostic(&self) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: self.path().to_owned(),
            pos: Pos { line: 1, col: 1 },
            kind: match self {
                Refusal::WrongKind { .. } => Kind::WrongFileType,
                Refusal::TooLarge { .. } => Kind::TooLarge,
                Refusal::NotUtf8 { .. } => Kind::NotUtf8,
                Refusal::Unreadable { .. } => Kind::Unreadable,
            },
            message: self.to_string(),
            help: Some(self.help()),
        }
    }
}

/// Whether cohort may read the entry at `path` (relative to the release repo's root), which
/// is `kind` and `size` bytes, where it expects `expect`. The one rule both readers follow.
pub fn check(path: &Path, expect: Expect, kind: EntryKind, size: u64) -> Result<(), Refusal> {
    let wanted = match expect {
        Expect::File => EntryKind::File,
        Expect::Directory => EntryKind::Directory,
    };
    if kind != wanted {
        return Err(Refusal::WrongKind {
            path: path.to_owned(),
            kind,
            expected: expect,
        });
    }
    if expect == Expect::File && size > MAX_FILE_BYTES {
        return Err(Refusal::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    Ok(())
}

/// Whether a name in `services/` or `releases/` is one cohort reads (`*.yaml`, `*.yml`).
/// Both readers list a directory through this, so they pick the same entries.
pub fn is_spec_file_name(name: &str) -> bool {
    matches!(
        Path::new(name).extension().and_then(|x| x.to_str()),
        Some("yaml" | "yml")
    )
}

/// The text of a file's bytes: UTF-8, or refused (never replaced with U+FFFD by one reader
/// and refused by the other).
pub fn decode(path: &Path, bytes: Vec<u8>) -> Result<String, Refusal> {
    String::from_utf8(bytes).map_err(|e| Refusal::NotUtf8 {
        path: path.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Opens `path` for reading without following a symbolic link in its last component and
/// without waiting for a writer should it be a named pipe: whatever was put there since it
/// was looked at, the open returns at once and the caller checks what it opened.
pub fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Whether the worktree holds something at `full` (relative path `rel` for errors) where
/// cohort expects `expect`, looked at without following a symbolic link; refused if it is
/// not what [`check`] accepts.
pub fn disk_entry(full: &Path, rel: &Path, expect: Expect) -> Result<bool, Refusal> {
    match std::fs::symlink_metadata(full) {
        Ok(meta) => check(rel, expect, EntryKind::of(meta.file_type()), meta.len()).map(|()| true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(unreadable(rel, &e)),
    }
}

/// Reads the worktree file at `full` (relative path `rel` for errors) under [`check`]'s
/// rule: its type and size are looked at before it is opened, what was opened is looked at
/// again, and no more than [`MAX_FILE_BYTES`] + 1 bytes are read whatever it turns out to
/// be. `Ok(None)` if there is no file.
pub fn read_disk_file(full: &Path, rel: &Path) -> Result<Option<String>, Refusal> {
    if !disk_entry(full, rel, Expect::File)? {
        return Ok(None);
    }
    let file = match open_no_follow(full) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // Replaced by a symbolic link since it was looked at: O_NOFOLLOW refuses it.
        Err(e) if is_no_follow_refusal(&e) => {
            return Err(Refusal::WrongKind {
                path: rel.to_owned(),
                kind: EntryKind::Symlink,
                expected: Expect::File,
            });
        }
        Err(e) => return Err(unreadable(rel, &e)),
    };
    let meta = file.metadata().map_err(|e| unreadable(rel, &e))?;
    check(rel, Expect::File, EntryKind::of(meta.file_type()), meta.len())?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(rel, &e))?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > MAX_FILE_BYTES {
        // It grew while being read.
        return Err(Refusal::TooLarge {
            path: rel.to_owned(),
            size: read,
        });
    }
    decode(rel, bytes).map(Some)
}

/// Reads a file named on the command line or in a flag (a router config, a tokens file).
/// Symbolic links are followed, since Kubernetes mounts ConfigMaps and Secrets through them,
/// but what they lead to must be a regular file of at most [`MAX_FILE_BYTES`]: a named pipe
/// or a device is refused without waiting on it, and no more than the limit + 1 bytes are
/// read whatever it turns out to be.
pub fn read_named_file(path: &Path) -> Result<String, Refusal> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| unreadable(path, &e))?;
    let meta = file.metadata().map_err(|e| unreadable(path, &e))?;
    check(path, Expect::File, EntryKind::of(meta.file_type()), meta.len())?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(path, &e))?;
    let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if read > MAX_FILE_BYTES {
        return Err(Refusal::TooLarge {
            path: path.to_owned(),
            size: read,
        });
    }
    decode(path, bytes)
}

fn is_no_follow_refusal(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::ELOOP);
    #[cfg(not(unix))]
    return false;
}

fn unreadable(rel: &Path, e: &std::io::Error) -> Refusal {
    Refusal::Unreadable {
        path: rel.to_owned(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_and_real_directories_are_read() {
        let p = Path::new("releases/a.yaml");
        assert_eq!(check(p, Expect::File, EntryKind::File, 10), Ok(()));
        assert_eq!(check(p, Expect::File, EntryKind::File, MAX_FILE_BYTES), Ok(()));
        assert!(matches!(
            check(p, Expect::File, EntryKind::File, MAX_FILE_BYTES + 1),
            Err(Refusal::TooLarge { size, .. }) if size == MAX_FILE_BYTES + 1
        ));
        for kind in [
            EntryKind::Directory,
            EntryKind::Symlink,
            EntryKind::Submodule,
            EntryKind::Fifo,
            EntryKind::Socket,
            EntryKind::BlockDevice,
            EntryKind::CharDevice,
        ] {
            assert!(
                matches!(check(p, Expect::File, kind, 0), Err(Refusal::WrongKind { kind: k, .. }) if k == kind),
                "{kind:?}"
            );
        }
        // A directory's size is the file system's business, not a limit on the repo.
        let d = Path::new("services");
        assert_eq!(
            check(d, Expect::Directory, EntryKind::Directory, u64::MAX),
            Ok(())
        );
        assert!(check(d, Expect::Directory, EntryKind::Symlink, 0).is_err());
        assert!(check(d, Expect::Directory, EntryKind::File, 0).is_err());
    }

    #[test]
    fn a_symlinked_file_is_refused_with_where_what_and_how_to_fix_it() {
        let refusal = check(
            Path::new("releases/account-service.yaml"),
            Expect::File,
            EntryKind::Symlink,
            12,
        )
        .expect_err("refused");
        assert_eq!(
            refusal.diagnostic().to_string(),
            "releases/account-service.yaml:1:1: error: releases/account-service.yaml is a symbolic link; \
             cohort reads only regular files\n  help: replace it with the file itself"
        );
        assert_eq!(refusal.diagnostic().kind, Kind::WrongFileType);
    }

    #[test]
    fn both_readers_pick_the_same_names() {
        assert!(is_spec_file_name("a.yaml") && is_spec_file_name("a.yml"));
        for name in [".yaml", "a.YAML", "a.yaml.bak", "README.md", "yaml"] {
            assert!(!is_spec_file_name(name), "{name}");
        }
    }

    #[test]
    fn text_that_is_not_utf8_is_refused_not_replaced() {
        let e = decode(Path::new("services/a.yaml"), b"name: a\xff\n".to_vec()).expect_err("refused");
        assert_eq!(
            e,
            Refusal::NotUtf8 {
                path: "services/a.yaml".into(),
                offset: 7
            }
        );
    }

    #[test]
    fn a_named_file_is_followed_through_links_but_must_be_a_regular_file_within_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("..2026_12_02/router.yaml");
        std::fs::create_dir_all(real.parent().expect("parent")).expect("mkdir");
        std::fs::write(&real, "service: s\n").expect("write");
        let link = dir.path().join("router.yaml");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert_eq!(read_named_file(&link), Ok("service: s\n".to_string()));
        std::fs::write(
            &real,
            vec![b'a'; usize::try_from(MAX_FILE_BYTES + 1).expect("size")],
        )
        .expect("write");
        assert!(matches!(read_named_file(&link), Err(Refusal::TooLarge { .. })));
        assert!(matches!(
            read_named_file(dir.path()),
            Err(Refusal::WrongKind {
                kind: EntryKind::Directory,
                ..
            })
        ));
        assert!(matches!(
            read_named_file(&dir.path().join("absent")),
            Err(Refusal::Unreadable { .. })
        ));
    }
}
