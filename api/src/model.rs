//! Plain serde models of the API: what clients send and receive.

use serde::Serialize;

/// A validated order request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// The customer placing it.
    pub customer_id: i64,
    /// The payment method.
    pub payment_id: i64,
    /// Products and quantities (distinct products).
    pub products: Vec<NewLine>,
}

/// One product of a [`NewOrder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewLine {
    /// The product.
    pub product_id: i64,
    /// How many.
    pub quantity: i64,
}

/// An order as returned (field names follow the seed API: `customerId`, `payment_id`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Order {
    /// Id.
    pub id: i64,
    /// Customer.
    #[serde(rename = "customerId")]
    pub customer_id: i64,
    /// Payment method.
    pub payment_id: i64,
    /// Lines.
    pub products: Vec<OrderLine>,
    /// Sum of price x quantity, in minor units.
    pub total: i64,
    /// Creation time, microseconds since the epoch.
    pub created_at: i64,
    /// Last update, microseconds since the epoch.
    pub updated_at: i64,
}

/// Sum of price x quantity over `lines`, in minor units; `None` when it does not fit an `i64`.
pub fn order_total(lines: &[OrderLine]) -> Option<i64> {
    lines.iter().try_fold(0i64, |sum, l| {
        l.price
            .checked_mul(l.quantity)
            .and_then(|t| sum.checked_add(t))
    })
}

/// One line of an [`Order`]: the product's price and promotion at order time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderLine {
    /// Product.
    #[serde(rename = "productId")]
    pub product_id: i64,
    /// Quantity.
    pub quantity: i64,
    /// Unit price at order time, in minor units.
    pub price: i64,
    /// Promotion at order time.
    pub promotion_id: Option<i64>,
}

/// A page of orders.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderPage {
    /// The orders, by id.
    pub orders: Vec<Order>,
    /// Pass as `after_id` for the next page; absent on the last page.
    pub next_after_id: Option<i64>,
}
