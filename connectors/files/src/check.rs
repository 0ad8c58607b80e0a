//! A file sink's readiness, for `riffle check` and the start of every run:
//! a local directory must be creatable, writable and have room for a file;
//! a store prefix must take a probe object (the bucket exists, the
//! credentials are accepted, riffle may write and delete there).

use crate::options::FileSinkOptions;
use riffle_core::{human_bytes, Check, Problem};
use std::path::Path;

pub fn check(opts: &FileSinkOptions, max_file_bytes: u64) -> Check {
    match opts.local_dir() {
        Some(dir) => dir_check(dir, max_file_bytes),
        None => store_check(opts),
    }
}

fn dir_check(dir: &Path, max_file_bytes: u64) -> Check {
    let name = format!("sink {}", dir.display());
    let problem = |expected: &str, found: String, fix: String| Check {
        name: name.clone(),
        outcome: Err(Problem { setting: name.clone(), expected: expected.into(), found, fix }),
    };
    if let Err(e) = std::fs::create_dir_all(dir) {
        let parent = dir.parent().map(|p| p.display().to_string()).unwrap_or_else(|| "/".into());
        return problem(
            "a directory riffle can create",
            e.to_string(),
            format!("create it, or give riffle's user write access to its parent: {parent}"),
        );
    }
    let probe = dir.join(format!(".riffle-probe-{}", std::process::id()));
    let written =
        std::fs::write(&probe, b"riffle").and_then(|_| std::fs::File::open(&probe)?.sync_all()).and_then(|_| std::fs::remove_file(&probe));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&probe);
        return problem("writable", e.to_string(), format!("give riffle's user write access: chown/chmod {}", dir.display()));
    }
    let needed = max_file_bytes.clamp(16 << 20, 1 << 30);
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            if free < needed {
                problem(
                    &format!("at least {} free", human_bytes(needed)),
                    format!("{} free", human_bytes(free)),
                    "free some space on that disk, or point the sink at another one".into(),
                )
            } else {
                Check::passed(name, format!("writable, {} free", human_bytes(free)))
            }
        }
        Err(_) => Check::passed(name, "writable"),
    }
}

fn store_check(opts: &FileSinkOptions) -> Check {
    let name = format!("sink {}", opts.url);
    let outcome = crate::object::open_target(&opts.url, &opts.store).and_then(|t| t.probe()).map_err(|e| e.to_string());
    Check {
        name: name.clone(),
        outcome: outcome.map_err(|found| Problem {
            setting: name,
            expected: "a bucket or container riffle can write to, list and delete from".into(),
            found,
            fix: "create the bucket, and check the credentials (AWS_*/AZURE_*/GOOGLE_* variables or the sink's options) \
                  and their permissions on the prefix"
                .into(),
        }),
    }
}
