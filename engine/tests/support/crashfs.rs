//! A simulated disk under the page file's writer, for crash tests. Every write goes to the real file
//! (so the memory map sees it) and is also remembered as *pending*; a successful sync makes pending
//! writes durable. The disk can be told to lose power at the N-th I/O (that call and every later one
//! fails) or to fail one fsync. Afterwards, [`Disk::crash_image`] builds what a machine would find
//! after the power cut: the durable bytes plus, for every pending write, an arbitrary subset of its
//! 512-byte sectors (so writes tear at sector and page boundaries), and pending resizes kept or not.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use keelson_engine::pagefile::{FileIo, IoLayer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SECTOR: usize = 512;

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// Which I/O calls fail.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Power is lost at this I/O call (counted from 0): it and every later call fail.
    pub power_loss_at: Option<u64>,
    /// This one I/O call fails with EIO; the machine stays up. (A failed sync leaves what it was
    /// flushing undetermined.)
    pub fail_at: Option<u64>,
}

#[derive(Debug)]
struct State {
    durable: Vec<u8>,
    pending: Vec<Pending>,
    calls: u64,
    syncs: Vec<u64>,
    faults: Faults,
    powered_off: bool,
}

/// The simulated disk of one page file.
#[derive(Debug, Clone)]
pub struct Disk {
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct SimFile {
    file: File,
    state: Arc<Mutex<State>>,
}

impl SimFile {
    /// Counts a call and says whether it may proceed.
    fn call(&self, is_sync: bool) -> io::Result<u64> {
        let mut s = self.state.lock().unwrap();
        let n = s.calls;
        s.calls += 1;
        if is_sync {
            s.syncs.push(n);
        }
        if s.powered_off || s.faults.power_loss_at.is_some_and(|at| n >= at) {
            s.powered_off = true;
            return Err(io::Error::other("simulated power loss"));
        }
        if s.faults.fail_at == Some(n) {
            return Err(io::Error::from_raw_os_error(5));
        }
        Ok(n)
    }
}

impl FileIo for SimFile {
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.call(false)?;
        FileExt::write_all_at(&self.file, buf, offset)?;
        self.state.lock().unwrap().pending.push(Pending::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.call(true)?;
        let mut s = self.state.lock().unwrap();
        let pending = std::mem::take(&mut s.pending);
        for p in pending {
            apply(&mut s.durable, &p, None);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.call(false)?;
        self.file.set_len(len)?;
        self.state
            .lock()
            .unwrap()
            .pending
            .push(Pending::SetLen(len));
        Ok(())
    }
}

/// Applies a pending operation to an image; with `sectors`, only the sectors it selects.
fn apply(image: &mut Vec<u8>, p: &Pending, mut keep_sector: Option<&mut dyn FnMut() -> bool>) {
    match p {
        Pending::SetLen(len) => image.resize(*len as usize, 0),
        Pending::Write { offset, data } => {
            let offset = *offset as usize;
            for (i, chunk) in data.chunks(SECTOR).enumerate() {
                if let Some(keep) = keep_sector.as_mut()
                    && !keep()
                {
                    continue;
                }
                let at = offset + i * SECTOR;
                if image.len() < at + chunk.len() {
                    image.resize(at + chunk.len(), 0);
                }
                image[at..at + chunk.len()].copy_from_slice(chunk);
            }
        }
    }
}

/// How the unsynced writes fare in a crash image.
#[derive(Debug, Clone, Copy)]
pub enum Tear {
    /// None of them reached the disk.
    Nothing,
    /// All of them did.
    Everything,
    /// Each sector independently, by this seed.
    Random(u64),
}

impl Disk {
    /// An I/O layer for [`keelson_engine::pagefile::Options::io`] whose durable image starts as the
    /// file's current content (the file must exist), and the handle to inspect it.
    pub fn layer(initial: &[u8], faults: Faults) -> (IoLayer, Disk) {
        let state = Arc::new(Mutex::new(State {
            durable: initial.to_vec(),
            pending: Vec::new(),
            calls: 0,
            syncs: Vec::new(),
            faults,
            powered_off: false,
        }));
        let disk = Disk {
            state: state.clone(),
        };
        let layer: IoLayer = Arc::new(move |file| {
            Box::new(SimFile {
                file,
                state: state.clone(),
            })
        });
        (layer, disk)
    }

    /// I/O calls made so far.
    pub fn calls(&self) -> u64 {
        self.state.lock().unwrap().calls
    }

    /// Indices of the calls that were syncs.
    pub fn sync_calls(&self) -> Vec<u64> {
        self.state.lock().unwrap().syncs.clone()
    }

    /// What the disk holds after a power cut now.
    pub fn crash_image(&self, tear: Tear) -> Vec<u8> {
        let s = self.state.lock().unwrap();
        let mut image = s.durable.clone();
        let mut rng = StdRng::seed_from_u64(match tear {
            Tear::Random(seed) => seed,
            _ => 0,
        });
        for p in &s.pending {
            match (tear, p) {
                (Tear::Nothing, _) => {}
                (Tear::Everything, _) => apply(&mut image, p, None),
                (Tear::Random(_), Pending::SetLen(_)) => {
                    if rng.random_bool(0.5) {
                        apply(&mut image, p, None);
                    }
                }
                (Tear::Random(_), Pending::Write { .. }) => {
                    let mut keep = || rng.random_bool(0.5);
                    apply(&mut image, p, Some(&mut keep));
                }
            }
        }
        image
    }
}
