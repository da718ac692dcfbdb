//! `zebra plot`: figures from result files, as SVG and PNG. Sweep curves
//! (RMSE and SNR against the swept parameter, one line per mapping) and
//! overlaid |error| histograms of every mapping at one sweep point.

use crate::error::{Error, Result};
use crate::io::csv::{read_csv, Table};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Parameter columns a sweep may vary, with axis labels (units included).
const PARAMS: [(&str, &str); 21] = [
    (
        "cell_sigma",
        "cell mismatch sigma (fraction of a cell's weight)",
    ),
    ("parallelism", "parallelism P (rows per conversion)"),
    ("adc_bits", "ADC resolution (bits)"),
    ("read_sigma", "read noise sigma (cells)"),
    ("leak", "leak (fraction of a cell's weight)"),
    ("p_sa0", "stuck-at-0 probability"),
    ("p_sa1", "stuck-at-1 probability"),
    ("k", "K (rows)"),
    ("n", "N (columns)"),
    ("inputs", "input vectors per trial"),
    ("weight_bits", "weight bits"),
    ("input_bits", "input bits"),
    ("input_zero_fraction", "fraction of zero inputs"),
    ("calibrate_percentile", "calibration percentile (%)"),
    ("weights", "weight distribution"),
    ("noise_mode", "noise mode"),
    ("trials", "trials"),
    (
        "fs_sigma",
        "conversion noise sigma (fraction of its full-scale range)",
    ),
    ("adc_sigma_lsb", "ADC noise sigma (LSB)"),
    ("energy_model", "ADC energy model"),
    ("adc_scaling", "ADC energy scaling"),
];

