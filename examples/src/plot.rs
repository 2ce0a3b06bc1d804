//! A small SVG line-chart writer for learning curves.
//!
//! Examples save loss and accuracy curves so a run can be inspected without extra tools. A
//! plotting crate would dominate this crate's compile time for what is a few hundred lines of
//! SVG text, so the chart is written by hand: axes with "nice" ticks (1, 2, 5 × 10^k), light
//! grid lines, an optional logarithmic y axis, a legend and a fixed colour cycle. Points with a
//! NaN or infinite coordinate (and, on a log axis, non-positive y) are skipped, so a diverged
//! run still plots.

use std::fmt::Write as _;
use std::path::Path;

use crate::{Error, Result};

/// Default chart width in pixels.
pub const DEFAULT_WIDTH: u32 = 800;
/// Default chart height in pixels.
pub const DEFAULT_HEIGHT: u32 = 480;

/// Series colours (the Tableau 10 palette), used in order and then repeated.
pub const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
];

const MARGIN_LEFT: f64 = 78.0;
const MARGIN_RIGHT: f64 = 24.0;
const MARGIN_TOP: f64 = 44.0;
const MARGIN_BOTTOM: f64 = 58.0;

/// A line chart: one polyline per named series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineChart {
    /// Title shown above the plot.
    pub title: String,
    /// Label of the horizontal axis.
    pub x_label: String,
    /// Label of the vertical axis.
    pub y_label: String,
    /// `(name, points)` for each series; points are `(x, y)` and are joined in order.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Whether the y axis is logarithmic (base 10).
    pub log_y: bool,
    /// Whether the x axis is logarithmic (base 10), e.g. for run lengths spaced ×4 apart.
    pub log_x: bool,
    /// Unconnected points drawn as small dots in the colour of series `.0` and left out of
    /// the legend: the individual seeds around a line of means.
    pub dots: Vec<(usize, Vec<(f64, f64)>)>,
}

/// Escapes text for use inside SVG/XML (and HTML: the report uses it too).
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// Starts an SVG document of `w` × `h` pixels: white background and a centred title.
fn svg_open(s: &mut String, w: f64, h: f64, title: &str) {
    // Writing to a String cannot fail, so the results of write! are ignored.
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        w / 2.0,
        xml_escape(title)
    );
}

/// A "nice" step (1, 2 or 5 × 10^k) close to `range / target` intervals.
fn nice_step(range: f64, target: usize) -> f64 {
    let raw = range / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Axis limits extended to multiples of a nice step, and the ticks in between.
fn linear_axis(min: f64, max: f64) -> (f64, f64, Vec<f64>, f64) {
    let (mut lo, mut hi) = (min, max);
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        lo -= pad;
        hi += pad;
    }
    let step = nice_step(hi - lo, 6);
    let lo = (lo / step).floor() * step;
    let hi = (hi / step).ceil() * step;
    let n = ((hi - lo) / step).round() as usize;
    let ticks = (0..=n).map(|i| lo + i as f64 * step).collect();
    (lo, hi, ticks, step)
}

/// Limits and labelled ticks of an axis over the data range `r` (in log10 space when
/// `log`: whole decades, with 2 and 5 between them when the range spans at most two).
fn labelled_axis(r: (f64, f64), log: bool) -> (f64, f64, Vec<(f64, String)>) {
    if log {
        let lo = r.0.floor();
        let mut hi = r.1.ceil();
        if hi <= lo {
            hi = lo + 1.0;
        }
        let decades = (hi - lo) as i32;
        let every = (decades / 8).max(1);
        let mut ticks = Vec::new();
        for k in (lo as i32..=hi as i32).step_by(every as usize) {
            ticks.push((k as f64, format_pow10(k)));
            if decades <= 2 && k < hi as i32 {
                for m in [2.0f64, 5.0] {
                    let v = k as f64 + m.log10();
                    let decimals = (-k).max(0) as usize;
                    ticks.push((v, format!("{:.decimals$}", m * 10f64.powi(k))));
                }
            }
        }
        (lo, hi, ticks)
    } else {
        let (lo, hi, t, step) = linear_axis(r.0, r.1);
        let labelled = t.into_iter().map(|v| (v, format_linear(v, step))).collect();
        (lo, hi, labelled)
    }
}

