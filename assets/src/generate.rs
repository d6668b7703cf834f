//! The Rainbow DB data generator (`rainbow seed-data`): a deterministic, realistic e-commerce
//! history written into the Rainbow DB (SQLite or PostgreSQL) through its one schema.
//!
//! What makes it realistic: product popularity is heavily skewed (a power law over a shuffled
//! popularity order), customers too (loyal customers order more), orders follow a weekday
//! seasonality (Saturday highest, Monday lowest) and an evening-heavy time of day, payment
//! methods have uneven shares, promotions of both coupon types apply. Every day also changes
//! the dimensions — prices, ratings, names and promotions of products, sold and review counts of
//! the products sold, customers moving city or changing e-mail, sellers renaming or moving, new
//! customers signing up — each change stamping `updated_at`, so that the daily extract and the
//! SCD type 2 dimensions have real work.
//!
//! Determinism: the same options (including the start date) give the same rows (our own
//! SplitMix64 generator, not a crate's, so an upgrade cannot change the data). The skew
//! curves use `f64::powf`, i.e. the platform's libm: another libm could round differently, so
//! determinism is tested per platform (here x86-64 Linux, glibc), not across platforms. [`Generator::write_day`] writes one day at a
//! time, so a caller can interleave generation with the nightly extract, which is how
//! intermediate versions of a row reach the master dataset (the source keeps only the latest).
//!
//! Money is in integer minor units (VND has none, so whole đồng); `Fixed Amount` promotions
//! take `price_treatment` thousand đồng off, `Percentage` ones `price_treatment` percent.

use std::fmt::Write as _;

use chrono::{Datelike, NaiveDate};
use rainbow_db::{Backend, Database};
use sqlx::{AssertSqlSafe, Row};

use rainbow_engine::random::SplitMix64;

use crate::AssetsError;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// The first day.
    pub start: NaiveDate,
    /// How many days.
    pub days: u32,
    /// Average orders per day (the weekday factor and noise vary it).
    pub orders_per_day: u32,
    /// The random seed.
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Orders.
    pub orders: u64,
    /// Order lines.
    pub lines: u64,
    /// Product rows changed after their creation (a row may change on several days).
    pub product_changes: u64,
    /// Customer rows changed or created after the first day.
    pub customer_changes: u64,
    /// Seller rows changed.
    pub seller_changes: u64,
}

impl Summary {
    fn add(&mut self, other: &Summary) {
        self.orders += other.orders;
        self.lines += other.lines;
        self.product_changes += other.product_changes;
        self.customer_changes += other.customer_changes;
        self.seller_changes += other.seller_changes;
    }
}

/// The generator's random numbers: the project's one [`SplitMix64`], fixed forever.
type Rng = SplitMix64;

const CATEGORIES: &[&str] = &[
    "Books",
    "Phones",
    "Laptops",
    "Home appliances",
    "Fashion",
    "Beauty",
    "Toys",
    "Sports",
    "Groceries",
    "Stationery",
    "Cameras",
    "Furniture",
    "Health",
    "Pets",
    "Garden",
    "Automotive",
];
const CITIES: &[&str] = &[
    "Ho Chi Minh City",
    "Hanoi",
    "Da Nang",
    "Hai Phong",
    "Can Tho",
    "Hue",
    "Nha Trang",
    "Vung Tau",
    "Bien Hoa",
    "Buon Ma Thuot",
    "Quy Nhon",
    "Da Lat",
];
const GIVEN: &[&str] = &[
    "An", "Binh", "Chi", "Dung", "Giang", "Ha", "Hai", "Hoa", "Hung", "Khanh", "Lan", "Linh",
    "Minh", "Nam", "Ngoc", "Phuong", "Quang", "Thao", "Trang", "Tuan", "Van", "Vy",
];
const FAMILY: &[&str] = &[
    "Nguyen", "Tran", "Le", "Pham", "Hoang", "Huynh", "Phan", "Vu", "Vo", "Dang", "Bui", "Do",
];
const WORDS: &[&str] = &[
    "Smart", "Classic", "Ultra", "Eco", "Mini", "Max", "Air", "Pro", "Lite", "Prime", "Nova",
    "Zen", "Flex", "Pure", "Swift", "Bold",
];
const EDITIONS: &[&str] = &["2nd gen", "Plus", "Special edition", "Refresh", "Bundle"];
const PAYMENTS: &[(&str, u32)] = &[
    ("cash", 10),
    ("credit card", 25),
    ("debit card", 10),
    ("e-wallet", 30),
    ("bank transfer", 10),
    ("cash on delivery", 15),
];
/// Orders relative to the average, Monday first (mean 1.0).
const WEEKDAY_FACTOR: [f64; 7] = [0.92, 0.95, 0.98, 1.0, 1.05, 1.15, 0.95];
const MICROS_PER_DAY: i64 = 86_400_000_000;
/// Rows per INSERT statement.
const CHUNK: usize = 500;
/// The largest `orders_per_day`: a day's rows are built in memory before being written.
pub const MAX_ORDERS_PER_DAY: u32 = 1_000_000;

