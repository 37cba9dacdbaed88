//! Per-environment secrets, encrypted with age.
//!
//! A deployment keeps what must not be in its repository in clear under
//! `secrets/`: `recipients.txt` (the public keys that may read),
//! `ENV.cfg.age` (an INI file of `[component:NAME]` sections overriding
//! the components' `[secrets]`) and `ENV/NAME.age` (whole files, used as
//! `source = secret:NAME`). The files are plain age, so the age CLI reads
//! what tack writes and tack reads what the age CLI writes.
//!
//! This module owns the cryptography and the identities: [`Unlocked::open`]
//! decrypts every secret of an environment before configuring starts, so a
//! missing identity or a tampered file stops tack before anything is
//! written, and the configure queries only ever see clear text handed to the
//! database ([`crate::db::Database::with_secrets`]), never ciphertext.
//! [`mask_key`] is the per-deployment key that makes the hashes of secrets
//! recorded in `.tack/` useless for guessing a short password.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

/// The directory of a deployment that holds its encrypted secrets.
pub const DIR: &str = "secrets";
/// The public keys every secret is encrypted to, one a line.
pub const RECIPIENTS: &str = "secrets/recipients.txt";
/// The environment variable naming a file of age identities (or holding
/// the identities themselves, for CI systems that hand secrets over in the
/// environment).
pub const IDENTITY_VAR: &str = "TACK_AGE_IDENTITY";
/// The key of the keyed hashes of secrets, below the deployment root.
const MASK_KEY_FILE: &str = ".tack/secret-hash.key";

/// `secrets/ENV.cfg.age`: the values of `[secrets]` for one environment.
pub fn env_file(environment: &str) -> String {
    format!("{DIR}/{environment}.cfg.age")
}

/// `secrets/ENV/NAME.age`: a whole file used as `source = secret:NAME`.
pub fn secret_file(environment: &str, name: &str) -> String {
    format!("{DIR}/{environment}/{name}.age")
}

/// Whether `path` (relative to the deployment root) is an encrypted file,
/// which configuring must only ever see decrypted.
pub fn is_encrypted(path: &str) -> bool {
    path.starts_with("secrets/") && path.ends_with(".age")
}

fn secret_error(file: &str, message: impl Into<String>) -> Error {
    Error::Secret {
        file: file.to_string(),
        message: message.into(),
    }
}

/// The identities that may decrypt, and a description of every place that
/// was looked at, for the message when none of them fits.
pub struct Identities {
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    tried: Vec<String>,
}

impl Identities {
    /// `--identity FILE`, then `TACK_AGE_IDENTITY`; when neither is given,
    /// the ssh keys a person already has: `~/.ssh/id_ed25519`, `~/.ssh/id_rsa`.
    pub fn find(explicit: Option<&Path>) -> Result<Identities> {
        let mut found = Identities {
            identities: Vec::new(),
            tried: Vec::new(),
        };
        if let Some(path) = explicit {
            found.add_file(path, "--identity", true)?;
        }
        if let Some(value) = std::env::var_os(IDENTITY_VAR).filter(|v| !v.is_empty()) {
            let text = value.to_string_lossy();
            // A CI system hands a secret over as the variable's value: the
            // key itself, which must never be echoed back as a file name.
            if text.contains("AGE-SECRET-KEY-")
                || text.contains("PRIVATE KEY")
                || text.contains('\n')
            {
                found.add_text(&text, &format!("{IDENTITY_VAR} (the identity itself)"))?;
            } else {
                found.add_file(Path::new(&value), IDENTITY_VAR, true)?;
            }
        }
        if explicit.is_none() && std::env::var_os(IDENTITY_VAR).is_none_or(|v| v.is_empty()) {
            let home = std::env::var_os("HOME").map(PathBuf::from);
            for name in ["id_ed25519", "id_rsa"] {
                match &home {
                    Some(home) => {
                        found.add_file(&home.join(".ssh").join(name), "ssh key", false)?
                    }
                    None => found.tried.push(format!("~/.ssh/{name} (HOME is not set)")),
                }
            }
        }
        Ok(found)
    }

