//! Bags (namespaced views of a session) and flash messages.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::session::Session;

/// The character between a bag's name and its keys in the session.
const SEPARATOR: char = ':';

/// The bag that holds flash messages.
const FLASH_BAG: &str = "_flash";

/// A namespaced view of a session (Phalcon's `Bag`): the same read and write
/// API, scoped to the bag's keys.
///
/// A bag's entries are ordinary session keys named `<bag>:<key>`, so each is
/// read and written on its own: concurrent writes to different entries of one
/// bag merge like any other keys, and no change rewrites the whole bag (unlike
/// Phalcon's bag, which writes its whole group back on every change).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> sessionkit_core::Result<()> {
#[doc = concat!("# ", doc_session!())]
/// let cart = session.bag("cart")?;
/// cart.insert("apple", &2u32)?;
/// session.insert("user", &"ada")?;
/// assert_eq!(cart.keys().await?, ["apple"]);
/// cart.clear().await?;
/// assert!(cart.is_empty().await?);
/// assert!(session.has("user").await?); // the rest of the session stays
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Bag {
    session: Session,
    prefix: String,
}

impl Session {
    /// The bag called `name`.
    ///
    /// Names are non-empty and may not contain `:`; otherwise
    /// [`ErrorKind::InvalidConfig`](crate::ErrorKind::InvalidConfig).
    pub fn bag(&self, name: &str) -> Result<Bag> {
        if name.is_empty() || name.contains(SEPARATOR) {
            return Err(Error::invalid_config(
                "bag name",
                format!("{name:?}: must be non-empty and may not contain `{SEPARATOR}`"),
            ));
        }
        Ok(Bag {
            session: self.clone(),
            prefix: format!("{name}{SEPARATOR}"),
        })
    }

    /// Sets a flash message: a value the *next* request can read once with
    /// [`Session::take_flash`], gone after that (buffered like
    /// [`Session::insert`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> sessionkit_core::Result<()> {
    #[doc = concat!("# ", doc_session!())]
    /// session.flash("notice", "Saved.")?;
    /// assert_eq!(session.take_flash::<String>("notice").await?.as_deref(), Some("Saved."));
    /// assert_eq!(session.take_flash::<String>("notice").await?, None);
    /// # Ok(()) }
    /// ```
    pub fn flash<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.bag(FLASH_BAG)?.insert(key, value)
    }

    /// Reads a flash message and removes it, so that it shows once.
    ///
    /// See [`Session::flash`].
    pub async fn take_flash<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let bag = self.bag(FLASH_BAG)?;
        let value = bag.get(key).await?;
        if value.is_some() {
            bag.remove(key)?;
        }
        Ok(value)
    }
}

impl Bag {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The bag's name.
    pub fn name(&self) -> &str {
        &self.prefix[..self.prefix.len() - SEPARATOR.len_utf8()]
    }

    /// Reads `key` of the bag; see [`Session::get`].
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.session.get(&self.key(key)).await
    }

    /// Whether the bag has `key`.
    pub async fn has(&self, key: &str) -> Result<bool> {
        self.session.has(&self.key(key)).await
    }

    /// The bag's keys, in order, without the bag's prefix.
    pub async fn keys(&self) -> Result<Vec<String>> {
        Ok(self
            .session
            .keys()
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned))
            .collect())
    }

    /// Whether the bag is empty.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.keys().await?.is_empty())
    }

    /// Sets `key` of the bag; see [`Session::insert`].
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<()> {
        self.session.insert(&self.key(key), value)
    }

    /// Removes `key` of the bag; see [`Session::remove`].
    pub fn remove(&self, key: &str) -> Result<()> {
        self.session.remove(&self.key(key))
    }

    /// Removes every entry of the bag and nothing else. Reads the session
    /// first (to learn the bag's keys), then removes them as buffered writes.
    pub async fn clear(&self) -> Result<()> {
        for key in self.keys().await? {
            self.remove(&key)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::MemoryStore;
    use crate::{ErrorKind, SessionConfig, SessionFactory};

    fn factory() -> SessionFactory {
        SessionFactory::new(MemoryStore::new(), SessionConfig::default())
    }

    #[tokio::test]
    async fn bags_are_isolated_from_each_other() {
        let s = factory().session(None, false);
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
    async fn bad_bag_names_are_rejected() {
        let s = factory().session(None, false);
        for bad in ["", "a:b"] {
            assert_eq!(s.bag(bad).unwrap_err().kind(), ErrorKind::InvalidConfig);
        }
    }

    #[tokio::test]
    async fn concurrent_writes_to_one_bag_merge() {
        let factory = factory();
        let first = factory.session(None, false);
        first.bag("cart").unwrap().insert("seed", &0).unwrap();
        assert!(first.finish(false).await.error.is_none());
        let id = first.id().unwrap();
        let a = factory.session(Some(id), true);
        let b = factory.session(Some(id), true);
        a.bag("cart").unwrap().insert("apple", &1).unwrap();
        b.bag("cart").unwrap().insert("pear", &2).unwrap();
        assert!(a.finish(false).await.error.is_none());
        assert!(b.finish(false).await.error.is_none());
        let c = factory.session(Some(id), true);
        assert_eq!(
            c.bag("cart").unwrap().keys().await.unwrap(),
            ["apple", "pear", "seed"]
        );
    }

    #[tokio::test]
    async fn a_flash_message_is_read_once_by_the_next_request() {
        let factory = factory();
        let first = factory.session(None, false);
        first.flash("notice", "Welcome").unwrap();
        assert!(first.finish(false).await.error.is_none());
        let id = first.id().unwrap();
        let second = factory.session(Some(id), true);
        assert_eq!(
            second
                .take_flash::<String>("notice")
                .await
                .unwrap()
                .as_deref(),
            Some("Welcome")
        );
        assert!(second.finish(false).await.error.is_none());
        let third = factory.session(Some(id), true);
        assert_eq!(third.take_flash::<String>("notice").await.unwrap(), None);
    }
}
