//! `tack secrets edit|show|reencrypt`: the only ways tack itself puts a
//! secret in clear on disk, and then only in a private temporary file
//! (a 0700 directory, on tmpfs when there is one) removed whatever happens.
//! The cryptography is in [`crate::secrets`].

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::cli::{SecretsArgs, SecretsCommand};
use crate::component::ComponentDef;
use crate::error::{ConfigError, Error, Result};
use crate::secrets::{self, Identities};

/// What a new `secrets/ENV.cfg.age` starts as in the editor.
const NEW_ENV_FILE: &str = "\
# Values for the [secrets] of each component, in this environment:
# [component:NAME]
# password = ...
";

pub fn run(args: &SecretsArgs) -> Result<()> {
    let root = args
        .dir
        .canonicalize()
        .map_err(|error| Error::io("open deployment directory", &args.dir, error))?;
    match &args.command {
        SecretsCommand::Edit { env, file } => edit(&root, &target(env, file.as_deref()), args),
        SecretsCommand::Show { env, file } => {
            let target = target(env, file.as_deref());
            let identities = Identities::find(args.identity.as_deref())?;
            let clear = secrets::decrypt(&root, &target, &identities)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&clear)
                .and_then(|()| out.flush())
                .map_err(|error| Error::io("write", "stdout", error))
        }
        SecretsCommand::Reencrypt { env } => {
            let files = secrets::encrypted_files(&root, env.as_deref())?;
            if files.is_empty() {
                return Err(Error::Usage(format!(
                    "no encrypted files to re-encrypt under `{}/`",
                    secrets::DIR
                )));
            }
            let recipients = secrets::recipients(&root)?;
            let identities = Identities::find(args.identity.as_deref())?;
            // Decrypt everything before writing anything: one file no
            // identity opens leaves them all as they were.
            let mut clear = Vec::new();
            for file in &files {
                clear.push(secrets::decrypt(&root, file, &identities)?);
            }
            for (file, clear) in files.iter().zip(clear) {
                let sealed = secrets::encrypt(&clear, &recipients)?;
                crate::atomic::write_atomically(&root.join(file), &sealed, 0o644, true)?;
                crate::outln!("re-encrypted {file}");
            }
            Ok(())
        }
    }
}

/// `secrets/ENV.cfg.age`, or `secrets/ENV/NAME.age` with `--file NAME`.
fn target(env: &str, file: Option<&str>) -> String {
    match file {
        Some(name) => secrets::secret_file(env, name),
        None => secrets::env_file(env),
    }
}

fn edit(root: &Path, target: &str, args: &SecretsArgs) -> Result<()> {
    // Known recipients first: an edit that cannot be saved is not begun.
    let recipients = secrets::recipients(root)?;
    let exists = root.join(target).exists();
    let before = if exists {
        let identities = Identities::find(args.identity.as_deref())?;
        secrets::decrypt(root, target, &identities)?
    } else if target.ends_with(".cfg.age") {
        NEW_ENV_FILE.as_bytes().to_vec()
    } else {
        Vec::new()
    };
    // Dropping `private` removes the directory and the clear copy in it,
    // on every return below.
    let private = private_dir()?;
    let name = Path::new(target)
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".age"))
        .unwrap_or("secret");
    let clear_path = private.path().join(name);
    std::fs::File::create(&clear_path)
        .and_then(|mut file| {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(&before)
        })
        .map_err(|error| Error::io("write", &clear_path, error))?;
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|editor| !editor.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    // `$EDITOR` may hold arguments (`code --wait`), as shells expand it.
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&clear_path)
        .status()
        .map_err(|error| Error::io("run the editor", &editor, error))?;
    if !status.success() {
        return Err(Error::Usage(format!(
            "the editor `{editor}` failed ({status}); `{target}` is unchanged"
        )));
    }
    let after =
        std::fs::read(&clear_path).map_err(|error| Error::io("read", &clear_path, error))?;
    drop(private);
    if exists && after == before {
        crate::outln!("{target}: unchanged");
        return Ok(());
    }
    if target.ends_with(".cfg.age") {
        check_env_file(root, target, &after).map_err(|error| {
            Error::Usage(format!(
                "{error}; `{target}` is unchanged, the edit is discarded"
            ))
        })?;
    }
    let sealed = secrets::encrypt(&after, &recipients)?;
    crate::atomic::write_atomically(&root.join(target), &sealed, 0o644, true)?;
    crate::outln!("{target}: encrypted to {} recipient(s)", recipients.len());
    Ok(())
}

/// Checks an edited `secrets/ENV.cfg.age` as a deploy would: every section
/// names a component, every key one of its `[secrets]`.
fn check_env_file(root: &Path, file: &str, clear: &[u8]) -> Result<(), ConfigError> {
    let doc = secrets::parse_env_file(file, clear)?;
    for section in &doc.sections {
        let name = section.name.trim_start_matches("component:");
        let cfg = format!("components/{name}/component.cfg");
        let text = std::fs::read_to_string(root.join(&cfg)).map_err(|_| {
            ConfigError::new(
                section.location(file),
                format!("there is no component `{name}` (`{cfg}`)"),
            )
        })?;
        let def = ComponentDef::parse(name, &cfg, &text)?;
        for entry in &section.entries {
            if !def.secrets.contains(&entry.key) {
                let known: Vec<&str> = def.secrets.iter().map(String::as_str).collect();
                return Err(ConfigError::new(
                    section.location(file).key(&entry.key, entry.line),
                    format!(
                        "component `{name}` has no secret `{}` (its [secrets]: {})",
                        entry.key,
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A new 0700 directory, on tmpfs (`/dev/shm`) when there is one, so the
/// clear copy never reaches a disk.
fn private_dir() -> Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    let builder = || {
        let mut builder = tempfile::Builder::new();
        builder.prefix("tack-secret-");
        builder.permissions(std::fs::Permissions::from_mode(0o700));
        builder
    };
    if shm.is_dir() {
        if let Ok(dir) = builder().tempdir_in(shm) {
            return Ok(dir);
        }
    }
    builder()
        .tempdir()
        .map_err(|error| Error::io("create a private directory in", std::env::temp_dir(), error))
}
