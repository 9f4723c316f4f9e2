//! Shutdown that stays observable: once it starts, new `MeetingService` calls are refused with
//! UNAVAILABLE (the adapter answers 503 and Calendly retries), calls already in flight finish, and
//! the listener stays open meanwhile, so gRPC health keeps answering NOT_SERVING instead of the
//! port going dark. The server's own graceful shutdown, which closes the listener, comes after.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tokio::sync::watch;
use tonic::{
    Status,
    body::Body,
    codegen::{BoxFuture, Service, http},
    server::NamedService,
};

/// Counts the calls in flight through every service it wraps.
#[derive(Clone)]
pub struct Drain(Arc<Shared>);

struct Shared {
    draining: AtomicBool,
    in_flight: watch::Sender<usize>,
}

impl Default for Drain {
    fn default() -> Self {
        Self(Arc::new(Shared {
            draining: AtomicBool::new(false),
            in_flight: watch::Sender::new(0),
        }))
    }
}

impl Drain {
    pub fn wrap<S>(&self, inner: S) -> Draining<S> {
        Draining {
            inner,
            drain: self.clone(),
        }
    }

    /// Refuses calls from now on and returns once those in flight have finished.
    pub async fn drain(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
        let mut in_flight = self.0.in_flight.subscribe();
        // The sender lives in `self`, so this ends only when the count reaches zero.
        let _ = in_flight.wait_for(|calls| *calls == 0).await;
    }

    /// Counts a call in, unless draining has begun. Counted before the check, so a drain that
    /// has just seen zero cannot miss a call that slipped past it.
    fn enter(&self) -> Option<InFlight> {
        self.0.in_flight.send_modify(|calls| *calls += 1);
        let call = InFlight(self.clone());
        (!self.0.draining.load(Ordering::SeqCst)).then_some(call)
    }
}

struct InFlight(Drain);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.0.in_flight.send_modify(|calls| *calls -= 1);
    }
}

/// A service whose calls a [`Drain`] counts.
#[derive(Clone)]
pub struct Draining<S> {
    inner: S,
    drain: Drain,
}

impl<S: NamedService> NamedService for Draining<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> Service<http::Request<B>> for Draining<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(call) = self.drain.enter() else {
            let refused = Status::unavailable("the meeting service is shutting down; retry later");
            return Box::pin(async move { Ok(refused.into_http()) });
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(call);
            response
        })
    }
}
