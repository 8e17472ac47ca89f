//! A small SVG line chart: the figures of a sweep against the number of clients.
//!
//! Written by hand rather than with a plotting crate: two panels of straight lines on
//! logarithmic axes need a hundred lines of SVG, and a plotting library would need
//! fonts from the system to lay out its labels, which CI machines do not have.

use std::fmt::Write as _;

/// One line of a panel: a name and its (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Shown in the legend.
    pub name: String,
    /// The points, x ascending; points with y <= 0 are skipped.
    pub points: Vec<(f64, f64)>,
}

/// One panel: a title, the y axis' label, whether y is logarithmic, and its lines.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Above the panel.
    pub title: String,
    /// Beside the y axis.
    pub y_label: String,
    /// Logarithmic y axis (latencies); else linear from 0 (throughput).
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 440.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_T: f64 = 40.0;
const MARGIN_B: f64 = 50.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Renders panels side by side, sharing a logarithmic x axis labelled `x_label`.
pub fn svg(panels: &[Panel], x_label: &str) -> String {
    let width = panels.len() as f64 * (PANEL_W + MARGIN_L + 20.0);
    let height = PANEL_H + MARGIN_T + MARGIN_B + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    for (i, panel) in panels.iter().enumerate() {
        let left = i as f64 * (PANEL_W + MARGIN_L + 20.0) + MARGIN_L;
        draw_panel(&mut out, panel, left, x_label);
    }
    out.push_str("</svg>\n");
    out
}

fn draw_panel(out: &mut String, panel: &Panel, left: f64, x_label: &str) {
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points.filter(|&&(_, y)| y > 0.0) {
        x_min = x_min.min(x);
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if x_min > x_max {
        return;
    }
    // Decades that hold every point.
    let x_lo = x_min.log10().floor();
    let x_hi = x_max.log10().ceil().max(x_lo + 1.0);
    let (y_lo, y_hi) = if panel.log_y {
        let lo = y_min.log10().floor();
        (lo, y_max.log10().ceil().max(lo + 1.0))
    } else {
        (0.0, nice_ceiling(y_max))
    };
    let top = MARGIN_T;
    let sx = |x: f64| left + (x.log10() - x_lo) / (x_hi - x_lo) * PANEL_W;
    let sy = |y: f64| {
        let v = if panel.log_y { y.log10() } else { y };
        top + PANEL_H - (v - y_lo) / (y_hi - y_lo) * PANEL_H
    };
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle" font-size="14">{}</text>"#,
        left + PANEL_W / 2.0,
        top - 15.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#444"/>"##
    );
    // x ticks: every decade.
    let mut d = x_lo;
    while d <= x_hi + 1e-9 {
        let x = sx(10f64.powf(d));
        let _ = writeln!(
            out,
            r##"<line x1="{x}" y1="{top}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
            top + PANEL_H,
            top + PANEL_H + 16.0,
            human(10f64.powf(d))
        );
        d += 1.0;
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + PANEL_W / 2.0,
        top + PANEL_H + 36.0,
        escape(x_label)
    );
    // y ticks: decades (log) or fifths (linear).
    let ticks: Vec<f64> = if panel.log_y {
        (y_lo as i32..=y_hi as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=5).map(|k| y_hi * f64::from(k) / 5.0).collect()
    };
    for t in ticks {
        let y = sy(t);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            left + PANEL_W,
            left - 6.0,
            y + 4.0,
            human(t)
        );
    }
    let _ = writeln!(
        out,
        r#"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{}</text>"#,
        left - 52.0,
        top + PANEL_H / 2.0,
        escape(&panel.y_label)
    );
    for (k, series) in panel.series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let path: Vec<String> = series
            .points
            .iter()
            .filter(|&&(_, y)| y > 0.0)
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for p in &path {
            let (x, y) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" fill="{colour}"/>"#);
        }
        let ly = top + 16.0 + 16.0 * k as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            left + 10.0,
            left + 30.0,
            left + 36.0,
            ly + 4.0,
            escape(&series.name)
        );
    }
}

/// The next 1, 2 or 5 times a power of ten at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

/// 1,500,000 as "1.5M", 20,000 as "20k", 0.5 as "0.5".
fn human(v: f64) -> String {
    let (scaled, suffix) = if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let text = format!("{scaled:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text}{suffix}")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_has_one_line_per_series_and_labelled_decades() {
        let panel = Panel {
            title: "throughput".into(),
            y_label: "msg/s".into(),
            log_y: false,
            series: vec![
                Series {
                    name: "a".into(),
                    points: vec![(2.0, 1e6), (100.0, 2e6), (1e4, 1.5e6)],
                },
                Series {
                    name: "b <ref>".into(),
                    points: vec![(2.0, 9e5), (1e4, 0.0)],
                },
            ],
        };
        let svg = svg(&[panel], "clients");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 4, "y = 0 is skipped");
        assert!(svg.contains(">10k<") && svg.contains(">2M<"), "{svg}");
        assert!(svg.contains("b &lt;ref&gt;"));
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(human(1_500_000.0), "1.5M");
        assert_eq!(human(20_000.0), "20k");
        assert_eq!(human(1.0), "1");
        assert_eq!(nice_ceiling(1.7e6), 2e6);
    }
}
