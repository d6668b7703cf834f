//! The dashboard: the code location's analyses ([`crate::CodeLocationUi::analyses`]) as
//! tables and SVG bar charts.

use axum::extract::State;
use axum::response::Response;
use leptos::prelude::*;
use serde::Serialize;

use crate::shell::{Format, page, respond};
use crate::state::{Analysis, UiState};
use crate::svg::{Point, bar_chart};

#[derive(Debug, Serialize)]
struct DashboardData {
    analyses: Vec<Analysis>,
    error: Option<String>,
}

/// `GET /dashboard`.
pub(crate) async fn dashboard(State(ui): State<UiState>, format: Format) -> Response {
    let data = match &ui.inner.code_location {
        None => DashboardData {
            analyses: Vec::new(),
            error: Some("this code location has no dashboard".into()),
        },
        Some(c) => match c.analyses().await {
            Ok(analyses) => DashboardData {
                analyses,
                error: None,
            },
            Err(e) => DashboardData {
                analyses: Vec::new(),
                error: Some(e),
            },
        },
    };
    respond(format, &data, render)
}

/// A number in a formatted cell (`1,234.50` and `12%` included), if it is one.
fn number(cell: &str) -> Option<f64> {
    let cleaned: String = cell
        .chars()
        .filter(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E'))
        .collect();
    cleaned.parse().ok()
}

fn render(d: &DashboardData) -> String {
    let error = d.error.clone().map(|e| view! { <p class="error">{e}</p> });
    let sections = d
        .analyses
        .iter()
        .map(|a| {
            let title = a.title.clone();
            let chart = a.chart.map(|(label, value)| {
                let points: Vec<Point> = a
                    .rows
                    .iter()
                    .filter_map(|r| {
                        Some(Point {
                            label: r.get(label)?.clone(),
                            value: number(r.get(value)?)?,
                        })
                    })
                    .collect();
                let caption = a.columns.get(value).cloned().unwrap_or_default();
                bar_chart(&caption, &points)
            });
            let head = a
                .columns
                .iter()
                .map(|c| {
                    let c = c.clone();
                    view! { <th>{c}</th> }
                })
                .collect_view();
            let rows = a
                .rows
                .iter()
                .map(|r| {
                    let cells = r
                        .iter()
                        .map(|c| {
                            let c = c.clone();
                            view! { <td>{c}</td> }
                        })
                        .collect_view();
                    view! { <tr>{cells}</tr> }
                })
                .collect_view();
            view! {
                <section class="card analysis">
                    <h2>{title}</h2>
                    {chart}
                    <table class="grid"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
                </section>
            }
        })
        .collect_view();
    let body = view! {
        <h1>"Dashboard"</h1>
        {error}
        {sections}
    }
    .into_any();
    page("Dashboard", "/dashboard", body)
}

#[cfg(test)]
mod tests {
    use super::number;

    #[test]
    fn numbers_in_formatted_cells() {
        assert_eq!(number("1234.5"), Some(1234.5));
        assert_eq!(number("-3"), Some(-3.0));
        assert_eq!(number("Monday"), None);
    }
}
