//! `modules.datetime` and `modules.pytz`: the parts of Python's `datetime` and `pytz` dbt
//! projects call from Jinja, over chrono and chrono-tz. `datetime.datetime` (constructor,
//! `now(tz)`, `utcnow()`, `strptime`, `fromisoformat`), `datetime.date` (constructor,
//! `today()`, `fromisoformat`), `datetime.timedelta`; values with Python's attributes
//! (`year` … `microsecond`, `tzinfo`) and methods (`strftime`, `isoformat`, `date()`,
//! `weekday()`, `isoweekday()`, `timestamp()`, `replace(…)`, `astimezone(tz)`, and — as
//! minijinja has no operator overloading — `plus(td)`/`minus(td)` for `+`/`-`); they print as
//! Python's `str()`. `pytz.timezone(name)`, `pytz.utc`. Source: docs.python.org/3/library/datetime.html.

use std::sync::Arc;

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Timelike};
use minijinja::value::{Kwargs, Object, Value};
use minijinja::{Error, ErrorKind, State};

fn err(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.into())
}

/// A call's arguments: the positional ones and the keyword ones (minijinja passes them last).
pub(crate) fn split_args(args: &[Value]) -> Result<(&[Value], Option<Kwargs>), Error> {
    Ok(match args.split_last() {
        Some((last, rest)) if last.is_kwargs() => (rest, Some(Kwargs::try_from(last.clone())?)),
        _ => (args, None),
    })
}

fn int_arg(
    positional: &[Value],
    kwargs: &Option<Kwargs>,
    i: usize,
    name: &str,
    default: Option<i64>,
) -> Result<i64, Error> {
    if let Some(v) = positional.get(i) {
        return i64::try_from(v.clone());
    }
    if let Some(k) = kwargs
        && let Some(v) = k.get::<Option<i64>>(name)?
    {
        return Ok(v);
    }
    default.ok_or_else(|| err(format!("datetime: `{name}` is required")))
}

/// Python's strftime codes as chrono's (`%f` is microseconds in Python).
fn chrono_format(python: &str) -> String {
    python.replace("%f", "%6f")
}

/// An RFC 3339 time (empty: now) as an aware UTC `datetime` (dbt's `run_started_at`).
pub(crate) fn utc_datetime(rfc3339: &str) -> Value {
    let utc = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_else(|_| chrono::Utc::now());
    DateTime::value(utc.naive_utc(), Some(chrono_tz::UTC))
}

/// A time zone (`pytz.timezone(name)`, `pytz.utc`).
#[derive(Debug, Clone)]
pub(crate) struct Zone(chrono_tz::Tz);

impl Object for Zone {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        (key.as_str()? == "zone").then(|| Value::from(self.0.name()))
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.name())
    }
}

fn zone_of(v: &Value) -> Result<Option<chrono_tz::Tz>, Error> {
    if v.is_none() || v.is_undefined() {
        return Ok(None);
    }
    if let Some(z) = v.downcast_object_ref::<Zone>() {
        return Ok(Some(z.0));
    }
    let name = v
        .as_str()
        .ok_or_else(|| err("a time zone must be pytz.timezone(…)"))?;
    name.parse::<chrono_tz::Tz>()
        .map(Some)
        .map_err(|_| err(format!("unknown time zone `{name}`")))
}

/// A `datetime.datetime`: naive, or aware in `tz`.
#[derive(Debug, Clone)]
pub(crate) struct DateTime {
    naive: NaiveDateTime,
    tz: Option<chrono_tz::Tz>,
}

impl DateTime {
    fn value(naive: NaiveDateTime, tz: Option<chrono_tz::Tz>) -> Value {
        Value::from_object(DateTime { naive, tz })
    }

    fn offset(&self) -> Option<String> {
        let tz = self.tz?;
        let aware = tz.from_local_datetime(&self.naive).earliest()?;
        Some(aware.format("%:z").to_string())
    }

