//! Files on disk: atomic single-file writes, and the generation directory
//! that keeps the private key and its certificate consistent.
//!
//! # One file
//!
//! [`write_atomic`]: write a temporary file in the same directory
//! (`.<name>.tmp-<random>`, created exclusively with the final mode and
//! owner), fsync it, rename it over the target, fsync the directory. A
//! reader sees the old content or the new one, never a mix; a crash leaves
//! the old file and at worst a stray temporary file, which the next start
//! removes ([`remove_stale_temps`]). If anything fails, the temporary file
//! is removed and the target is untouched.
//!
//! # Key and certificate together
//!
//! Two renames can never be one atomic step, so renaming `key.pem` and then
//! `cert.pem` leaves a window (and, after a crash at the wrong moment, a
//! lasting state) where the new key sits next to the old certificate. The
//! client therefore writes every generation of the pair into its own
//! directory and switches one symbolic link (the approach of Kubernetes'
//! atomic volume writer):
//!
//! ```text
//! DIR/.gen-<time>-<random>/{key,cert,chain,fullchain,combined}.pem   complete, fsynced
//! DIR/.current -> .gen-<time>-<random>                                 the single commit point
//! DIR/key.pem -> .current/key.pem     (likewise cert, chain, fullchain, combined)
//! ```
//!
//! 1. create the generation directory and write all five files into it,
//!    each fsynced, then fsync the directory;
//! 2. make sure the stable names (`DIR/key.pem`, … and any extra link paths
//!    configured elsewhere) are symbolic links through `.current` (a fresh
//!    directory gets its links before the first switch, so they are simply
//!    dangling until then); new links elsewhere are made durable by one
//!    fsync per directory, those in `DIR` by step 3's;
//! 3. create `.current.tmp-<random>` pointing at the new generation and
//!    rename it over `.current`, then fsync `DIR`: **this rename is the only
//!    step that changes what readers see**, and it changes key and
//!    certificate at once;
//! 4. replace any stable name that was still a regular file (a directory
//!    written by something else before) with its link;
//! 5. remove older generations, keeping the previous one so that a reader
//!    that resolved a path just before the switch still finds its file.
//!
//! A crash anywhere leaves `.current` pointing at a complete old or a
//! complete new generation: the files on disk are always a matching pair.
//! A reader that opens `key.pem` and `cert.pem` separately can still
//! straddle a switch if the switch happens between its two opens; such a
//! reader should read `combined.pem` (private key followed by the full
//! chain, one file, so always consistent), or react to the reload action,
//! which runs only after the switch. The library's `tls::Identity` reads
//! `combined.pem` for that reason. A reader that must open files more than
//! once — libpq opens `sslcert` and `sslkey` separately even when both name
//! `combined.pem` — should resolve the path first (`realpath`): the resolved
//! `.gen-…` directory stays put until two switches later.
//!
//! Peer trust bundles (`DIR/trust/<class>.pem`), their CRLs
//! (`DIR/trust/<class>.crl.pem`), the pinned-roots state and the revocation
//! marker (`DIR/.state/`) are single files written with [`write_atomic_in`].
//!
//! # Symbolic links
//!
//! Inside the output directory the client follows no symbolic link it did
//! not create: directories it needs there (`trust/`, `.state/`) are made
//! with mkdir and checked with `symlink_metadata` ([`ensure_dir`]; a
//! planted link is [`StoreError::Symlink`]); files are created exclusively
//! in a fresh name and renamed over the target (a link there is replaced,
//! not written through); `.lock` and old contents are opened with
//! `O_NOFOLLOW`. Paths outside the directory are the operator's choice and
//! used as configured.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;

/// The link that names the current generation.
pub const CURRENT: &str = ".current";
/// Prefix of generation directories.
pub const GEN_PREFIX: &str = ".gen-";
/// Marker in the names of temporary files and links.
pub const TMP_MARK: &str = ".tmp-";
/// The lock file that keeps two clients from managing one directory.
pub const LOCK_FILE: &str = ".lock";

/// One of the files of a certificate generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `key.pem`: the PKCS#8 private key.
    Key,
    /// `cert.pem`: the leaf certificate.
    Cert,
    /// `chain.pem`: the intermediates.
    Chain,
    /// `fullchain.pem`: leaf followed by the intermediates.
    Fullchain,
    /// `combined.pem`: private key followed by the full chain.
    Combined,
}

