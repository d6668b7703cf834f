//! Partitions: [`PartitionsDefinition`] (time windows, static, two-dimensional, dynamic), key
//! generation and time windows, and [`PartitionMapping`] between assets partitioned differently.
//!
//! Time windows are computed in local wall-clock time of the definition's timezone (chrono-tz)
//! and converted to instants: a daily partition spans local midnight to local midnight, so it
//! lasts 23 or 25 hours across a DST change. Hourly partitions skip local hours that do not
//! exist (spring forward) and keep one partition for a repeated hour (fall back), which then
//! lasts two hours; keys are therefore unique and ordered.
//!
//! Definitions are plain data, validated when the asset graph is built, so a bad start date or
//! timezone is reported with the asset that declares it.

mod mapping;
mod status;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{
    DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc,
};
use chrono_tz::Tz;
use serde::Serialize;

pub use mapping::PartitionMapping;
pub use status::{PartitionState, StatusRange, status_ranges};

use crate::error::{Error, Result};

/// Separator of the dimensions in a multi-dimensional partition key: `2024-09-01|eu`.
pub const MULTI_SEPARATOR: char = '|';

/// How long each time window is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cadence {
    /// One hour.
    Hourly,
    /// One day (local midnight to midnight).
    Daily,
    /// Seven days, starting on the start date's weekday.
    Weekly,
    /// One calendar month, starting on the 1st.
    Monthly,
}

impl Cadence {
    fn default_format(self) -> &'static str {
        match self {
            Cadence::Hourly => "%Y-%m-%d-%H:%M",
            _ => "%Y-%m-%d",
        }
    }

    /// The local start of the window after the one starting at `t`.
    fn next(self, t: NaiveDateTime) -> NaiveDateTime {
        match self {
            Cadence::Hourly => t + Duration::hours(1),
            Cadence::Daily => t + Duration::days(1),
            Cadence::Weekly => t + Duration::days(7),
            Cadence::Monthly => {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                NaiveDate::from_ymd_opt(y, m, 1)
                    .map(|d| d.and_time(NaiveTime::MIN))
                    .unwrap_or(t + Duration::days(31))
            }
        }
    }
}

/// Time-window partitions: one partition per hour / day / week / month from `start`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimeWindowPartitions {
    /// Window length.
    pub cadence: Cadence,
    /// First window's start, local time: `2024-09-01` or `2024-09-01 06:00`.
    pub start: String,
    /// Optional end (exclusive), local time.
    pub end: Option<String>,
    /// Partitions after the last complete window (1 includes the window in progress; negative
    /// values hold back).
    pub end_offset: i64,
    /// IANA timezone, `UTC` by default.
    pub timezone: String,
    /// chrono format of the keys.
    pub format: String,
    /// The parsed start, end and timezone, shared by clones (parsing is the costly part of
    /// checking a key).
    parsed: ParseCache,
}

/// Inputs a parse depends on, to detect edits of the public fields after a parse.
type Fingerprint = (Cadence, String, Option<String>, String, String);
type Parsed = (Tz, NaiveDateTime, Option<NaiveDateTime>);

/// A parse result cache that does not take part in equality or hashing.
#[derive(Clone, Default)]
struct ParseCache(Arc<std::sync::OnceLock<(Fingerprint, std::result::Result<Parsed, String>)>>);

impl fmt::Debug for ParseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ParseCache")
    }
}
impl PartialEq for ParseCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for ParseCache {}
impl std::hash::Hash for ParseCache {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl TimeWindowPartitions {
    fn new(cadence: Cadence, start: &str) -> Self {
        TimeWindowPartitions {
            cadence,
            start: start.to_owned(),
            end: None,
            end_offset: 0,
            timezone: "UTC".into(),
            format: cadence.default_format().into(),
            parsed: ParseCache::default(),
        }
    }
}

/// A partition's time window, in the definition's timezone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionTimeWindow {
    /// Inclusive start.
    pub start: DateTime<FixedOffset>,
    /// Exclusive end.
    pub end: DateTime<FixedOffset>,
}

/// How an asset is partitioned.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PartitionsDefinition {
    /// Time windows.
    TimeWindow(TimeWindowPartitions),
    /// A fixed list of keys.
    Static(Vec<String>),
    /// Two named dimensions; keys join the dimensions' keys with `|`, dimensions ordered by name.
    Multi(Vec<(String, PartitionsDefinition)>),
    /// Keys added at run time (API/CLI) and stored, under this name.
    Dynamic(String),
}

