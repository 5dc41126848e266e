//! Files on a volume: a Dataset is a directory under the store's root; a
//! file is a record, its time the date in its name (a declared pattern) or
//! else its modification time; a subject's files live under a path template.
//!
//! Safety: nothing outside the root is ever touched. Symbolic links are
//! never followed (a link is neither a record nor a way in), the root and
//! the Dataset's directory are never removed, identifier values that could
//! climb out of their directory (`..`, `/`) are refused, and every decision
//! is re-checked on the entry itself (`lstat`) just before it is removed.
//! A pass is idempotent: run again after a kill, it finishes the same set.

use std::{
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use super::ScrubError;

/// Which files a pass removes. Every condition is ANDed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileSelection {
    /// The Dataset's directory, relative to the root.
    pub directory: PathBuf,
    /// Only files whose time is before this instant.
    pub older_than: Option<DateTime<Utc>>,
    /// Only files under these subject directories (relative to the Dataset's directory).
    pub subject: Vec<PathBuf>,
    /// Never files whose time is at or after this instant (minimum retention).
    pub keep_newer_than: Option<DateTime<Utc>>,
    /// Never files under these directories (subjects under a legal hold).
    pub held: Vec<PathBuf>,
    /// A date in the file name, e.g. `access-{yyyy}-{mm}-{dd}.log`.
    pub name_date_pattern: Option<String>,
}

/// What a selection covers, before anything changes.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileCounts {
    pub selected: i64,
    pub selected_bytes: u64,
    pub total: i64,
    pub held: i64,
    pub under_minimum: i64,
    /// Symbolic links met and left alone.
    pub links_skipped: i64,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileOutcome {
    pub files_deleted: i64,
    pub bytes_freed: u64,
    /// Subject directories emptied and removed.
    pub directories_removed: i64,
    /// Files still selected after the pass (0 unless something failed).
    pub remaining: i64,
}

/// A directory tree under one root.
pub struct FileStore {
    root: PathBuf,
}

/// Renders a subject path template (`exports/{user_id}/`) for one subject.
/// `None` when the template names an identifier type the subject lacks.
pub fn render_subject_path(
    template: &str,
    identifiers: &std::collections::BTreeMap<String, String>,
) -> Result<Option<PathBuf>, ScrubError> {
    let rendered = super::render_template(template, identifiers, |key, value| {
        if value.is_empty() || value == "." || value == ".." || value.contains('/') || value.contains('\0') {
            return Err(ScrubError::Config(format!(
                "an identifier of type {key:?} cannot name a directory (empty, '.', '..', or containing '/')"
            )));
        }
        Ok(value.to_string())
    })?;
    rendered.map(|p| relative(&p)).transpose()
}

/// A relative path without `..`, `.` or a root: something that stays inside.
fn relative(p: &str) -> Result<PathBuf, ScrubError> {
    let path = Path::new(p.trim_end_matches('/'));
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return Err(ScrubError::Config(format!("{p:?} must stay inside its directory"))),
        }
    }
    Ok(out)
}

/// The date a file name carries under a pattern with `{yyyy}`, `{mm}`, `{dd}`.
/// A file named for a day may hold records from any moment of it, so its
/// time is the end of the period the name names (the next day, month or
/// year): nothing in it is younger than that, and a cutoff inside the
/// period keeps the file.
pub fn name_date(pattern: &str, name: &str) -> Option<DateTime<Utc>> {
    embedded_date(pattern, name, true)
}

