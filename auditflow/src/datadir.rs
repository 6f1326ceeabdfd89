//! Embedded mode's data directory: the SQLite store, the demo agent's spool, and the secrets
//! made at first start (the admin token, agents' MQTT passwords), private to this user.

use std::path::{Path, PathBuf};

use aggregator::http::auth::{Role, Tokens, generate_token};
use anyhow::Context;

/// Files under the data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    /// The directory.
    pub root: PathBuf,
}

impl DataDir {
    /// Creates the directory if needed, private to this user from its creation (mode 0700,
    /// not chmodded afterwards, so there is no moment in which others may open it).
    pub fn open(root: &str) -> anyhow::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let root = PathBuf::from(root);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .with_context(|| format!("create the data directory {}", root.display()))?;
        Ok(Self { root })
    }

    /// The SQLite URL of the alert store.
    pub fn database_url(&self) -> String {
        format!("sqlite:{}", self.database().display())
    }

    /// The alert store's file.
    pub fn database(&self) -> PathBuf {
        self.root.join("auditflow.db")
    }

    /// Takes the data directory for this process (an exclusive lock on `lock`, released when
    /// the returned file is dropped or the process ends): two AuditFlows on one directory, or a
    /// restore under a running one, would corrupt it.
    pub fn lock(&self) -> anyhow::Result<std::fs::File> {
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "AuditFlow is running with the data directory {} (it holds {}): stop it first",
                self.root.display(),
                path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(anyhow::Error::new(e).context(format!("lock {}", path.display())))
            }
        }
    }

    /// The snapshot of the in-memory detection state (`MemoryState::save`).
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    /// The local agent's spool.
    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// Reads a secret kept in the data directory, creating it on first use. Returns the
    /// secret and whether it was created now (so that it is shown once, at its creation).
    pub fn secret(&self, name: &str) -> anyhow::Result<(String, bool)> {
        let path = self.root.join(name);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok((s.trim().to_owned(), false)),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        }
        let token = generate_token().context("read random bytes for a token")?;
        write_private(&path, &format!("{token}\n"))?;
        Ok((token, true))
    }

    /// `agents.credentials`: `node:password` lines the MQTT listener accepts. The local
    /// agent's line is added on first start; add lines for outside agents.
    pub fn credentials(
        &self,
        node: &str,
    ) -> anyhow::Result<(broker::credentials::Credentials, String)> {
        let path = self.root.join("agents.credentials");
        let mut text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                "# node:password, one per line; agents log in with their node name.\n".into()
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        let existing = text.lines().find_map(|l| {
            l.split_once(':').filter(|(n, _)| *n == node).map(|(_, p)| p.trim().to_owned())
        });
        let password = match existing {
            Some(p) => p,
            None => {
                let p = generate_token().context("read random bytes for a password")?;
                text.push_str(&format!("{node}:{p}\n"));
                write_private(&path, &text)?;
                p
            }
        };
        let creds = broker::credentials::Credentials::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.join("; ")))?;
        Ok((creds, password))
    }
}

/// Writes a file holding secrets: created 0600 (never chmodded after writing, which would
/// leave it readable for a moment), then renamed into place.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    // A stale temporary file from a crash may have any mode: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

/// Where embedded mode's API tokens come from.
#[derive(Debug)]
pub enum AdminToken {
    /// Configured tokens (`AUDITFLOW_API_TOKENS`, `[api] tokens`).
    Configured,
    /// An admin token created now, in the data directory: printed once, now.
    Created(String),
    /// The admin token created at an earlier start: never printed again (logs and terminal
    /// scrollback outlive it); its file is named instead.
    Kept,
}

/// The API tokens of embedded mode: the configured ones, or else an admin token kept in the
/// data directory.
pub fn tokens(configured: Tokens, dir: &DataDir) -> anyhow::Result<(Tokens, AdminToken)> {
    if !configured.is_empty() {
        return Ok((configured, AdminToken::Configured));
    }
    let (token, created) = dir.secret("admin.token")?;
    let mut t = Tokens::default();
    t.add("admin", &token, Role::Admin);
    Ok((t, if created { AdminToken::Created(token) } else { AdminToken::Kept }))
}
