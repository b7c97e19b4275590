//! Secret references (`file:PATH`, `env:NAME`) and how they are read: the
//! one home for PINs, HMAC secrets and the files that hold them, shared by
//! the server, the HSM crate and (later) the client. This is the one place
//! in ca-proto that reads files or the environment.
//!
//! A secret file must be:
//! - a regular file (a symlink to one is fine, e.g. Kubernetes' `..data`
//!   links; a device such as `/dev/zero`, a FIFO, a socket or a directory is
//!   refused before it is opened, and the opened handle is checked again);
//! - owned by the effective user of this process, or by root;
//! - not accessible by group or others (mode `0600`/`0400`, like ssh), unless
//!   [`SecretFileMode::GroupReadable`] allows group *read* (`0640`/`0440`,
//!   for secrets that containers mount group-readable);
//! - in directories that others cannot write to (a sticky directory such as
//!   `/tmp` or a Kubernetes secret volume is fine: others cannot replace an
//!   entry there);
//! - small: at most [`MAX_SECRET_BYTES`] (read with a cap, never to the end
//!   of whatever the file turns out to be). Environment values are capped
//!   the same way.
//!
//! Errors name the file (or variable) and the rule broken, never the
//! content; [`Secret`]'s `Debug` is redacted. [`describe_parse_error`] turns
//! a TOML error about a file that may hold secrets into `file:line:column:
//! message` without echoing any value from the file.

use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// The largest secret accepted: a PIN or a hex HMAC key is far smaller.
pub const MAX_SECRET_BYTES: u64 = 4096;

/// The largest configuration file that may hold secrets (`auth-keys.toml`).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// How strictly secret files' modes are checked (`[server] secret_file_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretFileMode {
    /// Owner only: no permission bit for group or others (`0600`, `0400`).
    #[default]
    Strict,
    /// Group may read (`0640`, `0440`); group write and anything for
    /// others are still refused.
    GroupReadable,
}

impl SecretFileMode {
    /// Permission bits a secret file must not have.
    fn forbidden_bits(self) -> u32 {
        match self {
            SecretFileMode::Strict => 0o077,
            SecretFileMode::GroupReadable => 0o037,
        }
    }

    fn rule(self) -> &'static str {
        match self {
            SecretFileMode::Strict => {
                "a secret file must not be accessible by group or others (chmod 600; \
                 [server] secret_file_mode = \"group-readable\" allows 0640/0440)"
            }
            SecretFileMode::GroupReadable => {
                "a secret file may be readable by its group but not writable by it, \
                 and not accessible by others (chmod 640 or 440)"
            }
        }
    }
}

/// Why a secret (or a file holding secrets) was refused. Never carries the
/// content. `path` is the file as given, `name` the variable.
#[allow(missing_docs)] // the fields are named by the variants' messages
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Neither `file:` nor `env:`.
    #[error("a secret must be given as 'file:PATH' or 'env:NAME'")]
    NotAReference,
    /// `file:` or `env:` with nothing (usable) after it.
    #[error("'{0}' names no file or variable")]
    EmptyReference(&'static str),
    /// The file cannot be looked at or read (the I/O error is part of the
    /// message, not a separate source, so that it is printed once).
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    /// A device, FIFO, socket or directory (`kind` says which).
    #[error("{path}: not a regular file ({kind})")]
    NotRegular { path: String, kind: String },
    /// Owned by someone other than this process's user or root.
    #[error(
        "{path}: owned by uid {owner}; a secret file must be owned by this process's user \
         (uid {euid}) or root"
    )]
    Owner { path: String, owner: u32, euid: u32 },
    /// Group or others may access it (`rule` says what is allowed).
    #[error("{path}: mode {mode:04o}: {rule}")]
    Mode {
        path: String,
        mode: u32,
        rule: &'static str,
    },
    /// A directory on its way (`dir`) can be written by others.
    #[error(
        "{path}: directory {dir} is writable by others (mode {mode:04o}): \
         anyone could replace the secret"
    )]
    DirectoryWritable {
        path: String,
        dir: String,
        mode: u32,
    },
    /// Larger than the cap.
    #[error("{path}: larger than {cap} bytes, so not a secret file")]
    TooLarge { path: String, cap: u64 },
    /// Replaced between the check and the read.
    #[error("{path}: changed while it was being read")]
    Changed { path: String },
    /// The environment variable is not set (or empty).
    #[error("environment variable {0} is not set")]
    EnvUnset(String),
    /// The environment variable holds more than the cap.
    #[error("environment variable {name}: longer than {cap} bytes")]
    EnvTooLarge { name: String, cap: u64 },
    /// Not UTF-8 text where text is required.
    #[error("{0}: not UTF-8 text")]
    NotText(String),
}