const COLORS: [RGBColor; 12] = [
    RGBColor(213, 94, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(153, 153, 153),
    RGBColor(128, 0, 0),
    RGBColor(0, 0, 128),
    RGBColor(128, 128, 0),
    RGBColor(102, 51, 153),
];

fn plot_err(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Results {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

struct Data {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Data {
    fn col(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }
}

/// |e| bins keyed by rounded log lower edge: (lower, upper, count).
type AbsBins = BTreeMap<i64, (f64, f64, u64)>;

/// One line of a figure: label and (x, y) points.
type Series = (String, Vec<(f64, f64)>);

/// Everything one figure shows.
struct Figure<'a> {
    title: &'a str,
    xlabel: &'a str,
    ylabel: &'a str,
    lines: &'a [Series],
    log_y: bool,
    /// Category names for a one-point figure (x = index).
    categories: Option<&'a [String]>,
    markers: bool,
}

/// Axis labels of the metrics `zebra plot --metric` accepts.
/// (column, axis label, log axis, figure title).
pub const METRICS: [(&str, &str, bool, &str); 12] = [
    (
        "mean_accuracy",
        "test accuracy (fraction, mean over chips)",
        false,
        "network accuracy",
    ),
    (
        "min_accuracy",
        "test accuracy of the worst chip (fraction)",
        false,
        "worst-chip accuracy",
    ),
    (
        "accuracy_drop",
        "accuracy drop from clean int8 (fraction, mean over chips)",
        false,
        "accuracy drop",
    ),
    (
        "rmse",
        "RMSE of y (units of the exact integer output)",
        true,
        "output error",
    ),
    ("snr_db", "SNR (dB)", false, "signal-to-noise ratio"),
    (
        "p99_abs",
        "99th percentile of |error| (output units)",
        true,
        "99th percentile error",
    ),
    (
        "trial_rmse_std",
        "chip-to-chip std of per-trial RMSE (output units)",
        true,
        "chip-to-chip spread",
    ),
    (
        "conversions_per_mac",
        "ADC conversions per MAC",
        false,
        "ADC conversions per MAC",
    ),
    (
        "reads_per_mac",
        "active cell reads per MAC",
        false,
        "active cell reads per MAC",
    ),
    (
        "energy_fj_per_mac",
        "energy per MAC (fJ)",
        true,
        "energy per MAC",
    ),
    (
        "skipped_plane_fraction",
        "fraction of (chunk, column, plane) groups skipped",
        false,
        "skipped groups",
    ),
    (
        "digit_density",
        "non-zero digit density (all planes)",
        false,
        "non-zero digit density",
    ),
];

/// What to draw.
#[derive(Clone, Debug)]
pub struct PlotOptions {
    /// Metrics (columns of `METRICS`), one figure each.
    pub metrics: Vec<String>,
    /// The swept column on the x axis (default: the first swept parameter).
    pub x: Option<String>,
    /// Only the rows whose column equals the value, (column or dotted key,
    /// value); the figures' names end with the values.
    pub filter: Vec<(String, String)>,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            metrics: vec!["rmse".into(), "snr_db".into()],
            x: None,
            filter: Vec::new(),
        }
    }
}

/// What [`plot_results`] drew, and each value or figure it left out, with why.
#[derive(Clone, Debug, Default)]
pub struct Plotted {
    pub written: Vec<PathBuf>,
    /// One line each, for the user (without a `warning:` prefix).
    pub warnings: Vec<String>,
}

/// Renders every figure for `csv` into `out_dir` (default: beside it).
/// Values that are not finite numbers are left out of a figure, and a
/// figure with none left is skipped; both are reported in the warnings.
pub fn plot_results(csv: &Path, out_dir: Option<&Path>, opts: &PlotOptions) -> Result<Plotted> {
    let mut data = load_results(csv)?;
    for (key, value) in &opts.filter {
        // A column, or a dotted key: `energy.model` is `energy_model`,
        // `array.parallelism` is `parallelism`.
        let last = key.rsplit('.').next().unwrap_or(key);
        let underscored = key.replace('.', "_");
        let (name, col) = [key.as_str(), underscored.as_str(), last]
            .into_iter()
            .find_map(|n| data.col(n).map(|c| (n.to_string(), c)))
            .ok_or_else(|| {
                plot_err(
                    csv,
                    format!("`--where {key}={value}`: no column `{last}` or `{underscored}`"),
                )
            })?;
        data.rows.retain(|r| r[col] == *value);
        if data.rows.is_empty() {
            return Err(plot_err(
                csv,
                format!("`--where {key}={value}` leaves no rows; give a value the `{name}` column holds"),
            ));
        }
    }
    let suffix: String = opts.filter.iter().map(|(_, v)| format!("_{v}")).collect();
    // Accuracy experiments have their own default figures.
    let accuracy = data.col("mean_accuracy").is_some();
    let metrics: Vec<String> = if accuracy && opts.metrics == PlotOptions::default().metrics {
        vec!["mean_accuracy".into(), "min_accuracy".into()]
    } else {
        opts.metrics.clone()
    };
    let csv_stem = csv
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "results".into());
    let stem = format!("{csv_stem}{suffix}");
    let dir = out_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| csv.parent().map(Path::to_path_buf).unwrap_or_default());
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let swept = swept_columns(csv, &data, opts.x.as_deref())?;
    let mut written = Vec::new();
    let mut warnings = Vec::new();
    for metric in &metrics {
        let Some(&(metric, ylabel, log_y, short)) = METRICS.iter().find(|m| m.0 == metric) else {
            let names: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
            return Err(plot_err(
                csv,
                format!("unknown metric `{metric}`; accepted: {}", names.join(", ")),
            ));
        };
        let Some(ycol) = data.col(metric) else {
            return Err(plot_err(csv, format!("has no `{metric}` column")));
        };
        let mut dropped = Vec::new();
        let (xlabel, categories, lines) = metric_series(&data, &swept, ycol, &mut dropped);
        if !dropped.is_empty() {
            let infinite_snr = metric == "snr_db" && dropped.iter().any(|d| d.ends_with("= inf"));
            let shown: Vec<&str> = dropped.iter().take(3).map(String::as_str).collect();
            let more = if dropped.len() > 3 { ", ..." } else { "" };
            let why = if infinite_snr {
                "; an infinite SNR means the simulated error was exactly zero"
            } else {
                ""
            };
            let empty = lines.iter().all(|(_, p)| p.is_empty());
            warnings.push(format!(
                "{}: figure `{metric}` {} {} value(s) that are not finite numbers ({}{more}){why}",
                csv.display(),
                if empty { "skipped: all" } else { "leaves out" },
                dropped.len(),
                shown.join(", ")
            ));
        }
        if lines.iter().all(|(_, p)| p.is_empty()) {
            continue;
        }
        let title = format!("{stem}: {short}");
        let fig = Figure {
            title: &title,
            xlabel: &xlabel,
            ylabel,
            lines: &lines,
            log_y,
            categories: categories.as_deref(),
            markers: true,
        };
        for ext in ["svg", "png"] {
            let path = dir.join(format!("{stem}_{metric}.{ext}"));
            draw_lines(&path, &fig)?;
            written.push(path);
        }
    }
    let hist_path = csv.with_file_name(format!("{csv_stem}_hist.csv"));
    let hist = if opts.filter.is_empty() {
        read_csv(&hist_path)?
    } else {
        None
    };
    if let Some((hh, hrows)) = hist {
        match plot_histograms(&hist_path, &dir, &stem, &hh, &hrows, &data)? {
            Some(files) => written.extend(files),
            None => warnings.push(format!(
                "{}: histogram figure skipped: no finite histogram rows",
                hist_path.display()
            )),
        }
    }
    Ok(Plotted { written, warnings })
}