#[derive(Debug, Clone)]
struct Product {
    name: String,
    price: i64,
    original_price: i64,
    rating: f64,
    review_count: i64,
    sold_count: i64,
    category: i64,
    seller: i64,
    brand: i64,
    promotion: Option<i64>,
}

#[derive(Debug, Clone)]
struct Person {
    name: String,
    email: String,
    city: String,
}

impl Person {
    /// A random person; `i` makes the e-mail address unique.
    fn random(rng: &mut Rng, i: usize, domain: &str) -> Self {
        let (g, f) = (rng.pick(GIVEN), rng.pick(FAMILY));
        Person {
            name: format!("{f} {g}"),
            email: format!("{}.{}{i}@{domain}", g.to_lowercase(), f.to_lowercase()),
            city: (*rng.pick(CITIES)).to_owned(),
        }
    }
}

/// The generator's world: every entity's current state.
#[derive(Debug, Clone)]
pub struct Generator {
    options: GenerateOptions,
    rng: Rng,
    products: Vec<Product>,
    /// Product indexes, most popular first.
    popularity: Vec<usize>,
    customers: Vec<Person>,
    sellers: Vec<Person>,
    brands: usize,
    /// (coupon type, treatment) per promotion id - 1.
    promotions: Vec<(&'static str, i64)>,
    next_order: i64,
    next_line: i64,
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Generator {
    /// The world on the first day, sized from the options.
    pub fn new(options: GenerateOptions) -> Result<Self, AssetsError> {
        if options.days == 0 {
            return Err(AssetsError::Invalid("--days must be at least 1".into()));
        }
        if options.orders_per_day > MAX_ORDERS_PER_DAY {
            return Err(AssetsError::Invalid(format!(
                "--orders-per-day {} is above the limit of {MAX_ORDERS_PER_DAY} (a day is built in memory)",
                options.orders_per_day
            )));
        }
        if options
            .start
            .checked_add_days(chrono::Days::new(u64::from(options.days)))
            .is_none()
        {
            return Err(AssetsError::Invalid(format!(
                "--start {} plus {} days is past the last representable date",
                options.start, options.days
            )));
        }
        let mut rng = Rng::new(options.seed ^ 0x5241_494E_424F_5721);
        let n = u64::from(options.orders_per_day);
        let product_count = n.clamp(200, 20_000) as usize;
        let customer_count = (n * 3).clamp(300, 100_000) as usize;
        let seller_count = (50 + n / 10).min(2_000) as usize;
        let brands = 40;
        let promotions: Vec<(&'static str, i64)> = (0..24)
            .map(|i| {
                if i % 2 == 0 {
                    ("Percentage", 5 + 5 * (i / 2) % 50)
                } else {
                    ("Fixed Amount", 10 + 10 * (i / 2))
                }
            })
            .collect();
        let customers = (0..customer_count)
            .map(|i| Person::random(&mut rng, i, "mail.example"))
            .collect();
        let sellers = (0..seller_count)
            .map(|i| {
                let mut p = Person::random(&mut rng, i, "shop.example");
                p.name = format!("{} {} Store", rng.pick(WORDS), p.name);
                p
            })
            .collect();
        let mut products = Vec::with_capacity(product_count);
        for i in 0..product_count {
            let category = rng.below(CATEGORIES.len() as u64) as i64 + 1;
            // Log-uniform prices from 20,000 to 20,000,000 đồng, rounded to 1,000.
            let price = ((20_000.0 * 1000f64.powf(rng.unit())) / 1000.0).round() as i64 * 1000;
            let original_price = price + (price as f64 * 0.3 * rng.unit()) as i64 / 1000 * 1000;
            let mut promotion = None;
            if rng.chance(0.3) {
                let p = rng.below(promotions.len() as u64) as usize;
                let (kind, treatment) = promotions[p];
                // A fixed discount only where it is well below the price.
                if kind == "Percentage" || price > 3 * treatment * 1000 {
                    promotion = Some(p as i64 + 1);
                }
            }
            products.push(Product {
                name: format!(
                    "{} {} {}",
                    rng.pick(WORDS),
                    CATEGORIES[category as usize - 1].trim_end_matches('s'),
                    i + 1
                ),
                price,
                original_price,
                rating: 3.0 + (rng.unit() * 20.0).round() / 10.0,
                review_count: rng.below(500) as i64,
                sold_count: rng.below(2_000) as i64,
                category,
                seller: rng.below(seller_count as u64) as i64 + 1,
                brand: rng.below(brands as u64) as i64 + 1,
                promotion,
            });
        }
        // Fisher-Yates: popularity is not id order.
        let mut popularity: Vec<usize> = (0..product_count).collect();
        for i in (1..popularity.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            popularity.swap(i, j);
        }
        Ok(Generator {
            options,
            rng,
            products,
            popularity,
            customers,
            sellers,
            brands,
            promotions,
            next_order: 1,
            next_line: 1,
        })
    }

    /// Day `day`'s date ([`Generator::new`] checked that every day exists).
    fn date(&self, day: u32) -> NaiveDate {
        self.options
            .start
            .checked_add_days(chrono::Days::new(u64::from(day)))
            .unwrap_or(NaiveDate::MAX)
    }

    fn day_start(&self, day: u32) -> i64 {
        self.date(day)
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_micros())
            .unwrap_or(0)
    }

    /// Writes the reference data (categories, brands, payments, promotions, sellers,
    /// customers, products) as of the first day. The database must hold no Rainbow data yet.
    pub async fn write_reference_data(&self, db: &Database) -> Result<(), AssetsError> {
        let sql_err = |context: &str| {
            let context = context.to_owned();
            move |source| AssetsError::Sql { context, source }
        };
        let existing: i64 = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM categories) + (SELECT COUNT(*) FROM brands) \
             + (SELECT COUNT(*) FROM payments) + (SELECT COUNT(*) FROM promotions) \
             + (SELECT COUNT(*) FROM sellers) + (SELECT COUNT(*) FROM customers) \
             + (SELECT COUNT(*) FROM products) + (SELECT COUNT(*) FROM orders) \
             + (SELECT COUNT(*) FROM orderdetails)",
        )
        .fetch_one(&db.pool)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(sql_err("counting existing rows"))?;
        if existing > 0 {
            return Err(AssetsError::Invalid(format!(
                "the Rainbow DB already holds {existing} rows; \
                 seed-data fills an empty one (use a new database file or URL)"
            )));
        }
        let t = self.day_start(0);
        let mut tx = db.pool.begin().await.map_err(sql_err("BEGIN"))?;
        let mut statements = Vec::new();
        let simple = |table: &str, column: &str, names: &mut dyn Iterator<Item = String>| {
            let rows: Vec<String> = names
                .enumerate()
                .map(|(i, n)| format!("({}, {}, {t}, {t})", i + 1, quote(&n)))
                .collect();
            format!(
                "INSERT INTO {table} (id, {column}, created_at, updated_at) VALUES {}",
                rows.join(", ")
            )
        };
        statements.push(simple(
            "categories",
            "name",
            &mut CATEGORIES.iter().map(|c| (*c).to_owned()),
        ));
        statements.push(simple(
            "brands",
            "name",
            &mut (0..self.brands).map(|i| format!("{} Brand {}", WORDS[i % WORDS.len()], i + 1)),
        ));
        statements.push(simple(
            "payments",
            "method",
            &mut PAYMENTS.iter().map(|(m, _)| (*m).to_owned()),
        ));
        let promos: Vec<String> = self
            .promotions
            .iter()
            .enumerate()
            .map(|(i, (kind, treatment))| {
                let name = match *kind {
                    "Percentage" => format!("{treatment}% off"),
                    _ => format!("{treatment}k off"),
                };
                format!(
                    "({}, {}, '{kind}', {treatment}, {t}, {t})",
                    i + 1,
                    quote(&name)
                )
            })
            .collect();
        statements.push(format!(
            "INSERT INTO promotions (id, name, coupon_type, price_treatment, created_at, updated_at) VALUES {}",
            promos.join(", ")
        ));
        for sql in statements {
            sqlx::raw_sql(AssertSqlSafe(sql))
                .execute(&mut *tx)
                .await
                .map_err(sql_err("writing reference data"))?;
        }
        let sellers: Vec<usize> = (0..self.sellers.len()).collect();
        upsert_people(&mut tx, "sellers", &self.sellers, &sellers, t, false).await?;
        let customers: Vec<usize> = (0..self.customers.len()).collect();
        upsert_people(&mut tx, "customers", &self.customers, &customers, t, true).await?;
        let products: Vec<usize> = (0..self.products.len()).collect();
        upsert_products(&mut tx, &self.products, &products, t).await?;
        tx.commit().await.map_err(sql_err("COMMIT"))?;
        Ok(())
    }

