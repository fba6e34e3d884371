//! Progress display. `plain` prints in BuildKit's style: `#3 [stage-0 2/3] COPY a /b`, then
//! `#3 DONE 0.1s` or `#3 CACHED`; `quiet` prints nothing.

use kiln_solver::Event;
use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

/// Renders solver events and the build's own steps to stderr.
pub struct Progress {
    quiet: bool,
    state: Mutex<State>,
}

struct State {
    next: usize,
    numbers: HashMap<usize, usize>,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress {
            quiet,
            state: Mutex::new(State {
                next: 1,
                numbers: HashMap::new(),
            }),
        }
    }

    fn print(&self, line: &str) {
        if !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{line}");
        }
    }

    fn number(&self, op: Option<usize>) -> usize {
        let mut s = self.state.lock().expect("progress state");
        if let Some(n) = op.and_then(|op| s.numbers.get(&op).copied()) {
            return n;
        }
        let n = s.next;
        s.next += 1;
        if let Some(op) = op {
            s.numbers.insert(op, n);
        }
        n
    }

    /// Runs `f` as a step of the build's own (not of the graph), timing it.
    pub fn step<T>(
        &self,
        name: &str,
        f: impl FnOnce(&dyn Fn(&str)) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let n = self.number(None);
        self.print(&format!("#{n} {name}"));
        let start = Instant::now();
        let log = |line: &str| self.print(&format!("#{n} {line}"));
        let result = f(&log);
        match &result {
            Ok(_) => self.print(&format!("#{n} DONE {:.1}s", start.elapsed().as_secs_f64())),
            Err(_) => self.print(&format!("#{n} ERROR")),
        }
        result
    }

    /// Renders one solver event.
    pub fn event(&self, e: Event) {
        match e {
            Event::Started { op, name } => {
                let n = self.number(Some(op));
                self.print(&format!("#{n} {name}"));
            }
            Event::Cached { op, name } => {
                let n = self.number(Some(op));
                self.print(&format!("#{n} {name}"));
                self.print(&format!("#{n} CACHED"));
            }
            Event::Done { op, elapsed } => {
                let n = self.number(Some(op));
                self.print(&format!("#{n} DONE {:.1}s", elapsed.as_secs_f64()));
            }
            Event::Log { op, line } => {
                let n = self.number(Some(op));
                self.print(&format!("#{n} {line}"));
            }
        }
    }
}