/// Reads a result file written by `zebra run` and checks it has the
/// columns the figures need and at least one row.
fn load_results(csv: &Path) -> Result<Data> {
    let (header, rows): Table = match read_csv(csv) {
        Ok(Some(t)) => t,
        Ok(None) => {
            return Err(plot_err(
                csv,
                "no such file; give a result file written by `zebra run`",
            ))
        }
        Err(Error::Csv { source, .. }) => {
            return Err(plot_err(
                csv,
                format!("is not a result file written by `zebra run` ({source})"),
            ))
        }
        Err(e) => return Err(e),
    };
    let data = Data { header, rows };
    let needed: &[&str] = if data.col("mean_accuracy").is_some() {
        &["point", "mapping", "mean_accuracy"]
    } else {
        &["point", "mapping", "rmse", "snr_db"]
    };
    for needed in needed {
        if data.col(needed).is_none() {
            return Err(plot_err(
                csv,
                format!("has no `{needed}` column; give a result file written by `zebra run`"),
            ));
        }
    }
    if data.rows.is_empty() {
        return Err(plot_err(csv, "has no rows"));
    }
    Ok(data)
}

/// The parameter columns whose values differ between rows, as (column,
/// axis label); `x` (a column or dotted key) first when given.
fn swept_columns(
    csv: &Path,
    data: &Data,
    x: Option<&str>,
) -> Result<Vec<(&'static str, &'static str)>> {
    let mut swept: Vec<(&str, &str)> = PARAMS
        .iter()
        .copied()
        .filter(|(c, _)| {
            data.col(c).is_some_and(|i| {
                let first = &data.rows[0][i];
                data.rows.iter().any(|r| &r[i] != first)
            })
        })
        .collect();
    if let Some(x) = x {
        // A metric on x (say, energy per MAC against accuracy): one line per
        // mapping through its rows, in order of x.
        if let Some(&(name, label, _, _)) = METRICS.iter().find(|m| m.0 == x) {
            if data.col(name).is_some() && !swept.iter().any(|(c, _)| *c == name) {
                return Ok(vec![(name, label)]);
            }
        }
        let x = x.rsplit('.').next().unwrap_or(x);
        let at = swept.iter().position(|(c, _)| *c == x).ok_or_else(|| {
            let names: Vec<&str> = swept.iter().map(|(c, _)| *c).collect();
            let names = if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            };
            plot_err(
                csv,
                format!("`--x {x}` is not a swept column here nor a metric; swept: {names}"),
            )
        })?;
        let chosen = swept.remove(at);
        swept.insert(0, chosen);
    }
    Ok(swept)
}

