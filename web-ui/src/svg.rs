//! Server-drawn SVG charts: line charts of metadata over time or partitions, horizontal bar
//! charts for the dashboard, the partition health bar and the run Gantt chart. Plain SVG
//! through `view!` (escaped), no JavaScript, no chart library: every chart here is a few
//! rectangles or one polyline.

use leptos::prelude::*;

/// One bar or point with its label.
#[derive(Debug, Clone)]
pub(crate) struct Point {
    /// Label (x axis or bar name).
    pub label: String,
    /// Value.
    pub value: f64,
}

/// Formats a value compactly (`1.2k`, `3.4M`).
pub(crate) fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// A line chart of `points` in order (time or partition), 640×160, with min/max labels.
pub(crate) fn line_chart(title: &str, points: &[Point]) -> AnyView {
    let title = title.to_owned();
    if points.is_empty() {
        return view! { <p class="muted">{format!("{title}: no data")}</p> }.into_any();
    }
    let (w, h, pad) = (640.0f64, 160.0f64, 30.0f64);
    let max = points.iter().map(|p| p.value).fold(f64::MIN, f64::max);
    let min = points
        .iter()
        .map(|p| p.value)
        .fold(f64::MAX, f64::min)
        .min(0.0);
    let span = if max > min { max - min } else { 1.0 };
    let step = if points.len() > 1 {
        (w - 2.0 * pad) / (points.len() - 1) as f64
    } else {
        0.0
    };
    let coords: Vec<(f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                pad + i as f64 * step,
                h - pad - (p.value - min) / span * (h - 2.0 * pad),
            )
        })
        .collect();
    let polyline = coords
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    // Dots only where they can be told apart; each has a tooltip.
    let dots = (points.len() <= 200).then(|| {
        coords
            .iter()
            .zip(points)
            .map(|((x, y), p)| {
                let tip = format!("{}: {}", p.label, compact(p.value));
                view! { <circle cx=format!("{x:.1}") cy=format!("{y:.1}") r="2.5"><title>{tip}</title></circle> }
            })
            .collect_view()
    });
    let first = points.first().map(|p| p.label.clone()).unwrap_or_default();
    let last = points.last().map(|p| p.label.clone()).unwrap_or_default();
    view! {
        <figure class="chart">
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {w} {h}") width=w height=h role="img">
                <line x1=pad y1=h - pad x2=w - pad y2=h - pad class="axis"/>
                <line x1=pad y1=pad x2=pad y2=h - pad class="axis"/>
                <text x=2 y=pad class="tick">{compact(max)}</text>
                <text x=2 y=h - pad class="tick">{compact(min)}</text>
                <text x=pad y=h - 8.0 class="tick">{first}</text>
                <text x=w - pad y=h - 8.0 class="tick" text-anchor="end">{last}</text>
                <polyline points=polyline class="series" fill="none"/>
                {dots}
            </svg>
        </figure>
    }
    .into_any()
}

/// Horizontal bars, one per point, scaled to the largest value.
pub(crate) fn bar_chart(title: &str, points: &[Point]) -> AnyView {
    let title = title.to_owned();
    let (label_w, bar_w, row_h) = (180.0f64, 420.0f64, 22.0f64);
    let max = points.iter().map(|p| p.value).fold(0.0f64, f64::max);
    let h = row_h * points.len() as f64 + 4.0;
    let bars = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let y = i as f64 * row_h + 2.0;
            let len = if max > 0.0 {
                p.value.max(0.0) / max * bar_w
            } else {
                0.0
            };
            let label = p.label.clone();
            let value = compact(p.value);
            view! {
                <g>
                    <text x=label_w - 6.0 y=y + 15.0 text-anchor="end" class="tick">{label}</text>
                    <rect x=label_w y=y width=format!("{len:.1}") height=row_h - 6.0 class="bar"/>
                    <text x=label_w + len + 4.0 y=y + 15.0 class="tick">{value}</text>
                </g>
            }
        })
        .collect_view();
    view! {
        <figure class="chart">
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {} {h}", label_w + bar_w + 80.0) width=label_w + bar_w + 80.0 height=h role="img">
                {bars}
            </svg>
        </figure>
    }
    .into_any()
}