/// Formats a linear tick value with as many decimals as the step needs.
fn format_linear(v: f64, step: f64) -> String {
    let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
    if v != 0.0 && (v.abs() >= 1e6 || step < 1e-4) {
        return format!("{v:.2e}");
    }
    let decimals = (-step.log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// Formats a power of ten `10^k` for a log axis.
fn format_pow10(k: i32) -> String {
    if (-3..=4).contains(&k) {
        let v = 10f64.powi(k);
        let decimals = (-k).max(0) as usize;
        format!("{v:.decimals$}")
    } else {
        format!("1e{k}")
    }
}

impl LineChart {
    /// A chart with a title and axis labels, no series and a linear y axis.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            log_y: false,
            log_x: false,
            dots: Vec::new(),
        }
    }

    /// Adds a series (builder style).
    pub fn with_series(mut self, name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push((name.into(), points));
        self
    }

    /// Sets whether the y axis is logarithmic (builder style).
    pub fn with_log_y(mut self, log_y: bool) -> Self {
        self.log_y = log_y;
        self
    }

    /// Sets whether the x axis is logarithmic (builder style).
    pub fn with_log_x(mut self, log_x: bool) -> Self {
        self.log_x = log_x;
        self
    }

    /// Adds unconnected dots in the colour of series `series` (builder style).
    pub fn with_dots(mut self, series: usize, points: Vec<(f64, f64)>) -> Self {
        self.dots.push((series, points));
        self
    }

    fn usable(&self, x: f64, y: f64) -> bool {
        x.is_finite() && y.is_finite() && (!self.log_y || y > 0.0) && (!self.log_x || x > 0.0)
    }

    /// A point in axis space: log10 of the logarithmic coordinates.
    fn to_axis(&self, x: f64, y: f64) -> (f64, f64) {
        (
            if self.log_x { x.log10() } else { x },
            if self.log_y { y.log10() } else { y },
        )
    }

    /// Renders the chart as an SVG document of the default size.
    pub fn to_svg(&self) -> String {
        self.to_svg_sized(DEFAULT_WIDTH, DEFAULT_HEIGHT)
    }

    /// Renders the chart as an SVG document of `width` × `height` pixels (each at least 200).
    pub fn to_svg_sized(&self, width: u32, height: u32) -> String {
        let (w, h) = (width.max(200) as f64, height.max(200) as f64);
        let (px0, px1) = (MARGIN_LEFT, w - MARGIN_RIGHT);
        let (py0, py1) = (MARGIN_TOP, h - MARGIN_BOTTOM);

        // Data ranges over the usable points.
        let mut xr = (f64::INFINITY, f64::NEG_INFINITY);
        let mut yr = (f64::INFINITY, f64::NEG_INFINITY);
        let dots = self.dots.iter().map(|(_, p)| p);
        for pts in self.series.iter().map(|(_, p)| p).chain(dots) {
            for &(x, y) in pts.iter().filter(|&&(x, y)| self.usable(x, y)) {
                let (x, y) = self.to_axis(x, y);
                xr = (xr.0.min(x), xr.1.max(x));
                yr = (yr.0.min(y), yr.1.max(y));
            }
        }
        let has_data = xr.0 <= xr.1;
        if !has_data {
            xr = (0.0, 1.0);
            yr = (0.0, 1.0);
        }
        // Both axes in log10 space when logarithmic.
        let (x_lo, x_hi, x_ticks) = labelled_axis(xr, self.log_x);
        let (y_lo, y_hi, y_ticks) = labelled_axis(yr, self.log_y);
        let sx = |x: f64| px0 + (x - x_lo) / (x_hi - x_lo) * (px1 - px0);
        let sy = |y: f64| py1 - (y - y_lo) / (y_hi - y_lo) * (py1 - py0);

        let mut s = String::new();
        // Writing to a String cannot fail, so the results of write! are ignored below.
        svg_open(&mut s, w, h, &self.title);
        // Grid and ticks.
        for (x, label) in &x_ticks {
            let xp = sx(*x);
            let _ = writeln!(
                s,
                r##"<line x1="{xp:.2}" y1="{py0:.2}" x2="{xp:.2}" y2="{py1:.2}" stroke="#e5e5e5"/><line x1="{xp:.2}" y1="{py1:.2}" x2="{xp:.2}" y2="{:.2}" stroke="black"/><text x="{xp:.2}" y="{:.2}" text-anchor="middle">{}</text>"##,
                py1 + 5.0,
                py1 + 19.0,
                xml_escape(label)
            );
        }
        for (y, label) in &y_ticks {
            let yp = sy(*y);
            let _ = writeln!(
                s,
                r##"<line x1="{px0:.2}" y1="{yp:.2}" x2="{px1:.2}" y2="{yp:.2}" stroke="#e5e5e5"/><line x1="{:.2}" y1="{yp:.2}" x2="{px0:.2}" y2="{yp:.2}" stroke="black"/><text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"##,
                px0 - 5.0,
                px0 - 8.0,
                yp + 4.0,
                xml_escape(label)
            );
        }
        // Axes box and labels.
        let _ = writeln!(
            s,
            r#"<rect x="{px0:.2}" y="{py0:.2}" width="{:.2}" height="{:.2}" fill="none" stroke="black"/>"#,
            px1 - px0,
            py1 - py0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="13">{}</text>"#,
            (px0 + px1) / 2.0,
            h - 14.0,
            xml_escape(&format!(
                "{}{}",
                self.x_label,
                if self.log_x { " (log scale)" } else { "" }
            ))
        );
        let (lx, ly) = (18.0, (py0 + py1) / 2.0);
        let _ = writeln!(
            s,
            r#"<text x="{lx:.2}" y="{ly:.2}" text-anchor="middle" font-size="13" transform="rotate(-90 {lx:.2} {ly:.2})">{}{}</text>"#,
            xml_escape(&self.y_label),
            if self.log_y { " (log scale)" } else { "" }
        );
        if !has_data {
            let _ = writeln!(
                s,
                r##"<text x="{:.2}" y="{:.2}" text-anchor="middle" fill="#888">no data</text>"##,
                (px0 + px1) / 2.0,
                (py0 + py1) / 2.0
            );
        }
        // Series.
        for (i, (_, pts)) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let coords: Vec<String> = pts
                .iter()
                .filter(|&&(x, y)| self.usable(x, y))
                .map(|&(x, y)| {
                    let (x, y) = self.to_axis(x, y);
                    format!("{:.2},{:.2}", sx(x), sy(y))
                })
                .collect();
            match coords.len() {
                0 => {}
                1 => {
                    let (cx, cy) = coords[0].split_once(',').unwrap_or(("0", "0"));
                    let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
                }
                _ => {
                    let _ = writeln!(
                        s,
                        r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" stroke-linejoin="round" points="{}"/>"#,
                        coords.join(" ")
                    );
                }
            }
        }
        for (i, pts) in &self.dots {
            let color = PALETTE[i % PALETTE.len()];
            for &(x, y) in pts.iter().filter(|&&(x, y)| self.usable(x, y)) {
                let (x, y) = self.to_axis(x, y);
                let _ = writeln!(
                    s,
                    r#"<circle cx="{:.2}" cy="{:.2}" r="3" fill="{color}" fill-opacity="0.6"/>"#,
                    sx(x),
                    sy(y)
                );
            }
        }
        // Legend (top right, inside the plot area).
        if !self.series.is_empty() {
            let longest = self.series.iter().map(|(n, _)| n.chars().count()).max().unwrap_or(0);
            let box_w = 36.0 + 7.0 * longest as f64;
            let box_h = 8.0 + 18.0 * self.series.len() as f64;
            let (bx, by) = (px1 - box_w - 8.0, py0 + 8.0);
            let _ = writeln!(
                s,
                r##"<rect x="{bx:.2}" y="{by:.2}" width="{box_w:.2}" height="{box_h:.2}" fill="white" fill-opacity="0.85" stroke="#999"/>"##
            );
            for (i, (name, _)) in self.series.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let y = by + 14.0 + 18.0 * i as f64;
                let _ = writeln!(
                    s,
                    r#"<line x1="{:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="{color}" stroke-width="2.5"/><text x="{:.2}" y="{:.2}">{}</text>"#,
                    bx + 6.0,
                    bx + 26.0,
                    bx + 31.0,
                    y + 4.0,
                    xml_escape(name)
                );
            }
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes the SVG to `path`, creating missing parent folders.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(path, self.to_svg()).map_err(|e| Error::io(path, e))
    }
}

