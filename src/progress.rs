//! Progress display for `--progress auto|tty|plain|rawjson|quiet`, with buildx's names.
//!
//! Solver events and the CLI's own steps (exporting, …) become numbered steps in order of first
//! appearance. One `Progress` is shared by every thread of a build: a mutex around the step table
//! and the renderer keeps each line whole and attributes it to its step.
//!
//! - `plain` mirrors BuildKit's text printer (`util/progress/progressui/printer.go`): a block per
//!   step headed `#5 [builder 2/4] RUN make`, output as `#5 0.512 <line>` (seconds since the step
//!   started), closed by `#5 DONE 1.2s`, `#5 CACHED`, `#5 ERROR: <message>` or `#5 CANCELED`; a
//!   blank line between blocks; a block interrupted by another step's output ends in `#5 ...` and
//!   is reopened with its header later. Like BuildKit, the printer stays on the step that is
//!   talking and holds others' lines back for a moment instead of flipping on every line. A step
//!   that missed the cache says why on the line after its header, the first time it opens:
//!   `#7 cache miss: src/main.rs changed`.
//! - `tty`: an indicatif display: one spinner line per running step with its elapsed time and the
//!   last lines of its output; finished steps collapse to `✔ [builder 2/4] RUN make  1.2s`
//!   (with the reason of a cache miss); the summary at the end lists the cache misses.
//! - `rawjson`: one JSON object per line, see [`JsonRender`] for the schema.
//! - `quiet`: nothing but errors; the image ID goes to stdout at the end, like `buildx build -q`.

use crate::cli::Progress as Mode;
use anyhow::bail;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use kiln_solver::{Event, OpId};
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many lines of a running step's output the TTY display shows (and an error repeats).
const TAIL_LINES: usize = 5;

/// How long `plain` keeps printing the step that last talked before it switches to another
/// (BuildKit's printer uses a similar anti-flicker delay).
const ANTI_FLICKER: Duration = Duration::from_millis(1000);

/// What the build reports when it ends.
#[derive(Debug, Default)]
pub struct Summary {
    /// Steps of the graph that ran, and that were found in the cache.
    pub ran: usize,
    pub cached: usize,
    /// The image's manifest digest, when an image was written.
    pub digest: Option<String>,
    /// The image ID (config digest), which `quiet` prints like `buildx build -q`.
    pub image_id: Option<String>,
}

/// Renders solver events and the build's own steps to stderr.
pub struct Progress {
    state: Mutex<State>,
}

/// Identifies a step: an op of the graph, or one of the CLI's own steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Key {
    Op(OpId),
    Cli(usize),
}

#[derive(Clone, Debug, PartialEq)]
enum Status {
    Running,
    Done(Duration),
    Cached,
    Error(String),
    Canceled,
}

/// A step as the display knows it.
struct Step {
    /// `#N`: the order of first appearance, from 1.
    number: usize,
    op: Option<OpId>,
    name: String,
    started: Instant,
    status: Status,
    /// The last lines of output, already stamped (`0.512 line`).
    tail: VecDeque<String>,
    /// Why the step missed the cache (the solver's reason).
    cache_miss: Option<String>,
}

impl Step {
    fn running(&self) -> bool {
        self.status == Status::Running
    }
}

struct State {
    steps: Vec<Step>,
    by_key: HashMap<Key, usize>,
    next_cli: usize,
    started: Instant,
    /// The summary was rendered: dropping the display must not end it again.
    ended: bool,
    render: Box<dyn Render + Send>,
}

/// One output format. Steps are indices into `steps`; the state is already updated when a
/// method is called.
trait Render {
    fn started(&mut self, steps: &[Step], i: usize);
    /// A line of output, as the step wrote it and `stamped` with the seconds since it started.
    fn log(&mut self, steps: &[Step], i: usize, line: &str, stamped: &str);
    fn finished(&mut self, steps: &[Step], i: usize);
    /// The build is over (`summary` is `None` when it failed).
    fn end(&mut self, steps: &[Step], summary: Option<&Summary>, elapsed: Duration);
}

