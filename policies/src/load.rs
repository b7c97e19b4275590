//! The crate's only I/O: reading every `*.toml` policy file of a directory.

use std::fs;
use std::path::Path;

use crate::policy::valid_identifier;
use crate::{ClassPolicy, PolicyError, PolicySet};

/// Largest policy file accepted, in bytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Loads every `<class>.toml` in `dir` (not recursive; dot-files skipped).
/// The class name is the file stem and must match `[a-z0-9-]{1,32}`.
/// An empty directory gives an empty set.
pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PolicyError::Io { path, source }
    };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.starts_with('.') || path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        files.push(path);
    }
    files.sort();

    let mut set = PolicySet::new();
    for path in files {
        let shown = path.display().to_string();
        let class = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if !valid_identifier(class) {
            return Err(PolicyError::Invalid {
                file: shown,
                line: None,
                message: format!(
                    "class name {class:?} (the file name) must match [a-z0-9-]{{1,32}}"
                ),
            });
        }
        let meta = fs::metadata(&path).map_err(io(&path))?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(PolicyError::Invalid {
                file: shown,
                line: None,
                message: format!("not a regular file of at most {MAX_FILE_BYTES} bytes"),
            });
        }
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        set.insert(ClassPolicy::parse(class, &shown, &text)?);
    }
    Ok(set)
}
