//! Application state for handlers (issue #17), in axum's style: values given to
//! `Orchestrator::builder().state(value)` (or [`crate::testing::TestRun::with_state`]) are taken by
//! handlers as [`State<T>`] arguments, one per type. The macro records which types each handler
//! takes, so an orchestrator missing one refuses to build, naming the handler and the type,
//! instead of failing the first job that reaches it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::handler::{FromContext, HandlerError};
use crate::Context;

/// A handler argument: the application state of type `T` (cheap to clone: an `Arc`).
///
/// ```
/// # use avto::prelude::*;
/// struct Settings { greeting: String }
///
/// #[avto::blueprint(name = "greeter_doc")]
/// mod greeter {
///     use super::*;
///     #[handler(state = "start", start, end)]
///     async fn start(settings: State<Settings>) {
///         assert!(!settings.greeting.is_empty());
///     }
/// }
/// # fn main() {}
/// ```
#[derive(Debug)]
pub struct State<T: ?Sized>(pub Arc<T>);

impl<T: ?Sized> Clone for State<T> {
    fn clone(&self) -> Self {
        State(self.0.clone())
    }
}

impl<T: ?Sized> std::ops::Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<'a, T: Send + Sync + 'static> FromContext<'a> for State<T> {
    fn from_context(ctx: &'a Context) -> Result<Self, HandlerError> {
        ctx.app_state.get::<T>().map(State).ok_or_else(|| {
            HandlerError::Failed(format!(
                "no application state of type `{}`: give it to `Orchestrator::builder().state(..)`",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A type a handler takes as `State<T>` (recorded by the macro).
#[derive(Debug, Clone, Copy)]
pub struct StateType {
    /// `TypeId::of::<T>`.
    pub id: fn() -> TypeId,
    /// `std::any::type_name::<T>`.
    pub name: fn() -> &'static str,
}

/// The application state values, by type.
#[derive(Clone, Default)]
pub struct AppState {
    values: HashMap<TypeId, (Arc<dyn Any + Send + Sync>, &'static str)>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.values().map(|(_, name)| name)).finish()
    }
}

impl AppState {
    /// Adds `value` (a second value of the same type replaces the first).
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), (Arc::new(value), std::any::type_name::<T>()));
    }

    /// The value of type `T`, if one was given.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.values.get(&TypeId::of::<T>()).and_then(|(v, _)| v.clone().downcast::<T>().ok())
    }

    fn contains(&self, id: TypeId) -> bool {
        self.values.contains_key(&id)
    }

    /// Every (blueprint, handler, type) whose handler takes a `State<T>` this state lacks, as one
    /// message per missing type; empty when nothing is missing.
    pub fn missing(&self, blueprints: impl IntoIterator<Item = crate::Blueprint>) -> Vec<String> {
        let mut out = Vec::new();
        for bp in blueprints {
            for h in bp.spec().handlers {
                for t in (h.state_types)() {
                    if !self.contains((t.id)()) {
                        out.push(format!(
                            "handler `{}` of blueprint `{}` takes `State<{}>`, but no value of that type was given: call `.state(value)` on the builder",
                            h.name,
                            bp.name(),
                            (t.name)()
                        ));
                    }
                }
            }
        }
        out
    }
}