    /// Generates and writes day `day` (0-based): its orders, then the day's dimension
    /// changes, in one transaction.
    pub async fn write_day(&mut self, db: &Database, day: u32) -> Result<Summary, AssetsError> {
        let sql_err = |context: &'static str| {
            move |source| AssetsError::Sql {
                context: context.to_owned(),
                source,
            }
        };
        let start = self.day_start(day);
        let date = self.date(day);
        let factor = WEEKDAY_FACTOR[date.weekday().num_days_from_monday() as usize];
        let noise = 0.9 + 0.2 * self.rng.unit();
        let count = (f64::from(self.options.orders_per_day) * factor * noise).round() as u64;
        let mut summary = Summary::default();
        let mut orders = Vec::with_capacity(count as usize);
        let mut lines = Vec::with_capacity(count as usize * 2);
        let mut sold = vec![0i64; self.products.len()];
        let payment_weights: Vec<u32> = PAYMENTS.iter().map(|(_, w)| *w).collect();
        let mut times: Vec<i64> = (0..count)
            .map(|_| {
                // Evening-heavy: more orders late in the day.
                let fraction = self.rng.unit().powf(0.7);
                start + (fraction * (MICROS_PER_DAY - 1) as f64) as i64
            })
            .collect();
        times.sort_unstable();
        for at in times {
            let id = self.next_order;
            self.next_order += 1;
            let customer = (self.customers.len() as f64 * self.rng.unit().powi(2)) as i64 + 1;
            let payment = self.rng.weighted(&payment_weights) as i64 + 1;
            orders.push(format!("({id}, {customer}, {payment}, {at}, {at})"));
            let n_lines = [1, 1, 1, 1, 1, 2, 2, 2, 3, 4][self.rng.below(10) as usize];
            let mut chosen: Vec<usize> = Vec::with_capacity(n_lines);
            for _ in 0..n_lines {
                for _attempt in 0..5 {
                    let rank = (self.products.len() as f64 * self.rng.unit().powi(3)) as usize;
                    let p = self.popularity[rank.min(self.products.len() - 1)];
                    if !chosen.contains(&p) {
                        chosen.push(p);
                        break;
                    }
                }
            }
            for p in chosen {
                let quantity = [1, 1, 1, 1, 1, 1, 1, 2, 2, 3][self.rng.below(10) as usize]
                    + i64::from(self.rng.chance(0.02)) * 5;
                let product = &self.products[p];
                let promotion = product
                    .promotion
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "NULL".into());
                lines.push(format!(
                    "({}, {id}, {}, {quantity}, {}, {promotion}, {at}, {at})",
                    self.next_line,
                    p + 1,
                    product.price
                ));
                self.next_line += 1;
                sold[p] += quantity;
            }
        }
        summary.orders = orders.len() as u64;
        summary.lines = lines.len() as u64;

        // The day's changes, stamped late in the day.
        let changed_at = start + MICROS_PER_DAY - 1_000_000;
        let mut changed_products = Vec::new();
        for (p, qty) in sold.iter().enumerate() {
            let rng = &mut self.rng;
            let product = &mut self.products[p];
            let mut changed = false;
            if *qty > 0 {
                product.sold_count += qty;
                product.review_count += (*qty as f64 * 0.1 * rng.unit()).round() as i64;
                changed = true;
            }
            if rng.chance(0.01) {
                let pct = 0.05 + 0.15 * rng.unit();
                let factor = if rng.chance(0.5) {
                    1.0 + pct
                } else {
                    1.0 - pct
                };
                product.price =
                    ((product.price as f64 * factor / 1000.0).round() as i64).max(1) * 1000;
                product.original_price = product.original_price.max(product.price);
                // A fixed discount stays well below the price.
                if let Some(("Fixed Amount", t)) = product
                    .promotion
                    .and_then(|p| self.promotions.get(p as usize - 1))
                    && product.price <= 3 * t * 1000
                {
                    product.promotion = None;
                }
                changed = true;
            }
            if rng.chance(0.003) {
                let delta = (rng.unit() * 6.0 - 3.0).round() / 10.0;
                product.rating = (product.rating + delta).clamp(1.0, 5.0);
                changed = true;
            }
            if rng.chance(0.001) {
                let base = product.name.split(" (").next().unwrap_or("").to_owned();
                product.name = format!("{base} ({})", rng.pick(EDITIONS));
                changed = true;
            }
            if rng.chance(0.002) {
                let promo = rng.below(self.promotions.len() as u64 + 1) as usize;
                let next = match self.promotions.get(promo) {
                    Some(("Fixed Amount", t)) if product.price <= 3 * t * 1000 => None,
                    Some(_) => Some(promo as i64 + 1),
                    None => None,
                };
                changed |= next != product.promotion;
                product.promotion = next;
            }
            if changed {
                changed_products.push(p);
            }
        }
        let mut changed_customers = Vec::new();
        for (c, customer) in self.customers.iter_mut().enumerate() {
            let mut changed = false;
            if self.rng.chance(0.002) {
                let city = *self.rng.pick(CITIES);
                changed |= city != customer.city;
                customer.city = city.to_owned();
            }
            if self.rng.chance(0.0005) {
                // A new address at the same provider: `local+d<day>@domain`.
                let (local, domain) = customer
                    .email
                    .split_once('@')
                    .unwrap_or((customer.email.as_str(), "mail.example"));
                let local = local.split('+').next().unwrap_or(local);
                customer.email = format!("{local}+d{day}@{domain}");
                changed = true;
            }
            if changed {
                changed_customers.push(c);
            }
        }
        let signups = (count / 40).max(1) as usize;
        for _ in 0..signups {
            let i = self.customers.len();
            let customer = Person::random(&mut self.rng, i, "mail.example");
            self.customers.push(customer);
            changed_customers.push(i);
        }
        let mut changed_sellers = Vec::new();
        for (s, seller) in self.sellers.iter_mut().enumerate() {
            if self.rng.chance(0.005) {
                let changed = if self.rng.chance(0.5) {
                    let city = *self.rng.pick(CITIES);
                    let moved = city != seller.city;
                    seller.city = city.to_owned();
                    moved
                } else {
                    seller.name = format!("{} {}", self.rng.pick(WORDS), seller.name);
                    true
                };
                if changed {
                    changed_sellers.push(s);
                }
            }
        }
        summary.product_changes = changed_products.len() as u64;
        summary.customer_changes = changed_customers.len() as u64;
        summary.seller_changes = changed_sellers.len() as u64;

        let mut tx = db.pool.begin().await.map_err(sql_err("BEGIN"))?;
        upsert_people(
            &mut tx,
            "sellers",
            &self.sellers,
            &changed_sellers,
            changed_at,
            false,
        )
        .await?;
        upsert_people(
            &mut tx,
            "customers",
            &self.customers,
            &changed_customers,
            changed_at,
            true,
        )
        .await?;
        // Products as they were when ordered are in the lines; their new state from tonight.
        upsert_products(&mut tx, &self.products, &changed_products, changed_at).await?;
        insert_rows(
            &mut tx,
            "INSERT INTO orders (id, customer_id, payment_id, created_at, updated_at) VALUES ",
            &orders,
        )
        .await?;
        insert_rows(
            &mut tx,
            "INSERT INTO orderdetails (id, order_id, product_id, quantity, price, promotion_id, created_at, updated_at) VALUES ",
            &lines,
        )
        .await?;
        tx.commit().await.map_err(sql_err("COMMIT"))?;
        Ok(summary)
    }

    /// PostgreSQL's sequences follow the explicit ids written (SQLite's AUTOINCREMENT does by
    /// itself), so that the orders API can insert afterwards.
    pub async fn sync_sequences(db: &Database) -> Result<(), AssetsError> {
        if db.backend != Backend::Postgres {
            return Ok(());
        }
        for table in [
            "categories",
            "brands",
            "payments",
            "promotions",
            "sellers",
            "customers",
            "products",
            "orders",
            "orderdetails",
        ] {
            sqlx::query(AssertSqlSafe(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), MAX(id)) FROM {table} HAVING MAX(id) IS NOT NULL"
            )))
            .execute(&db.pool)
            .await
            .map_err(|source| AssetsError::Sql {
                context: format!("advancing the id sequence of {table}"),
                source,
            })?;
        }
        Ok(())
    }
}