/// A secret held in memory: `Debug` is redacted and the bytes are
/// overwritten when dropped (best effort).
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret bytes, for the one place that uses them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as text (a PIN, a hex key). `origin` names where it came
    /// from, for the error.
    pub fn as_text(&self, origin: &str) -> Result<&str, ResolveError> {
        std::str::from_utf8(&self.0).map_err(|_| ResolveError::NotText(origin.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

/// Where a secret lives: `file:PATH` or `env:NAME`. Holds no content; its
/// `Display` is the reference itself (`file:/abs/path`, `env:NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A file; relative paths were resolved against the base directory.
    File(PathBuf),
    /// An environment variable of this process.
    Env(String),
}

impl SecretRef {
    /// Whether `text` is a reference (`file:…`/`env:…`) rather than a value.
    pub fn is_reference(text: &str) -> bool {
        text.starts_with("file:") || text.starts_with("env:")
    }

    /// Parses `file:PATH` (a relative PATH is relative to `base`) or
    /// `env:NAME`. Anything else is [`ResolveError::NotAReference`] (the
    /// value itself is not repeated).
    pub fn parse(text: &str, base: &Path) -> Result<SecretRef, ResolveError> {
        if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err(ResolveError::EmptyReference("file:"));
            }
            Ok(SecretRef::File(clean(&base.join(path))))
        } else if let Some(name) = text.strip_prefix("env:") {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(ResolveError::EmptyReference("env:"));
            }
            Ok(SecretRef::Env(name.to_string()))
        } else {
            Err(ResolveError::NotAReference)
        }
    }

    /// Reads the secret (at most [`MAX_SECRET_BYTES`]), checking the file
    /// as the module header says.
    pub fn resolve(&self, mode: SecretFileMode) -> Result<Secret, ResolveError> {
        match self {
            SecretRef::File(path) => read_secret_file(path, mode, MAX_SECRET_BYTES),
            SecretRef::Env(name) => read_env(name, MAX_SECRET_BYTES),
        }
    }

    /// Where the secret comes from, for messages: `file /x` or
    /// `environment variable X`.
    pub fn origin(&self) -> String {
        match self {
            SecretRef::File(path) => format!("file {}", path.display()),
            SecretRef::Env(name) => format!("environment variable {name}"),
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::File(path) => write!(f, "file:{}", path.display()),
            SecretRef::Env(name) => write!(f, "env:{name}"),
        }
    }
}

/// `base/./x` → `base/x`, so paths in messages read naturally.
fn clean(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// Reads a secret file (or a file holding secrets, with a larger `cap`)
/// after every check of the module header.
pub fn read_secret_file(
    path: &Path,
    mode: SecretFileMode,
    cap: u64,
) -> Result<Secret, ResolveError> {
    read_checked(path, cap, Some(mode)).map(Secret)
}

/// Reads a file that holds no secrets itself (e.g. `config.toml`): it must
/// be a regular file of at most `cap` bytes; owner and mode are not checked.
pub fn read_regular_file(path: &Path, cap: u64) -> Result<Vec<u8>, ResolveError> {
    read_checked(path, cap, None)
}

fn read_env(name: &str, cap: u64) -> Result<Secret, ResolveError> {
    let value = std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ResolveError::EnvUnset(name.to_string()))?;
    if value.len() as u64 > cap {
        return Err(ResolveError::EnvTooLarge {
            name: name.to_string(),
            cap,
        });
    }
    Ok(Secret(value.into_encoded_bytes()))
}

fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

