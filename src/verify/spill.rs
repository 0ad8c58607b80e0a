//! An external sort for `riffle verify`: records are kept in memory while
//! every sorter together stays under a budget; past it, the sorter that
//! grows sorts what it holds and writes it to a temporary file (a run).
//! Reading merges the runs and what is left in memory, in order. So a
//! table of any size is compared in bounded memory, at the cost of temporary
//! disk about the size of its keys and digests.
//!
//! Runs are merged in tiers as they come: [`FAN_IN`] runs of one tier become
//! one run of the next, so however large the table, a sorter keeps a few
//! dozen files, and the final merge reads them through small buffers (a
//! billion rows under a 16 MiB budget would otherwise be thousands of open
//! files).

use riffle_formats::read::Cells;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One row event (sink) or row (source), sorted by key, then by its place
/// in the sink's position order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rec {
    pub key: String,
    /// The event's place among the sink's events (0 for source rows).
    pub seq: u64,
    /// `r`, `c`, `u`, `d` as a byte.
    pub op: u8,
    pub partial: bool,
    pub digest: u64,
    pub cells: Option<Cells>,
}

impl Rec {
    fn size(&self) -> usize {
        64 + self.key.len() + self.cells.iter().flatten().map(|(c, v)| 48 + c.len() + v.as_ref().map_or(0, String::len)).sum::<usize>()
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let bytes = |out: &mut dyn Write, b: &[u8]| -> io::Result<()> {
            out.write_all(&(b.len() as u32).to_le_bytes())?;
            out.write_all(b)
        };
        bytes(out, self.key.as_bytes())?;
        out.write_all(&self.seq.to_le_bytes())?;
        out.write_all(&[self.op, u8::from(self.partial)])?;
        out.write_all(&self.digest.to_le_bytes())?;
        match &self.cells {
            None => out.write_all(&[0]),
            Some(cells) => {
                out.write_all(&[1])?;
                out.write_all(&(cells.len() as u32).to_le_bytes())?;
                for (c, v) in cells {
                    bytes(out, c.as_bytes())?;
                    match v {
                        None => out.write_all(&[0])?,
                        Some(v) => {
                            out.write_all(&[1])?;
                            bytes(out, v.as_bytes())?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The next record of a run; `None` at its end.
    fn read(r: &mut impl Read) -> io::Result<Option<Rec>> {
        fn u32_of(r: &mut impl Read) -> io::Result<u32> {
            let mut b = [0u8; 4];
            r.read_exact(&mut b)?;
            Ok(u32::from_le_bytes(b))
        }
        fn u64_of(r: &mut impl Read) -> io::Result<u64> {
            let mut b = [0u8; 8];
            r.read_exact(&mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        fn text(r: &mut impl Read) -> io::Result<String> {
            let n = u32_of(r)? as usize;
            let mut b = vec![0u8; n];
            r.read_exact(&mut b)?;
            String::from_utf8(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        }
        fn byte(r: &mut impl Read) -> io::Result<u8> {
            let mut b = [0u8; 1];
            r.read_exact(&mut b)?;
            Ok(b[0])
        }
        let key = match text(r) {
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        };
        let seq = u64_of(r)?;
        let (op, partial) = (byte(r)?, byte(r)? != 0);
        let digest = u64_of(r)?;
        let cells = match byte(r)? {
            0 => None,
            _ => {
                let n = u32_of(r)? as usize;
                let mut cells = Vec::with_capacity(n.min(4096));
                for _ in 0..n {
                    let c = text(r)?;
                    let v = if byte(r)? == 0 { None } else { Some(text(r)?) };
                    cells.push((c, v));
                }
                Some(cells)
            }
        };
        Ok(Some(Rec { key, seq, op, partial, digest, cells }))
    }
}

/// Runs of one tier merged into one of the next.
const FAN_IN: usize = 16;
/// The read buffer of each run being merged.
const READ_BUFFER: usize = 64 << 10;

/// A sorted run on disk and its tier (0: written from memory).
struct Run {
    path: PathBuf,
    tier: u32,
}

/// Records to sort; see the module's documentation.
pub struct Sorter {
    mem: Vec<Rec>,
    held: usize,
    /// Bytes held in memory by every sorter sharing the budget.
    used: Arc<AtomicUsize>,
    budget: usize,
    runs: Vec<Run>,
    /// Runs written from memory so far.
    spilled: usize,
    dir: PathBuf,
}

/// A new run's file in `dir`, unique in the process (sorters move between
/// threads and places). `dir` is made by the sorters' owner and removed
/// with it: a sorter left running after its owner is gone (a stopped
/// verify) cannot make it again.
fn run_file(dir: &std::path::Path) -> io::Result<(PathBuf, BufWriter<File>)> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = dir.join(format!("run-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    let out = BufWriter::with_capacity(1 << 20, File::create(&path)?);
    Ok((path, out))
}

impl Sorter {
    /// A sorter sharing `used` (bytes in memory) with the others, spilling
    /// past `budget`; runs go to `dir`.
    pub fn new(used: Arc<AtomicUsize>, budget: usize, dir: PathBuf) -> Sorter {
        Sorter { mem: Vec::new(), held: 0, used, budget, runs: Vec::new(), spilled: 0, dir }
    }

    pub fn push(&mut self, r: Rec) -> io::Result<()> {
        let size = r.size();
        self.held += size;
        self.mem.push(r);
        if self.used.fetch_add(size, Ordering::Relaxed) + size > self.budget {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.mem.is_empty() {
            return Ok(());
        }
        self.mem.sort_unstable();
        let (path, mut out) = run_file(&self.dir)?;
        for r in self.mem.drain(..) {
            r.write(&mut out)?;
        }
        out.flush()?;
        self.runs.push(Run { path, tier: 0 });
        self.spilled += 1;
        self.used.fetch_sub(self.held, Ordering::Relaxed);
        self.held = 0;
        self.compact()
    }

    /// Merges the runs of any tier that holds [`FAN_IN`] of them into one
    /// run of the next tier.
    fn compact(&mut self) -> io::Result<()> {
        let mut tier = 0;
        loop {
            let (full, rest): (Vec<Run>, Vec<Run>) = std::mem::take(&mut self.runs).into_iter().partition(|r| r.tier == tier);
            self.runs = rest;
            if full.len() < FAN_IN {
                self.runs.extend(full);
                if !self.runs.iter().any(|r| r.tier > tier) {
                    return Ok(());
                }
                tier += 1;
                continue;
            }
            let merged = merge(full.into_iter().map(|r| r.path).collect(), Vec::new(), self.used.clone(), 0)?;
            let (path, mut out) = run_file(&self.dir)?;
            // Pushed before it is written: dropped with the sorter on error.
            self.runs.push(Run { path, tier: tier + 1 });
            for r in merged {
                r?.write(&mut out)?;
            }
            out.flush()?;
        }
    }

    /// Runs written from memory so far (fewer are on disk: see [`FAN_IN`]).
    pub fn runs(&self) -> usize {
        self.spilled
    }

    /// Every record, in order.
    pub fn finish(mut self) -> io::Result<Merged> {
        self.mem.sort_unstable();
        let paths = std::mem::take(&mut self.runs).into_iter().map(|r| r.path).collect();
        let held = std::mem::take(&mut self.held);
        merge(paths, std::mem::take(&mut self.mem), self.used.clone(), held)
    }
}

/// `runs` and the sorted records `mem` (holding `held` bytes of the
/// budget), merged in order; the runs are deleted when it is dropped.
fn merge(paths: Vec<PathBuf>, mem: Vec<Rec>, used: Arc<AtomicUsize>, held: usize) -> io::Result<Merged> {
    let mut merged = Merged { runs: Vec::new(), heap: BinaryHeap::new(), mem: mem.into_iter(), mem_next: None, paths, used, held };
    for p in &merged.paths {
        merged.runs.push(BufReader::with_capacity(READ_BUFFER, File::open(p)?));
    }
    for (i, run) in merged.runs.iter_mut().enumerate() {
        if let Some(r) = Rec::read(run)? {
            merged.heap.push(Reverse((r, i)));
        }
    }
    merged.mem_next = merged.mem.next();
    Ok(merged)
}

impl Drop for Sorter {
    fn drop(&mut self) {
        self.used.fetch_sub(self.held, Ordering::Relaxed);
        for r in &self.runs {
            let _ = std::fs::remove_file(&r.path);
        }
    }
}

/// The records of a [`Sorter`], in order; its runs are deleted when dropped.
pub struct Merged {
    runs: Vec<BufReader<File>>,
    heap: BinaryHeap<Reverse<(Rec, usize)>>,
    mem: std::vec::IntoIter<Rec>,
    mem_next: Option<Rec>,
    paths: Vec<PathBuf>,
    used: Arc<AtomicUsize>,
    held: usize,
}

impl Iterator for Merged {
    type Item = io::Result<Rec>;

    fn next(&mut self) -> Option<io::Result<Rec>> {
        let from_runs = match (self.heap.peek(), &self.mem_next) {
            (None, None) => return None,
            (Some(Reverse((r, _))), Some(m)) => r <= m,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        if !from_runs {
            return std::mem::replace(&mut self.mem_next, self.mem.next()).map(Ok);
        }
        let Reverse((r, i)) = self.heap.pop().expect("peeked");
        match Rec::read(&mut self.runs[i]) {
            Ok(Some(next)) => self.heap.push(Reverse((next, i))),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
        Some(Ok(r))
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        self.used.fetch_sub(self.held, Ordering::Relaxed);
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order_across_runs_and_memory() {
        let dir = std::env::temp_dir().join(format!("riffle-spill-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let used = Arc::new(AtomicUsize::new(0));
        // A budget of a few records: many runs.
        let mut s = Sorter::new(used.clone(), 2_000, dir.clone());
        let mut want = Vec::new();
        for i in 0..5000u64 {
            let k = (i * 7919) % 5000;
            let cells = (i % 3 == 0).then(|| vec![("id".to_string(), Some(k.to_string())), ("n".to_string(), None)]);
            let r = Rec { key: format!("id={k:04}"), seq: i, op: b'c', partial: i % 5 == 0, digest: i * 31, cells };
            want.push(r.clone());
            s.push(r).unwrap();
        }
        // Tiers keep the files few: 16 runs of a tier become one of the next.
        assert!(s.runs.iter().any(|r| r.tier >= 1), "runs were merged in tiers");
        assert!(s.runs.len() < 2 * FAN_IN, "{} runs", s.runs.len());
        want.sort();
        let got: Vec<Rec> = s.finish().unwrap().map(Result::unwrap).collect();
        assert_eq!(got, want);
        assert_eq!(used.load(Ordering::Relaxed), 0, "the budget is given back");
        assert_eq!(std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0), 0, "runs are deleted");
        let _ = std::fs::remove_dir(&dir);
    }
}