    fn isoformat(&self, sep: &str) -> String {
        let mut s = self
            .naive
            .format(&format!("%Y-%m-%d{sep}%H:%M:%S"))
            .to_string();
        if self.naive.nanosecond() / 1000 != 0 {
            s.push_str(&format!(".{:06}", self.naive.nanosecond() / 1000));
        }
        if let Some(o) = self.offset() {
            s.push_str(&o);
        }
        s
    }
}

fn delta_of(v: &Value) -> Result<TimeDelta, Error> {
    v.downcast_object_ref::<Delta>()
        .map(|d| d.0)
        .ok_or_else(|| err("expected a datetime.timedelta"))
}

impl DateTime {
    /// The instant (UTC) of an aware value, the civil time of a naive one.
    fn comparable(&self) -> NaiveDateTime {
        match self.tz {
            Some(tz) => tz
                .from_local_datetime(&self.naive)
                .earliest()
                .map(|d| d.naive_utc())
                .unwrap_or(self.naive),
            None => self.naive,
        }
    }
}

impl Object for DateTime {
    /// Ordered and equal as Python's datetimes are (`<`, `==`, `sort`, `min`).
    fn custom_cmp(
        self: &Arc<Self>,
        other: &minijinja::value::DynObject,
    ) -> Option<std::cmp::Ordering> {
        let other = other.downcast_ref::<Self>()?;
        Some(self.comparable().cmp(&other.comparable()))
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let n = &self.naive;
        Some(match key.as_str()? {
            "year" => Value::from(n.year()),
            "month" => Value::from(n.month()),
            "day" => Value::from(n.day()),
            "hour" => Value::from(n.hour()),
            "minute" => Value::from(n.minute()),
            "second" => Value::from(n.second()),
            "microsecond" => Value::from(n.nanosecond() / 1000),
            "tzinfo" => match self.tz {
                Some(tz) => Value::from_object(Zone(tz)),
                None => Value::from(()),
            },
            _ => return None,
        })
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let (positional, kwargs) = split_args(args)?;
        match method {
            "strftime" => {
                let f = positional.first().and_then(|v| v.as_str()).unwrap_or("");
                let mut out = String::new();
                use std::fmt::Write;
                let formatted = match self.tz {
                    Some(tz) => tz
                        .from_local_datetime(&self.naive)
                        .earliest()
                        .map(|d| d.format(&chrono_format(f)).to_string()),
                    None => Some(self.naive.format(&chrono_format(f)).to_string()),
                };
                write!(out, "{}", formatted.unwrap_or_default())
                    .map_err(|e| err(format!("strftime(`{f}`): {e}")))?;
                Ok(Value::from(out))
            }
            "isoformat" => {
                let sep = positional
                    .first()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "T".into());
                Ok(Value::from(self.isoformat(&sep)))
            }
            "date" => Ok(Value::from_object(Date(self.naive.date()))),
            "weekday" => Ok(Value::from(self.naive.weekday().num_days_from_monday())),
            "isoweekday" => Ok(Value::from(self.naive.weekday().number_from_monday())),
            "timestamp" => {
                let utc = match self.tz {
                    Some(tz) => tz
                        .from_local_datetime(&self.naive)
                        .earliest()
                        .map(|d| d.timestamp_micros()),
                    None => Some(self.naive.and_utc().timestamp_micros()),
                };
                Ok(Value::from(utc.unwrap_or_default() as f64 / 1e6))
            }
            "astimezone" => {
                let tz = zone_of(positional.first().unwrap_or(&Value::from(())))?
                    .ok_or_else(|| err("astimezone needs a time zone"))?;
                let from = self.tz.unwrap_or(chrono_tz::UTC);
                let aware = from
                    .from_local_datetime(&self.naive)
                    .earliest()
                    .ok_or_else(|| err("astimezone: a time that does not exist in its zone"))?;
                Ok(DateTime::value(
                    aware.with_timezone(&tz).naive_local(),
                    Some(tz),
                ))
            }
            "replace" => {
                let n = &self.naive;
                let get = |name: &str, current: i64| -> Result<i64, Error> {
                    match &kwargs {
                        Some(k) => Ok(k.get::<Option<i64>>(name)?.unwrap_or(current)),
                        None => Ok(current),
                    }
                };
                let date = NaiveDate::from_ymd_opt(
                    get("year", n.year().into())? as i32,
                    get("month", n.month().into())? as u32,
                    get("day", n.day().into())? as u32,
                )
                .ok_or_else(|| err("replace: not a date"))?;
                let naive = date
                    .and_hms_micro_opt(
                        get("hour", n.hour().into())? as u32,
                        get("minute", n.minute().into())? as u32,
                        get("second", n.second().into())? as u32,
                        get("microsecond", (n.nanosecond() / 1000).into())? as u32,
                    )
                    .ok_or_else(|| err("replace: not a time"))?;
                let tz = match &kwargs {
                    Some(k) => match k.get::<Option<Value>>("tzinfo")? {
                        Some(z) => zone_of(&z)?,
                        None => self.tz,
                    },
                    None => self.tz,
                };
                Ok(DateTime::value(naive, tz))
            }
            "plus" | "minus" => {
                let d = delta_of(positional.first().unwrap_or(&Value::from(())))?;
                let naive = if method == "plus" {
                    self.naive.checked_add_signed(d)
                } else {
                    self.naive.checked_sub_signed(d)
                };
                Ok(DateTime::value(
                    naive.ok_or_else(|| err("datetime out of range"))?,
                    self.tz,
                ))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.isoformat(" "))
    }
}

