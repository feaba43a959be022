//! Data sets shipped as one `.tar.gz` whose published MD5 is that of the archive itself
//! (CIFAR-10's binary version): checking the archive, and reading members out of it without
//! unpacking it to disk.

use std::fs::File;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;

use super::error::DataError;
use super::files;

/// Checks the MD5 of the file at `path`.
pub fn verify(path: &Path, md5: &str) -> Result<(), DataError> {
    let actual = files::md5_file(path).map_err(|e| DataError::io("read", path, e))?;
    if actual == md5 {
        Ok(())
    } else {
        Err(DataError::ArchiveChecksum {
            path: path.to_path_buf(),
            expected: md5.to_string(),
            actual,
        })
    }
}

/// The contents of the members `names` (paths inside the archive), in that order.
pub fn read_members(path: &Path, names: &[String]) -> Result<Vec<Vec<u8>>, DataError> {
    let bad = |reason: String| DataError::BadArchive {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| DataError::io("read", path, e))?;
    let mut archive = tar::Archive::new(GzDecoder::new(file));
    let mut found: Vec<Option<Vec<u8>>> = vec![None; names.len()];
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let member: PathBuf = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let Some(i) = names.iter().position(|n| Path::new(n) == member) else {
            continue;
        };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        std::io::Read::read_to_end(&mut entry, &mut bytes)
            .map_err(|e| bad(format!("{}: {e}", member.display())))?;
        found[i] = Some(bytes);
    }
    names
        .iter()
        .zip(found)
        .map(|(name, bytes)| bytes.ok_or_else(|| bad(format!("it has no member {name}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn members_by_path_and_checksums() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar.gz");
        let bytes = tar_gz(&[("d/x.bin", b"xx"), ("d/y.bin", b"yyy"), ("z", b"")]);
        std::fs::write(&path, &bytes).unwrap();
        let got = read_members(&path, &["d/y.bin".into(), "d/x.bin".into()]).unwrap();
        assert_eq!(got, [b"yyy".to_vec(), b"xx".to_vec()]);
        let err = read_members(&path, &["x.bin".into()]).unwrap_err();
        assert!(
            err.to_string().ends_with("(it has no member x.bin)"),
            "{err}"
        );

        verify(&path, &files::md5_hex(&bytes)).unwrap();
        let err = verify(&path, "0123").unwrap_err().to_string();
        assert!(err.contains("is corrupt: its MD5 is"), "{err}");
        assert!(err.contains("expected 0123"), "{err}");

        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_members(&path, &["d/y.bin".into()]).unwrap_err();
        assert!(matches!(err, DataError::BadArchive { .. }), "{err}");
    }
}
