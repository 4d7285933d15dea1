//! The agent's long-term 2.1 identity on disk (PROTOCOL.md B): a key file holding the 32-byte
//! Ed25519 secret as 64 hex characters on one line, created on first use with mode 0600 in
//! `$XDG_CONFIG_HOME/m2m/identity.key` (else `~/.config/m2m/identity.key`; `%APPDATA%` on
//! Windows), or wherever `--identity FILE` says.
//!
//! On a 2.1 hub the agent's id is derived from this key, so it is the same on every run. The
//! file is the agent's secret: one that other users can read is refused rather than used,
//! since anyone holding it can be this agent.

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context as _};
use m2m_agent::Identity;

use crate::defaults::MAX_KEY_FILE_LEN;

/// Name of the key file in the config directory.
pub const KEY_FILE_NAME: &str = "identity.key";

/// Where the key lives unless `--identity` says otherwise.
pub fn default_path() -> anyhow::Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = non_empty("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(dir).join("m2m").join(KEY_FILE_NAME));
    }
    #[cfg(windows)]
    if let Some(dir) = non_empty("APPDATA") {
        return Ok(PathBuf::from(dir).join("m2m").join(KEY_FILE_NAME));
    }
    if let Some(home) = non_empty("HOME") {
        return Ok(PathBuf::from(home)
            .join(".config")
            .join("m2m")
            .join(KEY_FILE_NAME));
    }
    bail!("no place for the identity key: set XDG_CONFIG_HOME or HOME, or pass --identity FILE")
}

/// The identity in `path`, made (and saved with mode 0600) if the file does not exist yet.
pub fn load_or_create(path: &Path) -> anyhow::Result<Identity> {
    match load(path) {
        Err(e) if is_not_found(&e) => {}
        other => return other,
    }
    let identity = Identity::generate(&mut rand::thread_rng());
    match save_new(path, &identity) {
        Ok(()) => {
            tracing::info!(path = %path.display(), id = identity.agent_id(), "created a new identity");
            Ok(identity)
        }
        // Another m2m process made it first: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => load(path),
        Err(e) => Err(anyhow!(e))
            .with_context(|| format!("could not create the identity key file {}", path.display())),
    }
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == ErrorKind::NotFound)
}

/// Reads a key file, refusing one that other users can read or that is not a key.
fn load(path: &Path) -> anyhow::Result<Identity> {
    let mut file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    check_private(path, &meta)?;
    if meta.len() > MAX_KEY_FILE_LEN {
        bail!(
            "{} is not an m2m identity key file (too large)",
            path.display()
        );
    }
    let mut text = String::new();
    file.read_to_string(&mut text)
        .with_context(|| format!("could not read the identity key file {}", path.display()))?;
    let secret: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            anyhow!(
                "{} is not an m2m identity key file (expected 64 hex characters)",
                path.display()
            )
        })?;
    Ok(Identity::from_secret_bytes(&secret))
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "refusing to use the identity key file {path}: other users can access it (mode {mode:o}); \
             it holds this agent's secret key. If only you ever had it, run `chmod 600 {path}`; \
             otherwise delete it to make a new identity",
            path = path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> anyhow::Result<()> {
    // Windows files inherit the ACL of the user's profile directory.
    Ok(())
}

/// Writes a new key file that only its owner can read; fails if it exists.
fn save_new(path: &Path, identity: &Identity) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let mut line = hex::encode(identity.secret_bytes());
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(KEY_FILE_NAME);
        let first = load_or_create(&path).unwrap();
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.agent_id(), again.agent_id());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("other users can access it"), "{e}");
        assert!(e.contains("644"), "{e}");
    }

    #[test]
    fn garbage_is_not_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE_NAME);
        save_new(&path, &Identity::from_secret_bytes(&[1; 32])).unwrap();
        std::fs::write(&path, "not a key\n").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("not an m2m identity key file"), "{e}");
    }
}
