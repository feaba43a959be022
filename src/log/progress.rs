//! Progress of a training stage: a live bar on a terminal, sparse plain lines elsewhere (CI logs).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Plain-line mode prints at most once per this interval (plus the last step).
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(5);

/// Speed and remaining time of a stage, from the steps done in this process only.
///
/// `start_step` is where this process started (0, or the resumed step), `step` the current
/// step, `total` the stage's last step, `elapsed` the time since this process started the
/// stage. Returns `(steps per second, time left)`; the rate is `None` until a step was done and
/// time passed, the ETA is `None` while the rate is unknown (zero once `step >= total`).
pub fn rate_eta(
    start_step: u64,
    step: u64,
    total: u64,
    elapsed: Duration,
) -> (Option<f64>, Option<Duration>) {
    let done = step.saturating_sub(start_step);
    let secs = elapsed.as_secs_f64();
    let rate = (done > 0 && secs > 0.0).then(|| done as f64 / secs);
    let eta = if step >= total {
        Some(Duration::ZERO)
    } else {
        rate.map(|r| Duration::from_secs_f64((total - step) as f64 / r))
    };
    (rate, eta)
}

/// `42s`, `4m18s`, `2h05m`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64().round() as u64;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// A metric value with 3 significant digits: `0.0123`, `3.14`, `1234`, `1.23e-5`.
pub fn format_value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a == 0.0 {
        "0".to_string()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.2e}")
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{v:.decimals$}")
    }
}

fn format_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 1.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// The part after `step/total`: `loss 0.0123  3.4 steps/s  eta 4m18s`.
fn status(metrics: &[(&str, f64)], rate: Option<f64>, eta: Option<Duration>) -> String {
    let mut parts: Vec<String> = metrics
        .iter()
        .map(|(k, v)| format!("{k} {}", format_value(*v)))
        .collect();
    if let Some(r) = rate {
        parts.push(format!("{} steps/s", format_rate(r)));
    }
    if let Some(e) = eta {
        parts.push(format!("eta {}", format_duration(e)));
    }
    parts.join("  ")
}

/// One plain progress line: `vae  step 120/1000  loss 0.0123  3.4 steps/s  eta 4m18s`.
pub fn plain_line(
    stage: &str,
    step: u64,
    total: u64,
    metrics: &[(&str, f64)],
    rate: Option<f64>,
    eta: Option<Duration>,
) -> String {
    let rest = status(metrics, rate, eta);
    if rest.is_empty() {
        format!("{stage}  step {step}/{total}")
    } else {
        format!("{stage}  step {step}/{total}  {rest}")
    }
}

/// Whether plain mode prints now: the first update, the last step, or `interval` after the
/// previous line.
fn plain_due(since_last: Option<Duration>, step: u64, total: u64, interval: Duration) -> bool {
    match since_last {
        None => true,
        Some(_) if step >= total => true,
        Some(d) => d >= interval,
    }
}

enum Sink {
    Bar(ProgressBar),
    Plain(Box<dyn Write + Send>),
}

/// Progress display of one training stage.
///
/// On a terminal (stderr): an indicatif bar with stage, step/total, the metrics, steps/s and
/// ETA. Otherwise plain lines on stderr, at most one per [`PLAIN_INTERVAL`] plus the last step.
/// Speed and ETA count only the steps done by this process (see [`rate_eta`]).
pub struct Progress {
    stage: String,
    total: u64,
    start_step: u64,
    started: Instant,
    interval: Duration,
    sink: Sink,
    last_print: Option<Instant>,
    last_printed_step: Option<u64>,
    step: u64,
    last_line: String,
    finished: bool,
}