/// What key generation needs besides the definition: the current time and stored dynamic keys.
/// It also caches enumerated keys and windows per definition, so mapping many partitions
/// enumerates each definition once.
#[derive(Debug, Clone)]
pub struct PartitionContext {
    /// "Now" (injectable for tests and schedules).
    pub now: DateTime<Utc>,
    /// Dynamic partition keys by definition name.
    pub dynamic: HashMap<String, Vec<String>>,
    cache: Arc<Mutex<ContextCache>>,
}

#[derive(Debug, Default)]
struct ContextCache {
    keys: HashMap<PartitionsDefinition, Arc<Vec<String>>>,
    windows: HashMap<PartitionsDefinition, Arc<Vec<KeyWindow>>>,
}

impl PartitionContext {
    /// A context at `now` with no dynamic keys.
    pub fn at(now: DateTime<Utc>) -> Self {
        PartitionContext {
            now,
            dynamic: HashMap::new(),
            cache: Arc::default(),
        }
    }

    /// `def.keys(self)`, computed once per definition.
    pub fn keys_of(&self, def: &PartitionsDefinition) -> Result<Arc<Vec<String>>> {
        if let Ok(cache) = self.cache.lock()
            && let Some(keys) = cache.keys.get(def)
        {
            return Ok(keys.clone());
        }
        let keys = Arc::new(def.keys(self)?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.keys.insert(def.clone(), keys.clone());
        }
        Ok(keys)
    }

    /// The windows of a time-window definition, computed once per definition.
    pub(crate) fn windows_of(&self, def: &PartitionsDefinition) -> Result<Arc<Vec<KeyWindow>>> {
        if let Ok(cache) = self.cache.lock()
            && let Some(w) = cache.windows.get(def)
        {
            return Ok(w.clone());
        }
        let w = Arc::new(def.windows_utc(self.now)?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.windows.insert(def.clone(), w.clone());
        }
        Ok(w)
    }
}

impl PartitionsDefinition {
    /// Hourly partitions from `start` (`2024-09-01-00:00` or `2024-09-01`).
    pub fn hourly(start: &str) -> Self {
        PartitionsDefinition::TimeWindow(TimeWindowPartitions::new(Cadence::Hourly, start))
    }

    /// Daily partitions from `start` (`2024-09-01`).
    pub fn daily(start: &str) -> Self {
        PartitionsDefinition::TimeWindow(TimeWindowPartitions::new(Cadence::Daily, start))
    }

    /// Weekly partitions from `start`; weeks begin on `start`'s weekday.
    pub fn weekly(start: &str) -> Self {
        PartitionsDefinition::TimeWindow(TimeWindowPartitions::new(Cadence::Weekly, start))
    }

    /// Monthly partitions from `start` (must be the 1st of a month).
    pub fn monthly(start: &str) -> Self {
        PartitionsDefinition::TimeWindow(TimeWindowPartitions::new(Cadence::Monthly, start))
    }

    /// A fixed list of keys.
    pub fn static_keys<S: Into<String>>(keys: impl IntoIterator<Item = S>) -> Self {
        PartitionsDefinition::Static(keys.into_iter().map(Into::into).collect())
    }

    /// Two dimensions, e.g. `multi([("date", daily(..)), ("region", static_keys(..))])`.
    pub fn multi<S: Into<String>>(
        dimensions: impl IntoIterator<Item = (S, PartitionsDefinition)>,
    ) -> Self {
        let mut dims: Vec<(String, PartitionsDefinition)> =
            dimensions.into_iter().map(|(n, d)| (n.into(), d)).collect();
        dims.sort_by(|a, b| a.0.cmp(&b.0));
        PartitionsDefinition::Multi(dims)
    }

    /// Keys added at run time under `name`.
    pub fn dynamic(name: impl Into<String>) -> Self {
        PartitionsDefinition::Dynamic(name.into())
    }

    fn time_mut(&mut self) -> Option<&mut TimeWindowPartitions> {
        match self {
            PartitionsDefinition::TimeWindow(t) => Some(t),
            _ => None,
        }
    }

    /// Sets the timezone of a time-window definition (no effect on others).
    pub fn timezone(mut self, tz: impl Into<String>) -> Self {
        if let Some(t) = self.time_mut() {
            t.timezone = tz.into();
        }
        self
    }