impl FileKind {
    /// Every kind, in writing order.
    pub const ALL: [FileKind; 5] = [
        FileKind::Key,
        FileKind::Cert,
        FileKind::Chain,
        FileKind::Fullchain,
        FileKind::Combined,
    ];

    /// The file name inside the output directory.
    pub fn file_name(self) -> &'static str {
        match self {
            FileKind::Key => "key.pem",
            FileKind::Cert => "cert.pem",
            FileKind::Chain => "chain.pem",
            FileKind::Fullchain => "fullchain.pem",
            FileKind::Combined => "combined.pem",
        }
    }

    /// Whether the file holds the private key (and gets the key's mode).
    pub fn is_secret(self) -> bool {
        matches!(self, FileKind::Key | FileKind::Combined)
    }
}

/// Mode and ownership of a written file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAttrs {
    /// Permission bits (`0o600`).
    pub mode: u32,
    /// Owner to set, if any (needs privileges).
    pub uid: Option<u32>,
    /// Group to set, if any.
    pub gid: Option<u32>,
}

impl FileAttrs {
    /// Private key default: 0600, owner unchanged.
    pub const KEY_DEFAULT: FileAttrs = FileAttrs {
        mode: 0o600,
        uid: None,
        gid: None,
    };
    /// Certificate default: 0644, owner unchanged.
    pub const CERT_DEFAULT: FileAttrs = FileAttrs {
        mode: 0o644,
        uid: None,
        gid: None,
    };

    /// Mode for a directory holding files of this mode: read bits become
    /// read+search bits; the owner always has full access.
    pub(crate) fn dir_mode(self) -> u32 {
        let mut m = 0o700;
        if self.mode & 0o040 != 0 {
            m |= 0o050;
        }
        if self.mode & 0o004 != 0 {
            m |= 0o005;
        }
        m
    }
}

/// Where the files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The output directory (`--out`).
    pub dir: PathBuf,
    /// Where peer trust bundles go (`DIR/trust` by default).
    pub trust_dir: PathBuf,
    /// Extra paths (outside or inside `dir`) that should be links to one of
    /// the files, e.g. `/etc/ssl/private/svc.key`.
    pub extra_links: Vec<(FileKind, PathBuf)>,
    /// Mode and owner of `key.pem` and `combined.pem`.
    pub key_attrs: FileAttrs,
    /// Mode and owner of the certificate files and trust bundles.
    pub cert_attrs: FileAttrs,
}

impl Layout {
    /// Defaults for `dir`: trust bundles in `dir/trust`, key 0600, certs 0644.
    pub fn new(dir: impl Into<PathBuf>) -> Layout {
        let dir = dir.into();
        Layout {
            trust_dir: dir.join("trust"),
            dir,
            extra_links: Vec::new(),
            key_attrs: FileAttrs::KEY_DEFAULT,
            cert_attrs: FileAttrs::CERT_DEFAULT,
        }
    }

    /// The stable path of a file (`DIR/key.pem`, …).
    pub fn path(&self, kind: FileKind) -> PathBuf {
        self.dir.join(kind.file_name())
    }

    /// The trust bundle path of a class.
    pub fn trust_path(&self, class: &str) -> PathBuf {
        self.trust_dir.join(format!("{class}.pem"))
    }

    /// The CRL file of a class, next to its trust bundle.
    pub fn crl_path(&self, class: &str) -> PathBuf {
        self.trust_dir.join(format!("{class}.crl.pem"))
    }

    /// Attributes of a file kind.
    pub fn attrs(&self, kind: FileKind) -> FileAttrs {
        if kind.is_secret() {
            self.key_attrs
        } else {
            self.cert_attrs
        }
    }
}

/// The PEM texts of one certificate generation.
#[derive(Clone)]
pub struct Material {
    /// PKCS#8 private key.
    pub key_pem: String,
    /// The leaf certificate.
    pub cert_pem: String,
    /// The intermediates (may be empty).
    pub chain_pem: String,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("key_pem", &format_args!("<redacted>"))
            .field("cert_pem", &self.cert_pem)
            .field("chain_pem", &self.chain_pem)
            .finish()
    }
}