fn read_checked(
    path: &Path,
    cap: u64,
    mode: Option<SecretFileMode>,
) -> Result<Vec<u8>, ResolveError> {
    let shown = path.display().to_string();
    let io = |error: std::io::Error| ResolveError::Io {
        path: shown.clone(),
        error,
    };
    let link = std::fs::symlink_metadata(path).map_err(io)?;
    // Follows symlinks; nothing is opened yet, so a FIFO cannot block us
    // and a device is never touched.
    let target = std::fs::metadata(path).map_err(io)?;
    let not_regular = |meta: &std::fs::Metadata| ResolveError::NotRegular {
        path: shown.clone(),
        kind: if link.file_type().is_symlink() {
            format!("a symlink to {}", kind_of(meta.file_type()))
        } else {
            kind_of(meta.file_type()).to_string()
        },
    };
    if !target.is_file() {
        return Err(not_regular(&target));
    }
    if target.len() > cap {
        return Err(ResolveError::TooLarge { path: shown, cap });
    }
    if mode.is_some() {
        if link.file_type().is_symlink() {
            check_owner(&shown, link.uid())?;
        }
        check_directories(path, &shown)?;
    }
    // O_NONBLOCK: should the path have become a FIFO since the check, the
    // open does not wait for a writer (and the handle check refuses it).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    if !opened.is_file() {
        return Err(not_regular(&opened));
    }
    if (opened.dev(), opened.ino()) != (target.dev(), target.ino()) {
        return Err(ResolveError::Changed { path: shown });
    }
    if let Some(mode) = mode {
        check_owner(&shown, opened.uid())?;
        let bits = opened.mode() & 0o7777;
        if bits & mode.forbidden_bits() != 0 {
            return Err(ResolveError::Mode {
                path: shown,
                mode: bits,
                rule: mode.rule(),
            });
        }
    }
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > cap {
        bytes.iter_mut().for_each(|b| *b = 0);
        return Err(ResolveError::TooLarge { path: shown, cap });
    }
    Ok(bytes)
}

fn check_owner(shown: &str, owner: u32) -> Result<(), ResolveError> {
    let euid = effective_uid();
    if owner == euid || owner == 0 {
        Ok(())
    } else {
        Err(ResolveError::Owner {
            path: shown.to_string(),
            owner,
            euid,
        })
    }
}

/// Every directory above the path as written (where a symlink may live)
/// and above the file it resolves to: none may be writable by others unless
/// it is sticky (then others cannot rename or remove entries they do not
/// own).
fn check_directories(path: &Path, shown: &str) -> Result<(), ResolveError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let written_parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let io = |error: std::io::Error| ResolveError::Io {
        path: shown.to_string(),
        error,
    };
    for start in [
        std::fs::canonicalize(&written_parent).map_err(io)?,
        std::fs::canonicalize(path).map_err(io)?,
    ] {
        let mut dir = if start.is_dir() {
            Some(start.as_path())
        } else {
            start.parent()
        };
        while let Some(d) = dir {
            if !dirs.iter().any(|seen| seen == d) {
                dirs.push(d.to_path_buf());
            }
            dir = d.parent();
        }
    }
    for dir in dirs {
        let meta = std::fs::metadata(&dir).map_err(io)?;
        let bits = meta.mode() & 0o7777;
        if bits & 0o002 != 0 && bits & 0o1000 == 0 {
            return Err(ResolveError::DirectoryWritable {
                path: shown.to_string(),
                dir: dir.display().to_string(),
                mode: bits,
            });
        }
    }
    Ok(())
}