    /// Sets the exclusive end of a time-window definition.
    pub fn end(mut self, end: impl Into<String>) -> Self {
        if let Some(t) = self.time_mut() {
            t.end = Some(end.into());
        }
        self
    }

    /// Sets the end offset of a time-window definition.
    pub fn end_offset(mut self, offset: i64) -> Self {
        if let Some(t) = self.time_mut() {
            t.end_offset = offset;
        }
        self
    }

    /// Sets the key format of a time-window definition.
    pub fn format(mut self, format: impl Into<String>) -> Self {
        if let Some(t) = self.time_mut() {
            t.format = format.into();
        }
        self
    }

    /// Checks the definition; errors say what is wrong.
    pub fn validate(&self) -> Result<()> {
        match self {
            PartitionsDefinition::TimeWindow(t) => ResolvedTime::resolve(t).map(|_| ()),
            PartitionsDefinition::Static(keys) => {
                if keys.is_empty() {
                    return Err(Error::Definition(
                        "static partitions need at least one key".into(),
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for k in keys {
                    if k.is_empty() || k.contains(MULTI_SEPARATOR) || k.contains(',') {
                        return Err(Error::Definition(format!(
                            "static partition key `{k}` is empty or contains `|` or `,`"
                        )));
                    }
                    if !seen.insert(k) {
                        return Err(Error::Definition(format!(
                            "static partition key `{k}` is listed twice"
                        )));
                    }
                }
                Ok(())
            }
            PartitionsDefinition::Multi(dims) => {
                if dims.len() != 2 {
                    return Err(Error::Definition(format!(
                        "multi-dimensional partitions need exactly two dimensions, got {}",
                        dims.len()
                    )));
                }
                if dims[0].0 == dims[1].0 {
                    return Err(Error::Definition(format!(
                        "both dimensions are named `{}`",
                        dims[0].0
                    )));
                }
                for (name, d) in dims {
                    if matches!(d, PartitionsDefinition::Multi(_)) {
                        return Err(Error::Definition(format!(
                            "dimension `{name}` cannot itself be multi-dimensional"
                        )));
                    }
                    d.validate()
                        .map_err(|e| Error::Definition(format!("dimension `{name}`: {e}")))?;
                }
                Ok(())
            }
            PartitionsDefinition::Dynamic(name) => {
                if name.is_empty() {
                    Err(Error::Definition(
                        "a dynamic partitions definition needs a name".into(),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Every key, in order, as of `ctx.now`.
    pub fn keys(&self, ctx: &PartitionContext) -> Result<Vec<String>> {
        match self {
            PartitionsDefinition::TimeWindow(t) => {
                let r = ResolvedTime::resolve(t)?;
                Ok(r.windows(ctx.now).into_iter().map(|w| r.key(w.0)).collect())
            }
            PartitionsDefinition::Static(keys) => Ok(keys.clone()),
            PartitionsDefinition::Multi(dims) => {
                let (a, b) = match dims.as_slice() {
                    [a, b] => (a.1.keys(ctx)?, b.1.keys(ctx)?),
                    _ => {
                        return Err(Error::Definition(
                            "multi-dimensional partitions need two dimensions".into(),
                        ));
                    }
                };
                let mut out = Vec::with_capacity(a.len() * b.len());
                for x in &a {
                    for y in &b {
                        out.push(format!("{x}{MULTI_SEPARATOR}{y}"));
                    }
                }
                Ok(out)
            }
            PartitionsDefinition::Dynamic(name) => {
                Ok(ctx.dynamic.get(name).cloned().unwrap_or_default())
            }
        }
    }

    /// The time window of `key` (time-window definitions, and multi-dimensional ones with a
    /// time dimension); `None` for other definitions. Errors if the key does not parse.
    pub fn time_window(&self, key: &str) -> Result<Option<PartitionTimeWindow>> {
        match self {
            PartitionsDefinition::TimeWindow(t) => {
                let r = ResolvedTime::resolve(t)?;
                let start = r.parse_key(key)?;
                Ok(Some(r.window(start)))
            }
            PartitionsDefinition::Multi(dims) => {
                let parts = split_multi(key, dims.len())?;
                for ((_, d), k) in dims.iter().zip(parts) {
                    if let PartitionsDefinition::TimeWindow(_) = d {
                        return d.time_window(k);
                    }
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Whether `key` is a key of this definition as of `ctx.now`.
    pub fn has_key(&self, key: &str, ctx: &PartitionContext) -> Result<bool> {
        match self {
            PartitionsDefinition::TimeWindow(t) => {
                let r = ResolvedTime::resolve(t)?;
                let Ok(start) = r.parse_key(key) else {
                    return Ok(false);
                };
                // The key must round-trip and be a window start inside [first, last].
                Ok(r.key(start) == key && r.contains(start, ctx.now))
            }
            PartitionsDefinition::Static(keys) => Ok(keys.iter().any(|k| k == key)),
            PartitionsDefinition::Dynamic(name) => Ok(ctx
                .dynamic
                .get(name)
                .is_some_and(|keys| keys.iter().any(|k| k == key))),
            PartitionsDefinition::Multi(dims) => {
                let Ok(parts) = split_multi(key, dims.len()) else {
                    return Ok(false);
                };
                for ((_, d), k) in dims.iter().zip(parts) {
                    if !d.has_key(k, ctx)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }

    /// The dimension named `name` of a multi-dimensional definition, with its position.
    pub fn dimension(&self, name: &str) -> Option<(usize, &PartitionsDefinition)> {
        match self {
            PartitionsDefinition::Multi(dims) => dims
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| (i, &dims[i].1)),
            _ => None,
        }
    }

    /// True if key generation needs stored dynamic keys.
    pub fn uses_dynamic(&self) -> bool {
        match self {
            PartitionsDefinition::Dynamic(_) => true,
            PartitionsDefinition::Multi(dims) => dims.iter().any(|(_, d)| d.uses_dynamic()),
            _ => false,
        }
    }

    /// The instant a local wall-clock time of a time-window definition's timezone denotes.
    pub(crate) fn local_instant(&self, local: NaiveDateTime) -> Result<DateTime<Utc>> {
        match self {
            PartitionsDefinition::TimeWindow(t) => Ok(ResolvedTime::resolve(t)?.instant(local)),
            _ => Err(Error::Internal(
                "local_instant on a definition without time windows".into(),
            )),
        }
    }

    /// True for time-window definitions.
    pub fn is_time_window(&self) -> bool {
        matches!(self, PartitionsDefinition::TimeWindow(_))
    }

    /// Ordered windows `(start, end)` as UTC instants, with their keys (time-window definitions).
    pub(crate) fn windows_utc(&self, now: DateTime<Utc>) -> Result<Vec<KeyWindow>> {
        match self {
            PartitionsDefinition::TimeWindow(t) => {
                let r = ResolvedTime::resolve(t)?;
                Ok(r.windows(now)
                    .into_iter()
                    .map(|(s, e)| (r.key(s), r.instant(s), r.instant(e)))
                    .collect())
            }
            _ => Err(Error::Internal(
                "windows_utc on a definition without time windows".into(),
            )),
        }
    }
}

impl fmt::Display for PartitionsDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionsDefinition::TimeWindow(t) => {
                write!(f, "{:?} from {}", t.cadence, t.start)?;
                if let Some(end) = &t.end {
                    write!(f, " to {end}")?;
                }
                if t.timezone != "UTC" {
                    write!(f, " ({})", t.timezone)?;
                }
                Ok(())
            }
            PartitionsDefinition::Static(keys) => write!(f, "static ({} keys)", keys.len()),
            PartitionsDefinition::Multi(dims) => {
                let names: Vec<String> = dims.iter().map(|(n, d)| format!("{n}: {d}")).collect();
                write!(f, "multi [{}]", names.join(" x "))
            }
            PartitionsDefinition::Dynamic(name) => write!(f, "dynamic `{name}`"),
        }
    }
}

/// A key with its window as UTC instants `[start, end)`.
pub(crate) type KeyWindow = (String, DateTime<Utc>, DateTime<Utc>);

/// Splits a multi-dimensional key into its `n` parts.
pub(crate) fn split_multi(key: &str, n: usize) -> Result<Vec<&str>> {
    let parts: Vec<&str> = key.split(MULTI_SEPARATOR).collect();
    if parts.len() != n || parts.iter().any(|p| p.is_empty()) {
        return Err(Error::Definition(format!(
            "partition key `{key}` should have {n} parts separated by `{MULTI_SEPARATOR}`"
        )));
    }
    Ok(parts)
}

/// A parsed time-window definition.
struct ResolvedTime<'a> {
    def: &'a TimeWindowPartitions,
    tz: Tz,
    start: NaiveDateTime,
    end: Option<NaiveDateTime>,
}

fn parse_local(text: &str, what: &str) -> Result<NaiveDateTime> {
    let text = text.trim();
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d-%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, fmt) {
            return Ok(t);
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.and_time(NaiveTime::MIN))
        .map_err(|_| {
            Error::Definition(format!(
                "{what} `{text}` is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DD HH:MM)"
            ))
        })
}

impl<'a> ResolvedTime<'a> {
    fn resolve(def: &'a TimeWindowPartitions) -> Result<Self> {
        let fingerprint: Fingerprint = (
            def.cadence,
            def.start.clone(),
            def.end.clone(),
            def.timezone.clone(),
            def.format.clone(),
        );
        let (cached_for, parsed) = def.parsed.0.get_or_init(|| {
            let parsed = ResolvedTime::parse(def)
                .map(|r| (r.tz, r.start, r.end))
                .map_err(|e| match e {
                    Error::Definition(m) => m,
                    other => other.to_string(),
                });
            (fingerprint.clone(), parsed)
        });
        if *cached_for != fingerprint {
            return ResolvedTime::parse(def);
        }
        match parsed {
            Ok((tz, start, end)) => Ok(ResolvedTime {
                def,
                tz: *tz,
                start: *start,
                end: *end,
            }),
            Err(m) => Err(Error::Definition(m.clone())),
        }
    }

    fn parse(def: &'a TimeWindowPartitions) -> Result<Self> {
        let tz: Tz = def.timezone.parse().map_err(|_| {
            Error::Definition(format!(
                "unknown timezone `{}` (use an IANA name such as `Europe/Paris`)",
                def.timezone
            ))
        })?;
        let start = parse_local(&def.start, "partition start")?;
        let aligned = match def.cadence {
            Cadence::Hourly => start.time().format("%M:%S").to_string() == "00:00",
            Cadence::Daily | Cadence::Weekly => start.time() == NaiveTime::MIN,
            Cadence::Monthly => start.time() == NaiveTime::MIN && start.day() == 1,
        };
        if !aligned {
            return Err(Error::Definition(format!(
                "partition start `{}` is not aligned to a {:?} boundary{}",
                def.start,
                def.cadence,
                if def.cadence == Cadence::Monthly {
                    " (use the 1st of a month)"
                } else {
                    ""
                }
            )));
        }
        let end = def
            .end
            .as_deref()
            .map(|e| parse_local(e, "partition end"))
            .transpose()?;
        if let Some(end) = end
            && end <= start
        {
            return Err(Error::Definition(format!(
                "partition end `{}` is not after the start `{}`",
                def.end.as_deref().unwrap_or(""),
                def.start
            )));
        }
        // The key format must round-trip the start, or keys could not be parsed back.
        let resolved = ResolvedTime {
            def,
            tz,
            start,
            end,
        };
        let key = resolved.key(start);
        if key.contains(',') || key.contains(MULTI_SEPARATOR) {
            return Err(Error::Definition(format!(
                "partition key format `{}` renders `{key}`: keys may not contain `,` or `|`",
                def.format
            )));
        }
        match resolved.parse_key(&key) {
            Ok(back) if back == start => Ok(resolved),
            _ => Err(Error::Definition(format!(
                "partition key format `{}` does not identify a {:?} window (it renders the start as `{key}`)",
                def.format, def.cadence
            ))),
        }
    }

    /// The instant a local wall-clock time denotes: the earlier one when ambiguous, the first
    /// valid time after a gap.
    fn instant(&self, local: NaiveDateTime) -> DateTime<Utc> {
        let mut t = local;
        for _ in 0..48 {
            if let Some(dt) = self.tz.from_local_datetime(&t).earliest() {
                return dt.with_timezone(&Utc);
            }
            t += Duration::minutes(30);
        }
        Utc.from_utc_datetime(&local)
    }

    fn exists(&self, local: NaiveDateTime) -> bool {
        self.tz.from_local_datetime(&local).earliest().is_some()
    }

    fn key(&self, local_start: NaiveDateTime) -> String {
        local_start.format(&self.def.format).to_string()
    }

    fn parse_key(&self, key: &str) -> Result<NaiveDateTime> {
        NaiveDateTime::parse_from_str(key, &self.def.format)
            .or_else(|_| {
                NaiveDate::parse_from_str(key, &self.def.format).map(|d| d.and_time(NaiveTime::MIN))
            })
            .map_err(|_| {
                Error::Definition(format!(
                    "partition key `{key}` does not match the format `{}`",
                    self.def.format
                ))
            })
    }

    /// Next window start after `t`, skipping local times that do not exist (hourly, spring forward).
    fn next(&self, t: NaiveDateTime) -> NaiveDateTime {
        let mut n = self.def.cadence.next(t);
        if self.def.cadence == Cadence::Hourly {
            for _ in 0..4 {
                if self.exists(n) && self.instant(n) > self.instant(t) {
                    break;
                }
                n = self.def.cadence.next(n);
            }
        }
        n
    }

    /// Whether a window starts at `start` as of `now`: O(1) except near the end with a positive
    /// end offset.
    fn contains(&self, start: NaiveDateTime, now: DateTime<Utc>) -> bool {
        if start < self.start || self.end.is_some_and(|end| start >= end) {
            return false;
        }
        let aligned = match self.def.cadence {
            Cadence::Hourly => {
                start.time().format("%M:%S").to_string() == "00:00" && self.exists(start)
            }
            Cadence::Daily => start.time() == NaiveTime::MIN,
            Cadence::Weekly => {
                start.time() == NaiveTime::MIN
                    && (start.date() - self.start.date()).num_days() % 7 == 0
            }
            Cadence::Monthly => start.time() == NaiveTime::MIN && start.day() == 1,
        };
        if !aligned {
            return false;
        }
        // Complete after holding back `-end_offset` more windows.
        let mut end = self.next(start);
        for _ in 0..(-self.def.end_offset).max(0) {
            end = self.next(end);
        }
        if self.instant(end) <= now {
            return true;
        }
        if self.def.end_offset <= 0 {
            return false;
        }
        // An incomplete window: allowed if among the first `end_offset` incomplete ones. The
        // first incomplete window is the one containing `now`.
        let local_now = now.with_timezone(&self.tz).naive_local();
        let index = |t: NaiveDateTime| -> Option<i64> {
            let days = (t.date() - self.start.date()).num_days();
            match self.def.cadence {
                Cadence::Daily => Some(days),
                Cadence::Weekly => Some(days.div_euclid(7)),
                Cadence::Monthly => Some(
                    i64::from(t.year() - self.start.year()) * 12 + i64::from(t.month())
                        - i64::from(self.start.month()),
                ),
                Cadence::Hourly => None,
            }
        };
        match (index(start), index(local_now)) {
            (Some(i), Some(current)) => i < current + self.def.end_offset,
            _ => self
                .windows(now)
                .binary_search_by(|w| w.0.cmp(&start))
                .is_ok(),
        }
    }

    fn window(&self, local_start: NaiveDateTime) -> PartitionTimeWindow {
        let end = self.next(local_start);
        let fixed = |local: NaiveDateTime| {
            let utc = self.instant(local);
            utc.with_timezone(&self.tz).fixed_offset()
        };
        PartitionTimeWindow {
            start: fixed(local_start),
            end: fixed(end),
        }
    }

    /// Windows `(local start, local end)`: complete as of `now`, plus `end_offset`, before `end`.
    fn windows(&self, now: DateTime<Utc>) -> Vec<(NaiveDateTime, NaiveDateTime)> {
        let mut complete = Vec::new();
        let mut t = self.start;
        if self.def.cadence == Cadence::Hourly && !self.exists(t) {
            t = self.next(t);
        }
        let mut pending = Vec::new();
        loop {
            if let Some(end) = self.end
                && t >= end
            {
                break;
            }
            let e = self.next(t);
            if self.instant(e) <= now {
                complete.push((t, e));
            } else {
                // Windows not yet complete, kept only as far as a positive end offset reaches.
                if pending.len() as i64 >= self.def.end_offset {
                    break;
                }
                pending.push((t, e));
            }
            t = e;
        }
        let keep = complete.len() as i64 + self.def.end_offset.min(0);
        complete.truncate(keep.max(0) as usize);
        if self.def.end_offset > 0 {
            complete.extend(pending);
        }
        complete
    }
}

#[cfg(test)]
mod tests;