impl Material {
    /// The content of one file.
    pub fn contents(&self, kind: FileKind) -> String {
        match kind {
            FileKind::Key => self.key_pem.clone(),
            FileKind::Cert => self.cert_pem.clone(),
            FileKind::Chain => self.chain_pem.clone(),
            FileKind::Fullchain => format!("{}{}", self.cert_pem, self.chain_pem),
            FileKind::Combined => format!("{}{}{}", self.key_pem, self.cert_pem, self.chain_pem),
        }
    }
}

/// What went wrong writing files.
#[derive(Debug, Error)]
pub enum StoreError {
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the directory's lock.
    #[error("another ca-client is managing {}", .0.display())]
    Locked(PathBuf),
    /// A symbolic link where ca-client creates a directory or file of its
    /// own inside the output directory: someone else planted it.
    #[error(
        "{} is a symbolic link that ca-client did not create: refusing to follow it (remove it)",
        .0.display()
    )]
    Symlink(PathBuf),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn random_suffix() -> String {
    let mut buf = [0u8; 6];
    if getrandom::getrandom(&mut buf).is_err() {
        // Uniqueness still holds within this process via the pid + clock.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        return format!("{}{nanos:08x}", std::process::id());
    }
    hex::encode(buf)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_name_for(path: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_else(|| "file".as_ref()));
    name.push(TMP_MARK);
    name.push(random_suffix());
    parent_of(path).join(name)
}

/// fsync a directory, so that renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `path` exclusively with `attrs`, writes `contents`, fsyncs.
fn write_new_file(path: &Path, contents: &[u8], attrs: FileAttrs) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(attrs.mode)
        .open(path)?;
    // The umask may have cleared bits: set the exact mode.
    f.set_permissions(fs::Permissions::from_mode(attrs.mode))?;
    if attrs.uid.is_some() || attrs.gid.is_some() {
        std::os::unix::fs::fchown(&f, attrs.uid, attrs.gid)?;
    }
    f.write_all(contents)?;
    f.sync_all()
}

/// Writes `path` atomically (see the module documentation).
pub fn write_atomic(path: &Path, contents: &[u8], attrs: FileAttrs) -> Result<(), StoreError> {
    write_atomic_with(path, contents, attrs, |from, to| fs::rename(from, to))
}

/// [`write_atomic`] with the rename step supplied (tests inject failures).
fn write_atomic_with(
    path: &Path,
    contents: &[u8],
    attrs: FileAttrs,
    rename: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> Result<(), StoreError> {
    let dir = parent_of(path);
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = temp_name_for(path);
    let result = write_new_file(&tmp, contents, attrs)
        .map_err(io_err("writing", &tmp))
        .and_then(|()| rename(&tmp, path).map_err(io_err("renaming onto", path)));
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir).map_err(io_err("syncing", dir))
}

/// Writes `path` atomically unless it already holds exactly `contents`.
/// Returns whether it wrote. The old content is read without following a
/// symbolic link (a link is replaced, never written through).
pub fn write_if_changed(
    path: &Path,
    contents: &[u8],
    attrs: FileAttrs,
) -> Result<bool, StoreError> {
    let same = crate::pins::read_no_follow(path, contents.len() as u64)
        .is_ok_and(|old| old.as_deref() == Some(contents));
    if same {
        return Ok(false);
    }
    write_atomic(path, contents, attrs)?;
    Ok(true)
}

/// Makes sure `dir` is a directory. Below `base` (the output directory)
/// every component is created by us or must already be a real directory:
/// a symbolic link there is [`StoreError::Symlink`], never followed. Above
/// or outside `base` (paths the operator configured) it is
/// `create_dir_all`.
pub fn ensure_dir(base: &Path, dir: &Path, attrs: FileAttrs) -> Result<(), StoreError> {
    let Ok(rel) = dir.strip_prefix(base) else {
        return fs::create_dir_all(dir).map_err(io_err("creating", dir));
    };
    if !base.exists() {
        fs::create_dir_all(base).map_err(io_err("creating", base))?;
    }
    let mut at = base.to_path_buf();
    for part in rel.components() {
        match part {
            std::path::Component::Normal(name) => at.push(name),
            std::path::Component::CurDir => continue,
            _ => {
                return Err(io_err("creating", dir)(io::Error::other(
                    "path leaves the output directory",
                )))
            }
        }
        match fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Err(StoreError::Symlink(at)),
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io_err("creating", &at)(io::Error::other(
                    "exists and is not a directory",
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // mkdir(2) never follows a link in the last component.
                fs::DirBuilder::new()
                    .mode(attrs.dir_mode())
                    .create(&at)
                    .map_err(io_err("creating", &at))?;
                if attrs.uid.is_some() || attrs.gid.is_some() {
                    std::os::unix::fs::lchown(&at, attrs.uid, attrs.gid)
                        .map_err(io_err("changing owner of", &at))?;
                }
            }
            Err(e) => return Err(io_err("inspecting", &at)(e)),
        }
    }
    Ok(())
}

