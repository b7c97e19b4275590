//! NSS softoken (`libsoftokn3.so`, Debian's `libnss3`) as a PKCS#11 module
//! for the conformance suite: a fresh NSS database (`cert9.db`/`key4.db`,
//! made by `certutil -N` from `libnss3-tools`) under the test's directory,
//! opened through the library-parameters string that the softoken requires
//! in `C_Initialize` (without it, `C_Initialize` answers CKR_ARGUMENTS_BAD).
//!
//! The database has one key token, labelled `NSS Certificate DB`
//! (CKF_LOGIN_REQUIRED, user PIN = the database password); it serves as both
//! the online and the root token. No daemon and no environment variables:
//! everything the module needs is in the parameters string.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::HsmEnv;

/// Label NSS gives the token of its key database slot
/// ("NSS User Private Key and Certificate Services").
pub const TOKEN_LABEL: &str = "NSS Certificate DB";

/// Password of the database = the token's user PIN.
const PIN: &str = "nss-4711";

/// The NSS softoken library as Debian and Fedora-style systems install it.
fn module() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/libsoftokn3.so",
        "/usr/lib/aarch64-linux-gnu/libsoftokn3.so",
        "/usr/lib64/libsoftokn3.so",
        "/usr/lib/libsoftokn3.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("NSS softoken libsoftokn3.so not found (apt-get install libnss3)"))
}

/// The softoken's library parameters for the SQLite database in `db`, in the
/// form NSS itself records for its internal module in `db/pkcs11.txt`
/// (`parameters=` line, which continues with empty `update*` settings).
/// `C_Initialize` takes it as the NUL-terminated string that
/// `CK_C_INITIALIZE_ARGS.pReserved` (NSS: `LibraryParameters`) points to.
pub fn library_params(db: &Path) -> String {
    let db = db.display().to_string();
    assert!(
        !db.contains('\'') && !db.contains('"'),
        "NSS database path {db} must not contain quotes (it is quoted in the parameters)"
    );
    format!("configdir='sql:{db}' certPrefix='' keyPrefix='' secmod='secmod.db' flags=")
}

/// A new NSS database under `dir/nssdb` with password [`PIN`], and the
/// environment that opens it through `libsoftokn3.so`.
pub fn nss(dir: &Path) -> HsmEnv {
    let module = module();
    let db = dir.join("nssdb");
    std::fs::create_dir_all(&db).unwrap_or_else(|e| panic!("{}: {e}", db.display()));
    let pwfile = password_file(dir);
    // certutil reads the first line of the file (the newline is not part of
    // the password).
    std::fs::write(&pwfile, format!("{PIN}\n"))
        .unwrap_or_else(|e| panic!("{}: {e}", pwfile.display()));
    let out = crate::run(
        Command::new("certutil")
            .arg("-N")
            .arg("-d")
            .arg(format!("sql:{}", db.display()))
            .arg("-f")
            .arg(&pwfile),
    );
    assert!(
        out.status.success(),
        "certutil -N (apt-get install libnss3-tools): {}",
        crate::text(&out)
    );
    HsmEnv {
        name: "nss",
        module,
        env: Vec::new(),
        prefix: Vec::new(),
        init_params: Some(library_params(&db)),
        online_token: TOKEN_LABEL.into(),
        online_pin: PIN.into(),
        root_token: TOKEN_LABEL.into(),
        root_pin: PIN.into(),
        dir: dir.to_path_buf(),
        guard: Vec::new(),
    }
}

/// Where [`nss`] keeps the database password (for `certutil -f`).
pub fn password_file(dir: &Path) -> PathBuf {
    dir.join("nssdb.password")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_arg(env: &HsmEnv) -> String {
        format!("sql:{}", env.dir.join("nssdb").display())
    }

    #[test]
    fn nss_database_has_its_token_and_password() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let env = nss(tmp.path());
        assert!(env.module.exists(), "{}", env.module.display());

        let out = crate::run(Command::new("modutil").args(["-dbdir", &db_arg(&env), "-list"]));
        let listing = crate::text(&out);
        assert!(out.status.success(), "modutil -list: {listing}");
        assert!(
            listing.contains(&format!("token: {TOKEN_LABEL}")),
            "no token '{TOKEN_LABEL}' in: {listing}"
        );
        assert_eq!(env.online_token, TOKEN_LABEL);
        assert_eq!(env.root_token, TOKEN_LABEL);

        // The PIN opens the key database. certutil -K exits non-zero when the
        // database holds no keys, so judge by its message.
        let out = crate::run(
            Command::new("certutil")
                .args(["-K", "-d", &db_arg(&env), "-f"])
                .arg(password_file(&env.dir)),
        );
        let keys = crate::text(&out);
        assert!(keys.contains("no keys found"), "certutil -K: {keys}");
        let wrong = env.dir.join("wrong.password");
        std::fs::write(&wrong, "not-the-pin\n").expect("write wrong password file");
        let out = crate::run(
            Command::new("certutil")
                .args(["-K", "-d", &db_arg(&env), "-f"])
                .arg(&wrong),
        );
        assert!(
            crate::text(&out).contains("SEC_ERROR_BAD_PASSWORD"),
            "a wrong password was not refused: {}",
            crate::text(&out)
        );

        // The parameters are the ones NSS records for its own internal module.
        let params = env.init_params.as_deref().expect("NSS needs init_params");
        let recorded = std::fs::read_to_string(env.dir.join("nssdb/pkcs11.txt"))
            .expect("certutil -N writes nssdb/pkcs11.txt");
        assert!(
            recorded.contains(&format!("parameters={params}")),
            "parameters {params:?} are not what NSS recorded:\n{recorded}"
        );
    }
}
