//! The model the inference thread serves, replaceable between batches (hot swap).

use std::sync::{Arc, RwLock};

use super::model::{Model, ModelIdentity};

/// A served model and its identity, swapped together.
type Serving = (Arc<dyn Model>, Arc<ModelIdentity>);

/// The model the inference thread serves, replaceable between batches.
#[derive(Debug, Clone)]
pub struct ModelSlot {
    inner: Arc<RwLock<Serving>>,
}

impl ModelSlot {
    /// A slot serving `model`.
    pub fn new(model: Arc<dyn Model>) -> Self {
        let identity = Arc::new(model.identity());
        Self { inner: Arc::new(RwLock::new((model, identity))) }
    }

    /// The model now serving and its identity.
    pub fn current(&self) -> (Arc<dyn Model>, Arc<ModelIdentity>) {
        match self.inner.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the served model; batches already formed finish on the old one.
    pub fn swap(&self, model: Arc<dyn Model>) -> Arc<ModelIdentity> {
        let identity = Arc::new(model.identity());
        let next = (model, identity.clone());
        match self.inner.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        identity
    }
}
