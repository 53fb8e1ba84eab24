//! Writing files and folders so that a failure loses nothing: the result appears whole (by a
//! rename at the end) or not at all, and an existing file stays as it was until then.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where `path`'s content is written before the rename: hidden, beside it (same filesystem).
fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.sdweb-partial-{}", std::process::id()))
}

fn named(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Checks, before any slow work, that a file can be written at `path`: its folder exists and
/// takes new files, and `path` is no folder.
pub fn check_writable(path: &Path) -> Result<(), String> {
    if path.is_dir() {
        return Err(named(path, "is a folder; give a file name such as out.png"));
    }
    let probe = partial_path(path);
    std::fs::File::create(&probe).map_err(|e| named(path, format!("cannot be written ({e})")))?;
    std::fs::remove_file(&probe).map_err(|e| named(&probe, e))
}

/// Writes `bytes` to `path` through a temporary file renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let partial = partial_path(path);
    let written = std::fs::File::create(&partial)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&partial, path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        named(path, e)
    })
}

/// Fills a new folder at `output` through `fill(temporary folder)`, renamed to `output` when
/// it succeeds and removed when it fails. `output` must not exist (nothing is overwritten) and
/// must not be `input` or inside it (reading and writing one folder destroys it).
pub fn create_folder_atomically<E: From<String>>(
    input: &Path,
    output: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| named(p, e));
    let (input_abs, output_abs) = (absolute(input)?, absolute(output)?);
    let canonical_input = input_abs.canonicalize().unwrap_or(input_abs.clone());
    let resolved_output = match (output_abs.parent(), output_abs.file_name()) {
        (Some(parent), Some(name)) => parent
            .canonicalize()
            .unwrap_or(parent.to_path_buf())
            .join(name),
        _ => output_abs.clone(),
    };
    if resolved_output.starts_with(&canonical_input) {
        return Err(E::from(named(
            output,
            format!(
                "is {} or inside it; write the copy to another folder",
                input.display()
            ),
        )));
    }
    if output.exists() {
        return Err(E::from(named(
            output,
            "exists already; give a new folder (nothing is overwritten)",
        )));
    }
    let partial = partial_path(&output_abs);
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| named(&partial, e))?;
    match fill(&partial) {
        Ok(()) => std::fs::rename(&partial, output).map_err(|e| E::from(named(output, e))),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sdweb-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_leaves_no_fragment() {
        let dir = scratch("write");
        let file = dir.join("out.png");
        write_atomically(&file, b"old").unwrap();
        assert!(write_atomically(&dir.join("missing").join("x.png"), b"new").is_err());
        assert_eq!(std::fs::read(&file).unwrap(), b"old");
        write_atomically(&file, b"new").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "only out.png is left"
        );
        assert!(check_writable(&dir).unwrap_err().contains("is a folder"));
        assert!(
            check_writable(&dir.join("missing").join("x.png"))
                .unwrap_err()
                .contains("cannot be written")
        );
        assert!(check_writable(&file).is_ok());
    }

    #[test]
    fn folders_appear_whole_or_not_at_all() {
        let dir = scratch("folder");
        let input = dir.join("model");
        std::fs::create_dir_all(&input).unwrap();
        let fill_ok = |p: &Path| std::fs::write(p.join("a"), b"a").map_err(|e| e.to_string());
        for bad in [
            input.clone(),
            input.join("q8"),
            input.join(".").join("x").join(".."),
        ] {
            let e = create_folder_atomically(&input, &bad, fill_ok).unwrap_err();
            assert!(e.contains("or inside it"), "{e}");
        }
        let failing = |p: &Path| -> Result<(), String> {
            std::fs::write(p.join("half"), b"h").unwrap();
            Err("disk full".into())
        };
        let out = dir.join("copy");
        assert_eq!(
            create_folder_atomically(&input, &out, failing).unwrap_err(),
            "disk full"
        );
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no partial folder is left"
        );
        create_folder_atomically(&input, &out, fill_ok).unwrap();
        assert_eq!(std::fs::read(out.join("a")).unwrap(), b"a");
        assert!(
            create_folder_atomically(&input, &out, fill_ok)
                .unwrap_err()
                .contains("exists already")
        );
    }
}
