//! Progress of a back-fill: a bar on a terminal, plain lines otherwise (logs, CI, pipes), and
//! failure lines as they happen in both cases.

use std::io::{self, Write};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::tally::Tally;

pub struct Reporter<'a> {
    err: &'a mut (dyn Write + Send),
    bar: Option<ProgressBar>,
}

impl<'a> Reporter<'a> {
    /// `terminal`: draw a bar on the process's stderr instead of writing lines to `err`.
    pub fn new(err: &'a mut (dyn Write + Send), terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} scheduled events  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Self { err, bar }
    }

    /// More scheduled events were listed; the total grows page by page because Calendly does not
    /// say how many there are.
    pub fn listed(&mut self, count: usize) {
        if let Some(bar) = &self.bar {
            bar.inc_length(count as u64);
        }
    }

    /// One scheduled event (with all its invitees) is done.
    pub fn event_done(&mut self, tally: &Tally) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(tally.counts());
        }
    }

    /// A page of scheduled events is done: the plain-lines mode reports here, often enough to
    /// show life and rarely enough to stay readable.
    pub fn page_done(&mut self, tally: &Tally) -> io::Result<()> {
        if self.bar.is_none() {
            writeln!(
                self.err,
                "backfill: {} scheduled event(s), {} invitee(s) done; {}",
                tally.scheduled_events,
                tally.invitees,
                tally.counts()
            )?;
        }
        Ok(())
    }

    pub fn failure(&mut self, line: &str) -> io::Result<()> {
        let err = &mut self.err;
        match &self.bar {
            Some(bar) => bar.suspend(|| writeln!(err, "failed: {line}")),
            None => writeln!(err, "failed: {line}"),
        }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Reporter<'_> {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally() -> Tally {
        Tally {
            scheduled_events: 2,
            invitees: 3,
            created: 2,
            failed: 1,
            ..Tally::default()
        }
    }

    #[test]
    fn without_a_terminal_progress_and_failures_are_plain_lines() {
        let mut sink = Vec::new();
        let mut reporter = Reporter::new(&mut sink, false);
        reporter.listed(2);
        reporter.event_done(&tally());
        reporter.page_done(&tally()).expect("write");
        reporter.failure("invitee u: boom").expect("write");
        reporter.finish();
        drop(reporter);
        assert_eq!(
            String::from_utf8(sink).expect("UTF-8"),
            "backfill: 2 scheduled event(s), 3 invitee(s) done; created 2, updated 0, unchanged 0, failed 1\n\
             failed: invitee u: boom\n"
        );
    }

    #[test]
    fn with_a_terminal_only_failures_are_written_as_lines() {
        let mut sink = Vec::new();
        let mut reporter = Reporter::new(&mut sink, true);
        reporter.listed(2);
        reporter.event_done(&tally());
        reporter.page_done(&tally()).expect("write");
        reporter.failure("invitee u: boom").expect("write");
        drop(reporter);
        assert_eq!(
            String::from_utf8(sink).expect("UTF-8"),
            "failed: invitee u: boom\n"
        );
    }
}
