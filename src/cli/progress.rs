//! Progress on stderr, drawn from the operations' events (one renderer for every command): on a
//! terminal, a bar per running operation with bytes, rate and time left (a spinner with bytes and
//! rate while the total is unknown), cleared when the operation's end is emitted, that is before
//! the command prints its result. A bar's label is the operation and, once it says so, its phase
//! ("verify: recovering") or the lock it waits for. When stderr is not a terminal there is no bar: the event sink's
//! periodic log lines say how far an operation got. Nothing here writes to stdout, so the output
//! of `--json` stays one JSON document.
//!
//! Log lines are written through [`LogWriter`], which lifts the bars out of the way, so a line
//! never lands in the middle of a bar.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::ops::event::{Event, EventSink, Operation};

/// How often a spinner turns when no progress arrives (the server is checkpointing, say).
const SPIN: Duration = Duration::from_millis(120);

/// How progress shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A live bar per running operation, on stderr.
    Bars,
    /// No bar: the periodic log lines are the progress.
    Off,
}

impl Mode {
    /// Bars only when stderr is a terminal. `--json` does not change the choice: the bars go to
    /// stderr only, so stdout holds the JSON alone either way, and with stderr not a terminal
    /// nothing is drawn at all.
    pub fn choose(stderr_is_terminal: bool) -> Mode {
        if stderr_is_terminal { Mode::Bars } else { Mode::Off }
    }

    fn current() -> Mode {
        Mode::choose(std::io::stderr().is_terminal())
    }
}

/// Every bar lifeboat draws; stderr is its only target.
static BARS: LazyLock<MultiProgress> = LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// Has the events of `events` drawn as bars, when [`Mode::choose`] says so.
pub fn install(events: &mut EventSink) {
    if Mode::current() == Mode::Bars {
        let renderer = Renderer::new(BARS.clone());
        events.set_observer(Arc::new(move |event| renderer.show(event)));
    }
}

/// Runs `print` (a line of the command's own output while an operation runs) with the bars
/// lifted, so the line is not drawn over.
pub fn above_bars<R>(print: impl FnOnce() -> R) -> R {
    if Mode::current() == Mode::Bars { BARS.suspend(print) } else { print() }
}

/// Draws the bars of running operations from their events.
struct Renderer {
    bars: MultiProgress,
    running: Mutex<BTreeMap<Operation, ProgressBar>>,
}

impl Renderer {
    fn new(bars: MultiProgress) -> Renderer {
        Renderer { bars, running: Mutex::default() }
    }

    fn show(&self, event: &Event) {
        let mut running = self.running.lock().expect("the progress lock is not poisoned");
        match event {
            Event::Progressed { operation, bytes_done, bytes_total } => {
                let bar = running.entry(*operation).or_insert_with(|| self.start(*operation));
                if let Some(total) = *bytes_total
                    && bar.length() != Some(total)
                {
                    if bar.length().is_none() {
                        bar.set_style(bar_style());
                    }
                    bar.set_length(total);
                }
                // Drawn by the bar's steady tick, within SPIN.
                bar.set_position(*bytes_done);
            }
            // The phase (or the wait) names what the operation is at, in front of its count.
            Event::PhaseChanged { operation, phase } => {
                let bar = running.entry(*operation).or_insert_with(|| self.start(*operation));
                bar.set_prefix(format!("{}: {phase}", operation.as_str()));
            }
            Event::LeaseWaiting { operation, lock, .. } => {
                let bar = running.entry(*operation).or_insert_with(|| self.start(*operation));
                bar.set_prefix(format!("{}: waiting for lock {lock}", operation.as_str()));
            }
            Event::LeaseWaited { operation, .. } => {
                if let Some(bar) = running.get(operation) {
                    bar.set_prefix(operation.as_str());
                }
            }
            Event::Finished { operation, .. } => {
                if let Some(bar) = running.remove(operation) {
                    bar.finish_and_clear();
                    self.bars.remove(&bar);
                }
            }
            _ => {}
        }
    }

    fn start(&self, operation: Operation) -> ProgressBar {
        let bar = self.bars.add(ProgressBar::no_length().with_style(spinner_style()));
        bar.set_prefix(operation.as_str());
        bar.enable_steady_tick(SPIN);
        bar
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix}: {bytes} ({bytes_per_sec})").expect("the template is valid")
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix}: [{bar:32}] {bytes} of {total_bytes} ({bytes_per_sec}, {eta} left)")
        .expect("the template is valid")
        .progress_chars("=> ")
}

/// The tracing subscriber's writer: stderr, with the bars lifted while a line is written when
/// bars are drawn at all.
#[derive(Debug, Clone, Copy)]
pub struct LogWriter {
    bars: bool,
}

impl LogWriter {
    pub fn for_stderr() -> LogWriter {
        LogWriter { bars: Mode::current() == Mode::Bars }
    }
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if self.bars { BARS.suspend(|| std::io::stderr().write(bytes)) } else { std::io::stderr().write(bytes) }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use indicatif::TermLike;

    use super::*;
    use crate::ops::event::{Outcome, Totals};

    /// A terminal that keeps what is drawn on it, and counts the lines cleared.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<(String, usize)>>);

    impl TermLike for Screen {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, line: &str) -> std::io::Result<()> {
            self.write_str(&format!("{line}\n"))
        }
        fn write_str(&self, text: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().0.push_str(text);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.0.lock().unwrap().1 += 1;
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bars_only_when_stderr_is_a_terminal_whatever_json_says() {
        assert_eq!(Mode::choose(true), Mode::Bars);
        assert_eq!(Mode::choose(false), Mode::Off);
    }

    #[test]
    fn a_bar_shows_bytes_of_the_total_and_is_cleared_when_the_operation_ends() {
        let screen = Screen::default();
        let renderer =
            Renderer::new(MultiProgress::with_draw_target(ProgressDrawTarget::term_like(Box::new(screen.clone()))));
        let operation = Operation::Restore;
        let drawn = || std::thread::sleep(SPIN * 3);
        renderer.show(&Event::Progressed { operation, bytes_done: 1024, bytes_total: None });
        drawn();
        let spinner = screen.0.lock().unwrap().0.clone();
        assert!(spinner.contains("restore: 1.00 KiB ("), "{spinner:?}");
        renderer.show(&Event::Progressed { operation, bytes_done: 2048, bytes_total: Some(4096) });
        drawn();
        let bar = screen.0.lock().unwrap().0.clone();
        assert!(bar.contains("restore: [") && bar.contains("2.00 KiB of 4.00 KiB"), "{bar:?}");
        assert!(bar.contains("left)"), "a bar with a total says the time left: {bar:?}");
        renderer.show(&Event::PhaseChanged { operation, phase: "recovering" });
        drawn();
        let phased = screen.0.lock().unwrap().0.clone();
        assert!(phased.contains("restore: recovering: ["), "the bar names the phase: {phased:?}");

        let cleared_before = screen.0.lock().unwrap().1;
        renderer.show(&Event::Finished {
            operation,
            arguments: BTreeMap::new(),
            outcome: Outcome::Succeeded,
            duration: Duration::from_secs(1),
            totals: Totals::default(),
        });
        assert!(renderer.running.lock().unwrap().is_empty());
        assert!(screen.0.lock().unwrap().1 > cleared_before, "the bar's line is cleared");
    }
}