    fn add_file(&mut self, path: &Path, what: &str, required: bool) -> Result<()> {
        let shown = format!("{what} `{}`", path.display());
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
                self.tried.push(format!("{shown} (missing)"));
                return Ok(());
            }
            Err(error) => {
                return Err(Error::Usage(format!(
                    "cannot read identity file {shown}: {error}"
                )))
            }
        };
        self.add_text(&text, &shown)
    }

    /// Age identities (`AGE-SECRET-KEY-1...` lines) or one ssh private key.
    fn add_text(&mut self, text: &str, shown: &str) -> Result<()> {
        if let Ok(file) = age::IdentityFile::from_buffer(text.as_bytes()) {
            if let Ok(identities) = file.into_identities() {
                if !identities.is_empty() {
                    self.identities.extend(identities);
                    self.tried.push(shown.to_string());
                    return Ok(());
                }
            }
        }
        match age::ssh::Identity::from_buffer(text.as_bytes(), None) {
            Ok(identity @ age::ssh::Identity::Unencrypted(_)) => {
                self.identities.push(Box::new(identity));
                self.tried.push(shown.to_string());
            }
            Ok(age::ssh::Identity::Encrypted(_)) => self.tried.push(format!(
                "{shown} (passphrase-protected: tack cannot ask for the passphrase; \
                 use an age identity or an unprotected key)"
            )),
            Ok(age::ssh::Identity::Unsupported(_)) => self
                .tried
                .push(format!("{shown} (an unsupported ssh key type)")),
            Err(_) => {
                return Err(Error::Usage(format!(
                    "{shown} holds neither age identities nor an ssh private key"
                )))
            }
        }
        Ok(())
    }

    fn tried(&self) -> String {
        if self.tried.is_empty() {
            "none".to_string()
        } else {
            self.tried.join(", ")
        }
    }
}

/// The clear text of the age file `file` (relative to `root`), or an error
/// naming the file and the identities tried.
pub fn decrypt(root: &Path, file: &str, identities: &Identities) -> Result<Vec<u8>> {
    let path = root.join(file);
    let bytes = std::fs::read(&path).map_err(|error| Error::io("read", &path, error))?;
    let damaged = |why: &str| {
        secret_error(
            file,
            format!("cannot decrypt: {why}; the file is damaged or was changed by hand"),
        )
    };
    // `age -a` writes ASCII armor, which some teams commit for readable
    // diffs; binary files pass through the armor reader unchanged.
    let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(&bytes[..]))
        .map_err(|error| damaged(&format!("not an age file ({error})")))?;
    let mut reader = decryptor
        .decrypt(
            identities
                .identities
                .iter()
                .map(|identity| identity.as_ref() as &dyn age::Identity),
        )
        .map_err(|error| match error {
            age::DecryptError::NoMatchingKeys => secret_error(
                file,
                format!(
                    "cannot decrypt: no identity fits (tried: {}); name one with \
                     --identity FILE or {IDENTITY_VAR}",
                    identities.tried()
                ),
            ),
            other => damaged(&other.to_string()),
        })?;
    let mut clear = Vec::new();
    reader
        .read_to_end(&mut clear)
        .map_err(|error| damaged(&error.to_string()))?;
    Ok(clear)
}

/// The public keys of `secrets/recipients.txt`: age X25519 (`age1...`) or
/// ssh (`ssh-ed25519 ...`, `ssh-rsa ...`); `#` starts a comment line.
pub fn recipients(root: &Path) -> Result<Vec<Box<dyn age::Recipient + Send>>> {
    let path = root.join(RECIPIENTS);
    let text = std::fs::read_to_string(&path).map_err(|error| {
        secret_error(
            RECIPIENTS,
            format!(
                "cannot read the recipients to encrypt to ({error}); add one public key a line"
            ),
        )
    })?;
    let mut found: Vec<Box<dyn age::Recipient + Send>> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |message: String| secret_error(&format!("{RECIPIENTS}:{}", index + 1), message);
        if line.starts_with("age1") {
            let key = line
                .parse::<age::x25519::Recipient>()
                .map_err(|error| at(format!("not an age public key: {error}")))?;
            found.push(Box::new(key));
        } else if line.starts_with("ssh-") {
            let key = line
                .parse::<age::ssh::Recipient>()
                .map_err(|_| at("not an ssh-ed25519 or ssh-rsa public key".to_string()))?;
            found.push(Box::new(key));
        } else {
            return Err(at(
                "expected an age public key (age1...) or an ssh public key (ssh-ed25519 ..., ssh-rsa ...)"
                    .to_string(),
            ));
        }
    }
    if found.is_empty() {
        return Err(secret_error(
            RECIPIENTS,
            "names no recipient; add one public key a line",
        ));
    }
    Ok(found)
}

/// `clear` encrypted to every recipient, in age's binary format.
pub fn encrypt(clear: &[u8], recipients: &[Box<dyn age::Recipient + Send>]) -> Result<Vec<u8>> {
    let failed = |error: String| secret_error(RECIPIENTS, format!("cannot encrypt: {error}"));
    let encryptor = age::Encryptor::with_recipients(
        recipients
            .iter()
            .map(|recipient| recipient.as_ref() as &dyn age::Recipient),
    )
    .map_err(|error| failed(error.to_string()))?;
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|error| failed(error.to_string()))?;
    writer
        .write_all(clear)
        .and_then(|()| writer.finish().map(drop))
        .map_err(|error| failed(error.to_string()))?;
    Ok(out)
}