/// Anything that renders as one SVG document (a [`LineChart`], a [`BarChart`]), so a
/// report can inline either.
pub trait Chart {
    /// The chart as an SVG document of its default size.
    fn svg(&self) -> String;
}

impl Chart for LineChart {
    fn svg(&self) -> String {
        self.to_svg()
    }
}

impl Chart for BarChart {
    fn svg(&self) -> String {
        self.to_svg()
    }
}

/// A horizontal bar chart: one labelled bar per value (e.g. a time per model variant).
/// Values must be finite and non-negative to be drawn; others are shown as "n/a".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BarChart {
    /// Title shown above the bars.
    pub title: String,
    /// Label of the value axis (with its unit).
    pub value_label: String,
    /// `(label, value)` per bar, drawn top to bottom.
    pub bars: Vec<(String, f64)>,
}

impl BarChart {
    /// A chart with a title and a value-axis label, no bars.
    pub fn new(title: impl Into<String>, value_label: impl Into<String>) -> Self {
        BarChart {
            title: title.into(),
            value_label: value_label.into(),
            bars: Vec::new(),
        }
    }

    /// Adds a bar (builder style).
    pub fn with_bar(mut self, label: impl Into<String>, value: f64) -> Self {
        self.bars.push((label.into(), value));
        self
    }