/// The end of the period a date embedded in `s` names under `pattern`;
/// with `whole` the pattern must match all of `s`, else a prefix of it
/// (an object key under `logs/{yyyy}/{mm}/{dd}/`).
pub fn embedded_date(pattern: &str, s: &str, whole: bool) -> Option<DateTime<Utc>> {
    let (mut y, mut m, mut d) = (None, Some(1u32), Some(1u32));
    let (day, month) = (pattern.contains("{dd}"), pattern.contains("{mm}"));
    let mut p = pattern;
    let mut n = s;
    while !p.is_empty() {
        if let Some(rest) = p.strip_prefix("{yyyy}") {
            y = Some(n.get(..4)?.parse::<i32>().ok()?);
            n = &n[4..];
            p = rest;
        } else if let Some(rest) = p.strip_prefix("{mm}") {
            m = Some(n.get(..2)?.parse::<u32>().ok()?);
            n = &n[2..];
            p = rest;
        } else if let Some(rest) = p.strip_prefix("{dd}") {
            d = Some(n.get(..2)?.parse::<u32>().ok()?);
            n = &n[2..];
            p = rest;
        } else {
            let c = p.chars().next()?;
            n = n.strip_prefix(c)?;
            p = &p[c.len_utf8()..];
        }
    }
    if whole && !n.is_empty() {
        return None;
    }
    let start = NaiveDate::from_ymd_opt(y?, m?, d?)?;
    let end = if day {
        start.succ_opt()?
    } else if month {
        start.checked_add_months(chrono::Months::new(1))?
    } else {
        start.checked_add_months(chrono::Months::new(12))?
    };
    Utc.from_local_datetime(&end.and_hms_opt(0, 0, 0)?).single()
}

/// One regular file met by a walk.
struct Entry {
    path: PathBuf,
    /// Relative to the Dataset's directory.
    rel: PathBuf,
    time: DateTime<Utc>,
    bytes: u64,
}

impl FileStore {
    /// The store at `root`, which must be an existing absolute directory.
    pub fn open(root: &str) -> Result<FileStore, ScrubError> {
        let root = Path::new(root);
        if !root.is_absolute() {
            return Err(ScrubError::Config(format!("root {} is not absolute", root.display())));
        }
        let real = root.canonicalize().map_err(|e| ScrubError::Unavailable(format!("{}: {e}", root.display())))?;
        if !real.is_dir() {
            return Err(ScrubError::Config(format!("root {} is not a directory", root.display())));
        }
        Ok(FileStore { root: real })
    }

    /// The Dataset's directory, checked component by component: none may be
    /// a symbolic link, so the walk cannot be led outside the root.
    fn dataset_dir(&self, sel: &FileSelection) -> Result<Option<PathBuf>, ScrubError> {
        let rel = relative(&sel.directory.to_string_lossy())?;
        let mut dir = self.root.clone();
        for c in rel.components() {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(ScrubError::Config(format!(
                        "{} is a symbolic link; a Dataset's directory is never reached through one",
                        dir.display()
                    )));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(ScrubError::Config(format!("{} is not a directory", dir.display()))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(ScrubError::Unavailable(format!("{}: {e}", dir.display()))),
            }
        }
        Ok(Some(dir))
    }

