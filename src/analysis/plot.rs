//! Figures: training curves in the style of the paper's Figures 1, 4 and 6
//! (x = iterations, y = error (%), training error thin and dashed, test (or
//! validation) error bold, one colour per run, a legend naming each run), and
//! plain line charts (Figure 7's layer responses). PNG (rendered here,
//! encoded by `image`) or SVG, by the file's extension.

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use std::path::Path;

/// One run's curves.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub label: String,
    /// (iteration, training error %) per metrics window
    pub train: Vec<(f64, f64)>,
    /// (iteration, error %) per evaluation
    pub test: Vec<(f64, f64)>,
    /// "test" or "val"
    pub split: String,
}

/// The curves of a run directory (metrics.jsonl; the label from config.toml's architecture).
pub fn read_run(dir: &Path) -> Result<Curve> {
    use crate::train::metrics::{self, Row};
    let (mut train, mut test, mut val) = (vec![], vec![], vec![]);
    for row in metrics::read(&dir.join("metrics.jsonl"))? {
        match row {
            Row::Train(r) => train.push((r.iter as f64, r.train_err)),
            Row::Eval(r) if r.split == "test" => test.push((r.iter as f64, r.err)),
            Row::Eval(r) if r.split == "val" => val.push((r.iter as f64, r.err)),
            Row::Eval(_) => {}
        }
    }
    let label = std::fs::read_to_string(dir.join("config.toml"))
        .ok()
        .and_then(|t| toml::from_str::<toml::Value>(&t).ok())
        .and_then(|c| c.get("arch")?.get("name")?.as_str().map(str::to_string))
        .unwrap_or_else(|| dir.file_name().map_or("run".into(), |n| n.to_string_lossy().into_owned()));
    // a run resumed from an older checkpoint logs those iterations again: keep the last of each, in order
    for v in [&mut train, &mut test, &mut val] {
        let mut seen = std::collections::BTreeMap::new();
        for &(it, e) in v.iter() {
            seen.insert(it.to_bits(), (it, e));
        }
        *v = seen.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let split = if test.is_empty() && !val.is_empty() { "val" } else { "test" };
    Ok(Curve { label, train, test: if split == "val" { val } else { test }, split: split.into() })
}

/// Legend labels: each name, with `place` (a run directory's or a file's parent's name) where two share it.
pub fn disambiguate(names: &[String], places: &[&Path]) -> Vec<String> {
    names
        .iter()
        .zip(places)
        .map(|(n, p)| {
            if names.iter().filter(|m| *m == n).count() > 1 {
                format!("{n} ({})", p.file_name().map_or(String::new(), |f| f.to_string_lossy().into_owned()))
            } else {
                n.clone()
            }
        })
        .collect()
}

/// Legend labels of runs: the network's name, with the run directory where two runs share a name.
pub fn label_runs(curves: &mut [Curve], dirs: &[&Path]) {
    let names: Vec<String> = curves.iter().map(|c| c.label.clone()).collect();
    for (c, l) in curves.iter_mut().zip(disambiguate(&names, dirs)) {
        c.label = l;
    }
}

pub(crate) fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans (assets/DejaVuSans.LICENSE): text without system fonts
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../../assets/DejaVuSans.ttf"),
        );
    });
}

const COLOURS: [RGBColor; 8] = [
    RGBColor(230, 159, 0),
    RGBColor(0, 114, 178),
    RGBColor(204, 51, 17),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(120, 120, 120),
    RGBColor(0, 0, 0),
];

/// What a figure shows.
pub enum Figure<'a> {
    /// training curves of runs
    Training(&'a [Curve]),
    /// labelled lines with round markers
    Lines { series: &'a [(String, Vec<(f64, f64)>)], xlabel: &'a str, ylabel: &'a str },
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, fig: &Figure, title: &str) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("drawing: {e:?}");
    root.fill(&WHITE).map_err(err)?;
    let curves = match fig {
        Figure::Training(c) => *c,
        Figure::Lines { series, xlabel, ylabel } => return draw_lines(root, series, xlabel, ylabel, title),
    };
    let xmax = curves.iter().flat_map(|c| c.train.iter().chain(&c.test)).map(|p| p.0).fold(1.0, f64::max);
    let ymax = curves
        .iter()
        .flat_map(|c| c.test.iter().chain(c.train.iter().skip(c.train.len() / 20)))
        .map(|p| p.1)
        .fold(5.0f64, f64::max)
        .min(100.0);
    let ymax = (ymax * 1.1 / 5.0).ceil() * 5.0;
    let scale = if xmax >= 2e4 { 1e4 } else { 1.0 };
    let xlabel = if scale > 1.0 { "iter. (1e4)" } else { "iter." };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..xmax / scale, 0.0..ymax)
        .map_err(err)?;
    let split = curves.first().map_or("test", |c| c.split.as_str());
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(format!("error (%): {split} bold, training dashed"))
        .x_label_formatter(&|x| if scale > 1.0 { format!("{x:.1}") } else { format!("{x:.0}") })
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (i, c) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let pts = |v: &[(f64, f64)]| -> Vec<(f64, f64)> {
            v.iter().filter(|p| p.0.is_finite()).map(|&(x, y)| (x / scale, y.min(ymax))).collect()
        };
        chart.draw_series(DashedLineSeries::new(pts(&c.train), 4, 3, colour.stroke_width(1))).map_err(err)?;
        chart
            .draw_series(LineSeries::new(pts(&c.test), colour.stroke_width(3)))
            .map_err(err)?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(3)));
    }
    legend_and_present(&mut chart, &root)
}