/// A `datetime.date`.
#[derive(Debug, Clone)]
pub(crate) struct Date(NaiveDate);

impl Object for Date {
    fn custom_cmp(
        self: &Arc<Self>,
        other: &minijinja::value::DynObject,
    ) -> Option<std::cmp::Ordering> {
        Some(self.0.cmp(&other.downcast_ref::<Self>()?.0))
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(match key.as_str()? {
            "year" => Value::from(self.0.year()),
            "month" => Value::from(self.0.month()),
            "day" => Value::from(self.0.day()),
            _ => return None,
        })
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "strftime" => {
                let f = args.first().and_then(|v| v.as_str()).unwrap_or("");
                Ok(Value::from(self.0.format(&chrono_format(f)).to_string()))
            }
            "isoformat" => Ok(Value::from(self.0.format("%Y-%m-%d").to_string())),
            "weekday" => Ok(Value::from(self.0.weekday().num_days_from_monday())),
            "isoweekday" => Ok(Value::from(self.0.weekday().number_from_monday())),
            "plus" | "minus" => {
                let d = delta_of(args.first().unwrap_or(&Value::from(())))?;
                let date = if method == "plus" {
                    self.0.checked_add_signed(d)
                } else {
                    self.0.checked_sub_signed(d)
                };
                Ok(Value::from_object(Date(
                    date.ok_or_else(|| err("date out of range"))?,
                )))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

/// A `datetime.timedelta`.
#[derive(Debug, Clone)]
pub(crate) struct Delta(TimeDelta);

impl Object for Delta {
    fn custom_cmp(
        self: &Arc<Self>,
        other: &minijinja::value::DynObject,
    ) -> Option<std::cmp::Ordering> {
        Some(self.0.cmp(&other.downcast_ref::<Self>()?.0))
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let days = self.0.num_days();
        let rest = self.0 - TimeDelta::days(days);
        Some(match key.as_str()? {
            "days" => Value::from(days),
            "seconds" => Value::from(rest.num_seconds()),
            "microseconds" => Value::from(rest.subsec_nanos() / 1000),
            _ => return None,
        })
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        _args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "total_seconds" => Ok(Value::from(
                self.0.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6,
            )),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }

    fn render(self: &Arc<Self>, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let days = self.0.num_days();
        let rest = (self.0 - TimeDelta::days(days)).num_seconds();
        let clock = format!("{}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60);
        match days {
            0 => f.write_str(&clock),
            1 | -1 => write!(f, "{days} day, {clock}"),
            _ => write!(f, "{days} days, {clock}"),
        }
    }
}

/// The classes: `datetime.datetime`, `datetime.date`, `datetime.timedelta`.
#[derive(Debug)]
enum Class {
    DateTime,
    Date,
    TimeDelta,
}

impl Object for Class {
    fn call(self: &Arc<Self>, _state: &mut State<'_, '_>, args: &[Value]) -> Result<Value, Error> {
        let (p, k) = split_args(args)?;
        match **self {
            Class::DateTime => {
                let date = NaiveDate::from_ymd_opt(
                    int_arg(p, &k, 0, "year", None)? as i32,
                    int_arg(p, &k, 1, "month", None)? as u32,
                    int_arg(p, &k, 2, "day", None)? as u32,
                )
                .ok_or_else(|| err("datetime(): not a date"))?;
                let naive = date
                    .and_hms_micro_opt(
                        int_arg(p, &k, 3, "hour", Some(0))? as u32,
                        int_arg(p, &k, 4, "minute", Some(0))? as u32,
                        int_arg(p, &k, 5, "second", Some(0))? as u32,
                        int_arg(p, &k, 6, "microsecond", Some(0))? as u32,
                    )
                    .ok_or_else(|| err("datetime(): not a time"))?;
                let tz = match &k {
                    Some(k) => match k.get::<Option<Value>>("tzinfo")? {
                        Some(z) => zone_of(&z)?,
                        None => None,
                    },
                    None => None,
                };
                Ok(DateTime::value(naive, tz))
            }
            Class::Date => Ok(Value::from_object(Date(
                NaiveDate::from_ymd_opt(
                    int_arg(p, &k, 0, "year", None)? as i32,
                    int_arg(p, &k, 1, "month", None)? as u32,
                    int_arg(p, &k, 2, "day", None)? as u32,
                )
                .ok_or_else(|| err("date(): not a date"))?,
            ))),
            Class::TimeDelta => {
                let get = |name: &str| -> Result<f64, Error> {
                    match &k {
                        Some(k) => Ok(k.get::<Option<f64>>(name)?.unwrap_or(0.0)),
                        None => Ok(0.0),
                    }
                };
                let days = match p.first() {
                    Some(v) => f64::try_from(v.clone())?,
                    None => get("days")?,
                };
                let micros = days * 86_400e6
                    + get("weeks")? * 7.0 * 86_400e6
                    + get("hours")? * 3_600e6
                    + get("minutes")? * 60e6
                    + get("seconds")? * 1e6
                    + get("milliseconds")? * 1e3
                    + get("microseconds")?;
                Ok(Value::from_object(Delta(TimeDelta::microseconds(
                    micros.round() as i64,
                ))))
            }
        }
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        let (p, k) = split_args(args)?;
        let text = |i: usize| -> Result<String, Error> {
            p.get(i)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| err(format!("{method}: argument {} must be text", i + 1)))
        };
        match (&**self, method) {
            (Class::DateTime, "now") => {
                let tz = match p.first() {
                    Some(z) => zone_of(z)?,
                    None => match &k {
                        Some(k) => match k.get::<Option<Value>>("tz")? {
                            Some(z) => zone_of(&z)?,
                            None => None,
                        },
                        None => None,
                    },
                };
                Ok(match tz {
                    Some(tz) => DateTime::value(
                        chrono::Utc::now().with_timezone(&tz).naive_local(),
                        Some(tz),
                    ),
                    None => DateTime::value(chrono::Local::now().naive_local(), None),
                })
            }
            (Class::DateTime, "utcnow") => {
                Ok(DateTime::value(chrono::Utc::now().naive_utc(), None))
            }
            (Class::DateTime, "strptime") => {
                let (s, f) = (text(0)?, text(1)?);
                let naive = NaiveDateTime::parse_from_str(&s, &chrono_format(&f))
                    .or_else(|_| {
                        NaiveDate::parse_from_str(&s, &chrono_format(&f))
                            .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
                    })
                    .map_err(|e| err(format!("strptime(`{s}`, `{f}`): {e}")))?;
                Ok(DateTime::value(naive, None))
            }
            (Class::DateTime, "fromisoformat") => {
                let s = text(0)?;
                let naive =
                    NaiveDateTime::parse_from_str(&s.replace(' ', "T"), "%Y-%m-%dT%H:%M:%S%.f")
                        .or_else(|_| {
                            NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                                .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default())
                        })
                        .map_err(|e| err(format!("fromisoformat(`{s}`): {e}")))?;
                Ok(DateTime::value(naive, None))
            }
            (Class::Date, "today") => {
                Ok(Value::from_object(Date(chrono::Local::now().date_naive())))
            }
            (Class::Date, "fromisoformat") => {
                let s = text(0)?;
                Ok(Value::from_object(Date(
                    NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                        .map_err(|e| err(format!("fromisoformat(`{s}`): {e}")))?,
                )))
            }
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

/// `modules.datetime`.
#[derive(Debug)]
pub(crate) struct DatetimeModule;

impl Object for DatetimeModule {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        Some(Value::from_object(match key.as_str()? {
            "datetime" => Class::DateTime,
            "date" => Class::Date,
            "timedelta" => Class::TimeDelta,
            _ => return None,
        }))
    }
}

/// `modules.pytz`.
#[derive(Debug)]
pub(crate) struct Pytz;

impl Object for Pytz {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "utc" | "UTC" => Some(Value::from_object(Zone(chrono_tz::UTC))),
            _ => None,
        }
    }

    fn call_method(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        match method {
            "timezone" => Ok(Value::from_object(Zone(
                zone_of(args.first().unwrap_or(&Value::from(())))?
                    .ok_or_else(|| err("pytz.timezone needs a name"))?,
            ))),
            _ => Err(Error::from(ErrorKind::UnknownMethod)),
        }
    }
}

#[cfg(test)]
mod tests {
    use minijinja::Environment;

    fn render(t: &str) -> String {
        let mut env = Environment::new();
        env.add_global("modules", super::super::python::modules());
        env.render_str(t, ())
            .unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn python_datetime_basics() {
        assert_eq!(
            render(
                "{% set d = modules.datetime.datetime(2024, 2, 28, 13, 5) %}{{ d }}|{{ d.strftime('%Y%m%d %H:%M') }}|{{ d.plus(modules.datetime.timedelta(days=2)).date() }}|{{ d.isoformat() }}|{{ d.weekday() }}"
            ),
            "2024-02-28 13:05:00|20240228 13:05|2024-03-01|2024-02-28T13:05:00|2"
        );
        assert_eq!(
            render(
                "{{ modules.datetime.datetime.strptime('2024-01-31', '%Y-%m-%d').minus(modules.datetime.timedelta(hours=1)) }}|{{ modules.datetime.timedelta(days=1, hours=2) }}"
            ),
            "2024-01-30 23:00:00|1 day, 2:00:00"
        );
        assert_eq!(
            render(
                "{{ modules.datetime.datetime(2024, 7, 1, 12, tzinfo=modules.pytz.utc).astimezone(modules.pytz.timezone('America/Los_Angeles')) }}"
            ),
            "2024-07-01 05:00:00-07:00"
        );
        assert!(
            render("{{ modules.pytz.timezone('Nowhere/City') }}").contains("unknown time zone")
        );
        assert_eq!(
            render(
                "{% set d = modules.datetime.date %}{{ d(2024, 1, 1) < d(2024, 2, 1) }} {{ d(2024, 1, 1) == d(2024, 1, 2) }} {{ [d(2024, 3, 1), d(2024, 1, 5)] | min }}"
            ),
            "True False 2024-01-05"
        );
    }
}
