//! Bags: namespaced views of a session, one per component.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::session::Session;
use crate::session::keys;

/// A namespaced view of a session: the same read and write API, scoped to
/// the bag's own keys, which plain keys and other bags never meet.
///
/// A bag's entries are entries of the session in a reserved namespace (see
/// [`Session::keys`]), one per key, so each is read and written on its own:
/// concurrent writes to different entries of one bag merge like any other
/// keys, and no change rewrites the whole bag. A plain key `cart:apple` is
/// not an entry of bag `cart`, and [`Session::clear`] leaves bags alone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sessionkit_core::Result<()> {
#[doc = concat!("# ", doc_session!())]
/// let cart = session.bag("cart")?;
/// cart.insert("apple", &2u32)?;
/// session.insert("user", &"ada")?;
/// session.insert("cart:pear", &1u32)?; // a plain key, not in the bag
/// assert_eq!(cart.keys().await?, ["apple"]);
/// cart.clear().await?;
/// assert!(cart.is_empty().await?);
/// assert_eq!(session.keys().await?, ["cart:pear", "user"]); // the rest stays
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Bag {
    session: Session,
    name: String,
    prefix: String,
}

impl Session {
    /// The bag called `name`: any non-empty text without U+0001 (otherwise
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig)).
    pub fn bag(&self, name: &str) -> Result<Bag> {
        Ok(Bag {
            session: self.clone(),
            prefix: keys::bag_prefix(name)?,
            name: name.to_owned(),
        })
    }

    /// The bag of component `T`, named after the type
    /// ([`std::any::type_name`]): state a component keeps for itself across
    /// requests, out of every other component's way.
    ///
    /// The name is the type's path, so moving or renaming the type starts a
    /// new, empty bag.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// struct Wizard;
    ///
    /// let wizard = session.bag_of::<Wizard>();
    /// wizard.insert("step", &2u8)?;
    /// assert!(wizard.name().ends_with("Wizard"));
    /// assert_eq!(session.bag_of::<Wizard>().get::<u8>("step").await?, Some(2));
    /// # Ok(()) }
    /// ```
    pub fn bag_of<T: ?Sized>(&self) -> Bag {
        let name = std::any::type_name::<T>();
        Bag {
            session: self.clone(),
            // A type name is never empty and holds no control character.
            prefix: keys::bag_prefix(name).unwrap_or_default(),
            name: name.to_owned(),
        }
    }
}