/// One line per mapping (and value of the other swept columns) of metric
/// column `ycol` against the first swept column, or, with nothing swept,
/// the mappings side by side as categories. Non-numeric and infinite
/// values are left out, each named in `dropped` ("point P MAPPING: COL = V").
fn metric_series(
    data: &Data,
    swept: &[(&str, &str)],
    ycol: usize,
    dropped: &mut Vec<String>,
) -> (String, Option<Vec<String>>, Vec<Series>) {
    let mcol = data.col("mapping").expect("checked by load_results");
    let pcol = data.col("point").expect("checked by load_results");
    let mut drop = |r: &[String], col: usize| {
        dropped.push(format!(
            "point {} {}: {} = {}",
            r[pcol], r[mcol], data.header[col], r[col]
        ))
    };
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let (xlabel, categories) = match swept.first() {
        Some((xname, xlabel)) => {
            let xcol = data.col(xname).expect("a swept column exists");
            for r in &data.rows {
                let Ok(x) = r[xcol].parse::<f64>() else {
                    drop(r, xcol);
                    continue;
                };
                let y = match r[ycol].parse::<f64>() {
                    Ok(y) if y.is_finite() && x.is_finite() => y,
                    _ => {
                        drop(r, if x.is_finite() { ycol } else { xcol });
                        continue;
                    }
                };
                let mut label = r[mcol].clone();
                for (other, _) in swept.iter().skip(1) {
                    let c = data.col(other).expect("a swept column exists");
                    label.push_str(&format!(", {other}={}", r[c]));
                }
                if !order.contains(&label) {
                    order.push(label.clone());
                }
                series.entry(label).or_default().push((x, y));
            }
            (xlabel.to_string(), None)
        }
        None => {
            let mut cats = Vec::new();
            for r in &data.rows {
                let y = match r[ycol].parse::<f64>() {
                    Ok(y) if y.is_finite() => y,
                    _ => {
                        drop(r, ycol);
                        continue;
                    }
                };
                let x = cats.len() as f64;
                cats.push(r[mcol].clone());
                order.push(r[mcol].clone());
                series.entry(r[mcol].clone()).or_default().push((x, y));
            }
            ("mapping".to_string(), Some(cats))
        }
    };
    let lines = order
        .iter()
        .map(|l| {
            let mut pts = series[l].clone();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (l.clone(), pts)
        })
        .collect();
    (xlabel, categories, lines)
}

/// A tick label: at most four significant digits, no float noise.
fn tick(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if !(1e-3..1e5).contains(&a) {
        return format!("{x:.1e}");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let lo = lo.max(f64::MIN_POSITIVE);
    let (a, b) = (lo.log10().floor(), hi.max(lo * 10.0).log10().ceil());
    (10f64.powf(a), 10f64.powf(b.max(a + 1.0)))
}

fn draw_lines(path: &Path, fig: &Figure) -> Result<()> {
    let size = (900, 600);
    let res = if path.extension().is_some_and(|e| e == "svg") {
        chart(&SVGBackend::new(path, size).into_drawing_area(), fig)
    } else {
        chart(&BitMapBackend::new(path, size).into_drawing_area(), fig)
    };
    res.map_err(|e| plot_err(path, format!("cannot draw: {e}")))
}

/// Draws the mesh, the lines (and markers) and the legend of a figure on a
/// chart of any coordinate kind (log or linear axes are different types).
macro_rules! finish {
    ($chart:expr, $fig:expr, $xfmt:expr, $log_y:expr) => {{
        let Figure {
            xlabel,
            ylabel,
            lines,
            categories,
            markers,
            ..
        } = *$fig;
        let (xfmt, log_y) = ($xfmt, $log_y);
        let mut chart = $chart;
        chart
            .configure_mesh()
            .x_desc(xlabel)
            .y_desc(ylabel)
            .x_label_formatter(&xfmt)
            .y_label_formatter(&|y: &f64| tick(*y))
            .x_labels(if categories.is_some() {
                categories.map_or(10, |c| c.len())
            } else {
                10
            })
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()?;
        for (i, (label, pts)) in lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = pts
                .iter()
                .cloned()
                .filter(|p| !log_y || p.1 > 0.0)
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(3))
                });
            if markers {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))?;
            }
        }
        // A one-point figure names its mappings on the x axis instead.
        if categories.is_none() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 15))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }
    }};
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn chart<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let Figure {
        title,
        lines,
        log_y,
        categories,
        ..
    } = *fig;
    root.fill(&WHITE)?;
    let xs: Vec<f64> = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.0))
        .collect();
    let ys: Vec<f64> = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .collect();
    let (xmin, xmax) = (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(f64::MIN, f64::max),
    );
    let log_y = log_y && ys.iter().any(|&y| y > 0.0);
    let log_x = categories.is_none() && xmin > 0.0 && xmax / xmin >= 8.0;
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, ("sans-serif", 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80);
    let xr = x_range(xmin, xmax, categories.is_some(), log_x);
    let (ylo, yhi) = y_range(&ys, log_y);
    let cats: Vec<String> = categories.map(|c| c.to_vec()).unwrap_or_default();
    let xfmt = move |x: &f64| -> String {
        if !cats.is_empty() {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < cats.len() {
                return cats[i as usize].clone();
            }
            return String::new();
        }
        tick(*x)
    };
    let xkeys = x_key_points(&xs, xr);
    let log_xr = || (xr.0..xr.1).log_scale().with_key_points(xkeys.clone());
    match (log_x, log_y) {
        (true, true) => {
            finish!(
                builder.build_cartesian_2d(log_xr(), (ylo..yhi).log_scale())?,
                fig,
                &xfmt,
                log_y
            )
        }
        (true, false) => finish!(
            builder.build_cartesian_2d(log_xr(), ylo..yhi)?,
            fig,
            &xfmt,
            log_y
        ),
        (false, true) => finish!(
            builder.build_cartesian_2d(xr.0..xr.1, (ylo..yhi).log_scale())?,
            fig,
            &xfmt,
            log_y
        ),
        (false, false) => {
            let c: ChartContext<DB, Cartesian2d<RangedCoordf64, RangedCoordf64>> =
                builder.build_cartesian_2d(xr.0..xr.1, ylo..yhi)?;
            finish!(c, fig, &xfmt, log_y)
        }
    }
    root.present()?;
    Ok(())
}