/// Multi-row INSERTs of `rows` (each a parenthesised tuple), [`CHUNK`] at a time.
async fn insert_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    head: &str,
    rows: &[String],
) -> Result<(), AssetsError> {
    for chunk in rows.chunks(CHUNK) {
        let mut sql = String::with_capacity(head.len() + chunk.len() * 64);
        sql.push_str(head);
        for (i, row) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(row);
        }
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut **tx)
            .await
            .map_err(|source| AssetsError::Sql {
                context: format!("{}…", head.trim_end_matches("VALUES ")),
                source,
            })?;
    }
    Ok(())
}

/// Inserts or updates `which` people (customers have an e-mail, sellers do not); a new row
/// gets `created_at` too, an existing one keeps it.
async fn upsert_people(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &str,
    people: &[Person],
    which: &[usize],
    at: i64,
    with_email: bool,
) -> Result<(), AssetsError> {
    let rows: Vec<String> = which
        .iter()
        .map(|&i| {
            let p = &people[i];
            let email = if with_email {
                format!("{}, ", quote(&p.email))
            } else {
                String::new()
            };
            format!(
                "({}, {}, {email}{}, {at}, {at})",
                i + 1,
                quote(&p.name),
                quote(&p.city)
            )
        })
        .collect();
    let (cols, set) = if with_email {
        (
            "id, name, email, city, created_at, updated_at",
            "name = excluded.name, email = excluded.email, city = excluded.city, updated_at = excluded.updated_at",
        )
    } else {
        (
            "id, name, city, created_at, updated_at",
            "name = excluded.name, city = excluded.city, updated_at = excluded.updated_at",
        )
    };
    upsert(tx, table, cols, set, &rows).await
}