/// [`write_atomic`] into a directory made by [`ensure_dir`] below `base`.
pub fn write_atomic_in(
    base: &Path,
    path: &Path,
    contents: &[u8],
    attrs: FileAttrs,
) -> Result<(), StoreError> {
    ensure_dir(base, parent_of(path), attrs)?;
    write_atomic(path, contents, attrs)
}

/// [`write_if_changed`] into a directory made by [`ensure_dir`] below
/// `base`.
pub fn write_if_changed_in(
    base: &Path,
    path: &Path,
    contents: &[u8],
    attrs: FileAttrs,
) -> Result<bool, StoreError> {
    ensure_dir(base, parent_of(path), attrs)?;
    write_if_changed(path, contents, attrs)
}

/// Makes `link` a symbolic link to `target`, atomically (temporary link,
/// rename). Does nothing if it already is one. The rename is made durable
/// by the caller's [`sync_dirs`] of the link's directory (one fsync for all
/// the links of a directory, not one each).
fn ensure_link(link: &Path, target: &Path, attrs: FileAttrs) -> Result<bool, StoreError> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(false);
    }
    let dir = parent_of(link);
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = temp_name_for(link);
    symlink(target, &tmp).map_err(io_err("linking", &tmp))?;
    if attrs.uid.is_some() || attrs.gid.is_some() {
        // Best effort: a link's owner matters only with protected_symlinks.
        let _ = std::os::unix::fs::lchown(&tmp, attrs.uid, attrs.gid);
    }
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("renaming onto", link)(e));
    }
    Ok(true)
}

/// fsyncs each directory of the links in `changed` once, except `skip`
/// (which the caller syncs itself).
fn sync_dirs<'a>(
    changed: impl IntoIterator<Item = &'a PathBuf>,
    skip: Option<&Path>,
) -> Result<(), StoreError> {
    let mut synced: Vec<&Path> = Vec::new();
    for link in changed {
        let dir = parent_of(link);
        if Some(dir) == skip || synced.contains(&dir) {
            continue;
        }
        sync_dir(dir).map_err(io_err("syncing", dir))?;
        synced.push(dir);
    }
    Ok(())
}

/// The generation `.current` points at, if any (its name, relative).
pub fn current_generation(dir: &Path) -> Option<PathBuf> {
    fs::read_link(dir.join(CURRENT)).ok()
}

/// When the current generation was installed (Unix seconds, from its
/// name), if the directory uses the generation layout.
pub fn generation_time(dir: &Path) -> Option<i64> {
    let name = current_generation(dir)?;
    let rest = name.to_str()?.strip_prefix(GEN_PREFIX)?;
    rest.split('-').next()?.parse().ok()
}

fn link_target(layout: &Layout, abs_dir: &Path, kind: FileKind, link: &Path) -> PathBuf {
    let rel = Path::new(CURRENT).join(kind.file_name());
    if parent_of(link) == layout.dir.as_path() {
        rel
    } else {
        abs_dir.join(rel)
    }
}

