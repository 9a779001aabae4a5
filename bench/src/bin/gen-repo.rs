//! Writes a generated release repo to disk: `gen-repo N DIR` puts `seed_times(N)`'s
//! cohort.yaml, services/ and releases/ into DIR (created if missing), for timing the
//! `cohort` binary on it. No git repository is made: `validate` and `render` do not need one.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, dir) = match args.as_slice() {
        [n, dir] => match n.parse::<usize>() {
            Ok(n) => (n, PathBuf::from(dir)),
            Err(e) => return usage(&format!("N must be a number of services: {e}")),
        },
        _ => return usage("expected two arguments"),
    };
    if dir.join("cohort.yaml").exists() {
        eprintln!(
            "gen-repo: {} already holds a release repo; pick an empty directory",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    match write(n, &dir) {
        Ok(()) => {
            eprintln!("gen-repo: wrote {n} services to {}", dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-repo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("gen-repo: {why}\nusage: gen-repo N DIR");
    ExitCode::from(2)
}

fn write(n: usize, dir: &Path) -> std::io::Result<()> {
    let files = cohort_bench::seed_times(n);
    let pipeline = files.pipeline.unwrap_or_default();
    let all = std::iter::once((Path::new("cohort.yaml"), pipeline.as_str()))
        .chain(files.services.iter().map(|(p, t)| (p.as_path(), t.as_str())))
        .chain(files.releases.iter().map(|(p, t)| (p.as_path(), t.as_str())));
    for (rel, text) in all {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(())
}
