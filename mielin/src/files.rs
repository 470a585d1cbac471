//! Reading files within a bound (modules as binary or text) and writing them atomically; the
//! data directory's mode.

use std::io::{Read, Write};
use std::path::Path;

/// Reads at most `max` bytes of `path`; a longer file is an error that names the bound (its
/// size is checked first, and the read stops at the bound if it grew since).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len > max {
        return Err(format!(
            "{}: {len} bytes, over the {max}-byte limit for this kind of file",
            path.display()
        ));
    }
    let mut out = Vec::with_capacity(len as usize);
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if out.len() as u64 > max {
        return Err(format!(
            "{}: grew over the {max}-byte limit while read",
            path.display()
        ));
    }
    Ok(out)
}

/// Reads a WebAssembly module given as a binary (`\0asm`) or as text (`.wat`), within four times
/// the node's module limit (text is larger than the binary it gives); the error is one line.
pub fn read_module(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = read_bounded(path, 4 * mielin::control::MAX_MODULE as u64)?;
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(|m| m.into_owned())
        .map_err(|e| {
            // wat's message spans lines (the source line and a caret): its first line and where.
            let text = e.to_string();
            let mut lines = text.lines();
            let what = lines.next().unwrap_or_default();
            let at = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("--> "))
                .and_then(|l| {
                    let (l, column) = l.rsplit_once(':')?;
                    Some((l.rsplit_once(':')?.1, column))
                })
                .map(|(line, column)| format!(" at line {line}, column {column}"))
                .unwrap_or_default();
            format!(
                "{}: neither a WebAssembly binary nor valid text: {what}{at}",
                path.display()
            )
        })
}

/// Writes `bytes` to `path` through a temporary file, `fsync` and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Creates the data directory with mode 0700, or tightens an existing one to 0700 (returns
/// the old mode when it was looser).
pub fn private_dir(dir: &Path) -> Result<Option<u32>, String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |e: std::io::Error| format!("data directory {}: {e}", dir.display());
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(err)?;
        return Ok(None);
    }
    let mode = std::fs::metadata(dir).map_err(err)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        return Ok(Some(mode));
    }
    Ok(None)
}