/// The x axis range: categories at whole numbers, a log axis with some
/// room, or a linear one padded by 5% (or around a single value).
fn x_range(xmin: f64, xmax: f64, categories: bool, log_x: bool) -> (f64, f64) {
    if categories {
        (-0.5, xmax + 0.5)
    } else if log_x {
        (xmin / 1.15, xmax * 1.15)
    } else {
        let span = xmax - xmin;
        let pad = if span > 0.0 {
            span * 0.05
        } else {
            (xmax.abs() * 0.1).max(0.5)
        };
        (xmin - pad, xmax + pad)
    }
}

/// The y axis range: whole decades over the positive values of a log axis,
/// or the values padded by 8%, keeping zero as the floor of quantities
/// that cannot be negative.
fn y_range(ys: &[f64], log_y: bool) -> (f64, f64) {
    if log_y {
        let pos = ys.iter().cloned().filter(|&y| y > 0.0);
        let (lo, hi) = pos.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
        return log_range(lo, hi);
    }
    let (a, b) = (
        ys.iter().cloned().fold(f64::MAX, f64::min),
        ys.iter().cloned().fold(f64::MIN, f64::max),
    );
    let span = b - a;
    let pad = if span > 0.0 {
        span * 0.08
    } else {
        (b.abs() * 0.1).max(1e-3)
    };
    let lo = if a >= 0.0 {
        (a - pad).max(0.0)
    } else {
        a - pad
    };
    (lo, b + pad)
}