/// Installs a new generation (see the module documentation). Returns the
/// generation directory.
pub fn install(layout: &Layout, material: &Material) -> Result<PathBuf, StoreError> {
    let dir = &layout.dir;
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io_err("creating", dir))?;
    }
    let abs_dir = fs::canonicalize(dir).map_err(io_err("resolving", dir))?;
    let previous = current_generation(dir);

    // 1. The complete new generation.
    let now = crate::unix_now();
    let gen_name = PathBuf::from(format!("{GEN_PREFIX}{now}-{}", random_suffix()));
    let gen = dir.join(&gen_name);
    fs::DirBuilder::new()
        .mode(layout.cert_attrs.dir_mode())
        .create(&gen)
        .map_err(io_err("creating", &gen))?;
    fs::set_permissions(
        &gen,
        fs::Permissions::from_mode(layout.cert_attrs.dir_mode()),
    )
    .map_err(io_err("setting mode of", &gen))?;
    if layout.cert_attrs.uid.is_some() || layout.cert_attrs.gid.is_some() {
        std::os::unix::fs::chown(&gen, layout.cert_attrs.uid, layout.cert_attrs.gid)
            .map_err(io_err("changing owner of", &gen))?;
    }
    let written = FileKind::ALL.iter().try_for_each(|&kind| {
        let path = gen.join(kind.file_name());
        write_new_file(
            &path,
            material.contents(kind).as_bytes(),
            layout.attrs(kind),
        )
        .map_err(io_err("writing", &path))
    });
    if let Err(e) = written.and_then(|()| sync_dir(&gen).map_err(io_err("syncing", &gen))) {
        let _ = fs::remove_dir_all(&gen);
        return Err(e);
    }

    // 2. Stable names that are absent or links: link them now.
    let links: Vec<(FileKind, PathBuf)> = FileKind::ALL
        .iter()
        .map(|&k| (k, layout.path(k)))
        .chain(layout.extra_links.iter().cloned())
        .collect();
    let mut regular_files = Vec::new();
    let mut linked = Vec::new();
    for (kind, link) in &links {
        let is_regular = fs::symlink_metadata(link).is_ok_and(|m| !m.file_type().is_symlink());
        if is_regular {
            regular_files.push((*kind, link.clone()));
        } else if ensure_link(
            link,
            &link_target(layout, &abs_dir, *kind, link),
            layout.attrs(*kind),
        )? {
            linked.push(link.clone());
        }
    }
    // Links elsewhere are made durable now; those in `dir` with the switch.
    sync_dirs(&linked, Some(dir.as_path()))?;

    // 3. The switch.
    let tmp_link = dir.join(format!("{CURRENT}{TMP_MARK}{}", random_suffix()));
    symlink(&gen_name, &tmp_link).map_err(io_err("linking", &tmp_link))?;
    let current = dir.join(CURRENT);
    if let Err(e) = fs::rename(&tmp_link, &current) {
        let _ = fs::remove_file(&tmp_link);
        return Err(io_err("renaming onto", &current)(e));
    }
    sync_dir(dir).map_err(io_err("syncing", dir))?;

    // 4. Regular files left by something else become links.
    let mut replaced = Vec::new();
    for (kind, link) in &regular_files {
        if ensure_link(
            link,
            &link_target(layout, &abs_dir, *kind, link),
            layout.attrs(*kind),
        )? {
            replaced.push(link.clone());
        }
    }
    sync_dirs(&replaced, None)?;

    // 5. Older generations and stray temporaries.
    remove_old_generations(dir, &gen_name, previous.as_deref());
    remove_stale_temps(dir);
    Ok(gen)
}