/// `PATH:LINE:COLUMN: message` for a TOML error in a file that may hold
/// secrets. `span` is the error's byte range in `text` (toml's
/// `Error::span()`), `message` its bare message (`Error::message()`, never
/// its `Display`, which quotes the offending line). Values that serde would
/// repeat (`invalid type: string "…"`, unknown variants, unknown field and
/// duplicate key names) are left out: the position says where to look.
pub fn describe_parse_error(
    path: &Path,
    text: &str,
    span: Option<Range<usize>>,
    message: &str,
) -> String {
    let message = redact_parse_message(message);
    match span {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            format!("{}:{line}:{column}: {message}", path.display())
        }
        None => format!("{}: {message}", path.display()),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// One line, and no value copied from the input (see
/// [`describe_parse_error`]).
fn redact_parse_message(message: &str) -> String {
    let one_line = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let expected = |rest: &str| {
        rest.split_once(", expected ")
            .map(|(_, e)| format!(", expected {e}"))
            .unwrap_or_default()
    };
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = one_line.strip_prefix(prefix) {
            let unexpected = rest.split(", expected ").next().unwrap_or("");
            let kind = unexpected
                .split(['`', '"', '\''])
                .next()
                .unwrap_or("")
                .trim();
            return format!("{prefix}{kind}{}", expected(rest));
        }
    }
    for (prefix, plain) in [
        ("unknown variant ", "unknown value"),
        ("unknown field ", "unknown field"),
    ] {
        if let Some(rest) = one_line.strip_prefix(prefix) {
            return format!("{plain}{}", expected(rest));
        }
    }
    if one_line.starts_with("duplicate key") {
        return "duplicate key".into();
    }
    // Anything else in double quotes (outside the backquoted grammar
    // tokens of toml's "expected …" lists) could be a value: drop it.
    let (mut out, mut in_code, mut in_quote) = (String::new(), false, false);
    for c in one_line.chars() {
        match c {
            '`' if !in_quote => {
                in_code = !in_code;
                out.push(c);
            }
            '"' if !in_code => {
                in_quote = !in_quote;
                out.push_str(if in_quote { "\"…" } else { "\"" });
            }
            _ if in_quote => {}
            _ => out.push(c),
        }
    }
    if in_quote {
        out.push('"');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const VALUE: &str = "s3cret-value-9f8e7d";

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A private directory (0700) holding `name` with `content` and `mode`.
    fn planted(mode: u32, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        let path = dir.path().join("secret");
        std::fs::write(&path, content).unwrap();
        chmod(&path, mode);
        (dir, path)
    }

    fn refused(path: &Path, mode: SecretFileMode) -> String {
        let e = read_secret_file(path, mode, MAX_SECRET_BYTES)
            .expect_err("the file should have been refused");
        let shown = e.to_string();
        assert!(!shown.contains(VALUE), "the content was echoed: {shown}");
        assert!(!shown.contains('\n'), "not one line: {shown}");
        shown
    }

    #[test]
    fn parses_references_relative_to_the_base() {
        let base = Path::new("/etc/trellis");
        assert_eq!(
            SecretRef::parse("file:pins/online.pin", base).unwrap(),
            SecretRef::File(PathBuf::from("/etc/trellis/pins/online.pin"))
        );
        assert_eq!(
            SecretRef::parse("file:./x", base).unwrap().to_string(),
            "file:/etc/trellis/x"
        );
        assert_eq!(
            SecretRef::parse("file:/abs/x", base).unwrap().to_string(),
            "file:/abs/x"
        );
        assert_eq!(
            SecretRef::parse("env:PIN", base).unwrap(),
            SecretRef::Env("PIN".into())
        );
        for bad in ["1234", "file:", "env:", "env:A=B", VALUE] {
            let e = SecretRef::parse(bad, base).unwrap_err().to_string();
            assert!(!e.contains(VALUE), "{e}");
        }
        assert!(SecretRef::is_reference("env:X") && !SecretRef::is_reference(VALUE));
    }

    #[test]
    fn reads_a_private_file_and_hides_it_in_debug() {
        let (_dir, path) = planted(0o600, format!("{VALUE}\n").as_bytes());
        let secret = SecretRef::File(path.clone())
            .resolve(SecretFileMode::Strict)
            .unwrap();
        assert_eq!(secret.expose(), format!("{VALUE}\n").as_bytes());
        assert!(!format!("{secret:?}").contains(VALUE));
        chmod(&path, 0o400);
        assert!(read_secret_file(&path, SecretFileMode::Strict, MAX_SECRET_BYTES).is_ok());
    }

    #[test]
    fn refuses_group_and_world_access_unless_relaxed() {
        let (_dir, path) = planted(0o644, VALUE.as_bytes());
        let e = refused(&path, SecretFileMode::Strict);
        assert!(
            e.contains("mode 0644") && e.contains(&path.display().to_string()),
            "{e}"
        );
        refused(&path, SecretFileMode::GroupReadable);
        for ok in [0o640, 0o440] {
            chmod(&path, ok);
            refused(&path, SecretFileMode::Strict);
            assert!(read_secret_file(&path, SecretFileMode::GroupReadable, 4096).is_ok());
        }
        for bad in [0o660, 0o604, 0o602, 0o670] {
            chmod(&path, bad);
            refused(&path, SecretFileMode::GroupReadable);
        }
    }

    #[test]
    fn refuses_a_directory_writable_by_others() {
        let (dir, path) = planted(0o600, VALUE.as_bytes());
        chmod(dir.path(), 0o777);
        let e = refused(&path, SecretFileMode::Strict);
        assert!(e.contains("writable by others"), "{e}");
        // sticky (like /tmp): others cannot replace the entry
        chmod(dir.path(), 0o1777);
        assert!(read_secret_file(&path, SecretFileMode::Strict, 4096).is_ok());
        // a symlink living in a world-writable directory
        let (link_dir, _) = planted(0o600, b"");
        let link = link_dir.path().join("link");
        chmod(dir.path(), 0o700);
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_secret_file(&link, SecretFileMode::Strict, 4096).is_ok());
        chmod(link_dir.path(), 0o777);
        assert!(refused(&link, SecretFileMode::Strict).contains("writable by others"));
    }

    #[test]
    fn refuses_what_is_not_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        let link = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let e = refused(&link, SecretFileMode::Strict);
        assert!(e.contains("a symlink to a character device"), "{e}");
        let e = refused(Path::new("/dev/zero"), SecretFileMode::Strict);
        assert!(e.contains("not a regular file (a character device)"), "{e}");
        assert!(read_regular_file(Path::new("/dev/zero"), 4096).is_err());
        assert!(refused(dir.path(), SecretFileMode::Strict).contains("a directory"));
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        if made.is_ok_and(|s| s.success()) {
            // returns at once: the FIFO is never opened
            assert!(refused(&fifo, SecretFileMode::Strict).contains("a FIFO"));
        }
        let missing = refused(&dir.path().join("missing"), SecretFileMode::Strict);
        assert!(missing.contains("missing"), "{missing}");
    }

    #[test]
    fn caps_the_size_of_files_and_variables() {
        let (_dir, path) = planted(0o600, &vec![b'a'; MAX_SECRET_BYTES as usize + 1]);
        let e = refused(&path, SecretFileMode::Strict);
        assert!(e.contains("larger than 4096 bytes"), "{e}");
        std::fs::write(&path, vec![b'a'; MAX_SECRET_BYTES as usize]).unwrap();
        assert!(read_secret_file(&path, SecretFileMode::Strict, MAX_SECRET_BYTES).is_ok());
        assert!(read_regular_file(&path, 10).is_err());
        let name = "TRELLIS_SECRET_RS_TEST_TOO_LONG";
        std::env::set_var(name, "a".repeat(MAX_SECRET_BYTES as usize + 1));
        let e = SecretRef::Env(name.into())
            .resolve(SecretFileMode::Strict)
            .unwrap_err();
        assert!(e.to_string().contains("longer than 4096 bytes"), "{e}");
        std::env::set_var(name, VALUE);
        let ok = SecretRef::Env(name.into()).resolve(SecretFileMode::Strict);
        assert_eq!(ok.unwrap().expose(), VALUE.as_bytes());
        std::env::remove_var(name);
        let unset = SecretRef::Env(name.into()).resolve(SecretFileMode::Strict);
        assert!(unset.unwrap_err().to_string().contains("is not set"));
    }

    #[test]
    fn refuses_a_file_owned_by_another_user() {
        if effective_uid() != 0 {
            // Only root can give a file away; as another user this case is
            // covered by files that user does not own being unreadable.
            return;
        }
        let (_dir, path) = planted(0o600, VALUE.as_bytes());
        std::process::Command::new("chown")
            .arg("65534")
            .arg(&path)
            .status()
            .unwrap();
        let e = refused(&path, SecretFileMode::Strict);
        assert!(e.contains("owned by uid 65534"), "{e}");
    }

    #[test]
    fn parse_errors_give_the_position_and_no_value() {
        let path = Path::new("/etc/trellis/auth-keys.toml");
        let text = format!("[[key]]\nid = \"a\"\nsecret = \"{VALUE}\n");
        let shown = describe_parse_error(path, &text, Some(26..27), "invalid basic string");
        assert_eq!(
            shown,
            "/etc/trellis/auth-keys.toml:3:10: invalid basic string"
        );
        for (message, want) in [
            (
                format!("invalid type: string \"{VALUE}\", expected a sequence"),
                "invalid type: string, expected a sequence".to_string(),
            ),
            (
                format!("invalid type: integer `{VALUE}`, expected a string"),
                "invalid type: integer, expected a string".to_string(),
            ),
            (
                format!("unknown variant `{VALUE}`, expected `strict` or `group-readable`"),
                "unknown value, expected `strict` or `group-readable`".to_string(),
            ),
            (
                format!("unknown field `{VALUE}`, expected `key`"),
                "unknown field, expected `key`".to_string(),
            ),
            (
                format!("duplicate key `{VALUE}` in table `key`"),
                "duplicate key".to_string(),
            ),
            (
                "invalid string\nexpected `\"`, `'`".to_string(),
                "invalid string; expected `\"`, `'`".to_string(),
            ),
            (format!("odd \"{VALUE}\""), "odd \"…\"".to_string()),
        ] {
            let shown = describe_parse_error(path, &text, None, &message);
            assert_eq!(shown, format!("{}: {want}", path.display()));
        }
        assert_eq!(line_column("ab\ncdé\nf", 7), (2, 4));
        assert_eq!(line_column("é", 1), (1, 1));
        assert_eq!(line_column("x", 99), (1, 2));
    }
}