impl Progress {
    /// Starts the display of `stage` with `total` steps, at `start_step` (> 0 after a resume).
    pub fn new(stage: &str, total_steps: u64, start_step: u64) -> Self {
        let sink = if std::io::stderr().is_terminal() {
            let style = ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            let bar =
                ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr())
                    .with_style(style)
                    .with_prefix(stage.to_string())
                    .with_position(start_step.min(total_steps));
            Sink::Bar(bar)
        } else {
            Sink::Plain(Box::new(std::io::stderr()))
        };
        Self::with_sink(stage, total_steps, start_step, PLAIN_INTERVAL, sink)
    }

    fn with_sink(stage: &str, total: u64, start_step: u64, interval: Duration, sink: Sink) -> Self {
        Progress {
            stage: stage.to_string(),
            total,
            start_step,
            started: Instant::now(),
            interval,
            sink,
            last_print: None,
            last_printed_step: None,
            step: start_step,
            last_line: String::new(),
            finished: false,
        }
    }

    /// Reports that `step` (of `total_steps`) is done, with the current metrics; the first
    /// metric should be the loss.
    pub fn update(&mut self, step: u64, metrics: &[(&str, f64)]) {
        self.step = step;
        let (rate, eta) = rate_eta(self.start_step, step, self.total, self.started.elapsed());
        match &mut self.sink {
            Sink::Bar(bar) => {
                bar.set_position(step.min(self.total));
                bar.set_message(status(metrics, rate, eta));
            }
            Sink::Plain(out) => {
                let line = plain_line(&self.stage, step, self.total, metrics, rate, eta);
                let now = Instant::now();
                if plain_due(
                    self.last_print.map(|t| now - t),
                    step,
                    self.total,
                    self.interval,
                ) && self.last_printed_step != Some(step)
                {
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                    self.last_print = Some(now);
                    self.last_printed_step = Some(step);
                }
                self.last_line = line;
            }
        }
    }

    /// Prints a line (e.g. an evaluation result) without breaking the bar.
    pub fn message(&mut self, line: &str) {
        match &mut self.sink {
            Sink::Bar(bar) => bar.println(line),
            Sink::Plain(out) => {
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
        }
    }

    /// Ends the display: the bar stays on screen; in plain mode the last update is printed if
    /// it was skipped, followed by `stage  done: N steps in T (R steps/s)`.
    pub fn finish(&mut self) {
        let elapsed = self.started.elapsed();
        let (rate, _) = rate_eta(self.start_step, self.step, self.total, elapsed);
        let done = self.step.saturating_sub(self.start_step);
        let mut summary = format!(
            "{}  done: {done} steps in {}",
            self.stage,
            format_duration(elapsed)
        );
        if let Some(r) = rate {
            summary.push_str(&format!(" ({} steps/s)", format_rate(r)));
        }
        self.close(&summary);
    }

    /// Ends the display before the last step, saying why (interrupted, failed).
    pub fn stop(&mut self, why: &str) {
        let summary = format!(
            "{}  stopped at step {}/{}: {why}",
            self.stage, self.step, self.total
        );
        self.close(&summary);
    }

    fn close(&mut self, summary: &str) {
        if self.finished {
            return;
        }
        self.finished = true;
        match &mut self.sink {
            Sink::Bar(bar) => {
                bar.abandon();
                eprintln!("{summary}");
            }
            Sink::Plain(out) => {
                if self.last_printed_step != Some(self.step) && !self.last_line.is_empty() {
                    let _ = writeln!(out, "{}", self.last_line);
                }
                let _ = writeln!(out, "{summary}");
                let _ = out.flush();
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Sink::Bar(bar) = &self.sink
            && !self.finished
        {
            bar.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A `Write` into a shared buffer, for tests.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rate_and_eta_count_only_this_process() {
        // Resumed at 400 of 1000; 100 steps in 20 s -> 5 steps/s, 500 left -> 100 s.
        let (r, e) = rate_eta(400, 500, 1000, Duration::from_secs(20));
        assert_eq!(r, Some(5.0));
        assert_eq!(e, Some(Duration::from_secs(100)));
        // Fresh start: 120 steps in 40 s -> 3 steps/s; 880 left -> 293.33 s.
        let (r, e) = rate_eta(0, 120, 1000, Duration::from_secs(40));
        assert_eq!(r, Some(3.0));
        assert!((e.unwrap().as_secs_f64() - 880.0 / 3.0).abs() < 1e-6);
        // Nothing done yet, or no time elapsed: unknown.
        assert_eq!(
            rate_eta(400, 400, 1000, Duration::from_secs(5)),
            (None, None)
        );
        assert_eq!(rate_eta(0, 10, 1000, Duration::ZERO), (None, None));
        // At or past the end: ETA 0.
        let (r, e) = rate_eta(0, 1000, 1000, Duration::from_secs(10));
        assert_eq!((r, e), (Some(100.0), Some(Duration::ZERO)));
        // A step before the start (should not happen) does not underflow.
        assert_eq!(rate_eta(10, 5, 100, Duration::from_secs(1)), (None, None));
    }

    #[test]
    fn durations_and_values_format_compactly() {
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
        assert_eq!(format_duration(Duration::from_secs_f64(41.6)), "42s");
        assert_eq!(format_duration(Duration::from_secs(258)), "4m18s");
        assert_eq!(
            format_duration(Duration::from_secs(3600 + 5 * 60 + 59)),
            "1h05m"
        );
        assert_eq!(format_value(0.0123), "0.0123");
        assert_eq!(format_value(5.4321), "5.43");
        assert_eq!(format_value(-42.42), "-42.4");
        assert_eq!(format_value(1234.4), "1234");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(1.234e-5), "1.23e-5");
        assert_eq!(format_value(f64::NAN), "NaN");
    }

    #[test]
    fn plain_line_matches_the_documented_shape() {
        let line = plain_line(
            "vae",
            120,
            1000,
            &[("loss", 0.0123)],
            Some(3.4),
            Some(Duration::from_secs(258)),
        );
        assert_eq!(
            line,
            "vae  step 120/1000  loss 0.0123  3.4 steps/s  eta 4m18s"
        );
        assert_eq!(plain_line("ldm", 0, 10, &[], None, None), "ldm  step 0/10");
    }

    #[test]
    fn plain_lines_are_rate_limited() {
        let i = Duration::from_secs(5);
        assert!(plain_due(None, 1, 100, i));
        assert!(!plain_due(Some(Duration::from_secs(1)), 2, 100, i));
        assert!(plain_due(Some(Duration::from_secs(5)), 3, 100, i));
        assert!(plain_due(Some(Duration::from_millis(1)), 100, 100, i));
    }

    #[test]
    fn plain_mode_prints_first_and_last_and_summary() {
        let buf = SharedBuf::default();
        let mut p = Progress::with_sink(
            "vae",
            50,
            10,
            Duration::from_secs(3600),
            Sink::Plain(Box::new(buf.clone())),
        );
        for s in 11..=49 {
            p.update(s, &[("loss", 1.0 / s as f64)]);
        }
        p.message("eval: acc 0.9");
        p.update(50, &[("loss", 0.02)]);
        p.update(50, &[("loss", 0.02)]); // same step again: not repeated
        p.finish();
        p.finish();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[0].starts_with("vae  step 11/50  loss 0.0909"),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "eval: acc 0.9");
        assert!(
            lines[2].starts_with("vae  step 50/50  loss 0.0200"),
            "{}",
            lines[2]
        );
        assert!(lines[2].ends_with("eta 0s"), "{}", lines[2]);
        assert!(
            lines[3].starts_with("vae  done: 40 steps in "),
            "{}",
            lines[3]
        );
    }

    #[test]
    fn finish_prints_a_skipped_last_update() {
        let buf = SharedBuf::default();
        let mut p = Progress::with_sink(
            "ldm",
            100,
            0,
            Duration::from_secs(3600),
            Sink::Plain(Box::new(buf.clone())),
        );
        p.update(1, &[("loss", 0.5)]);
        p.update(37, &[("loss", 0.25)]); // interrupted here
        p.finish();
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("ldm  step 37/100  loss 0.250"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("ldm  done: 37 steps"), "{}", lines[2]);
    }

    #[test]
    fn bar_mode_tracks_position_from_the_resume_step() {
        let bar = ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::hidden())
            .with_position(40);
        let mut p = Progress::with_sink("vae", 100, 40, PLAIN_INTERVAL, Sink::Bar(bar.clone()));
        p.update(45, &[("loss", 0.5)]);
        assert_eq!(bar.position(), 45);
        assert!(bar.message().starts_with("loss 0.500"), "{}", bar.message());
        p.finish();
        assert!(bar.is_finished());
    }
}