    /// Renders the chart as an SVG document `width` pixels wide (at least 300); the height
    /// follows from the number of bars.
    pub fn to_svg_sized(&self, width: u32) -> String {
        let w = width.max(300) as f64;
        let longest = self.bars.iter().map(|(n, _)| n.chars().count()).max().unwrap_or(0);
        let (left, right, top, row) = (16.0 + 7.0 * longest as f64, 90.0, 44.0, 30.0);
        let h = top + row * self.bars.len().max(1) as f64 + 52.0;
        let drawable = |v: f64| v.is_finite() && v >= 0.0;
        let max = self
            .bars
            .iter()
            .map(|b| b.1)
            .filter(|v| drawable(*v))
            .fold(0.0, f64::max);
        let (_, hi, ticks, step) = linear_axis(0.0, if max > 0.0 { max } else { 1.0 });
        let sx = |v: f64| left + v / hi * (w - left - right);
        let mut s = String::new();
        svg_open(&mut s, w, h, &self.title);
        let bottom = h - 52.0;
        for &t in ticks.iter().filter(|&&t| t >= 0.0) {
            let x = sx(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.2}" y1="{top:.2}" x2="{x:.2}" y2="{bottom:.2}" stroke="#e5e5e5"/><text x="{x:.2}" y="{:.2}" text-anchor="middle">{}</text>"##,
                bottom + 16.0,
                xml_escape(&format_linear(t, step))
            );
        }
        for (i, (label, v)) in self.bars.iter().enumerate() {
            let y = top + row * i as f64;
            let color = PALETTE[i % PALETTE.len()];
            let _ = writeln!(
                s,
                r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
                left - 6.0,
                y + row / 2.0 + 4.0,
                xml_escape(label)
            );
            if drawable(*v) {
                let _ = writeln!(
                    s,
                    r#"<rect x="{left:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{color}"/><text x="{:.2}" y="{:.2}">{}</text>"#,
                    y + 5.0,
                    sx(*v) - left,
                    row - 10.0,
                    sx(*v) + 4.0,
                    y + row / 2.0 + 4.0,
                    xml_escape(&format_value(*v))
                );
            } else {
                let _ = writeln!(
                    s,
                    r#"<text x="{:.2}" y="{:.2}">n/a</text>"#,
                    left + 4.0,
                    y + row / 2.0 + 4.0
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<line x1="{left:.2}" y1="{top:.2}" x2="{left:.2}" y2="{bottom:.2}" stroke="black"/><text x="{:.2}" y="{:.2}" text-anchor="middle" font-size="13">{}</text>"#,
            (left + w - right) / 2.0,
            h - 12.0,
            xml_escape(&self.value_label)
        );
        s.push_str("</svg>\n");
        s
    }

    /// Renders the chart at the default width.
    pub fn to_svg(&self) -> String {
        self.to_svg_sized(DEFAULT_WIDTH)
    }
}

/// A bar's value with three significant digits.
fn format_value(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e5).contains(&v.abs()) {
        format!("{v:.2e}")
    } else {
        let decimals = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &str, pat: &str) -> usize {
        s.matches(pat).count()
    }

    #[test]
    fn nice_steps_and_labels() {
        assert_eq!(nice_step(10.0, 5), 2.0);
        assert_eq!(nice_step(1.0, 6), 0.2);
        assert_eq!(nice_step(7000.0, 6), 1000.0);
        let (lo, hi, ticks, step) = linear_axis(0.3, 9.7);
        assert_eq!((lo, hi, step), (0.0, 10.0, 2.0));
        assert_eq!(ticks.len(), 6);
        assert_eq!(format_linear(0.2, 0.1), "0.2");
        assert_eq!(format_linear(1500.0, 500.0), "1500");
        assert_eq!(format_linear(-1e-17, 0.1), "0.0");
        assert_eq!(format_pow10(-2), "0.01");
        assert_eq!(format_pow10(3), "1000");
        assert_eq!(format_pow10(7), "1e7");
        // A flat series still gets a non-empty range.
        let (lo, hi, _, _) = linear_axis(5.0, 5.0);
        assert!(lo < 5.0 && hi > 5.0);
    }

