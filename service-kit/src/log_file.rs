//! A log file that keeps its name (`logs/combined.log`, as the seed promised operators who
//! `tail -f` it) and rotates daily: at the first line of a new UTC day the file is renamed to
//! `combined.log.<previous day>` and a fresh one started; only the newest `keep` rotated files
//! are kept.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
};

use chrono::{NaiveDate, Utc};

/// Where "today" comes from; tests pass a fixed or stepping clock.
pub type Today = Box<dyn Fn() -> NaiveDate + Send>;

pub struct DailyLogFile {
    path: PathBuf,
    keep: usize,
    today: Today,
    day: NaiveDate,
    file: File,
}

impl DailyLogFile {
    pub fn open(dir: &Path, name: &str, keep: usize) -> io::Result<Self> {
        Self::with_clock(dir, name, keep, Box::new(|| Utc::now().date_naive()))
    }

    pub fn with_clock(dir: &Path, name: &str, keep: usize, today: Today) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // A file left from an earlier day is rotated at its first write, as if we had been running.
        let day = file
            .metadata()
            .and_then(|m| m.modified())
            .map(|modified| chrono::DateTime::<Utc>::from(modified).date_naive())
            .unwrap_or_else(|_| today());
        Ok(Self {
            path,
            keep,
            today,
            day,
            file,
        })
    }

    fn rotate(&mut self, today: NaiveDate) -> io::Result<()> {
        self.file.flush()?;
        let rotated = rotated_name(&self.path, self.day);
        if fs::metadata(&self.path).is_ok_and(|m| m.len() > 0) {
            fs::rename(&self.path, &rotated)?;
        }
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.day = today;
        self.prune()
    }

    /// Deletes the oldest rotated files beyond `keep`. Dates sort as text.
    fn prune(&self) -> io::Result<()> {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name().and_then(|n| n.to_str()))
        else {
            return Ok(());
        };
        let prefix = format!("{name}.");
        let mut rotated: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.strip_prefix(&prefix)
                        .is_some_and(|date| NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok())
                })
            })
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(self.keep);
        for old in &rotated[..excess] {
            fs::remove_file(old)?;
        }
        Ok(())
    }
}

fn rotated_name(path: &Path, day: NaiveDate) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{}", day.format("%Y-%m-%d")));
    PathBuf::from(name)
}

impl Write for DailyLogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let today = (self.today)();
        if today != self.day {
            self.rotate(today)?;
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    };

    use super::*;

    fn day(n: i64) -> NaiveDate {
        NaiveDate::from_ymd_opt(2030, 1, 1).expect("date") + chrono::Duration::days(n)
    }

    #[test]
    fn the_file_keeps_its_name_and_rotates_daily_keeping_the_newest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let clock = Arc::new(AtomicI64::new(0));
        let reading = clock.clone();
        let mut file = DailyLogFile::with_clock(
            dir.path(),
            "combined.log",
            2,
            Box::new(move || day(reading.load(Ordering::SeqCst))),
        )
        .expect("open");
        file.day = day(0);
        for n in 0..5 {
            clock.store(n, Ordering::SeqCst);
            writeln!(file, "line of day {n}").expect("write");
        }
        file.flush().expect("flush");
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "combined.log",
                "combined.log.2030-01-03",
                "combined.log.2030-01-04"
            ]
        );
        let current = fs::read_to_string(dir.path().join("combined.log")).expect("read");
        assert_eq!(current, "line of day 4\n");
    }
}
