//! Draws `benches/vs-etcd`'s figures: `cargo bench --bench plot -- DIR` reads `DIR/runs.csv` and
//! writes `DIR/cpu.png` (server CPU per request) and `DIR/latency.png` (p99 as bars, p50 and p99.9
//! as marks), one panel per workload, one bar per server, each the mean of the rounds. Text is
//! drawn with a TrueType font from the system (`apt-get install fonts-dejavu-core`).

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

/// Fonts tried in turn for the text.
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// One server's figures for one workload, averaged over the rounds.
#[derive(Debug, Default, Clone)]
struct Figures {
    p50: f64,
    p99: f64,
    p999: f64,
    cpu: f64,
    rounds: f64,
}

/// Workloads in the order the runs came, each with its servers in order.
type Runs = Vec<(String, Vec<(String, Figures)>)>;

fn read(csv: &Path) -> Result<Runs, Box<dyn Error>> {
    let text = std::fs::read_to_string(csv)?;
    let mut runs: Runs = Vec::new();
    for line in text.lines().skip(1).filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let [workload, _round, server, _rate, p50, p99, p999, cpu, _rss] = f[..] else {
            return Err(format!("{}: a row of {} fields: {line}", csv.display(), f.len()).into());
        };
        let at = match runs.iter().position(|(w, _)| w == workload) {
            Some(at) => at,
            None => {
                runs.push((workload.to_string(), Vec::new()));
                runs.len() - 1
            }
        };
        let servers = &mut runs[at].1;
        let at = match servers.iter().position(|(s, _)| s == server) {
            Some(at) => at,
            None => {
                servers.push((server.to_string(), Figures::default()));
                servers.len() - 1
            }
        };
        let figures = &mut servers[at].1;
        figures.p50 += p50.parse::<f64>()?;
        figures.p99 += p99.parse::<f64>()?;
        figures.p999 += p999.parse::<f64>()?;
        figures.cpu += cpu.parse::<f64>()?;
        figures.rounds += 1.0;
    }
    for (_, servers) in &mut runs {
        for (_, f) in servers.iter_mut() {
            let n = f.rounds.max(1.0);
            (f.p50, f.p99, f.p999, f.cpu) = (f.p50 / n, f.p99 / n, f.p999 / n, f.cpu / n);
        }
    }
    Ok(runs)
}

/// A figure picked from a server's [`Figures`].
type Pick = fn(&Figures) -> f64;

/// A colour per server, keelson's last and strongest.
fn colour(server: &str, servers: &[String]) -> RGBColor {
    if server == "keelson" {
        return RGBColor(0, 110, 190);
    }
    let others = [
        RGBColor(170, 170, 170),
        RGBColor(220, 130, 60),
        RGBColor(120, 170, 90),
    ];
    let at = servers.iter().position(|s| s == server).unwrap_or(0);
    others[at % others.len()]
}

/// One panel per workload; in each, a bar per server of `bar`, and `marks` drawn over it.
fn draw(
    runs: &Runs,
    file: &Path,
    title: &str,
    unit: &str,
    bar: Pick,
    marks: &[(Pick, &str)],
) -> Result<(), Box<dyn Error>> {
    let columns = 4.min(runs.len()).max(1);
    let rows = runs.len().div_ceil(columns).max(1);
    let root = BitMapBackend::new(file, (360 * columns as u32, 300 * rows as u32 + 60))
        .into_drawing_area();
    root.fill(&WHITE)?;
    let legend = marks
        .iter()
        .map(|(_, name)| format!(", {name}"))
        .collect::<String>();
    let root = root.titled(&format!("{title} ({unit}{legend})"), ("sans-serif", 22))?;
    let names: Vec<String> = runs
        .iter()
        .flat_map(|(_, s)| s.iter().map(|(n, _)| n.clone()))
        .fold(Vec::new(), |mut all, n| {
            if !all.contains(&n) {
                all.push(n);
            }
            all
        });
    for ((workload, servers), area) in runs.iter().zip(root.split_evenly((rows, columns))) {
        let top = servers
            .iter()
            .flat_map(|(_, f)| std::iter::once(bar(f)).chain(marks.iter().map(|(m, _)| m(f))))
            .fold(0.0f64, f64::max)
            * 1.15;
        let labels: Vec<String> = servers.iter().map(|(s, _)| s.clone()).collect();
        let mut chart = ChartBuilder::on(&area)
            .caption(workload, ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(52)
            .build_cartesian_2d(
                (0..servers.len().saturating_sub(1)).into_segmented(),
                0.0..top.max(1e-9),
            )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 13))
            .draw()?;
        for (i, (server, f)) in servers.iter().enumerate() {
            let fill = colour(server, &names).filled();
            let mut rect = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), bar(f)),
                ],
                fill,
            );
            rect.set_margin(0, 0, 12, 12);
            chart.draw_series(std::iter::once(rect))?;
            for (n, (mark, _)) in marks.iter().enumerate() {
                let at = (SegmentValue::CenterOf(i), mark(f));
                if n == 0 {
                    chart.draw_series(std::iter::once(Circle::new(at, 5, BLACK.filled())))?;
                } else {
                    chart.draw_series(std::iter::once(TriangleMarker::new(
                        at,
                        6,
                        BLACK.filled(),
                    )))?;
                }
            }
        }
    }
    root.present()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    // `cargo bench` passes `--bench`; the directory is the one other argument.
    let dir: PathBuf = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .ok_or("usage: cargo bench --bench plot -- DIR (DIR/runs.csv from benches/vs-etcd)")?
        .into();
    let font = FONTS
        .iter()
        .find_map(|f| std::fs::read(f).ok())
        .ok_or("no DejaVuSans.ttf for the text: apt-get install fonts-dejavu-core")?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| "the font could not be read")?;
    let runs = read(&dir.join("runs.csv"))?;
    draw(
        &runs,
        &dir.join("cpu.png"),
        "server CPU per request",
        "µs",
        |f| f.cpu,
        &[],
    )?;
    draw(
        &runs,
        &dir.join("latency.png"),
        "latency: bar p99",
        "ms",
        |f| f.p99,
        &[(|f| f.p50, "dot p50"), (|f| f.p999, "triangle p99.9")],
    )?;
    println!(
        "wrote {} and {}",
        dir.join("cpu.png").display(),
        dir.join("latency.png").display()
    );
    Ok(())
}