/// Key points of a log x axis: the swept values themselves when there are
/// a few, else (histogram bins) the decades of the range.
fn x_key_points(xs: &[f64], xr: (f64, f64)) -> Vec<f64> {
    let mut keys = xs.to_vec();
    keys.sort_by(f64::total_cmp);
    keys.dedup();
    if keys.len() > 12 {
        let (lo, hi) = (
            xr.0.max(f64::MIN_POSITIVE).log10().ceil(),
            xr.1.log10().floor(),
        );
        keys = (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect();
    }
    keys
}

/// The |e| histogram of every mapping at `point`, as fractions of its
/// outputs per bin: signed bins folded onto |e|, keyed by their rounded
/// lower edge, the zero bin drawn at 1e-3. `cols` are the columns point,
/// mapping, bin_lo, bin_hi and count.
fn abs_histograms(
    rows: &[Vec<String>],
    point: usize,
    (cp, cm, clo, chi, cc): (usize, usize, usize, usize, usize),
) -> Vec<Series> {
    // |e| bins keyed by their rounded lower edge; the zero bin becomes [0, 1e-3).
    let mut per_map: Vec<(String, AbsBins)> = Vec::new();
    for r in rows
        .iter()
        .filter(|r| r[cp].parse::<usize>().ok() == Some(point))
    {
        let (Ok(lo), Ok(hi), Ok(c)) = (
            r[clo].parse::<f64>(),
            r[chi].parse::<f64>(),
            r[cc].parse::<u64>(),
        ) else {
            continue;
        };
        let (a, b) = if lo < 0.0 && hi <= 0.0 {
            (-hi, -lo)
        } else if lo < 0.0 {
            (0.0, hi)
        } else {
            (lo, hi)
        };
        let key = if a == 0.0 {
            i64::MIN
        } else {
            (a.log10() * 1000.0).round() as i64
        };
        let entry = match per_map.iter_mut().find(|(m, _)| *m == r[cm]) {
            Some(e) => e,
            None => {
                per_map.push((r[cm].clone(), BTreeMap::new()));
                per_map.last_mut().unwrap()
            }
        };
        let slot = entry.1.entry(key).or_insert((a, b, 0));
        slot.2 += c;
    }
    let mut lines: Vec<Series> = Vec::new();
    for (m, bins) in &per_map {
        let total: u64 = bins.values().map(|b| b.2).sum();
        let pts: Vec<(f64, f64)> = bins
            .values()
            .map(|&(a, b, c)| {
                (
                    if a == 0.0 { 1e-3 } else { (a * b).sqrt() },
                    c as f64 / total.max(1) as f64,
                )
            })
            .collect();
        lines.push((m.clone(), pts));
    }
    lines
}

/// "point P" and the swept parameters' values at that point.
fn point_label(data: &Data, point: usize) -> String {
    let mut what = format!("point {point}");
    let row = data
        .col("point")
        .and_then(|c| data.rows.iter().find(|r| r[c] == point.to_string()));
    if let Some(r) = row {
        for (name, _) in PARAMS.iter().take(7) {
            if let Some(c) = data.col(name) {
                let first = &data.rows[0][c];
                if data.rows.iter().any(|rr| &rr[c] != first) {
                    what.push_str(&format!(", {name} = {}", r[c]));
                }
            }
        }
    }
    what
}

/// Overlaid |e| histograms of every mapping at one sweep point (the middle one).
fn plot_histograms(
    path: &Path,
    dir: &Path,
    stem: &str,
    header: &[String],
    rows: &[Vec<String>],
    data: &Data,
) -> Result<Option<Vec<PathBuf>>> {
    let col = |n: &str| header.iter().position(|h| h == n);
    let (Some(cp), Some(cm), Some(clo), Some(chi), Some(cc)) = (
        col("point"),
        col("mapping"),
        col("bin_lo"),
        col("bin_hi"),
        col("count"),
    ) else {
        return Err(plot_err(
            path,
            "is not a histogram file written by `zebra run`",
        ));
    };
    let mut points: Vec<usize> = rows.iter().filter_map(|r| r[cp].parse().ok()).collect();
    points.sort();
    points.dedup();
    let Some(&point) = points.get(points.len() / 2) else {
        return Ok(None);
    };
    let lines = abs_histograms(rows, point, (cp, cm, clo, chi, cc));
    if lines.is_empty() {
        return Ok(None);
    }
    let what = point_label(data, point);
    let title = format!("{stem}: |error| distribution at {what}");
    let fig = Figure {
        title: &title,
        xlabel: "|error of y| (units of the exact integer output; first bin: below 1e-3)",
        ylabel: "fraction of outputs per bin (20 bins per decade)",
        lines: &lines,
        log_y: true,
        categories: None,
        markers: false,
    };
    let mut written = Vec::new();
    for ext in ["svg", "png"] {
        let out = dir.join(format!("{stem}_hist.{ext}"));
        draw_lines(&out, &fig)?;
        written.push(out);
    }
    Ok(Some(written))
}