type Chart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// The legend box (upper right) and the finished drawing.
fn legend_and_present<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    root: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("drawing: {e:?}");
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &[(String, Vec<(f64, f64)>)],
    xlabel: &str,
    ylabel: &str,
    title: &str,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow::anyhow!("drawing: {e:?}");
    let pts = series.iter().flat_map(|(_, v)| v.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (xmax, ymax) = pts.fold((1.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let ymax = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..xmax + 1.0, 0.0..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    for (i, (label, v)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(v.iter().copied(), colour.stroke_width(2)).point_size(3))
            .map_err(err)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
    }
    legend_and_present(&mut chart, &root)
}

/// Draw training `curves` into `out` (.png or .svg), `w` x `h` pixels. Runs of the same network are
/// told apart by their run directory in the legend (see [`label_runs`]).
pub fn render(curves: &[Curve], out: &Path, title: &str, size: (u32, u32)) -> Result<()> {
    if curves.is_empty() {
        bail!("nothing to plot");
    }
    render_figure(&Figure::Training(curves), out, title, size)
}

/// Draw any [`Figure`] into `out` (.png or .svg).
pub fn render_figure(fig: &Figure, out: &Path, title: &str, (w, h): (u32, u32)) -> Result<()> {
    register_font();
    let ext = out.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("svg") => {
            let mut s = String::new();
            draw(SVGBackend::with_string(&mut s, (w, h)).into_drawing_area(), fig, title)?;
            crate::weights::checkpoint::write_atomic(out, s.as_bytes())
        }
        Some("png") => {
            let mut buf = vec![0u8; (w * h * 3) as usize];
            draw(BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area(), fig, title)?;
            let img = image::RgbImage::from_raw(w, h, buf).context("plot buffer")?;
            let mut png = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
            crate::weights::checkpoint::write_atomic(out, &png)
        }
        _ => bail!("{}: the figure's name must end in .png or .svg", out.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_from_metrics_and_figures_in_both_formats() {
        let dir = std::env::temp_dir().join(format!("resnet-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = String::new();
        for it in (50..=1000).step_by(50) {
            m += &format!(
                "{{\"iter\":{it},\"epoch\":0,\"lr\":0.1,\"train_loss\":1.0,\"train_err\":{},\"img_per_s\":1}}\n",
                60.0 - it as f64 / 25.0
            );
            if it % 250 == 0 {
                m += &format!(
                    "{{\"iter\":{it},\"epoch\":1,\"split\":\"test\",\"loss\":1.0,\"err\":{}}}\n",
                    50.0 - it as f64 / 50.0
                );
            }
        }
        // a resume from the checkpoint at 500 logs 550.. again
        m += "{\"iter\":550,\"epoch\":0,\"lr\":0.1,\"train_loss\":1.0,\"train_err\":99.0,\"img_per_s\":1}\n";
        std::fs::write(dir.join("metrics.jsonl"), m).unwrap();
        std::fs::write(dir.join("config.toml"), "[arch]\nname = \"plain20\"\n").unwrap();
        let c = read_run(&dir).unwrap();
        assert_eq!((c.label.as_str(), c.train.len(), c.test.len(), c.split.as_str()), ("plain20", 20, 4, "test"));
        assert_eq!(c.test[3], (1000.0, 30.0));
        assert!(c.train.windows(2).all(|w| w[0].0 < w[1].0) && c.train[10] == (550.0, 99.0));
        for ext in ["png", "svg"] {
            let out = dir.join(format!("fig.{ext}"));
            render(&[c.clone(), Curve { label: "resnet20".into(), ..c.clone() }], &out, "test", (640, 400)).unwrap();
            let len = std::fs::metadata(&out).unwrap().len();
            assert!(len > 2000, "{ext}: {len} bytes");
        }
        let png = image::open(dir.join("fig.png")).unwrap();
        assert_eq!((png.width(), png.height()), (640, 400));
        // not all white: curves and text were drawn
        let px = png.to_rgb8();
        assert!(px.pixels().filter(|p| p.0 != [255, 255, 255]).count() > 5000);
        assert!(render(&[c], &dir.join("fig.bmp"), "t", (10, 10)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
