//! What the shop sells, and a basket priced against it.
//!
//! The session keeps the basket as it always has: a list of item names
//! (`["tea", "tea", "jam"]`), one entry per unit, so that `GET /api/session`
//! and every client that reads it see the same shape. This module groups
//! that list into lines with quantities and prices it from [`CATALOGUE`].
//! An item the catalogue does not know (any client may `POST /basket` any
//! name) is listed without a price and left out of the total.

/// One thing the shop sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    /// The name posted as the form field `item` and kept in the basket; also
    /// the product's id in the page (lowercase ASCII letters only).
    pub item: &'static str,
    /// The name shown to people.
    pub name: &'static str,
    /// One line about it.
    pub blurb: &'static str,
    /// The price of one, in pence.
    pub price: u64,
}

/// Everything on sale, in the order the page shows it.
pub const CATALOGUE: [Product; 6] = [
    Product {
        item: "tea",
        name: "Assam tea",
        blurb: "Malty loose leaf, 250 g tin",
        price: 650,
    },
    Product {
        item: "scones",
        name: "Scones",
        blurb: "Four, baked this morning",
        price: 380,
    },
    Product {
        item: "jam",
        name: "Strawberry jam",
        blurb: "340 g jar, whole fruit",
        price: 420,
    },
    Product {
        item: "cream",
        name: "Clotted cream",
        blurb: "From Cornwall, 227 g",
        price: 290,
    },
    Product {
        item: "coffee",
        name: "Coffee beans",
        blurb: "Medium roast, 500 g",
        price: 990,
    },
    Product {
        item: "shortbread",
        name: "Shortbread",
        blurb: "Butter fingers, 12 in a box",
        price: 350,
    },
];

/// The product sold as `item`, if the shop sells it.
pub fn product(item: &str) -> Option<&'static Product> {
    CATALOGUE.iter().find(|p| p.item == item)
}

/// One line of a basket: an item and how many of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    /// The item name as kept in the session.
    pub item: &'a str,
    /// How many units the basket holds.
    pub quantity: u64,
    /// What the shop sells as `item`; `None` for a name it does not know.
    pub product: Option<&'static Product>,
}

impl Line<'_> {
    /// The price of the line in pence; `None` without a product.
    pub fn total(&self) -> Option<u64> {
        self.product.map(|p| p.price * self.quantity)
    }
}

/// A basket grouped into lines, in the order each item was first added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Basket<'a> {
    /// The lines, one per distinct item.
    pub lines: Vec<Line<'a>>,
}

impl<'a> Basket<'a> {
    /// Groups the session's list of items.
    pub fn of(items: &'a [String]) -> Basket<'a> {
        let mut lines: Vec<Line<'a>> = Vec::new();
        for item in items {
            match lines.iter_mut().find(|l| l.item == item) {
                Some(line) => line.quantity += 1,
                None => lines.push(Line {
                    item,
                    quantity: 1,
                    product: product(item),
                }),
            }
        }
        Basket { lines }
    }

    /// How many units in all.
    pub fn units(&self) -> u64 {
        self.lines.iter().map(|l| l.quantity).sum()
    }

    /// The total of the priced lines, in pence.
    pub fn total(&self) -> u64 {
        self.lines.iter().filter_map(Line::total).sum()
    }

    /// How many units have no price (items the catalogue does not know).
    pub fn unpriced(&self) -> u64 {
        self.lines
            .iter()
            .filter(|l| l.product.is_none())
            .map(|l| l.quantity)
            .sum()
    }
}

/// Pence as pounds: `1234` is `£12.34`.
pub fn money(pence: u64) -> String {
    format!("£{}.{:02}", pence / 100, pence % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_basket_groups_items_in_first_added_order_and_prices_known_ones() {
        let items: Vec<String> = ["jam", "tea", "jam", "<scones>", "jam"]
            .map(String::from)
            .into();
        let basket = Basket::of(&items);
        let lines: Vec<(&str, u64, Option<u64>)> = basket
            .lines
            .iter()
            .map(|l| (l.item, l.quantity, l.total()))
            .collect();
        assert_eq!(
            lines,
            [
                ("jam", 3, Some(1260)),
                ("tea", 1, Some(650)),
                ("<scones>", 1, None)
            ]
        );
        assert_eq!(basket.units(), 5);
        assert_eq!(basket.total(), 1910);
        assert_eq!(basket.unpriced(), 1);
        assert_eq!(money(basket.total()), "£19.10");
        assert_eq!(money(5), "£0.05");
    }

    #[test]
    fn catalogue_items_are_unique_and_safe_as_html_ids() {
        for (i, p) in CATALOGUE.iter().enumerate() {
            assert!(p.item.bytes().all(|b| b.is_ascii_lowercase()), "{p:?}");
            assert!(CATALOGUE[..i].iter().all(|q| q.item != p.item), "{p:?}");
        }
    }
}
