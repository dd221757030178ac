//! Finding and checking the save path: a writable directory, private when it
//! is the default one.

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use sessionkit_core::{Error, ErrorKind};

use crate::disk::{STRIPES_DIR, create_new, mtime_ms, random_suffix, set_mtime};
use crate::fail::STORE;

/// A timestamp with a millisecond part, to probe the mtime precision.
const PROBE_MS: u64 = 1_700_000_000_123;

/// The save path [`FileStore::from_default`](crate::FileStore::from_default)
/// uses, from the environment.
pub(crate) fn default_path() -> Result<PathBuf, Error> {
    default_path_from(
        std::env::var_os("XDG_RUNTIME_DIR"),
        std::env::temp_dir(),
        rustix::process::geteuid().as_raw(),
    )
}

/// The default save path, given `$XDG_RUNTIME_DIR`, the temporary directory
/// and the effective user id.
pub(crate) fn default_path_from(
    xdg_runtime_dir: Option<OsString>,
    temp_dir: PathBuf,
    uid: u32,
) -> Result<PathBuf, Error> {
    if let Some(runtime) = xdg_runtime_dir.map(PathBuf::from) {
        // The XDG Base Directory spec: a relative value must be ignored; the
        // directory is the user's own, mode 0700.
        if runtime.is_absolute() && runtime.is_dir() {
            return Ok(runtime.join("sessionkit"));
        }
    }
    if temp_dir.is_absolute() {
        return Ok(temp_dir.join(format!("sessionkit-{uid}")));
    }
    Err(Error::new(ErrorKind::SavePathUnavailable)
        .with_store(STORE)
        .with_detail(format!(
            "no save path given, $XDG_RUNTIME_DIR is not an absolute path to a directory, and the temporary directory {:?} is not absolute",
            temp_dir.display().to_string()
        )))
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidSavePath)
        .with_store(STORE)
        .with_detail(format!("{}: {why}", path.display()))
}

fn invalid_io(path: &Path, why: &str, err: io::Error) -> Error {
    invalid(path, format_args!("{why}: {err}")).with_source(err)
}

/// A checked save path.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// The directory, open, for `fsync`.
    pub(crate) handle: File,
    /// Whether the file system keeps mtimes to the millisecond.
    pub(crate) mtime_exact: bool,
}

/// Checks (and if allowed creates) the save path.
///
/// - It must be a directory (a symbolic link to one is fine for a path the
///   caller gave) in which this process can create files: checked by
///   creating one, which is the only test that holds for ACLs, read-only
///   mounts and root alike.
/// - With `private` (the default path, under a shared temporary directory),
///   it must moreover be a real directory owned by this user with no access
///   for group and others, so that another local user cannot have planted
///   it.
pub(crate) fn prepare(path: &Path, private: bool, create: bool) -> Result<Prepared, Error> {
    if path.as_os_str().is_empty() {
        return Err(invalid(path, "the save path is empty"));
    }
    match fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(_) => return Err(invalid(path, "not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| invalid_io(path, "could not create the directory", e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(invalid_io(path, "the directory does not exist", e));
        }
        Err(e) => return Err(invalid_io(path, "cannot inspect it", e)),
    }
    if private {
        check_private(path)?;
    } else if let Ok(metadata) = fs::metadata(path)
        && metadata.permissions().mode() & 0o002 != 0
    {
        tracing::warn!(
            dir = %path.display(),
            "the session save path is writable by every user; give the app a private directory"
        );
    }
    match DirBuilder::new().mode(0o700).create(path.join(STRIPES_DIR)) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(invalid_io(path, "not writable", e)),
    }
    let mtime_exact = probe(path)?;
    let handle = File::open(path).map_err(|e| invalid_io(path, "cannot open it", e))?;
    Ok(Prepared {
        handle,
        mtime_exact,
    })
}

fn check_private(path: &Path) -> Result<(), Error> {
    let metadata =
        fs::symlink_metadata(path).map_err(|e| invalid_io(path, "cannot inspect it", e))?;
    if !metadata.is_dir() {
        return Err(invalid(
            path,
            "the default save path is a symbolic link, not a directory",
        ));
    }
    let uid = rustix::process::geteuid().as_raw();
    if metadata.uid() != uid {
        return Err(invalid(
            path,
            format_args!(
                "the default save path belongs to uid {}, not to this process's uid {uid}",
                metadata.uid()
            ),
        ));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(invalid(
            path,
            format_args!(
                "the default save path has mode {mode:o}; it must grant nothing to group and others (0700)"
            ),
        ));
    }
    Ok(())
}

/// Creates, stamps and removes a file: proves the directory writable and
/// tells whether mtimes keep milliseconds.
fn probe(path: &Path) -> Result<bool, Error> {
    let probe = path.join(format!(".probe{}", random_suffix()));
    let result = (|| {
        let mut file = create_new(&probe)?;
        file.write_all(b"sessionkit")?;
        let exact =
            set_mtime(&file, PROBE_MS).is_ok() && mtime_ms(&fs::metadata(&probe)?) == PROBE_MS;
        Ok(exact)
    })();
    let _ = fs::remove_file(&probe);
    result.map_err(|e| invalid_io(path, "not writable", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_runtime_dir_comes_first_when_it_is_an_absolute_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = default_path_from(Some(dir.path().into()), PathBuf::from("/tmp"), 1000).unwrap();
        assert_eq!(path, dir.path().join("sessionkit"));
    }

    #[test]
    fn temp_dir_with_the_uid_is_the_fallback() {
        for xdg in [
            None,
            Some("relative/run".into()),
            Some("/no/such/dir/here".into()),
        ] {
            let path = default_path_from(xdg, PathBuf::from("/var/tmp"), 1000).unwrap();
            assert_eq!(path, PathBuf::from("/var/tmp/sessionkit-1000"));
        }
    }

    #[test]
    fn no_usable_directory_is_save_path_unavailable() {
        let err = default_path_from(None, PathBuf::from("tmp"), 1000).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SavePathUnavailable);
        assert!(err.to_string().contains("\"tmp\""), "{err}");
    }

    #[test]
    fn a_file_is_not_a_save_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        fs::write(&file, b"x").unwrap();
        let err = prepare(&file, false, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSavePath);
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("not a directory"), "{err}");

        let below = file.join("sub");
        let err = prepare(&below, false, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSavePath);
        assert!(
            err.to_string().contains(&below.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn missing_directory_is_created_private_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b");
        let err = prepare(&path, false, false).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSavePath);
        assert!(err.to_string().contains("does not exist"), "{err}");

        prepare(&path, false, true).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(path.join(STRIPES_DIR).is_dir());
        // The probe leaves nothing behind.
        let names: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STRIPES_DIR]);
    }

    #[test]
    fn the_default_path_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        DirBuilder::new().mode(0o755).create(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        let err = prepare(&open, true, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSavePath);
        assert!(err.to_string().contains("mode 755"), "{err}");
        // The same directory given explicitly is the operator's choice.
        prepare(&open, false, true).unwrap();

        let link = dir.path().join("link");
        let private = dir.path().join("private");
        DirBuilder::new().mode(0o700).create(&private).unwrap();
        std::os::unix::fs::symlink(&private, &link).unwrap();
        let err = prepare(&link, true, true).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        prepare(&private, true, true).unwrap();
    }

    #[test]
    fn a_read_only_directory_is_not_writable() {
        if rustix::process::geteuid().is_root() {
            // Permission bits do not stop root; nothing to test.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o500)).unwrap();
        let err = prepare(&ro, false, true).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSavePath);
        assert!(err.to_string().contains("not writable"), "{err}");
    }
}
