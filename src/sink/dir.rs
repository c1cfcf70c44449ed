//! The `dir` sink: `<path>/<camera>.jpg`, always the newest still, plus an
//! optional history `<path>/<camera>/<UTC timestamp>.jpg` trimmed to a count.
//!
//! `<camera>.jpg` is replaced atomically (write a temporary file in the same
//! folder, then rename over the old one), so a web server or a script reading
//! it never sees half a JPEG. File work runs on a blocking thread.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Sink, SinkError};
use crate::config::DirSinkConfig;
use crate::Snapshot;

/// Writes stills into a folder.
pub struct DirSink {
    path: PathBuf,
    history: usize,
}

impl DirSink {
    /// A sink writing into `config.path` (created when missing).
    pub fn new(config: &DirSinkConfig) -> DirSink {
        DirSink {
            path: config.path.clone(),
            history: config.history,
        }
    }
}

impl Sink for DirSink {
    fn name(&self) -> &str {
        "dir"
    }

    fn write<'a>(&'a self, batch: &'a [Snapshot]) -> BoxFuture<'a, Vec<(Arc<str>, SinkError)>> {
        let dir = self.path.clone();
        let history = self.history;
        let batch = batch.to_vec();
        Box::pin(async move {
            let cameras: Vec<Arc<str>> = batch.iter().map(|s| s.camera.clone()).collect();
            tokio::task::spawn_blocking(move || {
                batch
                    .iter()
                    .filter_map(|s| {
                        write_blocking(&dir, history, s)
                            .err()
                            .map(|e| (s.camera.clone(), e))
                    })
                    .collect()
            })
            .await
            .unwrap_or_else(|e| {
                let e = SinkError::new(format!("dir sink task failed: {e}"));
                cameras.into_iter().map(|c| (c, e.clone())).collect()
            })
        })
    }
}

fn write_blocking(dir: &Path, history: usize, s: &Snapshot) -> Result<(), SinkError> {
    let ctx = |what: &str, path: &Path, e: std::io::Error| {
        let hint = match e.kind() {
            std::io::ErrorKind::PermissionDenied => "; check that the rtsnap user may write there",
            std::io::ErrorKind::StorageFull => "; the disk is full: free space or lower history",
            std::io::ErrorKind::NotFound => "; check that the folder exists",
            _ => "",
        };
        SinkError::new(format!("cannot {what} {}: {e}{hint}", path.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| ctx("create folder", dir, e))?;
    let final_path = dir.join(format!("{}.jpg", s.camera));
    let tmp_path = dir.join(format!(".{}.jpg.tmp", s.camera));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp_path)?;
        f.write_all(&s.jpeg)?;
        f.flush()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(ctx("write", &tmp_path, e));
    }
    std::fs::rename(&tmp_path, &final_path).map_err(|e| ctx("replace", &final_path, e))?;

    if history > 0 {
        let hdir = dir.join(&*s.camera);
        std::fs::create_dir_all(&hdir).map_err(|e| ctx("create folder", &hdir, e))?;
        let hpath = hdir.join(format!("{}.jpg", file_timestamp(s)));
        std::fs::write(&hpath, &s.jpeg).map_err(|e| ctx("write", &hpath, e))?;
        trim_history(&hdir, history).map_err(|e| ctx("trim history in", &hdir, e))?;
    }
    Ok(())
}

/// `20261125T141500.123Z`: sortable, and free of `:` (which some file
/// systems and SMB shares refuse).
fn file_timestamp(s: &Snapshot) -> String {
    s.captured_at_rfc3339().replace(['-', ':'], "")
}

/// Deletes the oldest history files beyond `keep`. Names sort by time.
fn trim_history(hdir: &Path, keep: usize) -> std::io::Result<()> {
    let mut files: Vec<_> = std::fs::read_dir(hdir)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().ends_with(".jpg"))
        .collect();
    if files.len() <= keep {
        return Ok(());
    }
    files.sort();
    for name in &files[..files.len() - keep] {
        std::fs::remove_file(hdir.join(name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn latest_and_trimmed_history() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5u64 {
            let s = Snapshot {
                camera: "cam".into(),
                captured_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i),
                width: 1,
                height: 1,
                jpeg: bytes::Bytes::from(vec![i as u8; 3]),
                seq: i,
                fingerprint: None,
                interval: Duration::from_secs(5),
            };
            write_blocking(dir.path(), 3, &s).unwrap();
        }
        assert_eq!(
            std::fs::read(dir.path().join("cam.jpg")).unwrap(),
            [4, 4, 4]
        );
        let mut hist: Vec<_> = std::fs::read_dir(dir.path().join("cam"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        hist.sort();
        assert_eq!(hist.len(), 3);
        assert_eq!(hist[0], "20231114T221322.000Z.jpg");
        assert!(!dir.path().join(".cam.jpg.tmp").exists());
    }
}