    /// Every regular file under the Dataset's directory, never through a link.
    fn walk(&self, sel: &FileSelection, links: &mut i64) -> Result<Vec<Entry>, ScrubError> {
        let Some(base) = self.dataset_dir(sel)? else { return Ok(vec![]) };
        let mut out = Vec::new();
        let mut stack = vec![base.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(ScrubError::Access(format!("{}: {e}", beneath(&base, &dir))));
                }
                Err(e) => return Err(ScrubError::Unavailable(format!("{}: {e}", beneath(&base, &dir)))),
            };
            for e in entries.flatten() {
                let path = e.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
                let ft = meta.file_type();
                if ft.is_symlink() {
                    *links += 1;
                } else if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() {
                    let rel = path.strip_prefix(&base).expect("under the base").to_path_buf();
                    let named =
                        sel.name_date_pattern.as_deref().and_then(|p| name_date(p, &e.file_name().to_string_lossy()));
                    let time = match named {
                        Some(t) => t,
                        None => meta.modified().map(DateTime::<Utc>::from).unwrap_or_else(|_| Utc::now()),
                    };
                    out.push(Entry { path, rel, time, bytes: meta.len() });
                }
            }
        }
        out.sort_by(|a, b| a.rel.cmp(&b.rel));
        Ok(out)
    }

    fn classify(sel: &FileSelection, e: &Entry) -> Class {
        let in_scope = sel.older_than.is_none_or(|t| e.time < t)
            && (sel.subject.is_empty() || sel.subject.iter().any(|s| e.rel.starts_with(s)));
        if !in_scope {
            Class::Out
        } else if sel.held.iter().any(|h| e.rel.starts_with(h)) {
            Class::Held
        } else if sel.keep_newer_than.is_some_and(|t| e.time >= t) {
            Class::UnderMinimum
        } else {
            Class::Selected
        }
    }

    fn check(sel: &FileSelection) -> Result<(), ScrubError> {
        if sel.older_than.is_none() && sel.subject.is_empty() {
            return Err(ScrubError::Config("a pass must select by time, by subject, or both".into()));
        }
        if sel.subject.iter().any(|s| s.as_os_str().is_empty()) {
            return Err(ScrubError::Config("a subject path may not be the Dataset's whole directory".into()));
        }
        Ok(())
    }

    /// Counts what a pass would do, touching nothing.
    pub fn plan(&self, sel: &FileSelection) -> Result<FileCounts, ScrubError> {
        Self::check(sel)?;
        let mut c = FileCounts::default();
        let entries = self.walk(sel, &mut c.links_skipped)?;
        c.total = entries.len() as i64;
        for e in &entries {
            match Self::classify(sel, e) {
                Class::Selected => {
                    c.selected += 1;
                    c.selected_bytes += e.bytes;
                }
                Class::Held => c.held += 1,
                Class::UnderMinimum => c.under_minimum += 1,
                Class::Out => {}
            }
        }
        Ok(c)
    }

    /// The files a selection removes, in a stable order, with their sizes.
    pub fn selected(&self, sel: &FileSelection) -> Result<Vec<(PathBuf, u64)>, ScrubError> {
        Self::check(sel)?;
        let mut links = 0;
        Ok(self
            .walk(sel, &mut links)?
            .into_iter()
            .filter(|e| Self::classify(sel, e) == Class::Selected)
            .map(|e| (e.path, e.bytes))
            .collect())
    }

    /// The earliest (or latest) time among the files a selection matches.
    pub fn extreme(&self, sel: &FileSelection, newest: bool) -> Result<Option<DateTime<Utc>>, ScrubError> {
        let mut links = 0;
        let times = self.walk(sel, &mut links)?.into_iter().filter(|e| Self::classify(sel, e) == Class::Selected);
        Ok(if newest { times.map(|e| e.time).max() } else { times.map(|e| e.time).min() })
    }

    /// Removes one file `sel` selected, re-checking it is still a regular
    /// file under the root (not swapped for a link or a directory). Returns
    /// whether it was removed. A failure names the Dataset's directory, not
    /// the file.
    pub fn remove(&self, sel: &FileSelection, path: &Path) -> Result<bool, ScrubError> {
        let shown = || beneath(&self.root.join(&sel.directory), path);
        if !path.starts_with(&self.root) {
            return Err(ScrubError::Config(format!("a path outside the root {}", self.root.display())));
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => {}
            _ => return Ok(false),
        }
        match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(ScrubError::Access(format!("{}: {err}", shown())))
            }
            Err(err) => Err(ScrubError::Unavailable(format!("{}: {err}", shown()))),
        }
    }

    /// After a pass: removes the subjects' emptied directories (never the
    /// Dataset's own); returns how many went.
    pub fn remove_subject_dirs(&self, sel: &FileSelection) -> Result<i64, ScrubError> {
        let mut n = 0;
        if let Some(base) = self.dataset_dir(sel)? {
            for s in sel.subject.iter().filter(|s| !s.as_os_str().is_empty()) {
                n += remove_empty_dirs(&base.join(s));
            }
        }
        Ok(n)
    }

    /// Removes the selected files, reporting progress every `batch` files
    /// (the callback may stop the pass by returning `false`).
    pub fn run(
        &self,
        sel: &FileSelection,
        batch: usize,
        mut on_progress: impl FnMut(i64, u64) -> bool,
    ) -> Result<FileOutcome, ScrubError> {
        let mut out = FileOutcome::default();
        let mut since = Instant::now();
        for (path, bytes) in self.selected(sel)? {
            if self.remove(sel, &path)? {
                out.files_deleted += 1;
                out.bytes_freed += bytes;
            }
            if (out.files_deleted as usize).is_multiple_of(batch.max(1)) || since.elapsed() > Duration::from_secs(1) {
                since = Instant::now();
                if !on_progress(out.files_deleted, out.bytes_freed) {
                    return Err(ScrubError::Unavailable("stopped; run again to finish".into()));
                }
            }
        }
        out.directories_removed = self.remove_subject_dirs(sel)?;
        out.remaining = self.selected(sel)?.len() as i64;
        Ok(out)
    }
}