async fn upsert_products(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    products: &[Product],
    which: &[usize],
    at: i64,
) -> Result<(), AssetsError> {
    let rows: Vec<String> = which
        .iter()
        .map(|&i| {
            let p = &products[i];
            let mut row = String::with_capacity(128);
            let _ = write!(
                row,
                "({}, {}, {}, {}, {:.1}, {}, {}, {}, {}, {}, {}, {at}, {at})",
                i + 1,
                quote(&p.name),
                p.price,
                p.original_price,
                p.rating,
                p.review_count,
                p.sold_count,
                p.category,
                p.seller,
                p.brand,
                p.promotion
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "NULL".into()),
            );
            row
        })
        .collect();
    upsert(
        tx,
        "products",
        "id, name, price, original_price, rating_average, review_count, sold_count, category_id, seller_id, brand_id, promotion_id, created_at, updated_at",
        "name = excluded.name, price = excluded.price, original_price = excluded.original_price, \
         rating_average = excluded.rating_average, review_count = excluded.review_count, \
         sold_count = excluded.sold_count, promotion_id = excluded.promotion_id, updated_at = excluded.updated_at",
        &rows,
    )
    .await
}

async fn upsert(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    table: &str,
    cols: &str,
    set: &str,
    rows: &[String],
) -> Result<(), AssetsError> {
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO {table} ({cols}) VALUES {} ON CONFLICT (id) DO UPDATE SET {set}",
            chunk.join(", ")
        );
        sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&mut **tx)
            .await
            .map_err(|source| AssetsError::Sql {
                context: format!("writing {table}"),
                source,
            })?;
    }
    Ok(())
}

/// Generates the whole history into `db` (migrated first): reference data, then every day,
/// with a progress bar on a terminal.
pub async fn generate(db: &Database, options: &GenerateOptions) -> Result<Summary, AssetsError> {
    let mut generator = Generator::new(options.clone())?;
    rainbow_db::source::migrate(db).await?;
    generator.write_reference_data(db).await?;
    Generator::sync_sequences(db).await?;
    let bar = indicatif::ProgressBar::new(u64::from(options.days)).with_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} days, {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut summary = Summary::default();
    for day in 0..options.days {
        summary.add(&generator.write_day(db, day).await?);
        // After every committed day, so an interrupted run leaves usable sequences.
        Generator::sync_sequences(db).await?;
        bar.set_message(format!("{} orders", summary.orders));
        bar.inc(1);
    }
    bar.finish_and_clear();
    tracing::info!(
        orders = summary.orders,
        lines = summary.lines,
        "seed data written"
    );
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_days_is_refused() {
        let e = Generator::new(GenerateOptions {
            start: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
            days: 0,
            orders_per_day: 10,
            seed: 1,
        })
        .expect_err("no days");
        assert!(e.to_string().contains("--days"));
    }
}