    #[test]
    fn renders_series_legend_and_escapes() {
        let chart = LineChart::new("Loss <train & val>", "step", "loss")
            .with_series("train", vec![(0.0, 4.0), (1.0, 3.0), (2.0, f64::NAN), (3.0, 2.0)])
            .with_series("val \"x\"", vec![(0.0, 4.2), (3.0, f64::INFINITY), (3.0, 2.5)]);
        let svg = chart.to_svg();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Loss &lt;train &amp; val&gt;"));
        assert!(svg.contains("val &quot;x&quot;"));
        assert_eq!(count(&svg, "<polyline"), 2);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        // The train polyline has 3 usable points (the NaN one is skipped).
        let train = svg
            .lines()
            .find(|l| l.contains(PALETTE[0]) && l.contains("polyline"))
            .unwrap();
        let pts = train.split("points=\"").nth(1).unwrap().trim_end_matches("\"/>");
        assert_eq!(pts.split(' ').count(), 3);
        assert!(svg.contains(PALETTE[1]));
    }

    #[test]
    fn log_axis_and_edge_cases() {
        let chart = LineChart::new("t", "x", "y")
            .with_series(
                "s",
                vec![(1.0, 0.01), (2.0, 1.0), (3.0, 100.0), (4.0, 0.0), (5.0, -1.0)],
            )
            .with_log_y(true);
        let svg = chart.to_svg();
        assert!(svg.contains(">0.01<") && svg.contains(">100<"));
        assert!(svg.contains("(log scale)"));
        let pts = svg.split("points=\"").nth(1).unwrap();
        let pts = pts.split('"').next().unwrap();
        assert_eq!(pts.split(' ').count(), 3); // y <= 0 skipped on a log axis
                                               // Empty chart, single point, tiny size: no panic, valid document.
        let empty = LineChart::default().to_svg();
        assert!(empty.contains("no data"));
        let one = LineChart::new("", "", "").with_series("p", vec![(1.0, 1.0)]);
        assert!(one.to_svg_sized(10, 10).contains("<circle"));
    }

    #[test]
    fn log_x_axis_and_dots() {
        let chart = LineChart::new("q", "steps", "acc")
            .with_series("ln", vec![(600.0, 80.0), (2400.0, 84.0), (9600.0, 86.0), (0.0, 1.0)])
            .with_dots(0, vec![(600.0, 79.5), (600.0, 80.5), (-1.0, 80.0)])
            .with_log_x(true);
        let svg = chart.to_svg();
        assert!(svg.contains(">1000<") && svg.contains(">10000<") && svg.contains(">5000<"));
        assert!(svg.contains("steps (log scale)"));
        let pts = svg.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(pts.split(' ').count(), 3); // x <= 0 skipped on a log axis
        assert_eq!(count(&svg, "<circle"), 2);
        assert!(svg.contains(&format!(r#"fill="{}" fill-opacity"#, PALETTE[0])));
    }

    #[test]
    fn save_creates_parent_dirs() {
        let dir = std::env::temp_dir().join(format!("unigrad-plot-test-{}", std::process::id()));
        let path = dir.join("sub").join("c.svg");
        LineChart::new("t", "x", "y")
            .with_series("a", vec![(0.0, 1.0), (1.0, 2.0)])
            .save(&path)
            .unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("<polyline"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bar_chart_draws_one_bar_per_finite_value() {
        let c = BarChart::new("Eval <time>", "ms")
            .with_bar("LN", 12.5)
            .with_bar("UN folded", 10.0)
            .with_bar("broken", f64::NAN);
        let svg = c.to_svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Eval &lt;time&gt;"));
        assert_eq!(count(&svg, "<rect x="), 2);
        assert!(svg.contains(">12.5<") && svg.contains(">10.0<") && svg.contains(">n/a<"));
        assert!(!svg.contains("NaN"));
        assert_eq!(format_value(0.000123), "1.23e-4");
        assert_eq!(format_value(1.5), "1.50");
    }
}
