//! The cost of remoteness: the suite and a flash over RFC 2217 through `relay-hil serve`,
//! against the same kind of board on its own port, interleaved rep by rep.
//!
//! Both paths run the virtual board at its profile's paced rate on this machine: what differs
//! is only the hop (the RFC 2217 client, a loopback TCP connection, `serve` and its resets).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use crate::board::{OpenOptions, Target};
use crate::error::{BenchError, Result};
use crate::flash::{self, Flashed, Image, Job};

/// Bytes of the image flashed each rep: a relay firmware's size (the chip build's is ~290 KB).
pub const IMAGE_BYTES: usize = 300_000;

/// One path's times, one per rep, in seconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Times {
    pub suite: Vec<f64>,
    pub flash: Vec<f64>,
}

/// Both paths' times.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Remoteness {
    pub reps: usize,
    pub image_bytes: usize,
    pub flash_baud: u32,
    pub direct: Times,
    pub rfc2217: Times,
}

/// A `relay-hil serve` child and the URL it serves; killed when dropped.
struct Served {
    child: std::process::Child,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(me: &Path, flash_file: &Path) -> Result<Served> {
    let fail = |why: String| BenchError::Remote { why };
    let mut child = std::process::Command::new(me)
        .args(["serve", "--listen", "127.0.0.1:0", "--flash-file"])
        .arg(flash_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| fail(format!("cannot start relay-hil serve: {e}")))?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| fail(format!("relay-hil serve: {e}")))?;
    let url = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v["url"].as_str().map(str::to_owned))
        .ok_or_else(|| fail(format!("relay-hil serve printed `{}`", line.trim_end())))?;
    Ok(Served { child, url })
}

/// Flashes `image` (whatever the board runs) and runs every scenario; the write's and the
/// suite's times. `path` names the path in a failure.
async fn one(target: &Target, opts: &OpenOptions, job: &Job, path: &str) -> Result<(f64, f64)> {
    let mut board = job.attach(target, opts).await?;
    let flashed = job.run(&mut board, opts.banner_timeout, ()).await?;
    let Flashed::Written { elapsed, .. } = flashed else {
        unreachable!("a forced flash writes");
    };
    let chosen: Vec<_> = crate::scenario::ALL.iter().collect();
    let start = Instant::now();
    let records = crate::run(&mut board, &chosen, |_, _| {}).await;
    let suite = start.elapsed();
    if let Some(r) = records
        .iter()
        .find(|r| matches!(r.outcome, crate::scenario::Outcome::Fail(_)))
    {
        return Err(BenchError::Remote {
            why: format!("{} failed {path}: {:?}", r.scenario, r.outcome),
        }
        .into());
    }
    Ok((elapsed.as_secs_f64(), suite.as_secs_f64()))
}

/// Measures both paths `reps` times, interleaved; `me` is this program (its `serve` and
/// `virtual-board` commands), `dir` a folder for the image and the flash files.
pub async fn measure(
    me: &Path,
    opts: &OpenOptions,
    dir: &Path,
    reps: usize,
    mut progress: impl FnMut(&str),
) -> Result<Remoteness> {
    let image_path = dir.join("remote.bin");
    crate::image::write(&image_path, "remote01", IMAGE_BYTES)
        .map_err(|e| BenchError::Remote { why: e.to_string() })?;
    let job = |flash_file: PathBuf| -> Result<Job> {
        Ok(Job {
            image: Image::load(&image_path)?,
            force: true,
            baud: flash::DEFAULT_BAUD,
            flash_file,
        })
    };
    let direct_job = job(dir.join("direct.flash"))?;
    let remote_job = job(dir.join("remote.flash"))?;
    let direct = Target::Virtual {
        program: me.to_owned(),
        args: vec!["virtual-board".into()],
    };
    let mut out = Remoteness {
        reps,
        image_bytes: direct_job.image.bytes.len(),
        flash_baud: flash::DEFAULT_BAUD,
        ..Remoteness::default()
    };
    for rep in 1..=reps {
        progress(&format!("rep {rep}/{reps}: the board's own port"));
        let (flash, suite) = one(&direct, opts, &direct_job, "on the board's own port").await?;
        out.direct.flash.push(flash);
        out.direct.suite.push(suite);
        progress(&format!(
            "rep {rep}/{reps}: over RFC 2217 through relay-hil serve"
        ));
        let served = serve(me, &remote_job.flash_file)?;
        let remote = Target::Port {
            path: Some(PathBuf::from(&served.url)),
            addr: None,
        };
        let (flash, suite) = one(&remote, opts, &remote_job, "over RFC 2217").await?;
        out.rfc2217.flash.push(flash);
        out.rfc2217.suite.push(suite);
    }
    Ok(out)
}

/// min, median and max.
fn spread(xs: &[f64]) -> (f64, f64, f64) {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

impl Remoteness {
    /// The table: each figure's min/median/max on both paths, and the ratio of the medians.
    pub fn table(&self) -> String {
        let mut t = format!(
            "remoteness: {} reps, interleaved; seconds, min/median/max\n{:<28} {:>20} {:>20} {:>7}\n",
            self.reps, "figure", "own port", "rfc2217 (serve)", "ratio"
        );
        let rows = [
            (
                format!("flash {} bytes at {}", self.image_bytes, self.flash_baud),
                &self.direct.flash,
                &self.rfc2217.flash,
            ),
            (
                format!("suite, {} scenarios", crate::scenario::ALL.len()),
                &self.direct.suite,
                &self.rfc2217.suite,
            ),
        ];
        for (name, a, b) in rows {
            let (a0, a1, a2) = spread(a);
            let (b0, b1, b2) = spread(b);
            t += &format!(
                "{name:<28} {:>20} {:>20} {:>6.2}x\n",
                format!("{a0:.2}/{a1:.2}/{a2:.2}"),
                format!("{b0:.2}/{b1:.2}/{b2:.2}"),
                b1 / a1
            );
        }
        t
    }
}
