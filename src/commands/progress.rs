//! Renders the library's progress ([`Reporter`]): indicatif bars on a terminal, a plain line
//! every 30 s otherwise, or one JSON object per line with `--log-format json`. Notes go to stderr
//! as `[prefix] line`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::{Gauge, Reporter};

/// How progress is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Bars on a terminal, plain lines otherwise.
    #[default]
    Text,
    /// One JSON object per line on stderr.
    Json,
}

impl LogFormat {
    /// The flag value (`--log-format NAME`).
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

enum Output {
    Bars {
        multi: MultiProgress,
        bars: Vec<ProgressBar>,
    },
    Lines {
        started: Instant,
        last: Option<Instant>,
    },
    Json {
        last: Option<Instant>,
    },
    Hidden,
}

/// The command layer's [`Reporter`].
pub struct Renderer {
    prefix: &'static str,
    format: LogFormat,
    output: Mutex<Output>,
    verbose: bool,
}

impl Renderer {
    /// Notes as `[prefix] line`; gauges as bars (a terminal), lines, JSON, or not at all
    /// (`quiet`: notes only).
    pub fn new(prefix: &'static str, format: LogFormat, quiet: bool) -> Self {
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let output = match (format, quiet, terminal) {
            (LogFormat::Json, _, _) => Output::Json { last: None },
            (LogFormat::Text, true, _) => Output::Hidden,
            (LogFormat::Text, false, true) => Output::Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                bars: Vec::new(),
            },
            (LogFormat::Text, false, false) => Output::Lines {
                started: Instant::now(),
                last: None,
            },
        };
        Renderer {
            prefix,
            format,
            output: Mutex::new(output),
            verbose: false,
        }
    }

    /// Also shows the detail lines (`-v`).
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    /// Notes only, as plain `[prefix] line`, for commands without gauges.
    pub fn notes(prefix: &'static str) -> Self {
        Renderer::new(prefix, LogFormat::Text, true)
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix:>11} [{bar:30}] {pos:>6}/{len:<6} {per_sec:>10} {elapsed_precise} {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
}

impl Renderer {
    fn line(&self, event: &str, line: &str) {
        match self.format {
            LogFormat::Text => eprintln!("[{}] {line}", self.prefix),
            LogFormat::Json => eprintln!(
                "{}",
                serde_json::json!({"event": event, "job": self.prefix, "message": line})
            ),
        }
    }
}

impl Reporter for Renderer {
    fn note(&self, line: &str) {
        self.line("note", line);
    }

    fn detail(&self, line: &str) {
        if self.verbose {
            self.line("detail", line);
        }
    }

    fn gauges(&self, gauges: &[Gauge]) {
        let mut output = self.output.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *output {
            Output::Bars { multi, bars } => {
                while bars.len() < gauges.len() {
                    let bar = multi.add(ProgressBar::new(0));
                    bar.set_style(bar_style());
                    bar.set_prefix(gauges[bars.len()].name);
                    bars.push(bar);
                }
                for (bar, g) in bars.iter().zip(gauges) {
                    bar.set_length(g.total.max(g.done));
                    bar.set_position(g.done);
                    bar.set_message(g.message.clone());
                }
            }
            Output::Lines { started, last } => {
                if last.is_some_and(|t| t.elapsed() < Duration::from_secs(30)) {
                    return;
                }
                *last = Some(Instant::now());
                let parts: Vec<String> = gauges
                    .iter()
                    .map(|g| format!("{} {}/{} ({})", g.name, g.done, g.total, g.message))
                    .collect();
                eprintln!(
                    "[{}] {:>6.0}s {}",
                    self.prefix,
                    started.elapsed().as_secs_f64(),
                    parts.join("  ")
                );
            }
            Output::Json { last } => {
                if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                    return;
                }
                *last = Some(Instant::now());
                let gauges: Vec<_> = gauges
                    .iter()
                    .map(|g| {
                        serde_json::json!({
                            "name": g.name, "done": g.done, "total": g.total, "message": g.message,
                        })
                    })
                    .collect();
                eprintln!(
                    "{}",
                    serde_json::json!({"event": "progress", "job": self.prefix, "gauges": gauges})
                );
            }
            Output::Hidden => {}
        }
    }

    fn done(&self) {
        let mut output = self.output.lock().unwrap_or_else(|p| p.into_inner());
        if let Output::Bars { bars, .. } = &mut *output {
            for bar in bars.drain(..) {
                bar.abandon();
            }
        }
    }
}