impl Progress {
    /// A display for `--progress mode`: `auto` is `tty` when stderr is a terminal, else `plain`.
    pub fn new(mode: Mode) -> anyhow::Result<Progress> {
        let terminal = std::io::stderr().is_terminal();
        let render: Box<dyn Render + Send> = match mode {
            Mode::Tty if !terminal => {
                bail!("--progress tty: stderr is not a terminal (use --progress plain)")
            }
            Mode::Tty => Box::new(TtyRender::new()),
            Mode::Auto if terminal => Box::new(TtyRender::new()),
            Mode::Auto | Mode::Plain => Box::new(PlainRender::default()),
            Mode::Rawjson => Box::new(JsonRender),
            Mode::Quiet => Box::new(QuietRender),
        };
        Ok(Progress {
            state: Mutex::new(State {
                steps: Vec::new(),
                by_key: HashMap::new(),
                next_cli: 0,
                started: Instant::now(),
                ended: false,
                render,
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while rendering must not hide the build's own error behind a poisoned lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` as a step of the build's own (not of the graph), timing it; `f` gets a function
    /// that prints a line of the step's output.
    pub fn step<T>(
        &self,
        name: &str,
        f: impl FnOnce(&dyn Fn(&str)) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let key = {
            let mut s = self.state();
            let key = Key::Cli(s.next_cli);
            s.next_cli += 1;
            s.start(key, name, None);
            key
        };
        let start = Instant::now();
        let log = |line: &str| self.state().log(key, line);
        let result = f(&log);
        let status = match &result {
            Ok(_) => Status::Done(start.elapsed()),
            Err(e) => Status::Error(format!("{e:#}")),
        };
        self.state().finish(key, status);
        result
    }

    /// Renders one solver event; safe to call from several threads at once.
    pub fn event(&self, e: Event) {
        let mut s = self.state();
        match e {
            Event::Started {
                op,
                name,
                cache_miss,
            } => s.start(Key::Op(op), &name, cache_miss),
            Event::Cached { op, name } => {
                let i = s.index(Key::Op(op), &name);
                s.steps[i].name = name;
                s.finish_at(i, Status::Cached);
            }
            Event::Done { op, elapsed } => s.finish(Key::Op(op), Status::Done(elapsed)),
            Event::Log { op, line } => s.log(Key::Op(op), &line),
            // When the solver reports failures as events (`Event::Error { op, message }`), map
            // them here: `s.finish(Key::Op(op), Status::Error(message))`. Until then the CLI
            // calls `failed` for each step of the `SolveError`.
        }
    }

    /// Closes the step called `name` as failed (`#N ERROR: <message>`). Steps still running
    /// when the display is dropped are shown as `#N CANCELED`.
    pub fn failed(&self, name: &str, message: &str) {
        self.state()
            .finish_named(name, Status::Error(message.to_string()));
    }

    /// Ends the display with the build's summary: steps run and cached, time, image digest.
    pub fn finish(&self, summary: Summary) {
        self.state().end(Some(&summary));
    }
}

impl Drop for Progress {
    /// A build that fails or is interrupted still closes every block and clears the TTY.
    fn drop(&mut self) {
        let s = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if !s.ended {
            s.end(None);
        }
    }
}

impl State {
    /// The step behind `key`, created (and numbered) on first sight.
    fn index(&mut self, key: Key, name: &str) -> usize {
        if let Some(&i) = self.by_key.get(&key) {
            return i;
        }
        let i = self.steps.len();
        self.steps.push(Step {
            number: i + 1,
            op: match key {
                Key::Op(op) => Some(op),
                Key::Cli(_) => None,
            },
            name: name.to_string(),
            started: Instant::now(),
            status: Status::Running,
            tail: VecDeque::new(),
            cache_miss: None,
        });
        self.by_key.insert(key, i);
        i
    }

    fn start(&mut self, key: Key, name: &str, cache_miss: Option<String>) {
        let i = self.index(key, name);
        let step = &mut self.steps[i];
        step.name = name.to_string();
        step.cache_miss = cache_miss;
        step.started = Instant::now();
        step.status = Status::Running;
        self.render.started(&self.steps, i);
    }

    fn log(&mut self, key: Key, line: &str) {
        let i = self.index(key, &placeholder_name(key));
        let step = &mut self.steps[i];
        let stamped = format!("{} {line}", stamp(step.started.elapsed()));
        if step.tail.len() == TAIL_LINES {
            step.tail.pop_front();
        }
        step.tail.push_back(stamped.clone());
        self.render.log(&self.steps, i, line, &stamped);
    }

    fn finish(&mut self, key: Key, status: Status) {
        let i = self.index(key, &placeholder_name(key));
        self.finish_at(i, status);
    }

    fn finish_at(&mut self, i: usize, status: Status) {
        self.steps[i].status = status;
        self.render.finished(&self.steps, i);
    }

    /// Closes the running step called `name`; one that never started is shown all the same.
    fn finish_named(&mut self, name: &str, status: Status) {
        let running = self
            .steps
            .iter()
            .position(|s| s.running() && s.name == name);
        let i = match running {
            Some(i) => i,
            None => {
                let key = Key::Cli(self.next_cli);
                self.next_cli += 1;
                self.index(key, name)
            }
        };
        self.finish_at(i, status);
    }

    fn end(&mut self, summary: Option<&Summary>) {
        self.cancel_running();
        self.ended = true;
        let elapsed = self.started.elapsed();
        self.render.end(&self.steps, summary, elapsed);
    }

    fn cancel_running(&mut self) {
        for i in 0..self.steps.len() {
            if self.steps[i].running() {
                self.finish_at(i, Status::Canceled);
            }
        }
    }
}

fn placeholder_name(key: Key) -> String {
    match key {
        Key::Op(op) => format!("op {op}"),
        Key::Cli(n) => format!("step {n}"),
    }
}

/// Seconds since a step started, with BuildKit's precision: 3 decimals under 10 s, 2 under
/// 100 s, else 1.
fn stamp(d: Duration) -> String {
    let s = d.as_secs_f64();
    match s {
        s if s < 10.0 => format!("{s:.3}"),
        s if s < 100.0 => format!("{s:.2}"),
        s => format!("{s:.1}"),
    }
}

/// BuildKit's text format, written straight to stderr.
#[derive(Default)]
struct PlainRender {
    /// The step whose block is open.
    current: Option<usize>,
    /// Something was printed (blocks after the first start with a blank line).
    printed: bool,
    /// When the current step last printed.
    last_line: Option<Instant>,
    /// Lines of steps that are not current, held back until their turn.
    held: HashMap<usize, Vec<String>>,
    /// Steps whose cache-miss reason was printed.
    explained: HashSet<usize>,
}

impl PlainRender {
    fn open(&mut self, out: &mut impl Write, steps: &[Step], i: usize) {
        if self.current == Some(i) {
            return;
        }
        if let Some(c) = self.current {
            if steps[c].running() {
                let _ = writeln!(out, "#{} ...", steps[c].number);
            }
        }
        if self.printed {
            let _ = writeln!(out);
        }
        self.printed = true;
        let _ = writeln!(out, "#{} {}", steps[i].number, steps[i].name);
        if let Some(reason) = &steps[i].cache_miss {
            if self.explained.insert(i) {
                let _ = writeln!(out, "#{} cache miss: {reason}", steps[i].number);
            }
        }
        self.current = Some(i);
        self.last_line = Some(Instant::now());
        for line in self.held.remove(&i).unwrap_or_default() {
            let _ = writeln!(out, "#{} {line}", steps[i].number);
        }
    }

    /// Whether the open block is still talking, so another step's line should wait.
    fn busy(&self, steps: &[Step]) -> bool {
        self.current.is_some_and(|c| steps[c].running())
            && self.last_line.is_some_and(|t| t.elapsed() < ANTI_FLICKER)
    }

    /// Prints what other steps held back, oldest step first.
    fn flush_held(&mut self, out: &mut impl Write, steps: &[Step]) {
        let mut waiting: Vec<usize> = self.held.keys().copied().collect();
        waiting.sort_unstable();
        for i in waiting {
            self.open(out, steps, i);
        }
    }
}

impl Render for PlainRender {
    fn started(&mut self, steps: &[Step], i: usize) {
        if !self.busy(steps) {
            self.open(&mut std::io::stderr().lock(), steps, i);
        }
    }

    fn log(&mut self, steps: &[Step], i: usize, _line: &str, line: &str) {
        if self.current != Some(i) && self.busy(steps) {
            self.held.entry(i).or_default().push(line.to_string());
            return;
        }
        let mut out = std::io::stderr().lock();
        self.open(&mut out, steps, i);
        let _ = writeln!(out, "#{} {line}", steps[i].number);
        self.last_line = Some(Instant::now());
    }

    fn finished(&mut self, steps: &[Step], i: usize) {
        let mut out = std::io::stderr().lock();
        self.open(&mut out, steps, i);
        let step = &steps[i];
        let n = step.number;
        let _ = match &step.status {
            Status::Done(d) => writeln!(out, "#{n} DONE {:.1}s", d.as_secs_f64()),
            Status::Cached => writeln!(out, "#{n} CACHED"),
            Status::Error(m) => writeln!(out, "#{n} ERROR: {m}"),
            Status::Canceled => writeln!(out, "#{n} CANCELED"),
            Status::Running => Ok(()),
        };
        self.current = None;
        self.flush_held(&mut out, steps);
    }

    fn end(&mut self, steps: &[Step], summary: Option<&Summary>, elapsed: Duration) {
        let mut out = std::io::stderr().lock();
        self.flush_held(&mut out, steps);
        write_error_logs(&mut out, steps);
        if let Some(s) = summary {
            let _ = writeln!(out);
            let _ = writeln!(out, "{}", summary_line(s, elapsed));
        }
    }
}

/// BuildKit's epilogue for failed steps: their last lines of output between rulers.
fn write_error_logs(out: &mut impl Write, steps: &[Step]) {
    for step in steps {
        if let Status::Error(_) = step.status {
            let _ = writeln!(out, "------");
            let _ = writeln!(out, " > {}:", step.name);
            for line in &step.tail {
                let _ = writeln!(out, "{line}");
            }
            let _ = writeln!(out, "------");
        }
    }
}

fn summary_line(s: &Summary, elapsed: Duration) -> String {
    let counts = format!(
        "{} steps run, {} cached, {:.1}s",
        s.ran,
        s.cached,
        elapsed.as_secs_f64()
    );
    match &s.digest {
        Some(d) => format!("built {d} ({counts})"),
        None => format!("built ({counts})"),
    }
}

/// One JSON object per line, for tools. Every object has `time` (RFC 3339, UTC, milliseconds)
/// and `event`; the other fields depend on the event:
///
/// | `event`   | fields |
/// |-----------|--------|
/// | `started` | `step`, `op`?, `name`, `cache_miss`? (why a step that could have been cached ran) |
/// | `log`     | `step`, `op`?, `line` (one line of the step's output, without its newline) |
/// | `done`    | `step`, `op`?, `elapsed_ms` |
/// | `cached`  | `step`, `op`?, `name` |
/// | `error`   | `step`, `op`?, `message` |
/// | `canceled`| `step`, `op`? |
/// | `summary` | `ran`, `cached`, `elapsed_ms`, `digest`? (manifest), `image_id`? (config digest) |
///
/// `step` is the step's number (`#N` in `plain`), `op` the index of the op in the build graph
/// (`--print-graph`), absent for the CLI's own steps such as exporting. Every `started` step is
/// followed by exactly one `done`, `error` or `canceled`; a `cached` step needs none.
struct JsonRender;

impl JsonRender {
    fn emit(&self, step: Option<&Step>, event: &str, fields: serde_json::Value) {
        let mut obj = serde_json::Map::new();
        obj.insert("time".into(), rfc3339(SystemTime::now()).into());
        obj.insert("event".into(), event.into());
        if let Some(step) = step {
            obj.insert("step".into(), step.number.into());
            if let Some(op) = step.op {
                obj.insert("op".into(), op.into());
            }
        }
        if let serde_json::Value::Object(extra) = fields {
            obj.extend(extra);
        }
        let line = serde_json::Value::Object(obj).to_string();
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

impl Render for JsonRender {
    fn started(&mut self, steps: &[Step], i: usize) {
        let step = &steps[i];
        let mut fields = serde_json::json!({ "name": step.name });
        if let Some(reason) = &step.cache_miss {
            fields["cache_miss"] = reason.as_str().into();
        }
        self.emit(Some(step), "started", fields);
    }

    fn log(&mut self, steps: &[Step], i: usize, line: &str, _stamped: &str) {
        self.emit(Some(&steps[i]), "log", serde_json::json!({ "line": line }));
    }

    fn finished(&mut self, steps: &[Step], i: usize) {
        let step = &steps[i];
        match &step.status {
            Status::Done(d) => self.emit(
                Some(step),
                "done",
                serde_json::json!({ "elapsed_ms": d.as_millis() as u64 }),
            ),
            Status::Cached => self.emit(
                Some(step),
                "cached",
                serde_json::json!({ "name": step.name }),
            ),
            Status::Error(m) => self.emit(Some(step), "error", serde_json::json!({ "message": m })),
            Status::Canceled => self.emit(Some(step), "canceled", serde_json::json!({})),
            Status::Running => {}
        }
    }

    fn end(&mut self, _steps: &[Step], summary: Option<&Summary>, elapsed: Duration) {
        if let Some(s) = summary {
            let mut fields = serde_json::json!({
                "ran": s.ran,
                "cached": s.cached,
                "elapsed_ms": elapsed.as_millis() as u64,
            });
            if let Some(d) = &s.digest {
                fields["digest"] = d.as_str().into();
            }
            if let Some(id) = &s.image_id {
                fields["image_id"] = id.as_str().into();
            }
            self.emit(None, "summary", fields);
        }
    }
}

/// `2026-11-25T10:04:05.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Nothing on stderr (errors are the CLI's); the image ID on stdout at the end.
struct QuietRender;

impl Render for QuietRender {
    fn started(&mut self, _: &[Step], _: usize) {}
    fn log(&mut self, _: &[Step], _: usize, _: &str, _: &str) {}
    fn finished(&mut self, _: &[Step], _: usize) {}

    fn end(&mut self, _: &[Step], summary: Option<&Summary>, _: Duration) {
        if let Some(id) = summary.and_then(|s| s.image_id.as_ref().or(s.digest.as_ref())) {
            println!("{id}");
        }
    }
}

/// The indicatif display: a header, a spinner line per running step and, under it, the last
/// lines of its output; finished steps are printed above as one line each.
struct TtyRender {
    multi: MultiProgress,
    /// `Building 1.2s (3/5)`, drawn from the first step on (warnings may be printed before).
    header: Option<ProgressBar>,
    /// A running step's line and its output lines.
    bars: HashMap<usize, (ProgressBar, Vec<ProgressBar>)>,
}

impl TtyRender {
    fn new() -> TtyRender {
        TtyRender {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            header: None,
            bars: HashMap::new(),
        }
    }

    fn update_header(&mut self, steps: &[Step]) {
        let header = self.header.get_or_insert_with(|| {
            let bar = self.multi.insert(0, ProgressBar::new_spinner());
            bar.set_style(style("{spinner:.blue} Building {secs} {msg}"));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        let done = steps.iter().filter(|s| !s.running()).count();
        header.set_message(format!("({done}/{})", steps.len()));
    }

    /// The line a finished step collapses to.
    fn finished_line(step: &Step) -> String {
        match &step.status {
            Status::Done(d) => match &step.cache_miss {
                Some(reason) => format!(
                    "✔ {}  {:.1}s  (cache miss: {reason})",
                    step.name,
                    d.as_secs_f64()
                ),
                None => format!("✔ {}  {:.1}s", step.name, d.as_secs_f64()),
            },
            Status::Cached => format!("✔ {}  CACHED", step.name),
            Status::Error(m) => {
                let mut s = format!("✘ {}  ERROR: {m}", step.name);
                for line in &step.tail {
                    s.push_str(&format!("\n  │ {line}"));
                }
                s
            }
            Status::Canceled => format!("- {}  CANCELED", step.name),
            Status::Running => step.name.clone(),
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid progress template")
        .with_key(
            "secs",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
            },
        )
}

impl Render for TtyRender {
    fn started(&mut self, steps: &[Step], i: usize) {
        self.update_header(steps);
        if !steps[i].running() || self.bars.contains_key(&i) {
            return;
        }
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(style("{spinner:.cyan} {wide_msg} {secs:.dim}"));
        bar.set_message(steps[i].name.clone());
        bar.enable_steady_tick(Duration::from_millis(100));
        self.bars.insert(i, (bar, Vec::new()));
    }

    fn log(&mut self, steps: &[Step], i: usize, _line: &str, _stamped: &str) {
        let Some((bar, lines)) = self.bars.get_mut(&i) else {
            return;
        };
        while lines.len() < steps[i].tail.len() {
            let after = lines.last().unwrap_or(bar);
            let line = self.multi.insert_after(after, ProgressBar::new_spinner());
            line.set_style(style("  {wide_msg:.dim}"));
            lines.push(line);
        }
        for (line, text) in lines.iter().zip(&steps[i].tail) {
            line.set_message(format!("│ {text}"));
        }
    }

    fn finished(&mut self, steps: &[Step], i: usize) {
        if let Some((bar, lines)) = self.bars.remove(&i) {
            for line in lines {
                line.finish_and_clear();
                self.multi.remove(&line);
            }
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        let _ = self.multi.println(Self::finished_line(&steps[i]));
        self.update_header(steps);
    }

    fn end(&mut self, steps: &[Step], summary: Option<&Summary>, elapsed: Duration) {
        if let Some(header) = self.header.take() {
            header.finish_and_clear();
            self.multi.remove(&header);
        }
        let _ = self.multi.clear();
        if let Some(s) = summary {
            eprintln!("✔ {}", summary_line(s, elapsed));
            for line in cache_miss_lines(steps) {
                eprintln!("{line}");
            }
        }
    }
}

/// The summary's list of steps that missed the cache, and why.
fn cache_miss_lines(steps: &[Step]) -> Vec<String> {
    let missed: Vec<&Step> = steps.iter().filter(|s| s.cache_miss.is_some()).collect();
    if missed.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "  {} cache miss{}:",
        missed.len(),
        if missed.len() == 1 { "" } else { "es" }
    )];
    for s in missed {
        let reason = s.cache_miss.as_deref().unwrap_or_default();
        lines.push(format!("    #{} {} — {reason}", s.number, s.name));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_like_buildkit() {
        assert_eq!(stamp(Duration::from_millis(512)), "0.512");
        assert_eq!(stamp(Duration::from_millis(12_345)), "12.35");
        assert_eq!(stamp(Duration::from_millis(123_456)), "123.5");
    }

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}