/// One segment of a health bar.
#[derive(Debug, Clone)]
pub(crate) struct Segment {
    /// CSS state class (`materialized`, `failed`, `in_progress`, `missing`).
    pub state: &'static str,
    /// Partitions in it.
    pub count: usize,
    /// Tooltip.
    pub tip: String,
    /// Link (drill-down), if any.
    pub href: Option<String>,
}

/// The partition health bar: one rectangle per status range, widths proportional to counts
/// (every range at least 1 unit wide so a single failure stays visible).
pub(crate) fn health_bar(segments: &[Segment], width: f64, height: f64) -> AnyView {
    let total: usize = segments.iter().map(|s| s.count).sum();
    if total == 0 {
        return view! { <span class="muted">"no partitions"</span> }.into_any();
    }
    // Widths: proportional, with a 1-unit minimum taken back from the widest ranges.
    let mut x = 0.0;
    let unit = width / total as f64;
    let rects = segments
        .iter()
        .map(|s| {
            let w = (s.count as f64 * unit).max(1.0);
            let at = x;
            x += w;
            let class = format!("seg {}", s.state);
            let tip = s.tip.clone();
            let rect = view! { <rect x=format!("{at:.2}") y=0 width=format!("{w:.2}") height=height class=class><title>{tip}</title></rect> };
            match &s.href {
                Some(href) => {
                    let href = href.clone();
                    view! { <a href=href>{rect}</a> }.into_any()
                }
                None => rect.into_any(),
            }
        })
        .collect_view();
    let full = x.max(width);
    view! {
        <svg class="health" viewBox=format!("0 0 {full:.2} {height}") preserveAspectRatio="none" width=width height=height role="img">
            {rects}
        </svg>
    }
    .into_any()
}

/// One bar of the Gantt chart: a step from `start` to `end` seconds after the run started.
#[derive(Debug, Clone)]
pub(crate) struct GanttBar {
    /// Step key.
    pub step: String,
    /// Seconds after the run's start.
    pub start: f64,
    /// Seconds after the run's start (the run's end or now while running).
    pub end: f64,
    /// CSS state class (`success`, `failure`, `started`, `skipped`, `canceled`).
    pub state: &'static str,
}

/// The run's Gantt chart: one row per step.
pub(crate) fn gantt(bars: &[GanttBar]) -> AnyView {
    if bars.is_empty() {
        return view! { <p class="muted">"no steps started yet"</p> }.into_any();
    }
    let (label_w, chart_w, row_h) = (200.0f64, 560.0f64, 18.0f64);
    let span = bars.iter().map(|b| b.end).fold(0.001f64, f64::max);
    let h = row_h * bars.len() as f64 + 20.0;
    let rows = bars
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let y = i as f64 * row_h;
            let x = label_w + b.start / span * chart_w;
            let w = ((b.end - b.start) / span * chart_w).max(2.0);
            let class = format!("seg {}", b.state);
            let tip = format!(
                "{}: {} → {} ({})",
                b.step,
                crate::shell::seconds(b.start),
                crate::shell::seconds(b.end),
                b.state
            );
            let label = b.step.clone();
            view! {
                <g>
                    <text x=label_w - 6.0 y=y + 13.0 text-anchor="end" class="tick">{label}</text>
                    <rect x=format!("{x:.1}") y=y + 2.0 width=format!("{w:.1}") height=row_h - 4.0 class=class><title>{tip}</title></rect>
                </g>
            }
        })
        .collect_view();
    let end_label = crate::shell::seconds(span);
    view! {
        <svg class="gantt" viewBox=format!("0 0 {} {h}", label_w + chart_w + 10.0) width=label_w + chart_w + 10.0 height=h role="img">
            {rows}
            <text x=label_w y=h - 4.0 class="tick">"0 s"</text>
            <text x=label_w + chart_w y=h - 4.0 class="tick" text-anchor="end">{end_label}</text>
        </svg>
    }
    .into_any()
}
