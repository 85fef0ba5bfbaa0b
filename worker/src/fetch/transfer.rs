//! Copying a mounted file, hashing, and the hash check. The HTTP download
//! is in `download`. Both write `PART` (the destination plus `.part`); the
//! caller verifies the hash and renames, so a reader never sees a
//! half-written model.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Read size for local copies and for hashing a partial file.
const CHUNK: usize = 1 << 20;

/// A finished transfer.
#[derive(Debug)]
pub struct Transferred {
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// Its size.
    pub bytes: u64,
}

/// Copies `src` to `part`, hashing it.
pub fn copy(src: &Path, part: &Path) -> Result<Transferred> {
    let mut input = File::open(src).with_context(|| {
        format!(
            "cannot open {}: is the claim or host path mounted, and the file there?",
            src.display()
        )
    })?;
    let mut out =
        File::create(part).with_context(|| format!("cannot create {}", part.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", src.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .with_context(|| format!("cannot write {}", part.display()))?;
        bytes += n as u64;
    }
    out.sync_all()?;
    Ok(Transferred {
        sha256: hex(&hasher.finalize()),
        bytes,
    })
}

/// Feeds what `part` holds to `hasher`; returns its length (0 when absent).
pub fn hash_existing(part: &Path, hasher: &mut Sha256) -> Result<u64> {
    let mut f = match File::open(part) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", part.display())),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
    f.seek(SeekFrom::Start(0))?;
    Ok(n_total)
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Fails unless `got` equals the expected hash `want` (any case).
pub fn verify(want: Option<&str>, got: &str, uri: &str) -> Result<()> {
    match want {
        Some(w) if !w.eq_ignore_ascii_case(got) => bail!(
            "sha256 mismatch for {uri}: spec.model.sha256 is {w}, the file's is {got}; the file changed or the hash is wrong"
        ),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_verify() {
        // SHA-256 of the empty input.
        assert_eq!(
            hex(&Sha256::new().finalize()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(verify(Some("AB"), "ab", "u").is_ok());
        assert!(verify(None, "ab", "u").is_ok());
        let e = verify(Some("cd"), "ab", "u")
            .expect_err("mismatch")
            .to_string();
        assert!(e.contains("sha256 mismatch"), "{e}");
    }
}
