//! Flash messages: values a request leaves for the next one, shown once.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::session::Session;
use crate::session::keys::FLASH_PREFIX;

/// The entry of flash message `key`, in the reserved namespace (see
/// `session/keys.rs`): plain keys and bags never meet it.
fn flash_key(key: &str) -> String {
    format!("{FLASH_PREFIX}{key}")
}

impl Session {
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
        self.insert_entry(&flash_key(key), value)
    }

    /// Reads a flash message and removes it, so that it shows once.
    ///
    /// See [`Session::flash`].
    pub async fn take_flash<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let key = flash_key(key);
        let value = self.entry(&key).await?;
        if value.is_some() {
            self.discard_entry(&key)?;
        }
        Ok(value)
    }
}