/// How a path under a Dataset's directory is named in a message: by that
/// directory alone. What lies below it is a subject's directory (rendered
/// from an identifier) or a file's name, either of which may be personal
/// data.
fn beneath(base: &Path, path: &Path) -> String {
    if path == base { base.display().to_string() } else { format!("a file or directory in {}", base.display()) }
}

#[derive(Debug, PartialEq)]
enum Class {
    Out,
    Selected,
    Held,
    UnderMinimum,
}

/// Removes `dir` and the directories under it that are empty, never
/// through a link; returns how many went.
fn remove_empty_dirs(dir: &Path) -> i64 {
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return 0 };
    if !meta.is_dir() {
        return 0;
    }
    let mut n = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            n += remove_empty_dirs(&e.path());
        }
    }
    if std::fs::remove_dir(dir).is_ok() { n + 1 } else { n }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_names() {
        let t = name_date("access-{yyyy}-{mm}-{dd}.log", "access-2026-03-04.log").unwrap();
        // A day's file may hold records until the day ends.
        assert_eq!(t.to_rfc3339(), "2026-03-05T00:00:00+00:00");
        assert_eq!(name_date("access-{yyyy}-{mm}-{dd}.log", "access-2026-13-04.log"), None);
        assert_eq!(name_date("access-{yyyy}-{mm}-{dd}.log", "other-2026-03-04.log"), None);
        assert_eq!(name_date("{yyyy}{mm}.csv", "202612.csv").unwrap().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert_eq!(name_date("{yyyy}.csv", "2026.csv").unwrap().to_rfc3339(), "2027-01-01T00:00:00+00:00");
        // An object key: the pattern names a prefix.
        let k = embedded_date("logs/{yyyy}/{mm}/{dd}/", "logs/2026/02/28/app-1.gz", false).unwrap();
        assert_eq!(k.to_rfc3339(), "2026-03-01T00:00:00+00:00");
        assert_eq!(embedded_date("logs/{yyyy}/{mm}/{dd}/", "logs/2026/02/28/app-1.gz", true), None);
        assert_eq!(embedded_date("logs/{yyyy}/{mm}/{dd}/", "logs/latest.gz", false), None);
    }

    #[test]
    fn subject_paths_stay_inside() {
        let ids = |v: &str| [("user_id".to_string(), v.to_string())].into();
        assert_eq!(render_subject_path("exports/{user_id}/", &ids("42")).unwrap(), Some(PathBuf::from("exports/42")));
        assert!(render_subject_path("exports/{user_id}/", &ids("..")).is_err());
        assert!(render_subject_path("exports/{user_id}/", &ids("a/b")).is_err());
        assert!(render_subject_path("exports/{user_id}/", &ids("")).is_err());
        assert!(render_subject_path("../{user_id}/", &ids("42")).is_err());
        assert_eq!(render_subject_path("exports/{email}/", &ids("42")).unwrap(), None);
    }
}
