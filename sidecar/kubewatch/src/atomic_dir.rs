//! Writing a set of files into a directory atomically, the way the kubelet updates a
//! mounted ConfigMap or Secret: the files go into a fresh hidden directory, a `..data`
//! symlink is swapped to it with one rename, and each visible name is a symlink through
//! `..data`. A reader never sees a mix of old and new files.

use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Replaces the contents of `dir` with `files` (name, bytes) in one atomic step.
///
/// Files are written with mode 0600 (they may hold secrets). Earlier versions are removed
/// after the swap.
pub fn write_atomically(dir: &Path, files: &[(&str, &[u8])]) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let version = format!("..{stamp}");
    let version_dir = dir.join(&version);
    std::fs::create_dir(&version_dir)?;
    for (name, bytes) in files {
        check_name(name)?;
        write_private(&version_dir.join(name), bytes)?;
    }

    let old = std::fs::read_link(dir.join(DATA)).ok();
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&version, &tmp)?;
    std::fs::rename(&tmp, dir.join(DATA))?;

    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::read_link(&link).ok().as_deref() != Some(Path::new(DATA).join(name).as_path()) {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    if let Some(old) = old
        && old != Path::new(&version)
    {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name.starts_with('.') || name.contains('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad file name {name:?}"),
        ));
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_versions_through_the_data_link() {
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), &[("config.json", b"one"), ("secrets.json", b"s1")]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("config.json")).unwrap(), b"one");
        let first = std::fs::read_link(dir.path().join(DATA)).unwrap();

        write_atomically(dir.path(), &[("config.json", b"two"), ("secrets.json", b"s2")]).unwrap();
        assert_eq!(std::fs::read(dir.path().join("config.json")).unwrap(), b"two");
        assert_eq!(std::fs::read(dir.path().join("secrets.json")).unwrap(), b"s2");
        assert_ne!(std::fs::read_link(dir.path().join(DATA)).unwrap(), first);
        assert!(!dir.path().join(first).exists(), "the old version is removed");
        assert_eq!(
            std::fs::read_link(dir.path().join("config.json")).unwrap(),
            Path::new("..data/config.json")
        );
    }

    #[test]
    fn files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        write_atomically(dir.path(), &[("secrets.json", b"s")]).unwrap();
        let mode = std::fs::metadata(dir.path().join("secrets.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn refuses_names_that_escape() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_atomically(dir.path(), &[("../x", b"s")]).is_err());
        assert!(write_atomically(dir.path(), &[("..data", b"s")]).is_err());
    }
}
