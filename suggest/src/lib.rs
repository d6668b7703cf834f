//! "Did you mean" suggestions: when a user names something unknown (an asset key, a model, a
//! relation, a selector method), the error lists the closest known names. One scoring for every
//! crate, so the same typo gets the same hint from the engine, the dbt layer and the warehouse.
//!
//! ```
//! let keys = ["raw/orders", "raw/customers"];
//! assert_eq!(rainbow_suggest::did_you_mean("raw/order", keys), " (did you mean `raw/orders`?)");
//! ```

/// Formats a " (did you mean `a` or `b`?)" suffix from the candidates closest to `wanted`:
/// Jaro-Winkler similarity ≥ 0.8, or a candidate whose last `/` segment equals `wanted` or that
/// contains / is contained in it (3+ characters). At most three names, only those within 0.05 of
/// the best score. Empty when nothing is close (or `wanted` itself is a candidate).
pub fn did_you_mean<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let mut scored: Vec<(f64, &str)> = candidates
        .into_iter()
        .filter(|c| *c != wanted)
        .map(|c| {
            let mut score = strsim::jaro_winkler(wanted, c);
            let last = c.rsplit('/').next().unwrap_or(c);
            if last == wanted || (wanted.len() >= 3 && (c.contains(wanted) || wanted.contains(c))) {
                score = score.max(0.95);
            }
            (score, c)
        })
        .filter(|(score, _)| *score >= 0.8)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    // Only names about as close as the closest one: "did you mean" should not list everything.
    let best = scored.first().map(|(s, _)| *s).unwrap_or(0.0);
    let names: Vec<String> = scored
        .iter()
        .take_while(|(s, _)| *s >= best - 0.05)
        .take(3)
        .map(|(_, c)| format!("`{c}`"))
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", names.join(" or "))
    }
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_close_names_only() {
        let keys = ["raw/orders", "raw/customers", "warehouse/fact_sales"];
        assert_eq!(
            did_you_mean("raw/order", keys),
            " (did you mean `raw/orders`?)"
        );
        assert_eq!(did_you_mean("zzz", keys), "");
        assert_eq!(
            did_you_mean("fact_sales", keys),
            " (did you mean `warehouse/fact_sales`?)"
        );
        assert_eq!(
            did_you_mean("stg_ordrs", ["stg_orders", "stg_orders"]),
            " (did you mean `stg_orders`?)"
        );
    }
}