impl Bag {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The bag's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads `key` of the bag; see [`Session::get`].
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.session.entry(&self.key(key)).await
    }

    /// Reads `key` of the bag, or `default`; see [`Session::get_or`].
    pub async fn get_or<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        Ok(self.get(key).await?.unwrap_or(default))
    }

    /// Whether the bag has `key`.
    pub async fn has(&self, key: &str) -> Result<bool> {
        Ok(self.get::<serde::de::IgnoredAny>(key).await?.is_some())
    }

    /// The bag's keys, in order.
    pub async fn keys(&self) -> Result<Vec<String>> {
        self.session.keys_under(&self.prefix).await
    }

    /// Whether the bag is empty.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.keys().await?.is_empty())
    }

    /// Sets `key` of the bag; see [`Session::insert`].
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.session.insert_entry(&self.key(key), value)
    }

    /// Removes `key` of the bag and returns its value; see
    /// [`Session::remove`].
    pub async fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let old = self.get(key).await?;
        self.discard(key)?;
        Ok(old)
    }

    /// Removes `key` of the bag without reading it; see
    /// [`Session::discard`].
    pub fn discard(&self, key: &str) -> Result<()> {
        self.session.discard_entry(&self.key(key))
    }

    /// Removes every entry of the bag and nothing else. Reads the session
    /// first (to learn the bag's keys), then removes them as buffered writes.
    pub async fn clear(&self) -> Result<()> {
        for key in self.keys().await? {
            self.discard(&key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::MemoryStore;
    use crate::{ErrorKind, Outcome, SessionConfig, SessionFactory};

    fn factory() -> SessionFactory {
        SessionFactory::new(MemoryStore::new(), SessionConfig::default())
    }

    #[tokio::test]
    async fn bags_are_isolated_from_each_other() {
        let s = factory().session(None);
        let a = s.bag("a").unwrap();
        let b = s.bag("b").unwrap();
        a.insert("k", &1).unwrap();
        b.insert("k", &2).unwrap();
        assert_eq!(a.get::<i32>("k").await.unwrap(), Some(1));
        assert_eq!(b.get::<i32>("k").await.unwrap(), Some(2));
        a.clear().await.unwrap();
        assert!(!a.has("k").await.unwrap());
        assert!(b.has("k").await.unwrap());
        assert_eq!(b.name(), "b");
    }

    #[tokio::test]
    async fn bad_bag_names_are_rejected_and_colons_are_fine() {
        let s = factory().session(None);
        for bad in ["", "a\u{1}b"] {
            assert_eq!(s.bag(bad).unwrap_err().kind(), ErrorKind::InvalidConfig);
        }
        assert!(s.bag("a:b").is_ok());
    }

    /// Issue 13: a plain key `cart:apple` showed up in bag `cart`, `keys()`
    /// and `data()` showed flash messages, and `clear()` wiped bags and
    /// flash messages.
    #[tokio::test]
    async fn bags_and_flash_live_apart_from_plain_keys() {
        let s = factory().session(None);
        s.insert("cart:apple", &1).unwrap();
        s.bag("cart").unwrap().insert("pear", &2).unwrap();
        s.flash("notice", "hi").unwrap();
        assert_eq!(s.bag("cart").unwrap().keys().await.unwrap(), ["pear"]);
        assert_eq!(s.keys().await.unwrap(), ["cart:apple"]);
        assert_eq!(s.data().await.unwrap().len(), 1);
        s.clear().await.unwrap();
        assert!(s.is_empty().await.unwrap());
        assert_eq!(
            s.bag("cart").unwrap().get::<i32>("pear").await.unwrap(),
            Some(2)
        );
        assert_eq!(
            s.take_flash::<String>("notice").await.unwrap().as_deref(),
            Some("hi")
        );
        assert_eq!(
            s.get::<i32>("\u{1}bag\u{1}cart\u{1}pear")
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidConfig
        );
    }

    #[tokio::test]
    async fn concurrent_writes_to_one_bag_merge() {
        let factory = factory();
        let first = factory.request(None);
        first.bag("cart").unwrap().insert("seed", &0).unwrap();
        assert!(first.finish(Outcome::Success).await.error.is_none());
        let id = first.id().unwrap();
        let a = factory.request(id);
        let b = factory.request(id);
        a.bag("cart").unwrap().insert("apple", &1).unwrap();
        b.bag("cart").unwrap().insert("pear", &2).unwrap();
        assert!(a.finish(Outcome::Success).await.error.is_none());
        assert!(b.finish(Outcome::Success).await.error.is_none());
        let c = factory.request(id);
        assert_eq!(
            c.bag("cart").unwrap().keys().await.unwrap(),
            ["apple", "pear", "seed"]
        );
    }

    #[tokio::test]
    async fn a_flash_message_is_read_once_by_the_next_request() {
        let factory = factory();
        let first = factory.request(None);
        first.flash("notice", "Welcome").unwrap();
        assert!(first.finish(Outcome::Success).await.error.is_none());
        let id = first.id().unwrap();
        let second = factory.request(id);
        assert_eq!(
            second
                .take_flash::<String>("notice")
                .await
                .unwrap()
                .as_deref(),
            Some("Welcome")
        );
        assert!(second.finish(Outcome::Success).await.error.is_none());
        let third = factory.request(id);
        assert_eq!(third.take_flash::<String>("notice").await.unwrap(), None);
    }
}