/// Removes generation directories other than `keep` and `previous`.
fn remove_old_generations(dir: &Path, keep: &Path, previous: Option<&Path>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = PathBuf::from(entry.file_name());
        let is_gen = name.to_str().is_some_and(|n| n.starts_with(GEN_PREFIX));
        if is_gen && name != keep && Some(name.as_path()) != previous {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes temporary files and links (`.<name>.tmp-…`, `.current.tmp-…`)
/// left in `dir` by an interrupted write. Call only while holding the
/// directory lock.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let is_tmp = name
            .to_str()
            .is_some_and(|n| n.starts_with('.') && n.contains(TMP_MARK));
        if is_tmp && entry.file_type().is_ok_and(|t| !t.is_dir()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// An exclusive advisory lock on `DIR/.lock`, held while the value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Takes the output directory's lock (creating the directory), or fails at
/// once if another process holds it.
pub fn lock(dir: &Path) -> Result<DirLock, StoreError> {
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io_err("opening", &path))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StoreError::Locked(dir.to_path_buf()));
        }
        return Err(io_err("locking", &path)(err));
    }
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Err(io_err("locking", &path)(io::Error::other(
            "not a regular file",
        )));
    }
    Ok(DirLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn material(tag: &str) -> Material {
        Material {
            key_pem: format!("KEY {tag}\n"),
            cert_pem: format!("CERT {tag}\n"),
            chain_pem: format!("CHAIN {tag}\n"),
        }
    }

    #[test]
    fn write_atomic_sets_mode_and_leaves_no_temp() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("sub/key.pem");
        write_atomic(&path, b"one", FileAttrs::KEY_DEFAULT).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"one");
        assert_eq!(mode_of(&path), 0o600);
        write_atomic(&path, b"two", FileAttrs::CERT_DEFAULT).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(mode_of(&path), 0o644);
        assert_eq!(entries(&tmp.path().join("sub")), vec!["key.pem"]);
    }

    #[test]
    fn failed_rename_keeps_old_content_and_removes_temp() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("cert.pem");
        write_atomic(&path, b"old", FileAttrs::CERT_DEFAULT).expect("write");
        let mut saw_temp = None;
        let err = write_atomic_with(&path, b"new", FileAttrs::CERT_DEFAULT, |from, _| {
            saw_temp = Some(fs::read(from).expect("temp readable"));
            Err(io::Error::other("injected"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert_eq!(saw_temp.as_deref(), Some(&b"new"[..]), "temp was complete");
        assert_eq!(fs::read(&path).expect("read"), b"old");
        assert_eq!(entries(tmp.path()), vec!["cert.pem"]);
    }

    #[test]
    fn real_rename_failure_onto_a_directory() {
        let tmp = tempfile::tempdir().expect("tmp");
        let target = tmp.path().join("busy");
        fs::create_dir(&target).expect("dir");
        fs::write(target.join("inside"), b"x").expect("write");
        assert!(write_atomic(&target, b"new", FileAttrs::CERT_DEFAULT).is_err());
        assert_eq!(entries(tmp.path()), vec!["busy"]);
        assert_eq!(fs::read(target.join("inside")).expect("read"), b"x");
    }

    #[test]
    fn write_if_changed_skips_identical() {
        let tmp = tempfile::tempdir().expect("tmp");
        let path = tmp.path().join("db.pem");
        assert!(write_if_changed(&path, b"a", FileAttrs::CERT_DEFAULT).expect("w"));
        assert!(!write_if_changed(&path, b"a", FileAttrs::CERT_DEFAULT).expect("w"));
        assert!(write_if_changed(&path, b"b", FileAttrs::CERT_DEFAULT).expect("w"));
        assert_eq!(fs::read(&path).expect("read"), b"b");
    }

    #[test]
    fn install_switches_generations_consistently() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut layout = Layout::new(tmp.path().join("out"));
        let extra = tmp.path().join("elsewhere/svc.key");
        layout.extra_links.push((FileKind::Key, extra.clone()));

        let g1 = install(&layout, &material("1")).expect("install 1");
        for kind in FileKind::ALL {
            let text = fs::read_to_string(layout.path(kind)).expect("read");
            assert_eq!(text, material("1").contents(kind));
        }
        assert_eq!(fs::read_to_string(&extra).expect("extra"), "KEY 1\n");
        assert_eq!(mode_of(&layout.path(FileKind::Key)), 0o600);
        assert_eq!(mode_of(&layout.path(FileKind::Combined)), 0o600);
        assert_eq!(mode_of(&layout.path(FileKind::Cert)), 0o644);
        assert_eq!(
            fs::read_link(layout.path(FileKind::Key)).expect("link"),
            Path::new(".current/key.pem")
        );

        let g2 = install(&layout, &material("2")).expect("install 2");
        assert_eq!(
            fs::read_to_string(layout.path(FileKind::Key)).expect("k"),
            "KEY 2\n"
        );
        assert_eq!(
            fs::read_to_string(layout.path(FileKind::Cert)).expect("c"),
            "CERT 2\n"
        );
        assert!(g1.exists(), "previous generation kept");
        let g3 = install(&layout, &material("3")).expect("install 3");
        assert!(!g1.exists(), "older generation removed");
        assert!(g2.exists() && g3.exists());
        let names = entries(&layout.dir);
        assert!(
            names.iter().all(|n| !n.contains(TMP_MARK)),
            "no temporaries: {names:?}"
        );
        assert_eq!(
            current_generation(&layout.dir),
            Some(PathBuf::from(g3.file_name().expect("name")))
        );
        let t = generation_time(&layout.dir).expect("time");
        assert!((crate::unix_now() - t).abs() < 60, "{t}");
    }

    #[test]
    fn install_replaces_regular_files_and_cleans_temps() {
        let tmp = tempfile::tempdir().expect("tmp");
        let layout = Layout::new(tmp.path());
        fs::write(tmp.path().join("key.pem"), b"OLD KEY").expect("w");
        fs::write(tmp.path().join("cert.pem"), b"OLD CERT").expect("w");
        fs::write(tmp.path().join(".cert.pem.tmp-abc"), b"junk").expect("w");
        install(&layout, &material("n")).expect("install");
        assert_eq!(
            fs::read_to_string(tmp.path().join("key.pem")).expect("k"),
            "KEY n\n"
        );
        assert_eq!(
            fs::read_to_string(tmp.path().join("cert.pem")).expect("c"),
            "CERT n\n"
        );
        assert!(!tmp.path().join(".cert.pem.tmp-abc").exists());
    }

    #[test]
    fn owner_and_group_are_applied() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let me = fs::metadata(tmp.path()).expect("meta");
        let mut layout = Layout::new(tmp.path().join("out"));
        layout.key_attrs = FileAttrs {
            mode: 0o640,
            uid: Some(me.uid()),
            gid: Some(me.gid()),
        };
        layout.cert_attrs.uid = Some(me.uid());
        layout.cert_attrs.gid = Some(me.gid());
        let gen = install(&layout, &material("o")).expect("install");
        for kind in FileKind::ALL {
            let m = fs::metadata(layout.path(kind)).expect("meta");
            assert_eq!((m.uid(), m.gid()), (me.uid(), me.gid()), "{kind:?}");
        }
        assert_eq!(mode_of(&layout.path(FileKind::Key)), 0o640);
        assert_eq!(fs::metadata(&gen).expect("gen").mode() & 0o777, 0o755);
    }

    #[test]
    fn planted_links_inside_the_output_directory_are_not_followed() {
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().join("out");
        let target = tmp.path().join("target");
        fs::create_dir_all(&out).expect("out");
        fs::create_dir_all(&target).expect("target");
        symlink(&target, out.join("trust")).expect("plant");
        let err = write_atomic_in(
            &out,
            &out.join("trust/api.pem"),
            b"roots",
            FileAttrs::CERT_DEFAULT,
        )
        .unwrap_err();
        assert!(
            matches!(&err, StoreError::Symlink(p) if p == &out.join("trust")),
            "{err}"
        );
        assert!(err.to_string().contains("refusing to follow it"), "{err}");
        assert_eq!(entries(&target), Vec::<String>::new());
        // made fresh when absent, nested too
        fs::remove_file(out.join("trust")).expect("rm");
        write_atomic_in(&out, &out.join("a/b/c.pem"), b"x", FileAttrs::CERT_DEFAULT).expect("w");
        assert_eq!(fs::read(out.join("a/b/c.pem")).expect("read"), b"x");
        // a link as the file itself is replaced, not written through
        fs::write(target.join("victim"), b"keep").expect("w");
        symlink(target.join("victim"), out.join("a/b/d.pem")).expect("ln");
        assert!(write_if_changed_in(
            &out,
            &out.join("a/b/d.pem"),
            b"new",
            FileAttrs::CERT_DEFAULT
        )
        .expect("w"));
        assert_eq!(fs::read(target.join("victim")).expect("r"), b"keep");
        assert!(!fs::symlink_metadata(out.join("a/b/d.pem"))
            .expect("m")
            .file_type()
            .is_symlink());
        // outside the output directory: the operator's path, used as given
        let outside = tmp.path().join("elsewhere/x.pem");
        write_atomic_in(&out, &outside, b"y", FileAttrs::CERT_DEFAULT).expect("outside");
        // the lock file is not opened through a link
        symlink(target.join("victim"), out.join(LOCK_FILE)).expect("ln");
        assert!(lock(&out).is_err());
        assert_eq!(fs::read(target.join("victim")).expect("r"), b"keep");
    }

    #[test]
    fn directory_lock_is_exclusive() {
        let tmp = tempfile::tempdir().expect("tmp");
        let first = lock(tmp.path()).expect("first");
        // flock locks belong to the open file description: a second open
        // in the same process conflicts like another process would.
        assert!(matches!(lock(tmp.path()), Err(StoreError::Locked(_))));
        drop(first);
        lock(tmp.path()).expect("after release");
    }

    #[test]
    fn dir_mode_follows_cert_mode() {
        assert_eq!(FileAttrs::CERT_DEFAULT.dir_mode(), 0o755);
        assert_eq!(
            FileAttrs {
                mode: 0o640,
                uid: None,
                gid: None
            }
            .dir_mode(),
            0o750
        );
        assert_eq!(FileAttrs::KEY_DEFAULT.dir_mode(), 0o700);
    }
}
