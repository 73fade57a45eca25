//! What survives a restart: the boot generation (incremented on every start, so a restarted
//! daemon never reuses a (generation, sequence) pair the peer has seen) and the term (so a
//! restarted node never claims an older term than it already used).
//!
//! Written atomically: a temporary file, fsync, rename over the old one, fsync of the directory.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const FILE: &str = "state.json";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Persisted {
    pub generation: u64,
    pub term: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cannot create the state directory {path}: {source}; check `state-dir` and permissions"
    )]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} is corrupt ({source}); it holds the boot generation and term: restore it from \
         a backup, or remove it only after making sure the peer is running the service (a \
         fresh file restarts the term at 0)"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}; the state directory must be writable and not full")]
    Write { path: PathBuf, source: io::Error },
}

pub struct StateDir {
    dir: PathBuf,
    current: Persisted,
}

impl StateDir {
    /// Opens the state directory and records a new boot generation before anything is sent.
    pub fn open_and_boot(dir: &Path) -> Result<StateDir, StateError> {
        fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE);
        let current = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Persisted::default(),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let mut s = StateDir {
            dir: dir.to_path_buf(),
            current,
        };
        let next = Persisted {
            generation: s.current.generation + 1,
            ..s.current
        };
        s.write(next)?;
        Ok(s)
    }

    pub fn get(&self) -> Persisted {
        self.current
    }

    pub fn set_term(&mut self, term: u64) -> Result<(), StateError> {
        if term == self.current.term {
            return Ok(());
        }
        self.write(Persisted {
            term,
            ..self.current
        })
    }

    fn write(&mut self, p: Persisted) -> Result<(), StateError> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let werr = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let body = serde_json::to_vec(&p).expect("plain integers serialize");
        let mut f = fs::File::create(&tmp).map_err(werr)?;
        f.write_all(&body).map_err(werr)?;
        f.write_all(b"\n").map_err(werr)?;
        f.sync_all().map_err(werr)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(werr)?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(werr)?;
        self.current = p;
        Ok(())
    }
}