/// Every encrypted file of one environment, decrypted: what configuring
/// reads in place of the files on disk.
#[derive(Clone, Default)]
pub struct Unlocked {
    clear: BTreeMap<String, Arc<[u8]>>,
}

/// Names the files only: a clear text must never reach a log or a panic.
impl std::fmt::Debug for Unlocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.clear.keys()).finish()
    }
}

impl Unlocked {
    /// Decrypts `secrets/ENV.cfg.age` and every `secrets/ENV/*.age`.
    /// Identities are looked for only when there is something to decrypt.
    pub fn open(root: &Path, environment: &str, identity: Option<&Path>) -> Result<Unlocked> {
        let files = encrypted_files(root, Some(environment))?;
        let mut unlocked = Unlocked::default();
        if files.is_empty() {
            return Ok(unlocked);
        }
        let identities = Identities::find(identity)?;
        for file in files {
            let clear = decrypt(root, &file, &identities)?;
            unlocked.clear.insert(file, Arc::from(clear));
        }
        Ok(unlocked)
    }

    /// The clear text of the encrypted file at `path`, if it was unlocked.
    pub fn get(&self, path: &str) -> Option<Arc<[u8]>> {
        self.clear.get(path).cloned()
    }
}

/// The `[component:NAME]` section of a decrypted `secrets/ENV.cfg.age`
/// (`file`) as values with their place, for `attributes` to override the
/// component's `[secrets]` with.
pub fn component_values(
    file: &str,
    clear: &[u8],
    component: &str,
) -> std::result::Result<BTreeMap<String, crate::provenance::Sourced>, crate::error::ConfigError> {
    let doc = parse_env_file(file, clear)?;
    let wanted = format!("component:{component}");
    Ok(doc
        .sections
        .iter()
        .find(|section| section.name == wanted)
        .map(|section| section.sourced(file))
        .unwrap_or_default())
}

/// A decrypted `secrets/ENV.cfg.age`: INI with only `[component:NAME]`
/// sections.
pub fn parse_env_file(
    file: &str,
    clear: &[u8],
) -> std::result::Result<crate::ini_file::IniDocument, crate::error::ConfigError> {
    use crate::error::{ConfigError, Location};
    let text = std::str::from_utf8(clear)
        .map_err(|_| ConfigError::new(Location::file(file), "is not UTF-8 text"))?;
    let doc = crate::ini_file::IniDocument::parse(file, text)?;
    for section in &doc.sections {
        if !section.name.starts_with("component:") {
            return Err(ConfigError::new(
                section.location(file),
                format!(
                    "unknown section `[{}]`; expected [component:NAME]",
                    section.name
                ),
            ));
        }
    }
    Ok(doc)
}

/// The encrypted files of `environment` (of every environment when
/// `None`), relative to the root, sorted.
pub fn encrypted_files(root: &Path, environment: Option<&str>) -> Result<Vec<String>> {
    let dir = root.join(DIR);
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(error) => return Err(Error::io("read directory", &dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|error| Error::io("read directory", &dir, error))?;
        let name = entry.file_name().to_string_lossy().to_string();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let Some(env) = name.strip_suffix(".cfg.age") {
            if environment.is_none_or(|wanted| wanted == env) {
                files.push(env_file(env));
            }
        } else if is_dir && environment.is_none_or(|wanted| wanted == name) {
            let sub = entry.path();
            let inner =
                std::fs::read_dir(&sub).map_err(|e| Error::io("read directory", &sub, e))?;
            for file in inner.flatten() {
                let file = file.file_name().to_string_lossy().to_string();
                if let Some(secret) = file.strip_suffix(".age") {
                    files.push(secret_file(&name, secret));
                }
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The key of the keyed hashes of secrets recorded in `.tack/`: read from
/// `.tack/secret-hash.key` (mode 0600), else a new random one that
/// [`save_mask_key`] keeps once the deploy writes anything. Without it,
/// a recorded hash of a short password could be reversed by guessing.
pub fn mask_key(root: &Path) -> Result<[u8; 32]> {
    let path = root.join(MASK_KEY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut key = [0u8; 32];
            key.copy_from_slice(&bytes);
            Ok(key)
        }
        Ok(_) => Err(Error::Usage(format!(
            "`{MASK_KEY_FILE}` is damaged (not 32 bytes); remove it and deploy again"
        ))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut random| random.read_exact(&mut key))
                .map_err(|error| Error::io("read", "/dev/urandom", error))?;
            Ok(key)
        }
        Err(error) => Err(Error::io("read", &path, error)),
    }
}

/// Keeps `key` in `.tack/secret-hash.key` (mode 0600) unless it is there.
pub fn save_mask_key(root: &Path, key: &[u8; 32]) -> Result<()> {
    let path = root.join(MASK_KEY_FILE);
    if path.exists() {
        return Ok(());
    }
    crate::atomic::write_atomically(&path, key, 0o600, true)
}
